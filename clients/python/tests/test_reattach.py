"""An agent's gateway instance dies mid-run: the agent reconnects to the
other instance, takes its run back (``agent.reattach``) and finishes it
there; the caller's :meth:`Run.wait` follows the run through the loss.

These tests have their own instances: they kill one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, two_instances, until
from gateway import NODE, WRITER

import switchyard as sy

W = 10.0
FAST = {"backoff_initial": 0.05, "backoff_max": 0.3}


@pytest.fixture(scope="module")
def pair(tmp_root: Path) -> Iterator[Cluster]:
    workdir = tmp_root / "reattach"
    workdir.mkdir()
    with two_instances(workdir, "ra-a", "ra-b") as started:
        yield started


async def test_a_run_goes_on_after_its_agents_instance_dies(pair: Cluster, uid: str) -> None:
    go_on = asyncio.Event()
    cancelled: list[bool] = []

    async def run(task: str, ctx: sy.RequestContext):  # type: ignore[no-untyped-def]
        yield sy.RunEvent("step", {"i": 0})
        yield sy.RunEvent("step", {"i": 1})
        await asyncio.wait_for(go_on.wait(), 3 * W)
        yield sy.RunEvent("step", {"i": 2})
        cancelled.append(ctx.cancelled.is_set())
        yield sy.RunResult({"done": task})

    agent_id = f"phoenix-{uid}"
    async with (
        sy.Agent([pair.b.url, pair.a.url], token=NODE, agent_id=agent_id, run=run, **FAST) as agent,
        sy.Client(pair.a.url, token=WRITER) as op,
    ):
        assert agent.client.info is not None and agent.client.info.node_id == "ra-b"
        run_ = await op.run_agent("keep going", agent_id=agent_id)
        first = [await run_.session.next(W) for _ in range(2)]
        assert [e.data["i"] for e in first] == [0, 1]

        pair.b.kill9()
        try:
            # The agent is back, on the other instance; its run goes on.
            await until(
                lambda: agent.client.connected
                and agent.client.info is not None
                and agent.client.info.node_id == "ra-a",
                "the agent reconnects to the other instance",
            )
            go_on.set()
            # The caller's wait follows the run through the loss.
            record = await run_.wait(6 * W)
            assert record["status"] == "completed", record
            assert record["result"] == {"done": "keep going"}
            assert record["attached"] == 1 and record["instanceId"] == "ra-a", record
            assert record["runId"] == run_.run_id
            last = await run_.session.next(W)
            assert last.data == {"i": 2} and last.offset == first[1].offset + 1
            assert cancelled == [False]
            # The caller can read the end before the agent reads the
            # answer to its agent.finish.
            await until(lambda: agent.in_flight == 0, "the agent's side of the run ends")
        finally:
            pair.b.start()


async def test_without_follow_the_wait_ends_with_the_loss(pair: Cluster, uid: str) -> None:
    started = asyncio.Event()

    async def run(task: str, ctx: sy.RequestContext) -> Any:
        started.set()
        await ctx.cancelled.wait()
        return "never"

    agent_id = f"lost-{uid}"
    await until(pair.b.healthy, "instance b is back")
    async with (
        sy.Agent(pair.b.url, token=NODE, agent_id=agent_id, run=run, max_reconnect_attempts=1, **FAST),
        sy.Client(pair.a.url, token=WRITER) as op,
    ):
        run_ = await op.run_agent("doomed", agent_id=agent_id)
        await asyncio.wait_for(started.wait(), W)
        pair.b.kill9()
        try:
            record = await run_.wait(3 * W, follow=False)
            assert record["status"] == "error", record
            data = record["error"]["data"]
            assert data["reason"] == "instance_lost" and data["instanceId"] == "ra-b", record
            assert data["resumableUntil"] > time.time() * 1000
        finally:
            pair.b.start()
