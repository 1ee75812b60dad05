"""A bounded, closable queue that the reader task fills without ever
blocking: the consumer gets the items in order, then either the end of the
stream or the error that closed it. A full mailbox closes itself with
:class:`QueueOverflowError` rather than stall every other consumer."""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

from .errors import QueueOverflowError

T = TypeVar("T")


class Mailbox(Generic[T]):
    def __init__(self, maxsize: int, what: str) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: collections.deque[T] = collections.deque()
        self._maxsize = maxsize
        self._what = what
        self._waker = asyncio.Event()
        self._closed = False
        self._error: BaseException | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def error(self) -> BaseException | None:
        """What closed the mailbox, if it was not a clean end."""
        return self._error

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue ``item``; False when closed (or just closed by overflow)."""
        if self._closed:
            return False
        if len(self._items) >= self._maxsize:
            self.close(QueueOverflowError(f"{self._what}: more than {self._maxsize} queued, consumer too slow"))
            return False
        self._items.append(item)
        self._waker.set()
        return True

    def close(self, error: BaseException | None = None) -> None:
        """End the stream after the queued items; ``error`` is raised then."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._waker.set()

    async def wait(self) -> None:
        """Return once an item is queued or the mailbox is closed."""
        while not self._items and not self._closed:
            self._waker.clear()
            await self._waker.wait()

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    async def get(self, timeout: float | None = None) -> T:
        """The next item; :class:`StopAsyncIteration` at a clean end, the
        closing error otherwise, :class:`asyncio.TimeoutError` after ``timeout``."""
        while True:
            if self._items:
                return self._items.popleft()
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waker.clear()
            if timeout is None:
                await self._waker.wait()
            else:
                await asyncio.wait_for(self._waker.wait(), timeout)
