"""Sessions and agent runs.

A :class:`Session` is the client's view of a shared session: its events
in ``offset`` order, each once. The owner keeps the ``resume_token`` and
takes the session back after a reconnect (the gateway replays what was
missed before its reply); a member joins again and reads what it missed
from ``session.history``, live events held back meanwhile. When the
gateway's backend lost its state (Redis restarted empty) the log starts
over under a new epoch: the session is read again from the new start and
says so (:attr:`Session.epoch_changed`).

A :class:`Run` is an ``agent.run`` on a session: its ``agent.event``\\ s
(:meth:`Run.events`) and its outcome (:meth:`Run.wait`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ._mailbox import Mailbox
from ._offsets import Admit, Offsets
from .errors import ClientClosedError, QueueOverflowError, RpcError
from .types import SessionEvent

if TYPE_CHECKING:
    from .client import Client

_HISTORY_PAGE = 1000


class Session:
    """A session this client owns or belongs to.

    ``async for event in session`` yields :class:`SessionEvent`\\ s (member
    ``session.event``\\ s and the ``agent.event``\\ s of runs) and ends when
    the session is closed (:attr:`closed_reason`). If the session cannot be
    taken back after a reconnect, iterating raises that :class:`RpcError`.
    """

    def __init__(
        self,
        client: Client,
        session_id: str,
        *,
        owner: bool,
        resume_token: str | None = None,
        offset: int = 0,
    ) -> None:
        self.session_id = session_id
        self.is_owner = owner
        self.resume_token = resume_token
        """The owner's secret to take the session back; keep it private."""
        self.complete = True
        """False once events were lost (trimmed from the log, or lost with
        the backend's state) while away."""
        self.epoch_changed = False
        """True once the backend lost its state (Redis restarted empty) and
        the session's log started over under a new epoch."""
        self.record: dict[str, Any] | None = None
        self.meta: Any = None
        self.closed_reason: str | None = None
        self._client = client
        self._box: Mailbox[SessionEvent] = Mailbox(client.queue_size, f"session {session_id}")
        self._offsets: Offsets[tuple[SessionEvent, dict[str, Any] | None]] = Offsets(offset)

    @property
    def offset(self) -> int:
        """The newest offset received (in the backend's current epoch)."""
        return self._offsets.offset or 0

    @offset.setter
    def offset(self, value: int) -> None:
        self._offsets.offset = value

    def __repr__(self) -> str:
        role = "owner" if self.is_owner else "member"
        return f"<switchyard.Session {self.session_id} {role} offset={self.offset}>"

    # -- the stream

    def __aiter__(self) -> Session:
        return self

    async def __anext__(self) -> SessionEvent:
        return await self._box.get()

    async def next(self, timeout: float | None = None) -> SessionEvent:
        """The next event; :class:`asyncio.TimeoutError` after ``timeout``."""
        try:
            return await self._box.get(timeout)
        except StopAsyncIteration:
            raise ClientClosedError(f"session {self.session_id} ended ({self.closed_reason})") from None

    # -- calls

    async def send(self, event: str, data: Any = None) -> int:
        """Send an event to every member; its offset in the session's log."""
        reply = await self._client.call("session.send", {"sessionId": self.session_id, "event": event, "data": data})
        return int(reply["offset"])

    async def history(
        self, *, since: int = 0, limit: int | None = None, epoch: str | None = None
    ) -> dict[str, Any]:
        """The logged events after ``since``: ``{events, latest, complete,
        more, epoch}``. ``epoch``: the epoch ``since`` belongs to; when the
        log started over since, it is read from its new start
        (``epochChanged: true``)."""
        params: dict[str, Any] = {"sessionId": self.session_id, "since": since}
        if limit is not None:
            params["limit"] = limit
        if epoch is not None:
            params["epoch"] = epoch
        reply: dict[str, Any] = await self._client.call("session.history", params)
        self._client._observe_epoch(reply.get("epoch"), skip=self)
        return reply

    async def get(self) -> dict[str, Any]:
        """The session's record."""
        self.record = await self._client.call("session.get", {"sessionId": self.session_id})
        return self.record

    async def patch(self, meta: dict[str, Any], *, base_version: int | None = None) -> dict[str, Any]:
        """Merge ``meta`` (a JSON merge patch) into the metadata."""
        params: dict[str, Any] = {"sessionId": self.session_id, "meta": meta}
        if base_version is not None:
            params["baseVersion"] = base_version
        self.record = await self._client.call("session.patch", params)
        return self.record

    async def invite(self, *identities: str) -> dict[str, Any]:
        """Let these identities join."""
        self.record = await self._client.call(
            "session.invite", {"sessionId": self.session_id, "identities": list(identities)}
        )
        return self.record

    async def leave(self) -> None:
        """Stop being a member; this client forgets the session."""
        self._client._drop_session(self)
        self._box.close()
        await self._client.call("session.leave", {"sessionId": self.session_id})

    async def close(self) -> None:
        """Close the session for every member (the owner or an admin)."""
        await self._client.call("session.close", {"sessionId": self.session_id})

    # -- used by the client

    def _deliver(
        self, event: SessionEvent, params: dict[str, Any] | None = None, *, replay: bool = False
    ) -> bool:
        """Queue ``event`` unless delivered already; False when it was not
        delivered now (a duplicate, or held back). ``params``: the push it
        came in, handed to the client's listeners once delivered.
        ``replay``: read from the log, delivered at once."""
        admitted = self._offsets.admit(
            event.offset,
            event.timestamp,
            (event, params),
            replay=replay,
            check_epoch=lambda: self._client._check_epoch(session=self),
            holding=lambda: self._client._holding,
            limit=self._client.queue_size,
        )
        if admitted is Admit.OVERFLOW:
            self._box.close(QueueOverflowError(f"session {self.session_id}: too many events while catching up"))
        if admitted is not Admit.DELIVER:
            return False
        self._box.put(event)
        if self._client._epoch is None:
            self._client._learn_epoch(session=self)
        return True

    def _hold(self) -> None:
        self._offsets.holds += 1

    def _release(self) -> None:
        self._offsets.holds = max(self._offsets.holds - 1, 0)
        self._flush()

    def _flush(self) -> None:
        """Deliver what was held back, once nothing holds it any more."""
        if self._offsets.holds or self._client._holding:
            return
        for event, params in self._offsets.release():
            if self._deliver(event, replay=True) and params is not None:
                self._client._emit(event.method, params)

    def _resume_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"sessionId": self.session_id, "resumeToken": self.resume_token, "offset": self.offset}
        if self._client._epoch is not None:
            params["epoch"] = self._client._epoch
        return params

    def _resumed(self, reply: dict[str, Any]) -> None:
        """What ``session.resume`` (or ``connect {resume}``) answered; the
        replayed events are held back until this has run."""
        if reply.get("resumed") is False:
            self._fail(RpcError.from_wire(reply.get("error")))
            return
        self._client._observe_epoch(reply.get("epoch"), skip=self)
        if reply.get("epochChanged"):
            self._start_over()
        if reply.get("complete") is False:
            self.complete = False
        if isinstance(reply.get("session"), dict):
            self.record = reply["session"]

    def _start_over(self) -> None:
        """The log started over under a new epoch: its offsets begin again."""
        self._offsets.start_over()
        self.complete = False
        self.epoch_changed = True

    async def _rejoin(self) -> None:
        self._hold()
        try:
            self.record = await self._client.call("session.join", {"sessionId": self.session_id})
            await self._read_log(self._client._epoch)
        except RpcError as e:
            self._fail(e)
        finally:
            self._release()

    async def _read_log(self, epoch: str | None) -> None:
        """Deliver what the log holds after the newest offset delivered."""
        since = self.offset
        while True:
            page = await self.history(since=since, limit=_HISTORY_PAGE, epoch=epoch)
            if page.get("epochChanged"):
                self._start_over()
            if not page.get("complete", True):
                self.complete = False
            epoch = page.get("epoch") if isinstance(page.get("epoch"), str) else epoch
            events = [SessionEvent.from_params(str(e.get("method")), e) for e in page.get("events", [])]
            for event in events:
                self._deliver(event, replay=True)
            # Entries skipped as delivered already move the read on too.
            if not page.get("more") or not events or events[-1].offset <= since:
                break
            since = events[-1].offset

    def _on_closed(self, reason: str) -> None:
        self.closed_reason = reason
        self._box.close()

    def _fail(self, error: RpcError) -> None:
        self.closed_reason = f"lost: {error.message}"
        self._client._drop_session(self)
        self._box.close(error)


