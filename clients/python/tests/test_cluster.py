"""Two gateway instances on one Redis: an agent connected to instance B
serves an operator connected to instance A."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Cluster
from gateway import ADMIN, NODE, WRITER

import switchyard as sy

W = 10.0


async def test_tool_on_b_invoked_from_a_with_progress(cluster: Cluster, uid: str) -> None:
    async def count(args: Any, ctx: sy.RequestContext) -> Any:
        for i in range(1, args["to"] + 1):
            assert await ctx.progress({"step": i})
        return {"counted": args["to"], "by": ctx.caller["identity"]}

    tool = sy.Tool("count", "Counts, reporting each step", {"type": "object"}, count)
    async with (
        sy.Agent(cluster.b.url, token=NODE, agent_id=f"counter-{uid}", tools=[tool]),
        sy.Client(cluster.a.url, token=WRITER) as op,
    ):
        assert op.info is not None and op.info.node_id == "sy-a"
        steps: list[Any] = []
        done = await op.invoke("count", {"to": 3}, node_id=f"counter-{uid}", on_progress=steps.append)
        assert done.result == {"counted": 3, "by": "writer"}
        assert done.node_id == f"counter-{uid}"
        # Every progress update reached the caller before the reply.
        assert steps == [{"step": 1}, {"step": 2}, {"step": 3}]


async def test_cancellation_reaches_the_handler(cluster: Cluster, uid: str) -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def slow(args: Any, ctx: sy.RequestContext) -> Any:
        started.set()
        try:
            await asyncio.wait_for(ctx.cancelled.wait(), W)
            outcome.append("cancelled")
        except asyncio.TimeoutError:
            outcome.append("not cancelled")
        return "late"

    tool = sy.Tool("slow", "Waits to be cancelled", {"type": "object"}, slow)
    async with (
        sy.Agent(cluster.b.url, token=NODE, agent_id=f"slow-{uid}", tools=[tool]) as agent,
        sy.Client(cluster.a.url, token=WRITER) as op,
    ):
        call = asyncio.ensure_future(op.invoke("slow", {}, node_id=f"slow-{uid}", invoke_id=f"inv-{uid}", timeout=W))
        await asyncio.wait_for(started.wait(), W)
        await op.cancel_invoke(f"inv-{uid}")
        with pytest.raises(sy.RpcTimeout) as e:
            await asyncio.wait_for(call, W)
        assert e.value.code == -32006 and e.value.data.get("cancelled") is True, e.value
        for _ in range(100):
            if outcome:
                break
            await asyncio.sleep(0.05)
        assert outcome == ["cancelled"]
        assert agent.in_flight == 0


async def test_approval_gated_tool_waits_for_an_operator(cluster: Cluster, uid: str) -> None:
    ran: list[Any] = []

    async def wipe(args: Any, ctx: sy.RequestContext) -> Any:
        ran.append(args)
        assert ctx.approval is not None
        return {"wiped": args["disk"], "approvedBy": ctx.approval.decided_by}

    tool = sy.Tool(
        "wipe",
        "Wipes a disk",
        {"type": "object", "properties": {"disk": {"type": "string"}}},
        wipe,
        needs_approval=True,
        summary=lambda args: f"wipe {args['disk']}",
    )
    agent_id = f"wiper-{uid}"
    async with (
        sy.Agent(cluster.b.url, token=NODE, agent_id=agent_id, tools=[tool]),
        sy.Client(cluster.a.url, token=ADMIN) as approver,
        sy.Client(cluster.a.url, token=WRITER) as op,
    ):
        requested = approver.notifications("approval.requested")

        # Approved: the tool runs and says who approved.
        call = asyncio.ensure_future(op.invoke("wipe", {"disk": "sda"}, node_id=agent_id))
        asked = await requested.next(W)
        assert asked.params["tool"] == "wipe" and asked.params["summary"] == "wipe sda"
        assert asked.params["args"] == {"disk": "sda"} and asked.params["requester"] == "node-1"
        pending = await approver.approvals()
        assert asked.params["approvalId"] in [a.approval_id for a in pending]
        assert ran == []
        decided = await approver.resolve_approval(asked.params["approvalId"], True, note="ok")
        assert decided.approved and decided.decided_by == "admin"
        assert (await asyncio.wait_for(call, W)).result == {"wiped": "sda", "approvedBy": "admin"}
        with pytest.raises(sy.Conflict):
            await approver.resolve_approval(asked.params["approvalId"], False)

        # Denied: the handler never runs and the caller gets -32003.
        call = asyncio.ensure_future(op.invoke("wipe", {"disk": "sdb"}, node_id=agent_id))
        asked = await requested.next(W)
        await approver.resolve_approval(asked.params["approvalId"], False, note="no")
        with pytest.raises(sy.Forbidden) as denied:
            await asyncio.wait_for(call, W)
        assert denied.value.data["status"] == "denied"
        assert ran == [{"disk": "sda"}]
        history = await approver.call("approval.history", {"limit": 10})
        mine = [e for e in history["entries"] if e["tool"] == "wipe" and e["args"]["disk"] in ("sda", "sdb")]
        assert {(e["args"]["disk"], e["status"], e["note"]) for e in mine} >= {
            ("sda", "approved", "ok"),
            ("sdb", "denied", "no"),
        }


async def test_agent_run_streams_events_across_instances(cluster: Cluster, uid: str) -> None:
    async def run(task: str, ctx: sy.RequestContext):  # type: ignore[no-untyped-def]
        for i, word in enumerate(task.split()):
            yield sy.RunEvent("token", {"i": i, "text": word})
        yield ("done", {"words": len(task.split())})
        yield sy.RunResult({"output": task.upper()})

    agent_id = f"runner-{uid}"
    async with (
        sy.Agent(cluster.b.url, token=NODE, agent_id=agent_id, run=run),
        sy.Client(cluster.a.url, token=WRITER) as op,
    ):
        run_ = await op.run_agent("stream these five words now", agent_id=agent_id)
        assert run_.agent_id == agent_id and run_.session.is_owner and run_.session.resume_token
        events = [e async for e in run_.events(timeout=W)]
        assert [e.event for e in events] == ["token"] * 5 + ["done"]
        assert [e.data["text"] for e in events[:5]] == ["stream", "these", "five", "words", "now"]
        assert [e.offset for e in events] == list(range(1, 7))
        assert all(e.run_id == run_.run_id and e.agent_id == agent_id for e in events)
        assert run_.record is not None and run_.record["status"] == "completed"
        assert run_.record["result"] == {"output": "STREAM THESE FIVE WORDS NOW"}
        # The log holds the same stream for anyone reading it later.
        page = await run_.session.history()
        assert [e["type"] for e in page["events"]] == ["token"] * 5 + ["done"]


async def test_run_cancel_reaches_the_run_handler(cluster: Cluster, uid: str) -> None:
    started = asyncio.Event()

    async def run(task: str, ctx: sy.RequestContext) -> Any:
        started.set()
        await asyncio.wait_for(ctx.cancelled.wait(), W)
        raise sy.RpcError(-32000, "cancelled")

    async with (
        sy.Agent(cluster.b.url, token=NODE, agent_id=f"canc-{uid}", run=run),
        sy.Client(cluster.a.url, token=WRITER) as op,
    ):
        run_ = await op.run_agent("wait", agent_id=f"canc-{uid}")
        await asyncio.wait_for(started.wait(), W)
        await run_.cancel()
        record = await run_.wait(timeout=W)
        assert record["status"] == "cancelled", record


async def test_channels_across_instances(cluster: Cluster, uid: str) -> None:
    async with sy.Client(cluster.a.url, token=WRITER) as sub_client, sy.Client(cluster.b.url, token=WRITER) as pub:
        plain = await sub_client.subscribe(f"public:{uid}")
        logged = await sub_client.subscribe(f"feed:{uid}", recover="latest")
        for n in range(1, 4):
            await pub.publish(f"public:{uid}", {"n": n}, event="tick")
            assert (await pub.publish(f"feed:{uid}", {"n": n}))["offset"] == n
        got = [await plain.next(W) for _ in range(3)]
        assert [(m.event, m.data["n"], m.offset) for m in got] == [
            ("tick", 1, None),
            ("tick", 2, None),
            ("tick", 3, None),
        ]
        got = [await logged.next(W) for _ in range(3)]
        assert [(m.data["n"], m.offset) for m in got] == [(1, 1), (2, 2), (3, 3)]


async def test_session_members_on_both_instances(cluster: Cluster, uid: str) -> None:
    async with sy.Client(cluster.a.url, token=WRITER) as owner, sy.Client(cluster.b.url, token=ADMIN) as member:
        session = await owner.create_session(f"shared-{uid}")
        joined = await member.join_session(session.session_id)
        await session.send("a", 1)
        await joined.send("b", 2)
        for s in (session, joined):
            got = [await s.next(W) for _ in range(2)]
            assert [(e.offset, e.event, e.data) for e in got] == [(1, "a", 1), (2, "b", 2)]
