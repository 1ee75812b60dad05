"""Agents against one standalone gateway: registration, tools, methods,
chat, completions over HTTP, handler errors, and the echo example."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import sys
from typing import Any

import pytest
from gateway import ADMIN, NODE, PACKAGE_DIR, WRITER, Gateway

import switchyard as sy

W = 10.0


def post_json(gw: Gateway, path: str, body: dict[str, Any], token: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=W)
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


async def test_agent_registers_and_serves_tools_methods_and_chat(standalone: Gateway, uid: str) -> None:
    agent_id = f"worker-{uid}"
    seen_callers: list[dict[str, Any]] = []

    async def add(args: Any, ctx: sy.RequestContext) -> Any:
        seen_callers.append(ctx.caller)
        return {"sum": args["a"] + args["b"]}

    async def refuse(args: Any, ctx: sy.RequestContext) -> Any:
        raise sy.Conflict(message="already done", data={"why": "test"})

    async def crash(args: Any, ctx: sy.RequestContext) -> Any:
        raise KeyError("secret detail")

    async def huge(args: Any, ctx: sy.RequestContext) -> Any:
        return "x" * (2 * 1024 * 1024)

    async def skills(params: Any, ctx: sy.RequestContext) -> Any:
        return {"command": ctx.params["command"], "params": params}

    async def chat(message: Any, ctx: sy.RequestContext) -> Any:
        return {"content": f"re: {message}"}

    agent = sy.Agent(
        standalone.url,
        token=NODE,
        agent_id=agent_id,
        name="Worker",
        tools=[
            sy.Tool("add", "Adds a and b", {"type": "object", "required": ["a", "b"]}, add),
            sy.Tool("refuse", "Always refuses", {"type": "object"}, refuse),
            sy.Tool("crash", "Always fails", {"type": "object"}, crash),
            sy.Tool("huge", "Answers too much", {"type": "object"}, huge),
        ],
        methods={f"skills{uid}.*": skills},
        chat=chat,
        capabilities=[f"math-{uid}"],
        max_concurrency=4,
    )
    async with agent, sy.Client(standalone.url, token=WRITER) as op:
        assert agent.registration is not None
        assert agent.registration["agentId"] == agent_id
        assert agent.registration["maxConcurrency"] == 4
        entry = await op.call("agents.get", {"agentId": agent_id})
        assert entry["online"] is True
        assert sorted(entry["capabilities"]) == sorted([f"math-{uid}", "chat"])
        assert {t["name"] for t in entry["tools"]} == {"add", "refuse", "crash", "huge"}
        tools = await op.call("tools.list")
        add_tool = next(t for t in tools["tools"] if t["name"] == "add")
        assert agent_id in add_tool["agents"] and add_tool["parameters"]["required"] == ["a", "b"]

        done = await op.invoke("add", {"a": 2, "b": 3}, node_id=agent_id)
        assert done.result == {"sum": 5} and done.node_id == agent_id
        assert seen_callers[0]["identity"] == "writer"
        by_capability = await op.invoke("add", {"a": 1, "b": 1}, capability=f"math-{uid}")
        assert by_capability.result == {"sum": 2}

        with pytest.raises(sy.Conflict) as refused:
            await op.invoke("refuse", {}, node_id=agent_id)
        assert refused.value.code == -32007 and refused.value.data == {"why": "test"}
        with pytest.raises(sy.InternalError) as crashed:
            await op.invoke("crash", {}, node_id=agent_id)
        assert "secret detail" not in str(crashed.value)
        with pytest.raises(sy.MethodNotFound):
            await op.invoke("unknown-tool", {}, node_id=agent_id)
        # An answer over the gateway's frame limit becomes an error; the
        # agent stays connected.
        with pytest.raises(sy.InternalError) as too_large:
            await op.invoke("huge", {}, node_id=agent_id)
        assert "too large" in too_large.value.message
        assert agent.client.reconnects == 0

        # A provided method is called like a built-in one.
        assert await op.call(f"skills{uid}.search", {"q": "x"}) == {
            "command": f"skills{uid}.search",
            "params": {"q": "x"},
        }

        session = await op.create_session()
        reply = await op.call("chat.send", {"sessionId": session.session_id, "message": "hello"})
        assert reply["reply"] == "re: hello" and reply["agentId"] == agent_id
        assert agent.in_flight == 0


async def test_completions_over_http_stream_through_progress(standalone: Gateway, uid: str) -> None:
    model = f"model-{uid}"

    async def complete(request: dict[str, Any], ctx: sy.RequestContext) -> Any:
        last = request["messages"][-1]["content"]
        if request.get("stream"):
            for word in last.split():
                await ctx.progress({"delta": word + " "})
        return {"content": last.upper()}

    async with sy.Agent(
        standalone.url, token=NODE, agent_id=f"llm-{uid}", models=[model], completions=complete
    ) as agent:
        assert "chat.completions" in agent.capabilities
        body = {"model": model, "messages": [{"role": "user", "content": "one two"}]}
        status, text = await asyncio.to_thread(post_json, standalone, "/v1/chat/completions", body, ADMIN)
        assert status == 200, text
        assert json.loads(text)["choices"][0]["message"]["content"] == "ONE TWO"
        status, text = await asyncio.to_thread(
            post_json, standalone, "/v1/chat/completions", {**body, "stream": True}, ADMIN
        )
        assert status == 200, text
        deltas = [
            json.loads(line[len("data: ") :])["choices"][0]["delta"].get("content")
            for line in text.splitlines()
            if line.startswith("data: {")
        ]
        assert [d for d in deltas if d] == ["one ", "two "], text


async def test_echo_example(standalone: Gateway) -> None:
    """examples/echo_agent.py behaves as examples/echo_agent.rs."""
    src = str(PACKAGE_DIR / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(PACKAGE_DIR / "examples" / "echo_agent.py"),
        standalone.url,
        NODE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), W)
        assert line.startswith(b"registered: "), line
        async with sy.Client(standalone.url, token=ADMIN) as op:
            echoed = await op.invoke("echo", {"x": 1}, capability="agent.run")
            assert (echoed.result, echoed.node_id) == ({"x": 1}, "echo")

            run = await op.run_agent("hello big world", agent_id="echo")
            words = [e.data["text"] async for e in run.events(timeout=W)]
            assert words == ["hello", "big", "world"]
            assert run.record is not None and run.record["status"] == "completed"
            assert run.record["result"] == {"output": "hello big world"}
            reply = await op.call("chat.send", {"sessionId": run.session_id, "message": "hi"})
            assert reply["reply"] == "echo: hi"

            requested = op.notifications("approval.requested")
            deleting = asyncio.ensure_future(op.invoke("delete_file", {"path": "/tmp/x"}, node_id="echo"))
            asked = await requested.next(W)
            assert asked.params["summary"] == "delete /tmp/x" and asked.params["requester"] == "node-1"
            await op.resolve_approval(asked.params["approvalId"], True)
            assert (await asyncio.wait_for(deleting, W)).result == {"deleted": "/tmp/x", "approvedBy": "admin"}

        body = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}]}
        status, text = await asyncio.to_thread(post_json, standalone, "/v1/chat/completions", body, ADMIN)
        assert status == 200 and json.loads(text)["choices"][0]["message"]["content"] == "echo: hi there", text
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), W)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def test_registration_errors_surface_at_start(standalone: Gateway, uid: str) -> None:
    async def noop(args: Any, ctx: sy.RequestContext) -> Any:
        return None

    tool = sy.Tool("noop", "Nothing", {"type": "object"}, noop)
    with pytest.raises(sy.Unauthorized):
        await sy.Agent(standalone.url, token="wrong-token-0123456789abcdef", agent_id=f"x-{uid}").start()
    async with sy.Agent(standalone.url, token=NODE, agent_id=f"held-{uid}", tools=[tool]):
        # Another identity may not take the id over.
        intruder = sy.Agent(standalone.url, token=ADMIN, agent_id=f"held-{uid}", tools=[tool])
        with pytest.raises(sy.Conflict):
            await intruder.start()
        await intruder.close()
        # An operator without admin may not act as a node at all.
        with pytest.raises(sy.Forbidden):
            await sy.Agent(standalone.url, token=WRITER, agent_id=f"w-{uid}").start()