class Run:
    """An agent run (:meth:`Client.run_agent`)."""

    def __init__(self, session: Session, reply: dict[str, Any]) -> None:
        self.session = session
        self.session_id: str = reply["sessionId"]
        self.run_id: str = reply["runId"]
        self.agent_id: str | None = reply.get("agentId")
        self.record: dict[str, Any] | None = None
        """The finished run's record, once :meth:`wait` returned."""

    def __repr__(self) -> str:
        return f"<switchyard.Run {self.run_id} on {self.session_id} by {self.agent_id}>"

    async def wait(self, timeout: float = 600.0, *, follow: bool = True) -> dict[str, Any]:
        """Wait for the run to end: its record (``status``, ``result``, ``error``).

        A run whose agent's instance died ends with ``error.data.reason ==
        "instance_lost"`` and a ``resumableUntil``; its agent may take it
        back meanwhile (``agent.reattach``), after which it ends with its
        own outcome. With ``follow`` (the default) that is waited for too,
        until ``resumableUntil``.
        """
        client = self.session._client
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = max(0.1, deadline - loop.time())
            record: dict[str, Any] = await client.call(
                "agent.wait", {"sessionId": self.session_id, "timeoutMs": int(left * 1000)}, timeout=left + 5.0
            )
            until = _resumable_until(record) if follow else None
            if until is None or time.time() * 1000 >= until or loop.time() >= deadline:
                self.record = record
                return record
            await asyncio.sleep(_FOLLOW_POLL)

    async def cancel(self) -> None:
        """Cancel the run; the agent is told (``agent.cancel``)."""
        await self.session._client.call("agent.cancel", {"sessionId": self.session_id})

    async def events(self, timeout: float = 600.0) -> AsyncIterator[SessionEvent]:
        """The run's ``agent.event``\\ s in order, ending once the run has
        ended and every event it logged was yielded (:attr:`record` is
        then set). Consumes the session's stream while it runs."""
        box = self.session._box
        waiter = asyncio.ensure_future(self.wait(timeout))
        try:
            while True:
                event = box.get_nowait()
                if event is not None:
                    if self._ours(event):
                        yield event
                    continue
                if box.closed and box.error is not None:
                    raise box.error
                if box.closed or waiter.done():
                    break
                woken = asyncio.ensure_future(box.wait())
                try:
                    await asyncio.wait({woken, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
            self.record = await waiter
            # Whatever the log holds that has not arrived live yet.
            while True:
                page = await self.session.history(since=self.session.offset, limit=_HISTORY_PAGE)
                events = [SessionEvent.from_params(str(e.get("method")), e) for e in page.get("events", [])]
                for event in events:
                    self.session._deliver(event, replay=True)
                if not page.get("more") or not events:
                    break
            while (event := box.get_nowait()) is not None:
                if self._ours(event):
                    yield event
        finally:
            if not waiter.done():
                waiter.cancel()

    def _ours(self, event: SessionEvent) -> bool:
        return event.is_agent_event and event.run_id == self.run_id


_FOLLOW_POLL = 0.2
"""How often :meth:`Run.wait` looks at a lost run its agent may take back."""


def _resumable_until(record: dict[str, Any]) -> float | None:
    """``resumableUntil`` (ms) of a run that ended because its agent's
    instance was lost, else None."""
    error = record.get("error")
    data = error.get("data") if isinstance(error, dict) else None
    if record.get("status") != "error" or not isinstance(data, dict) or data.get("reason") != "instance_lost":
        return None
    until = data.get("resumableUntil")
    return float(until) if isinstance(until, (int, float)) else None
