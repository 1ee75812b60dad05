"""Fixtures: one Redis with two gateway instances on it (``cluster``), and
one standalone instance on the memory backend (``standalone``), started
once for the run and stopped at its end. Tests that kill an instance
start it again before they finish."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

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
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(tmp_root: Path) -> Iterator[Cluster]:
    redis = Redis(tmp_root)
    started: list[Gateway] = []
    try:
        started.append(Gateway("sy-a", tmp_root, redis))
        started.append(Gateway("sy-b", tmp_root, redis))
        yield Cluster(redis, started[0], started[1])
    finally:
        for gw in started:
            gw.stop()
        redis.stop()


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
