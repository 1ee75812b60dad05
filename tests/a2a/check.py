"""The official A2A client (`a2a-sdk` 1.3.0) against Switchyard's A2A
endpoint, run by tests/a2a.rs: two gateway instances, A and B, share a
Redis; the test agent is connected to B; this script talks to A (and B).

Usage: check.py <base A> <base B> <writer token> <reader token> <agent id> <pid of A>

Last, it SIGKILLs instance A while A streams a task to it, and follows
the task to its end on B (`SubscribeToTask`, then `GetTask`).

The test agent (tests/a2a.rs) answers `agent.run` by the task's text:
  "slow"      works until cancelled (then notes the cancel)
  "count N"   sends tokens t1..tN, one every 100 ms, then `counted N`
  "fail"      fails with "the agent failed on purpose"
  anything    a `message` event "working on it", a `tool` event, one
              token per word, then the whole text as its result (after
              300 ms when the text starts with "stream").

Prints one line per check ("PASS …"), the measured round trip of a
blocking SendMessage ("RTT …"), the cancelled task ("CANCELLED <id>"),
and "ALL PASS" at the end; exits non-zero on the first failure.
"""

import asyncio
import os
import signal
import statistics
import sys
import time
import uuid

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientError
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetExtendedAgentCardRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import (
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)

BASE_A, BASE_B, WRITER, READER, AGENT = sys.argv[1:6]
PID_A = int(sys.argv[6])
WAIT = 20


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + (f": {detail}" if detail != "" else ""), flush=True)
    if not ok:
        sys.exit(1)


def user_msg(text, context_id=""):
    return Message(
        message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)], context_id=context_id
    )


def state(task):
    return TaskState.Name(task.status.state)


def texts(parts):
    return [p.text for p in parts if p.HasField("text")]


def artifact(task, artifact_id):
    return next((a for a in task.artifacts if a.artifact_id == artifact_id), None)


def make(http, card, streaming):
    return ClientFactory(ClientConfig(httpx_client=http, streaming=streaming)).create(card)


async def collect(stream):
    return [ev async for ev in stream]


async def send(client, text, context_id="", immediately=False):
    config = SendMessageConfiguration(return_immediately=immediately)
    request = SendMessageRequest(message=user_msg(text, context_id), configuration=config)
    events = await asyncio.wait_for(collect(client.send_message(request)), WAIT)
    check(f"SendMessage {text!r} answers one task", [e.WhichOneof("payload") for e in events] == ["task"], events)
    return events[0].task


def output_tokens(events):
    """The text chunks of artifact `output`: a task snapshot's, then the updates'."""
    tokens = []
    for ev in events:
        kind = ev.WhichOneof("payload")
        if kind == "task":
            out = artifact(ev.task, "output")
            tokens = texts(out.parts) if out else []
        elif kind == "artifact_update" and ev.artifact_update.artifact.artifact_id == "output":
            if not ev.artifact_update.append:
                tokens = []
            tokens += texts(ev.artifact_update.artifact.parts)
    return tokens


