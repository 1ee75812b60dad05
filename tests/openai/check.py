"""The official `openai` client against Switchyard's OpenAI-compatible
façade, served by examples/echo_agent.rs (model `echo`).

Usage: check.py <base_url> <api_key> served|absent
  served: /v1/models lists `echo`; chat completions (plain and streamed)
          and the Responses API (plain and streamed) answer `echo: …`.
  absent: no agent online: a clean OpenAI-style 404 `model_not_found`.
Prints one line per check and exits non-zero on the first failure.
"""

import sys

import openai

base_url, api_key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=20)


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (": " + str(detail) if detail else ""))
    if not ok:
        sys.exit(1)


if mode == "served":
    models = [m.id for m in client.models.list()]
    check("models.list has echo", "echo" in models, models)

    reply = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hello there"}]
    )
    content = reply.choices[0].message.content
    check("chat.completions", content == "echo: hello there", content)
    check("chat.completions object", reply.object == "chat.completion", reply.object)
    check("finish_reason", reply.choices[0].finish_reason == "stop", reply.choices[0].finish_reason)

    chunks = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
    )
    pieces, finish, count = [], None, 0
    for chunk in chunks:
        count += 1
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    text = "".join(pieces)
    check("streamed text", text == "echo: one two three", text)
    check("streamed in several chunks", count >= 4, count)
    check("streamed finish_reason", finish == "stop", finish)

    response = client.responses.create(model="echo", input="via responses")
    check("responses", response.output_text == "echo: via responses", response.output_text)

    deltas = []
    with client.responses.stream(model="echo", input="streamed response") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    check("responses stream deltas", "".join(deltas) == "echo: streamed response", deltas)
    check("responses stream final", final.output_text == "echo: streamed response", final.output_text)

    try:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
        check("unknown model is an error", False)
    except openai.NotFoundError as e:
        check("unknown model: 404 model_not_found", e.code == "model_not_found", e.body)
elif mode == "absent":
    try:
        client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
        check("no agent is an error", False)
    except openai.NotFoundError as e:
        check("no agent: 404", e.status_code == 404, e.status_code)
        check("no agent: model_not_found", e.code == "model_not_found", e.body)
        check("no agent: message", "echo" in str(e.message), e.message)
    try:
        stream = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}], stream=True
        )
        list(stream)
        check("no agent (stream) is an error", False)
    except openai.NotFoundError as e:
        check("no agent (stream): 404", e.status_code == 404, e.status_code)
    models = [m.id for m in client.models.list()]
    check("models.list is empty", models == [], models)
    try:
        openai.OpenAI(base_url=base_url, api_key="wrong-key-0123456789abcdef", max_retries=0).models.list()
        check("bad key is an error", False)
    except openai.AuthenticationError as e:
        check("bad key: 401", e.status_code == 401, e.status_code)
else:
    sys.exit("mode must be served or absent")
print("ALL PASS")
