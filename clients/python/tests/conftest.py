"""Fixtures: one Redis with two gateway instances on it (``cluster``), and
one standalone instance on the memory backend (``standalone``), started
once for the run and stopped at its end. Tests that kill an instance
start it again before they finish."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

# The tests import the process harness beside them and this checkout's package,
# installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from gateway import Gateway, Redis, workdir


class Cluster:
    def __init__(self, redis: Redis, a: Gateway, b: Gateway) -> None:
        self.redis = redis
        self.a = a
        self.b = b


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    root = workdir()
    yield root
    # SWITCHYARD_TEST_KEEP=1 keeps the gateways' logs (<root>/<test>/*.stderr).
    if os.environ.get("SWITCHYARD_TEST_KEEP"):
        print(f"kept: {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def two_instances(root: Path, a: str, b: str) -> Iterator[Cluster]:
    """A Redis of its own under ``root`` with instances ``a`` and ``b`` on
    it, all stopped when the block ends."""
    redis = Redis(root)
    started: list[Gateway] = []
    try:
        started.append(Gateway(a, root, redis))
        started.append(Gateway(b, root, redis))
        yield Cluster(redis, started[0], started[1])
    finally:
        for gw in started:
            gw.stop()
        redis.stop()


@pytest.fixture(scope="session")
def cluster(tmp_root: Path) -> Iterator[Cluster]:
    with two_instances(tmp_root, "sy-a", "sy-b") as pair:
        yield pair


async def until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` every 20 ms until it holds (at most ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
def standalone(tmp_root: Path) -> Iterator[Gateway]:
    gw = Gateway("sy-solo", tmp_root)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def uid() -> str:
    """A short unique suffix: agent ids, channels and sessions of one test
    never meet another test's."""
    return uuid.uuid4().hex[:8]
