"""Async iterators over pushes: a channel's messages
(:class:`Subscription`) and any notifications (:class:`NotificationStream`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._mailbox import Mailbox
from .types import ChannelMessage, Notification

if TYPE_CHECKING:
    from .client import Client


class Subscription:
    """The messages of one channel, in order, each once — across
    reconnects too (see :meth:`Client.subscribe`).

    ``async for message in subscription`` (ends when the client closes),
    or ``await subscription.next(timeout)``. ``async with`` unsubscribes
    on exit.
    """

    def __init__(self, client: Client, channel: str, queue_size: int) -> None:
        self.channel = channel
        self.recovered: dict[str, Any] | None = None
        """What the latest ``recover`` did: ``{replayed, latest, complete,
        epoch}``, with ``epochChanged: true`` once the backend lost its
        state and the channel's log started over (read again from its new
        start)."""
        self._client = client
        self._box: Mailbox[ChannelMessage] = Mailbox(queue_size, f"subscription {channel}")

    @property
    def offset(self) -> int | None:
        """The newest offset received on a channel that keeps history."""
        state = self._client._channels.get(self.channel)
        return state.offset if state is not None else None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChannelMessage:
        return await self._box.get()

    async def next(self, timeout: float | None = None) -> ChannelMessage:
        """The next message; :class:`asyncio.TimeoutError` after ``timeout``."""
        try:
            return await self._box.get(timeout)
        except StopAsyncIteration:
            from .errors import ClientClosedError

            raise ClientClosedError(f"subscription to {self.channel} ended") from None

    async def unsubscribe(self) -> None:
        """Stop receiving; the channel is left once no subscription of
        this client wants it."""
        await self._client._unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()


class NotificationStream:
    """Pushes as :class:`Notification`\\ s, in arrival order
    (:meth:`Client.notifications`)."""

    def __init__(self, client: Client, methods: frozenset[str] | None, queue_size: int) -> None:
        self.methods = methods
        self._client = client
        self._box: Mailbox[Notification] = Mailbox(queue_size, "notification stream")

    def __aiter__(self) -> NotificationStream:
        return self

    async def __anext__(self) -> Notification:
        return await self._box.get()

    async def next(self, timeout: float | None = None) -> Notification:
        """The next push; :class:`asyncio.TimeoutError` after ``timeout``."""
        try:
            return await self._box.get(timeout)
        except StopAsyncIteration:
            from .errors import ClientClosedError

            raise ClientClosedError("notification stream ended") from None

    def close(self) -> None:
        self._box.close()
        if self in self._client._streams:
            self._client._streams.remove(self)

    async def __aenter__(self) -> NotificationStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