async def main():
    auth = {"Authorization": f"Bearer {WRITER}"}
    async with (
        httpx.AsyncClient(headers=auth, timeout=WAIT) as http,
        httpx.AsyncClient(headers={"Authorization": f"Bearer {READER}"}, timeout=WAIT) as reader_http,
        httpx.AsyncClient(timeout=WAIT) as anonymous,
    ):
        # --- cards
        card_a = await A2ACardResolver(http, BASE_A).get_agent_card()
        iface = card_a.supported_interfaces[0]
        check("card interface", (iface.url, iface.protocol_binding, iface.protocol_version)
              == (f"{BASE_A}/a2a", "JSONRPC", "1.0"), iface)
        check("card streaming", card_a.capabilities.streaming)
        check("card lists the agent to a reader", AGENT in [s.id for s in card_a.skills], [s.id for s in card_a.skills])
        check("card bearer scheme", card_a.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer")
        public = await A2ACardResolver(anonymous, BASE_A).get_agent_card()
        check("anonymous card names no agent", AGENT not in [s.id for s in public.skills], [s.id for s in public.skills])
        card_b = await A2ACardResolver(http, BASE_B).get_agent_card()
        check("instance B's card points at B", card_b.supported_interfaces[0].url == f"{BASE_B}/a2a")
        blocking_a = make(http, card_a, False)
        streaming_a = make(http, card_a, True)
        client_b = make(http, card_b, True)

        # --- blocking SendMessage on A, served by the agent on B
        times = []
        for i in range(5):
            started = time.perf_counter()
            task = await send(blocking_a, f"hello from a2a {i}")
            times.append((time.perf_counter() - started) * 1000)
            check("blocking task completed", state(task) == "TASK_STATE_COMPLETED", state(task))
        print(f"RTT blocking SendMessage A->agent on B: median {statistics.median(times):.1f} ms, "
              f"min {min(times):.1f} ms, max {max(times):.1f} ms over {len(times)}", flush=True)
        check("result artifact", texts(artifact(task, "result").parts) == ["hello from a2a 4"], task.artifacts)
        check("output artifact: one part per token", texts(artifact(task, "output").parts) == ["hello", "from", "a2a", "4"])
        check("history: the user's message first", task.history[0].role == Role.ROLE_USER
              and task.history[0].parts[0].text == "hello from a2a 4", task.history)
        check("history: the agent's message", any(m.role == Role.ROLE_AGENT and texts(m.parts) == ["working on it"]
                                                 for m in task.history), task.history)
        check("task and context ids", task.id.startswith(task.context_id + "~"), task.id)

        # --- streaming SendMessage on A
        request = SendMessageRequest(message=user_msg("stream one two three"))
        events = await asyncio.wait_for(collect(streaming_a.send_message(request)), WAIT)
        kinds = [e.WhichOneof("payload") for e in events]
        check("stream starts with the task", kinds[0] == "task" and state(events[0].task) == "TASK_STATE_WORKING", kinds)
        last = events[-1]
        check("stream ends with COMPLETED", kinds[-1] == "status_update"
              and TaskState.Name(last.status_update.status.state) == "TASK_STATE_COMPLETED", kinds)
        check("stream tokens", output_tokens(events) == ["stream", "one", "two", "three"], output_tokens(events))
        said = [e.status_update.status for e in events if e.WhichOneof("payload") == "status_update"]
        check("stream: agent message as WORKING status", any(
            TaskState.Name(s.state) == "TASK_STATE_WORKING" and texts(s.message.parts) == ["working on it"] for s in said))
        check("stream: other events as data parts", any(
            s.message.parts and s.message.parts[0].HasField("data") for s in said))
        results = [e.artifact_update for e in events if e.WhichOneof("payload") == "artifact_update"
                   and e.artifact_update.artifact.artifact_id == "result"]
        check("stream: result artifact, last chunk", len(results) == 1 and results[0].last_chunk
              and texts(results[0].artifact.parts) == ["stream one two three"], results)
        streamed_id = events[0].task.id

        # --- the tasks, read on the other instance
        on_b = await client_b.get_task(GetTaskRequest(id=task.id, history_length=10))
        check("GetTask on B: completed", state(on_b) == "TASK_STATE_COMPLETED", state(on_b))
        check("GetTask on B: same artifacts", on_b.artifacts == task.artifacts)
        check("GetTask on B: same history", on_b.history == task.history)
        short = await client_b.get_task(GetTaskRequest(id=task.id, history_length=1))
        check("historyLength", len(short.history) == 1, len(short.history))
        streamed = await client_b.get_task(GetTaskRequest(id=streamed_id))
        check("GetTask on B of the streamed task", state(streamed) == "TASK_STATE_COMPLETED"
              and texts(artifact(streamed, "output").parts) == ["stream", "one", "two", "three"])

        # --- ListTasks
        listed = await streaming_a.list_tasks(ListTasksRequest(page_size=100))
        ids = [t.id for t in listed.tasks]
        check("ListTasks lists both", task.id in ids and streamed_id in ids, ids)
        check("ListTasks totalSize", listed.total_size == len(ids) >= 6, listed.total_size)
        first = await streaming_a.list_tasks(ListTasksRequest(page_size=1))
        check("ListTasks page 1", len(first.tasks) == 1 and first.next_page_token != "", first.next_page_token)
        second = await streaming_a.list_tasks(ListTasksRequest(page_size=1, page_token=first.next_page_token))
        check("ListTasks page 2", len(second.tasks) == 1 and second.tasks[0].id != first.tasks[0].id)
        check("ListTasks newest first", first.tasks[0].id == ids[0], (first.tasks[0].id, ids[0]))
        in_context = await client_b.list_tasks(ListTasksRequest(context_id=task.context_id, include_artifacts=True))
        check("ListTasks by context", [t.id for t in in_context.tasks] == [task.id]
              and in_context.tasks[0].artifacts == task.artifacts, [t.id for t in in_context.tasks])

        # --- another message in the same context
        again = await send(blocking_a, "once more", context_id=task.context_id)
        check("same context, new task", again.context_id == task.context_id and again.id != task.id, again.id)

        # --- a failing agent
        failed = await send(blocking_a, "fail")
        check("failed task", state(failed) == "TASK_STATE_FAILED"
              and "failed on purpose" in failed.status.message.parts[0].text, failed.status)

        # --- cancel a running task on A while B streams it; the agent sees the cancel
        slow = await send(blocking_a, "slow", immediately=True)
        check("returnImmediately: working", state(slow) == "TASK_STATE_WORKING", state(slow))
        watcher = asyncio.create_task(collect(client_b.subscribe(SubscribeToTaskRequest(id=slow.id))))
        await asyncio.sleep(0.5)
        cancelled = await streaming_a.cancel_task(CancelTaskRequest(id=slow.id))
        check("CancelTask: canceled", state(cancelled) == "TASK_STATE_CANCELED", state(cancelled))
        watched = await asyncio.wait_for(watcher, WAIT)
        wk = [e.WhichOneof("payload") for e in watched]
        check("subscriber on B: task, then CANCELED, then the end", wk[0] == "task" and wk[-1] == "status_update"
              and TaskState.Name(watched[-1].status_update.status.state) == "TASK_STATE_CANCELED", wk)
        try:
            await streaming_a.cancel_task(CancelTaskRequest(id=slow.id))
            check("CancelTask twice refused", False)
        except TaskNotCancelableError as e:
            check("CancelTask twice: TaskNotCancelableError", True, e)
        print(f"CANCELLED {slow.id}", flush=True)

        # --- subscribe from B to a task running from A: nothing missed, nothing twice
        counting = await send(blocking_a, "count 30", immediately=True)
        await asyncio.sleep(1.0)
        seen = await asyncio.wait_for(collect(client_b.subscribe(SubscribeToTaskRequest(id=counting.id))), WAIT)
        tokens = output_tokens(seen)
        check("subscriber joined mid-run", seen[0].WhichOneof("payload") == "task"
              and 0 < len(texts(artifact(seen[0].task, "output").parts)) < 30, seen[0])
        check("no gap, no duplicate", tokens == [f"t{i}" for i in range(1, 31)], tokens)
        check("subscriber saw COMPLETED", TaskState.Name(seen[-1].status_update.status.state) == "TASK_STATE_COMPLETED")
        try:
            await collect(client_b.subscribe(SubscribeToTaskRequest(id=counting.id)))
            check("subscribe to an ended task refused", False)
        except UnsupportedOperationError as e:
            check("subscribe to an ended task: UnsupportedOperationError", True, e)

        # --- one agent's own card and URL
        path = f"/a2a/agents/{AGENT}/agent-card.json"
        own_card = await A2ACardResolver(http, BASE_A, agent_card_path=path).get_agent_card()
        check("agent card interface", own_card.supported_interfaces[0].url == f"{BASE_A}/a2a/agents/{AGENT}")
        check("agent card skills: its tools", [s.id for s in own_card.skills] == ["summarise"], own_card.skills)
        direct = await send(make(http, own_card, False), "direct line")
        check("message to the agent's URL", state(direct) == "TASK_STATE_COMPLETED"
              and direct.metadata["agentId"] == AGENT, direct.metadata)
        extended = await blocking_a.get_extended_agent_card(GetExtendedAgentCardRequest())
        check("GetExtendedAgentCard", AGENT in [s.id for s in extended.skills])

        # --- errors
        for missing in ["nope", f"{task.context_id}~{'0' * 32}"]:
            try:
                await client_b.get_task(GetTaskRequest(id=missing))
                check("unknown task refused", False)
            except TaskNotFoundError as e:
                check(f"GetTask {missing[:12]}…: TaskNotFoundError", True, e)
        reader_client = make(reader_http, card_a, False)
        mine = await reader_client.list_tasks(ListTasksRequest())
        check("another identity lists none of them", len(mine.tasks) == 0, [t.id for t in mine.tasks])
        try:
            await reader_client.get_task(GetTaskRequest(id=task.id))
            check("another identity's GetTask refused", False)
        except TaskNotFoundError:
            check("another identity: TaskNotFoundError", True)
        try:
            await reader_client.send_message(SendMessageRequest(message=user_msg("hi"))).__anext__()
            check("read-only SendMessage refused", False)
        except A2AClientError as e:
            check("read-only SendMessage: HTTP 403", "403" in str(e), e)
        try:
            await make(anonymous, card_a, False).get_task(GetTaskRequest(id=task.id))
            check("no credential refused", False)
        except A2AClientError as e:
            check("no credential: HTTP 401", "401" in str(e), e)
        # Raw, with a client no ClientFactory gave its A2A-Version header.
        body = {"jsonrpc": "2.0", "id": "v", "method": "GetTask", "params": {"id": task.id}}
        async with httpx.AsyncClient(timeout=WAIT) as raw:
            bare = await raw.post(f"{BASE_A}/a2a", json=body)
            check("401 says Bearer", bare.status_code == 401 and bare.headers.get("www-authenticate") == "Bearer",
                  (bare.status_code, bare.headers.get("www-authenticate")))
            unversioned = await raw.post(f"{BASE_A}/a2a", json=body, headers=auth)
            check("no A2A-Version: -32009 with HTTP 200", unversioned.status_code == 200
                  and unversioned.json()["error"]["code"] == -32009, unversioned.text)

        # --- the caller's instance dies mid-stream: the task goes on, and B
        # follows it to its end with nothing missed and nothing twice
        stream = streaming_a.send_message(SendMessageRequest(message=user_msg("count 20")))
        before = []
        async for ev in stream:
            before.append(ev)
            if len(output_tokens(before)) >= 3:
                break
        task_id = before[0].task.id
        os.kill(PID_A, signal.SIGKILL)
        try:
            await asyncio.wait_for(collect(stream), WAIT)
            check("the stream from the killed instance ends in an error", False)
        except Exception as e:  # the connection to A is gone
            check("the stream from the killed instance breaks", True, type(e).__name__)
        seen = await asyncio.wait_for(collect(client_b.subscribe(SubscribeToTaskRequest(id=task_id))), WAIT)
        check("after the kill: B follows the task from its snapshot", seen[0].WhichOneof("payload") == "task"
              and seen[0].task.id == task_id, seen[0])
        tokens = output_tokens(seen)
        check("after the kill: no gap, no duplicate", tokens == [f"t{i}" for i in range(1, 21)], tokens)
        check("after the kill: COMPLETED", TaskState.Name(seen[-1].status_update.status.state)
              == "TASK_STATE_COMPLETED", seen[-1])
        done = await client_b.get_task(GetTaskRequest(id=task_id))
        check("after the kill: GetTask on B", state(done) == "TASK_STATE_COMPLETED"
              and texts(artifact(done, "output").parts) == [f"t{i}" for i in range(1, 21)]
              and texts(artifact(done, "result").parts) == ["counted 20"], done)
    print("ALL PASS", flush=True)


asyncio.run(main())
