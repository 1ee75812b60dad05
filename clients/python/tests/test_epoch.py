"""Redis restarts empty under two gateway instances: the channel and
session logs start over at offset 1 under a new epoch. A client that had
received offsets 1..N must not take the new log's first N entries for
duplicates, whether its socket stayed up through the restart or it was
away and recovers on reconnect; and it is told that the logs started over.

These tests have their own Redis and instances: they kill that Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, two_instances, until
from gateway import ADMIN, WRITER, Gateway

import switchyard as sy

W = 10.0
FAST = {"backoff_initial": 0.05, "backoff_max": 0.3}


@pytest.fixture(scope="module")
def pair(tmp_root: Path) -> Iterator[Cluster]:
    workdir = tmp_root / "epoch"
    workdir.mkdir()
    with two_instances(workdir, "ep-a", "ep-b") as started:
        yield started


async def restart_redis_empty(pair: Cluster, *gateways: Gateway) -> None:
    """SIGKILL Redis, wait until the instances say they are not ready,
    start it again empty on the same port and wait until they are."""
    pair.redis.kill9()
    for gw in gateways:
        await until(lambda gw=gw: gw.status("/ready") == 503, f"{gw.instance_id}: /ready 503 without Redis")
    pair.redis.start()
    for gw in gateways:
        await until(lambda gw=gw: gw.status("/ready") == 200, f"{gw.instance_id}: /ready 200 with Redis back")


async def publish_all(client: sy.Client, channel: str, data: list[Any]) -> list[int]:
    return [(await client.publish(channel, d))["offset"] for d in data]


async def nothing_more(*streams: sy.Subscription | sy.Session) -> None:
    """Nothing else is queued on any of ``streams`` (no duplicate)."""
    await asyncio.sleep(0.3)
    for stream in streams:
        assert len(stream._box) == 0, f"{stream!r} has more queued"


async def test_a_connected_subscriber_and_member_get_the_new_log_once(pair: Cluster, uid: str) -> None:
    channel = f"feed:live-{uid}"
    async with (
        sy.Client(pair.a.url, token=WRITER, **FAST) as reader,
        sy.Client(pair.b.url, token=ADMIN, **FAST) as writer,
    ):
        sub = await reader.subscribe(channel)
        owned = await reader.create_session(f"live-{uid}")
        member = await writer.join_session(owned.session_id)

        assert await publish_all(writer, channel, [f"old-{n}" for n in range(1, 6)]) == [1, 2, 3, 4, 5]
        got = [await sub.next(W) for _ in range(5)]
        assert [(m.offset, m.data) for m in got] == [(n, f"old-{n}") for n in range(1, 6)]
        for n in (1, 2):
            await member.send("step", f"old-{n}")
        assert [(await owned.next(W)).data for _ in range(2)] == ["old-1", "old-2"]
        # The client learnt the epoch its offsets belong to.
        await until(lambda: reader.epoch is not None, "the reader learns the epoch")
        before = reader.epoch

        await restart_redis_empty(pair, pair.a, pair.b)
        # The sockets stayed up through the restart.
        assert reader.reconnects == 0 and writer.reconnects == 0

        # The new log numbers from 1 again: offsets the reader has passed.
        assert await publish_all(writer, channel, ["new-1", "new-2", "new-3"]) == [1, 2, 3]
        await until_sent(member, "new-1")
        for n in (2, 3):
            await member.send("step", f"new-{n}")

        got = [await sub.next(W) for _ in range(3)]
        assert [(m.offset, m.data) for m in got] == [(1, "new-1"), (2, "new-2"), (3, "new-3")]
        got_events = [await owned.next(W) for _ in range(3)]
        assert [e.data for e in got_events] == ["new-1", "new-2", "new-3"]
        assert sub.offset == 3
        # Told that the logs started over.
        assert reader.epoch is not None and reader.epoch != before
        assert reader.epoch_changes == 1
        assert sub.recovered is not None and sub.recovered["epochChanged"] is True, sub.recovered
        assert sub.recovered["complete"] is False and sub.recovered["epoch"] == reader.epoch
        assert owned.epoch_changed and not owned.complete

        # Live delivery carries on, once.
        assert await publish_all(writer, channel, ["new-4"]) == [4]
        assert (await sub.next(W)).offset == 4
        await member.send("step", "new-4")
        assert (await owned.next(W)).data == "new-4"
        await nothing_more(sub, owned)
        assert reader.epoch_changes == 1


async def test_epoch_changed_resets_a_connected_subscriber_and_member_before_any_publication(
    pair: Cluster, uid: str
) -> None:
    """The instance pushes ``epoch.changed`` once it sees the new epoch: the
    client reads its logs again at once, without waiting for a publication
    behind its offsets, reports the reset, and hands the push to the
    application; the channel's new log, numbered from 1 again, then
    arrives once."""
    channel = f"feed:pushed-{uid}"
    async with (
        sy.Client(pair.a.url, token=WRITER, **FAST) as reader,
        sy.Client(pair.b.url, token=ADMIN, **FAST) as writer,
    ):
        pushes = reader.notifications("epoch.changed")
        sub = await reader.subscribe(channel, recover="latest")
        owned = await writer.create_session(f"pushed-{uid}", invite=["writer"])
        member = await reader.join_session(owned.session_id)
        before = reader.epoch
        assert before is not None

        assert await publish_all(writer, channel, [f"old-{n}" for n in range(1, 6)]) == [1, 2, 3, 4, 5]
        assert [(await sub.next(W)).offset for _ in range(5)] == [1, 2, 3, 4, 5]
        for n in (1, 2, 3):
            await owned.send("step", f"old-{n}")
        assert [(await member.next(W)).data for _ in range(3)] == ["old-1", "old-2", "old-3"]
        assert member.offset == 3

        await restart_redis_empty(pair, pair.a, pair.b)
        assert reader.reconnects == 0 and writer.reconnects == 0

        # The push reached the application, naming the new epoch.
        note = await pushes.next(W)
        assert note.method == "epoch.changed"
        assert isinstance(note.params["epoch"], str) and note.params["epoch"] != before
        # The reset is reported with nothing published yet.
        await until(
            lambda: sub.recovered is not None and sub.recovered.get("epochChanged") is True,
            "the subscription reports the reset",
        )
        assert reader.epoch == note.params["epoch"]
        assert sub.recovered["complete"] is False and sub.recovered["epoch"] == reader.epoch
        assert sub.offset == 0
        assert member.epoch_changed and not member.complete and member.offset == 0
        assert reader.epoch_changes == 1

        # Offsets 1-3 again, all at or below what the reader had: delivered.
        assert await publish_all(writer, channel, ["new-1", "new-2", "new-3"]) == [1, 2, 3]
        await until_sent(owned, "new-1")
        for n in (2, 3):
            await owned.send("step", f"new-{n}")
        got = [await sub.next(W) for _ in range(3)]
        assert [(m.offset, m.data) for m in got] == [(1, "new-1"), (2, "new-2"), (3, "new-3")]
        # The owner's instance wrote the session back numbering past the
        # lost events: they arrive in order, once.
        got_events = [await member.next(W) for _ in range(3)]
        assert [e.data for e in got_events] == ["new-1", "new-2", "new-3"]
        assert [e.offset for e in got_events] == sorted({e.offset for e in got_events})
        await nothing_more(sub, member)

        # A push naming the epoch the client has changes nothing.
        reader._dispatch({"jsonrpc": "2.0", "method": "epoch.changed", "params": {"epoch": reader.epoch}}, 0)
        assert not reader._holding
        assert (await pushes.next(W)).params["epoch"] == reader.epoch
        assert reader.epoch_changes == 1
        assert await publish_all(writer, channel, ["new-4"]) == [4]
        assert (await sub.next(W)).offset == 4
        await nothing_more(sub, member)
        pushes.close()


async def test_a_subscriber_away_during_the_restart_recovers_the_new_log(pair: Cluster, uid: str) -> None:
    channel = f"feed:away-{uid}"
    async with sy.Client(pair.b.url, token=ADMIN, **FAST) as writer:
        reader = await sy.Client(pair.a.url, token=WRITER, **FAST).connect()
        try:
            sub = await reader.subscribe(channel, recover="latest")
            before = reader.epoch
            assert before is not None
            await publish_all(writer, channel, [f"old-{n}" for n in range(1, 5)])
            assert [(await sub.next(W)).offset for _ in range(4)] == [1, 2, 3, 4]

            pair.a.kill9()
            try:
                await until(lambda: not reader.connected, "the reader sees the drop")
                await restart_redis_empty(pair, pair.b)
                # Published while the reader has no connection: offsets 1-3
                # of the new log, all at or below the 4 it has.
                assert await publish_all(writer, channel, ["new-1", "new-2", "new-3"]) == [1, 2, 3]
            finally:
                pair.a.start()
            await reader.wait_connected(W)
            assert reader.reconnects == 1

            # Recovered with the old epoch: the reply said the log started
            # over, and the replay from its start was not dropped.
            got = [await sub.next(W) for _ in range(3)]
            assert [(m.offset, m.data) for m in got] == [(1, "new-1"), (2, "new-2"), (3, "new-3")]
            assert sub.recovered is not None
            assert sub.recovered["epochChanged"] is True and sub.recovered["complete"] is False, sub.recovered
            assert sub.recovered["replayed"] == 3
            assert reader.epoch is not None and reader.epoch != before
            assert reader.epoch_changes == 1

            # Offset 4 of the new log is new too.
            assert await publish_all(writer, channel, ["new-4"]) == [4]
            assert (await sub.next(W)).data == "new-4"
            await nothing_more(sub)

            # A position kept from before (offset 4 of the old epoch), given
            # back by another client: the new log from its start.
            async with sy.Client(pair.b.url, token=WRITER) as other:
                again = await other.subscribe(channel, recover=4, epoch=before)
                assert again.recovered is not None and again.recovered["epochChanged"] is True
                got = [await again.next(W) for _ in range(4)]
                assert [m.data for m in got] == ["new-1", "new-2", "new-3", "new-4"]
                await nothing_more(again)
        finally:
            await reader.close()


async def test_an_owner_away_during_the_restart_resumes_once(pair: Cluster, uid: str) -> None:
    """The owner's instance keeps the session through the restart and
    writes it back; the owner, away afterwards, resumes it with the old
    epoch and gets what was sent meanwhile, once."""
    async with sy.Client(pair.b.url, token=ADMIN, **FAST) as member_client:
        owner = await sy.Client(pair.a.url, token=WRITER, **FAST).connect()
        try:
            session = await owner.create_session(f"away-{uid}")
            member = await member_client.join_session(session.session_id)
            for n in (1, 2, 3):
                await member.send("step", f"old-{n}")
            assert [(await session.next(W)).offset for _ in range(3)] == [1, 2, 3]
            await until(lambda: owner.epoch is not None, "the owner learns the epoch")
            before = owner.epoch

            await restart_redis_empty(pair, pair.a, pair.b)
            # Written back by the owner's instance; sent on the new log.
            await until_sent(member, "new-1")
            assert (await session.next(W)).data == "new-1"

            pair.a.kill9()
            try:
                await until(lambda: not owner.connected, "the owner sees the drop")
                for n in (2, 3):
                    await member.send("step", f"new-{n}")
            finally:
                pair.a.start()
            await owner.wait_connected(W)

            got = [await session.next(W) for _ in range(2)]
            assert [e.data for e in got] == ["new-2", "new-3"]
            assert owner.epoch is not None and owner.epoch != before
            assert session.epoch_changed and not session.complete
            await member.send("step", "new-4")
            assert (await session.next(W)).data == "new-4"
            await nothing_more(session)
        finally:
            await owner.close()


async def until_sent(member: sy.Session, data: str) -> None:
    """Send once the session is back in Redis (its owner's instance writes
    it back within a heartbeat of Redis returning)."""
    deadline = time.monotonic() + W
    while True:
        try:
            await member.send("step", data)
            return
        except (sy.NotFound, sy.Forbidden, sy.Unavailable):
            assert time.monotonic() < deadline, "the session is not back within 10 s"
            await asyncio.sleep(0.05)
