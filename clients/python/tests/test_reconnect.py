"""The instance a client is on is SIGKILLed and started again: the client
reconnects by itself, the agent registers again and serves, the
subscription carries on without gap or duplicate, and sessions are taken
back (owner) or rejoined (member) with every event once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import Cluster, until
from gateway import ADMIN, NODE, WRITER, Gateway

import switchyard as sy

W = 10.0


@contextmanager
def killed(gw: Gateway) -> Iterator[None]:
    """SIGKILL ``gw`` for the body of the block, then start it again (also
    when the block fails, so that later tests find it up)."""
    gw.kill9()
    try:
        yield
    finally:
        gw.start()


async def test_agent_and_subscription_survive_an_instance_kill(cluster: Cluster, uid: str) -> None:
    calls: list[int] = []

    async def ping(args: Any, ctx: sy.RequestContext) -> Any:
        calls.append(args["n"])
        return {"pong": args["n"]}

    hanging = asyncio.Event()
    dropped: list[bool] = []

    async def hang(args: Any, ctx: sy.RequestContext) -> Any:
        hanging.set()
        await asyncio.wait_for(ctx.cancelled.wait(), W)
        dropped.append(await ctx.progress("too late"))
        return "never delivered"

    agent_id = f"survivor-{uid}"
    channel = f"feed:{uid}"
    fast = {"backoff_initial": 0.05, "backoff_max": 0.5}
    tools = [sy.Tool("ping", "Pong", {"type": "object"}, ping), sy.Tool("hang", "Hangs", {"type": "object"}, hang)]
    async with (
        sy.Agent(cluster.a.url, token=NODE, agent_id=agent_id, tools=tools, **fast) as agent,
        sy.Client(cluster.a.url, token=WRITER, **fast) as subscriber,
        sy.Client(cluster.b.url, token=WRITER) as op,
    ):
        sub = await subscriber.subscribe(channel, recover="latest")
        await op.publish(channel, {"n": 1})
        assert (await sub.next(W)).offset == 1
        assert (await op.invoke("ping", {"n": 1}, node_id=agent_id)).result == {"pong": 1}

        # The instance comes back under its own id before the survivors
        # reap it: the call still ends as lost, long before its timeout.
        stuck = asyncio.ensure_future(op.invoke("hang", {}, node_id=agent_id, timeout=60))
        await asyncio.wait_for(hanging.wait(), W)

        with killed(cluster.a):
            await until(lambda: not subscriber.connected and not agent.client.connected, "both see the drop")
            # The request in flight is given up: its handler hears so, and
            # nothing it sends goes out on a later connection.
            await until(lambda: dropped == [False], "the handler sees the drop")
            # Published while the subscriber has no connection at all.
            for n in (2, 3):
                await op.publish(channel, {"n": n})
        await agent.client.wait_connected(W)
        await subscriber.wait_connected(W)
        assert agent.client.reconnects == 1 and subscriber.reconnects == 1
        assert agent.client.info is not None and agent.client.info.node_id == "sy-a"

        # Recovered from offset 1: the two it missed, then live ones.
        await op.publish(channel, {"n": 4})
        got = [await sub.next(W) for _ in range(3)]
        assert [(m.offset, m.data["n"]) for m in got] == [(2, 2), (3, 3), (4, 4)]
        assert sub.recovered is not None and sub.recovered["complete"] is True
        assert sub.recovered["replayed"] == 2

        # Registered again under the same id, on the restarted instance.
        entry = await op.call("agents.get", {"agentId": agent_id})
        assert entry["online"] is True and entry["instanceId"] == "sy-a", entry
        assert entry["connId"] == agent.client.info.conn_id
        assert (await op.invoke("ping", {"n": 2}, node_id=agent_id, timeout=W)).result == {"pong": 2}
        assert calls == [1, 2]
        # The caller of the call that was in flight got an error, never an
        # answer: instance_lost, not its timeout.
        with pytest.raises(sy.Unavailable):
            await asyncio.wait_for(stuck, W)
        assert agent.in_flight == 0
        # Nothing was delivered twice.
        await op.publish(channel, {"n": 5})
        assert (await sub.next(W)).offset == 5
        assert len(sub._box) == 0


async def test_sessions_resume_without_gap_after_an_instance_kill(cluster: Cluster, uid: str) -> None:
    fast = {"backoff_initial": 0.05, "backoff_max": 0.5}
    async with (
        sy.Client(cluster.a.url, token=WRITER, **fast) as owner,
        sy.Client(cluster.a.url, token=ADMIN, **fast) as member_a,
        sy.Client(cluster.b.url, token=ADMIN) as member_b,
    ):
        owned = await owner.create_session(f"job-{uid}")
        second = await owner.create_session(f"job2-{uid}")
        joined = await member_a.join_session(owned.session_id)
        sender = await member_b.join_session(owned.session_id)
        sender2 = await member_b.join_session(second.session_id)
        for n in (1, 2):
            await sender.send("step", n)
        for s in (owned, joined):
            assert [(await s.next(W)).offset for _ in range(2)] == [1, 2]

        with killed(cluster.a):
            await until(lambda: not owner.connected and not member_a.connected, "both see the drop")
            for n in (3, 4, 5):
                await sender.send("step", n)
            await sender2.send("other", 1)
        await owner.wait_connected(W)
        await member_a.wait_connected(W)
        await sender.send("step", 6)

        # The owner took both sessions back (connect {resume} and
        # session.resume), the member joined again and read the history.
        for s in (owned, joined):
            got = [await s.next(W) for _ in range(4)]
            assert [(e.offset, e.data) for e in got] == [(3, 3), (4, 4), (5, 5), (6, 6)], s
            assert s.complete
        got2 = await second.next(W)
        assert (got2.offset, got2.event) == (1, "other")

        record = await owner.call("session.get", {"sessionId": owned.session_id})
        assert owner.info is not None and record["owner"] == owner.info.conn_id
        assert member_a.info is not None and member_a.info.conn_id in record["members"]
        # Nothing more is queued: no duplicate of what was replayed.
        await sender.send("step", 7)
        for s in (owned, joined):
            assert (await s.next(W)).offset == 7
            assert len(s._box) == 0


async def test_failover_to_another_url_and_giving_up(cluster: Cluster, uid: str) -> None:
    """With several URLs the client moves to a live instance; with none
    reachable it gives up after its attempts and says so."""
    fast = {"backoff_initial": 0.05, "backoff_max": 0.2}
    async with sy.Client([cluster.a.url, cluster.b.url], token=WRITER, **fast) as roaming:
        assert roaming.info is not None and roaming.info.node_id == "sy-a"
        sub = await roaming.subscribe(f"feed:roam-{uid}", recover="latest")
        with killed(cluster.a):
            await until(lambda: roaming.connected and roaming.reconnects == 1, "moved to sy-b")
            assert roaming.info.node_id == "sy-b"
            async with sy.Client(cluster.b.url, token=WRITER) as pub:
                await pub.publish(f"feed:roam-{uid}", "x")
            assert (await sub.next(W)).data == "x"

        # Reachable at none of its URLs: it gives up after its attempts.
        lonely = await sy.Client(cluster.a.url, token=WRITER, max_reconnect_attempts=2, **fast).connect()
        with killed(cluster.a):
            reason = await asyncio.wait_for(lonely.wait_closed(), W)
        assert isinstance(reason, sy.ClientClosedError) and "gave up" in str(reason), reason
        assert lonely.closed
        with pytest.raises(sy.ClientClosedError):
            await lonely.call("ping")


async def test_a_kicked_client_does_not_come_back(cluster: Cluster) -> None:
    client = await sy.Client(cluster.b.url, token=WRITER, backoff_initial=0.05).connect()
    stream = client.notifications()
    async with sy.Client(cluster.b.url, token=ADMIN) as admin:
        assert client.info is not None
        await admin.call("client.kick", {"connId": client.info.conn_id, "reason": "test"})
    reason = await asyncio.wait_for(client.wait_closed(), W)
    assert isinstance(reason, sy.ClientClosedError) and "4003" in str(reason), reason
    assert client.reconnects == 0
    with pytest.raises(sy.ClientClosedError):
        await stream.next(W)


async def test_graceful_shutdown_moves_an_agent_to_another_instance(cluster: Cluster, uid: str) -> None:
    async def whoami(args: Any, ctx: sy.RequestContext) -> Any:
        return ctx.client.info.node_id if ctx.client.info else None

    agent_id = f"mover-{uid}"
    tool = sy.Tool("whoami", "The instance serving", {"type": "object"}, whoami)
    async with (
        sy.Agent([cluster.a.url, cluster.b.url], token=NODE, agent_id=agent_id, tools=[tool], backoff_max=0.5) as agent,
        sy.Client(cluster.b.url, token=WRITER) as op,
    ):
        told: list[sy.Notification] = []
        agent.client.on("shutdown", told.append)
        assert (await op.invoke("whoami", {}, node_id=agent_id)).result == "sy-a"
        try:
            await asyncio.to_thread(cluster.a.terminate)
            await agent.client.wait_connected(W)
            assert [n.params["reason"] for n in told] and told[0].params["reconnectAfterMs"] >= 0
            assert agent.client.info is not None and agent.client.info.node_id == "sy-b"
            assert (await op.invoke("whoami", {}, node_id=agent_id, timeout=W)).result == "sy-b"
        finally:
            cluster.a.start()
