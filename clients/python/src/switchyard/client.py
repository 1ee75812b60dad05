"""The connection to a Switchyard gateway: JSON-RPC calls, server pushes,
channel subscriptions, sessions, and reconnecting without losing any of
them.

One reader task reads the socket. Replies complete the matching
:meth:`Client.call`; pushes go to whatever asked for them (a
:class:`~switchyard.Subscription`, a :class:`~switchyard.Session`, an
``invoke.progress`` callback) and to the generic callbacks
(:meth:`Client.on`) and streams (:meth:`Client.notifications`). Nothing the
reader hands on can block it: every queue is bounded and a consumer that
falls behind gets :class:`~switchyard.QueueOverflowError` instead.

When the connection drops, a supervisor task reconnects with exponential
backoff (to the next URL when several are given), authenticates again in
``connect``, runs the restore hooks (an :class:`~switchyard.Agent`
registers again there), takes owned sessions back (``connect {resume}`` /
``session.resume``: what was missed is replayed before the reply), joins
the other sessions again and reads what they missed from
``session.history``, and subscribes again to every channel, with
``recover`` where the channel numbers its publications. Offsets already
seen are dropped, so consumers see every event once, in order.

Offsets belong to the epoch of the gateway's backend, which every log read
names. When Redis restarts empty the logs start over at 1 under a new
epoch. The client keeps the epoch it last saw and sends it with every
``recover``, resume and history read after a reconnect. On a connection
that stays up, two things make it ask for the current epoch, holding
pushes back meanwhile: the gateway's ``epoch.changed`` push (unless it
names the epoch the client has), and a live push whose offset was already
passed, yet which was never delivered. Once the epoch changed, every
channel and session starts over from offset 0 and is read again from the
new log's start, skipping what was already delivered.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import json
import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import __version__
from ._offsets import Admit, Offsets
from ._transport import ConnectionClosed, Socket, check_url, close_code, open_socket
from .errors import (
    CallTimeoutError,
    ClientClosedError,
    ConnectError,
    ConnectionLostError,
    Forbidden,
    FrameTooLargeError,
    InternalError,
    QueueOverflowError,
    RateLimited,
    RpcError,
    SwitchyardError,
    Unauthorized,
)
from .sessions import Run, Session
from .subscriptions import NotificationStream, Subscription
from .types import Approval, ChannelMessage, ConnectionInfo, InvokeResult, Notification, SessionEvent

log = logging.getLogger("switchyard")

Callback = Callable[[Notification], Awaitable[None] | None]
RestoreHook = Callable[[], Awaitable[None]]

# Close codes after which reconnecting would be wrong: kicked or revoked.
_TERMINAL_CLOSE_CODES = frozenset({4003})
# A live push behind the newest offset makes the client ask for the epoch;
# after an answer that it did not change, such pushes are dropped for this
# long without asking again.
_EPOCH_QUIET = 1.0
# Pages read to catch a channel up after its log started over (of 1000
# entries: more than a channel keeps).
_LOG_PAGES = 101
_HISTORY_PAGE = 1000
# Session events kept for sessions this client has no object for yet (an
# `agent.run` whose agent streams before the reply arrives).
_ORPHAN_SESSIONS = 64
_ORPHAN_EVENTS = 256

# Set while a connection restores its state: calls from that task (and
# the hooks it runs) go out before the connection is declared ready.
_restoring: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "switchyard_restoring", default=None
)


@dataclass
class ServerRequest:
    """A request the gateway sent this connection (``srv-N``)."""

    id: str
    method: str
    params: dict[str, Any]
    generation: int
    """The connection it came on; an answer on a later one is dropped."""


@dataclass
class _Channel:
    name: str
    history: bool = False
    subs: list[Subscription] = field(default_factory=list)
    offsets: Offsets[tuple[ChannelMessage, dict[str, Any] | None]] = field(default_factory=Offsets)

    @property
    def offset(self) -> int | None:
        """Newest offset seen (channels with history)."""
        return self.offsets.offset


class Client:
    """A connection to the gateway that stays up.

    ``url`` is one ``ws://``/``wss://`` URL or several (instances of one
    cluster, tried in turn when reconnecting). At most one of ``token``,
    ``api_key`` and ``password`` is sent, in-band in ``connect``, never in
    the URL. ``role="node"`` acts as a node (an :class:`Agent` sets it).

    Use as ``async with Client(url, token=...) as client:`` or call
    :meth:`connect` and :meth:`close` yourself.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | None = None,
        api_key: str | None = None,
        password: str | None = None,
        role: Literal["operator", "node"] | None = None,
        client_name: str = "switchyard-python",
        client_version: str = __version__,
        reconnect: bool = True,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        max_reconnect_attempts: int | None = None,
        call_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        queue_size: int = 1024,
        max_message_size: int = 16 * 1024 * 1024,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("at least one URL")
        self._urls = [check_url(u) for u in urls]
        given = {k: v for k, v in (("token", token), ("apiKey", api_key), ("password", password)) if v is not None}
        if len(given) > 1:
            raise ValueError("give at most one of token, api_key and password")
        if backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self._auth = given
        self._role = role
        self._client_info = {"name": client_name, "version": client_version, "platform": "python"}
        self._reconnect = reconnect
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_attempts = max_reconnect_attempts
        self.call_timeout = call_timeout
        self._connect_timeout = connect_timeout
        self.queue_size = queue_size
        self._max_message_size = max_message_size

        self._url_index = 0
        self._ws: Socket | None = None
        self._gen = 0
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Any], int]] = {}
        self._ready = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._closed = False
        self._close_error: BaseException | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._last_close_code: int | None = None
        self._reconnect_hint: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

        self._channels: dict[str, _Channel] = {}
        self._sessions: dict[str, Session] = {}
        self._orphans: OrderedDict[str, list[SessionEvent]] = OrderedDict()
        self._listeners: dict[str, list[Callback]] = {}
        self._streams: list[NotificationStream] = []
        self._progress: dict[str, Callable[[Any], Any]] = {}
        self._restore_hooks: list[RestoreHook] = []
        self._disconnect_hooks: list[Callable[[], None]] = []
        self._request_handler: Callable[[ServerRequest], Awaitable[None]] | None = None

        self._epoch: str | None = None
        self._hold_depth = 0
        self._quiet_until = 0.0
        self._learning = False
        self._learn_gen = 0

        self.info: ConnectionInfo | None = None
        """The current connection, once connected."""
        self.welcome: dict[str, Any] = {}
        """The ``welcome`` params of the current connection."""
        self.reconnects = 0
        """How many times the connection was re-established."""
        self.epoch_changes = 0
        """How many times the backend's logs were seen to start over."""

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("connected" if self._ready.is_set() else "connecting")
        return f"<switchyard.Client {self._urls[self._url_index]} {state}>"

    # ------------------------------------------------------------------
    # lifecycle

    async def connect(self) -> Client:
        """Open the connection and authenticate. Raises
        :class:`ConnectError` when no socket opens and :class:`Unauthorized`
        when the credentials are refused; a failure here is not retried."""
        if self._closed:
            raise ClientClosedError("client is closed")
        if self._supervisor is not None:
            return self
        await self._establish()
        self._ready.set()
        self._supervisor = asyncio.ensure_future(self._supervise())
        return self

    async def close(self) -> None:
        """Close the connection and stop reconnecting. Iterators end; calls
        still waiting raise :class:`ClientClosedError`."""
        await self._shutdown(None)

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def epoch(self) -> str | None:
        """The backend's epoch the offsets this client tracks belong to, as
        a reply last named it (None until one did)."""
        return self._epoch

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Return once connected (again); :class:`CallTimeoutError` after
        ``timeout``, :class:`ClientClosedError` if the client closes."""
        loop = asyncio.get_running_loop()
        await self._wait_ready(None if timeout is None else loop.time() + timeout)

    async def wait_closed(self) -> BaseException | None:
        """Wait until the client is closed for good; the reason, if any."""
        await self._closed_event.wait()
        return self._close_error

    # ------------------------------------------------------------------
    # calls

    async def call(self, method: str, params: Any = None, *, timeout: float | None = None) -> Any:
        """Call ``method`` and return its result.

        Waits for the connection while it is being re-established (within
        ``timeout``, default :attr:`call_timeout`). Raises
        :class:`RpcError` (the subclass of its code) for an error answer,
        :class:`CallTimeoutError`, :class:`ConnectionLostError` when the
        connection drops before the reply, :class:`ClientClosedError`.
        """
        t = self.call_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + t
        if _restoring.get() != (id(self), self._gen):
            await self._wait_ready(deadline, method)
        return await self._send_call(method, params, deadline, t)

    async def notify(self, method: str, params: Any = None) -> None:
        """Send a notification (a call without reply)."""
        ws = self._ws
        if ws is None or self._closed:
            raise ConnectionLostError(f"{method}: not connected")
        frame: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            frame["params"] = params
        await self._send(ws, frame)

    # ------------------------------------------------------------------
    # pushes

    def on(self, method: str, callback: Callback) -> Callable[[], None]:
        """Call ``callback(notification)`` for every push of ``method``
        (``"*"``: every push). A coroutine function runs as a task.
        Returns a function that removes the callback."""
        self._listeners.setdefault(method, []).append(callback)

        def remove() -> None:
            callbacks = self._listeners.get(method, [])
            if callback in callbacks:
                callbacks.remove(callback)

        return remove

    def notifications(self, *methods: str, queue_size: int | None = None) -> NotificationStream:
        """An async iterator of pushes (of ``methods`` only, when given).
        Close it (or use ``async with``) when done."""
        stream = NotificationStream(self, frozenset(methods) or None, queue_size or self.queue_size)
        self._streams.append(stream)
        return stream

    # ------------------------------------------------------------------
    # channels

    async def subscribe(
        self,
        channel: str,
        *,
        recover: int | Literal["latest"] | None = None,
        epoch: str | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Subscribe to ``channel``; iterate the returned
        :class:`Subscription` for its :class:`ChannelMessage`\\ s.

        On a channel that keeps history, ``recover=N`` first replays what
        was published after offset N (``epoch``: the epoch N belongs to;
        if the log started over since, the replay starts from its new
        start); ``recover="latest"`` starts at the newest offset, so that
        even a reconnect before the first message loses nothing. Without
        it, offsets are learnt from the messages. After a reconnect the
        subscription recovers from the newest offset seen; messages are
        never repeated.
        """
        sub = Subscription(self, channel, queue_size or self.queue_size)
        state = self._channels.get(channel)
        if state is not None:
            state.subs.append(sub)
            return sub
        state = _Channel(channel)
        state.subs.append(sub)
        self._channels[channel] = state
        # What a recover replays comes before the reply, which says where
        # it started from: hold it back until then.
        state.offsets.holds += 1
        try:
            if recover == "latest":
                page = await self.call("history", {"channel": channel, "limit": 1})
                self._observe_epoch(page.get("epoch"))
                recover = int(page["latest"])
                epoch = page.get("epoch") if isinstance(page.get("epoch"), str) else None
            params: dict[str, Any] = {"channels": [channel]}
            if recover is not None:
                params["recover"] = {channel: int(recover)}
                if epoch is not None:
                    params["recoverEpoch"] = epoch
                state.history = True
                state.offsets.offset = int(recover)
            reply = await self.call("subscribe", params)
            done = (reply.get("recovered") or {}).get(channel)
            if isinstance(done, dict):
                self._observe_epoch(done.get("epoch"), skip=state)
                if done.get("epochChanged"):
                    state.offsets.start_over()
            sub.recovered = done
        except BaseException:
            if self._channels.get(channel) is state:
                del self._channels[channel]
            raise
        finally:
            state.offsets.holds -= 1
            self._flush_channel(state)
        return sub

    async def publish(self, channel: str, data: Any = None, *, event: str = "message") -> dict[str, Any]:
        """Publish on ``channel``: ``{delivered, offset?}``."""
        return await self.call("publish", {"channel": channel, "event": event, "data": data})  # type: ignore[no-any-return]

    async def history(
        self, channel: str, *, since: int = 0, limit: int | None = None, epoch: str | None = None
    ) -> dict[str, Any]:
        """A channel's logged publications after ``since``: ``{events,
        latest, complete, more, epoch}``. ``epoch``: the epoch ``since``
        belongs to; when the log started over since, it is read from its
        new start (``epochChanged: true``)."""
        params: dict[str, Any] = {"channel": channel, "since": since}
        if limit is not None:
            params["limit"] = limit
        if epoch is not None:
            params["epoch"] = epoch
        reply: dict[str, Any] = await self.call("history", params)
        self._observe_epoch(reply.get("epoch"))
        return reply

    async def _unsubscribe(self, sub: Subscription) -> None:
        state = self._channels.get(sub.channel)
        sub._box.close()
        if state is None or sub not in state.subs:
            return
        state.subs.remove(sub)
        if state.subs:
            return
        del self._channels[sub.channel]
        if self.connected:
            await self.call("unsubscribe", {"channels": [sub.channel]})

    # ------------------------------------------------------------------
    # sessions

    async def create_session(
        self,
        session_id: str | None = None,
        *,
        meta: dict[str, Any] | None = None,
        invite: Iterable[str] | None = None,
        open: bool = False,
        max_members: int | None = None,
    ) -> Session:
        """Create a session owned by this client. Its ``resume_token`` is
        kept: after a reconnect the session is taken back automatically."""
        params: dict[str, Any] = {"open": open}
        if session_id is not None:
            params["sessionId"] = session_id
        if meta is not None:
            params["meta"] = meta
        if invite is not None:
            params["invite"] = list(invite)
        if max_members is not None:
            params["maxMembers"] = max_members
        reply = await self.call("session.create", params)
        session = Session(self, reply["sessionId"], owner=True, resume_token=reply["resumeToken"])
        self._adopt(session)
        return session

    async def join_session(self, session_id: str) -> Session:
        """Join a session as a member; rejoined after a reconnect, with
        what was missed read from its history."""
        session = self._sessions.get(session_id) or Session(self, session_id, owner=False)
        self._adopt(session)
        try:
            session.record = await self.call("session.join", {"sessionId": session_id})
        except BaseException:
            self._drop_session(session)
            raise
        return session

    async def resume_session(
        self, session_id: str, resume_token: str, *, offset: int = 0, epoch: str | None = None
    ) -> Session:
        """Take back a session this identity owns (created by another
        connection, e.g. before a restart): the events after ``offset``
        come first, then live ones. ``epoch``: the epoch ``offset`` belongs
        to; if the log started over since, the events come from its new
        start and :attr:`Session.epoch_changed` says so."""
        session = Session(self, session_id, owner=True, resume_token=resume_token, offset=offset)
        self._adopt(session)
        params: dict[str, Any] = {"sessionId": session_id, "resumeToken": resume_token, "offset": offset}
        if epoch is not None:
            params["epoch"] = epoch
        session._hold()
        try:
            try:
                reply = await self.call("session.resume", params)
            except BaseException:
                self._drop_session(session)
                raise
            session._resumed(reply)
        finally:
            session._release()
        return session

    def session(self, session_id: str) -> Session | None:
        """The session object of ``session_id``, if this client has one."""
        return self._sessions.get(session_id)

    def _adopt(self, session: Session) -> None:
        self._sessions[session.session_id] = session
        for event in sorted(self._orphans.pop(session.session_id, []), key=lambda e: e.offset):
            session._deliver(event)

    def _drop_session(self, session: Session) -> None:
        if self._sessions.get(session.session_id) is session:
            del self._sessions[session.session_id]

    # ------------------------------------------------------------------
    # agents, tools, approvals (the operator's side)

    async def invoke(
        self,
        command: str,
        params: Any = None,
        *,
        node_id: str | None = None,
        capability: str | None = None,
        timeout: float = 30.0,
        invoke_id: str | None = None,
        on_progress: Callable[[Any], Any] | None = None,
        policy: str | None = None,
        idempotency_key: str | None = None,
    ) -> InvokeResult:
        """Call a node (``node.invoke``): a tool, a command, a method it
        serves. ``on_progress(data)`` gets its ``invoke.progress`` updates
        (all of them before this returns). Cancel with
        :meth:`cancel_invoke` and the same ``invoke_id``."""
        invoke_id = invoke_id or uuid.uuid4().hex
        p: dict[str, Any] = {
            "command": command,
            "params": params,
            "invokeId": invoke_id,
            "timeoutMs": int(timeout * 1000),
        }
        for key, value in (
            ("nodeId", node_id),
            ("capability", capability),
            ("policy", policy),
            ("idempotencyKey", idempotency_key),
        ):
            if value is not None:
                p[key] = value
        if on_progress is not None:
            self._progress[invoke_id] = on_progress
        try:
            reply = await self.call("node.invoke", p, timeout=timeout + 5.0)
        finally:
            self._progress.pop(invoke_id, None)
        return InvokeResult.from_reply(reply)

    async def cancel_invoke(self, invoke_id: str) -> None:
        """Cancel a :meth:`invoke` of this connection: it raises
        :class:`RpcTimeout` and the node is told (``invoke.cancel``)."""
        await self.call("invoke.cancel", {"invokeId": invoke_id})

    async def run_agent(
        self,
        task: str,
        *,
        agent_id: str | None = None,
        capability: str | None = None,
        input: Any = None,
        session: Session | str | None = None,
        timeout: float = 600.0,
        idempotency_key: str | None = None,
    ) -> Run:
        """Start an ``agent.run``; iterate :meth:`Run.events` for the
        agent's events and ``await run.wait()`` for its outcome."""
        p: dict[str, Any] = {"task": task, "timeoutMs": int(timeout * 1000)}
        if input is not None:
            p["input"] = input
        for key, value in (("agentId", agent_id), ("capability", capability), ("idempotencyKey", idempotency_key)):
            if value is not None:
                p[key] = value
        if session is not None:
            p["sessionId"] = session if isinstance(session, str) else session.session_id
        reply = await self.call("agent.run", p, timeout=max(self.call_timeout, 35.0))
        sid = reply["sessionId"]
        s = self._sessions.get(sid)
        if s is None:
            token = reply.get("resumeToken")
            s = Session(self, sid, owner=token is not None, resume_token=token)
            self._adopt(s)
        return Run(s, reply)

    async def approvals(self) -> list[Approval]:
        """The pending approvals (``operator.approvals``)."""
        reply = await self.call("approval.list")
        return [Approval.from_record(r) for r in reply.get("approvals", [])]

    async def resolve_approval(self, approval_id: str, approve: bool, *, note: str | None = None) -> Approval:
        """Approve or deny; the first decision wins cluster-wide (a later
        one raises :class:`Conflict`)."""
        p: dict[str, Any] = {"approvalId": approval_id, "decision": "approve" if approve else "deny"}
        if note is not None:
            p["note"] = note
        return Approval.from_record(await self.call("approval.resolve", p))

    # ------------------------------------------------------------------
    # hooks used by Agent

    def add_restore_hook(self, hook: RestoreHook) -> None:
        """Run ``await hook()`` on every (re)connect, right after
        authentication and before sessions and channels are restored.
        Calls it makes go out at once; an error fails that connection
        attempt (and is retried)."""
        self._restore_hooks.append(hook)

    def add_disconnect_hook(self, hook: Callable[[], None]) -> None:
        """Call ``hook()`` whenever the connection drops."""
        self._disconnect_hooks.append(hook)

    def set_request_handler(self, handler: Callable[[ServerRequest], Awaitable[None]] | None) -> None:
        """Who answers the gateway's requests (``srv-N``); without one they
        get -32601."""
        self._request_handler = handler

    def is_current(self, generation: int) -> bool:
        """Whether connection ``generation`` is still the live one."""
        return generation == self._gen and self._ws is not None

    async def respond(self, request: ServerRequest, result: Any = None, error: RpcError | None = None) -> bool:
        """Answer a server request; False if its connection is gone."""
        ws = self._ws
        if ws is None or request.generation != self._gen:
            return False
        frame: dict[str, Any] = {"jsonrpc": "2.0", "id": request.id}
        if error is not None:
            frame["error"] = error.to_wire()
        else:
            frame["result"] = result
        try:
            await self._send(ws, frame)
        except FrameTooLargeError as e:
            log.error("switchyard: %s", e)
            frame.pop("result", None)
            frame["error"] = InternalError(message="the answer is too large").to_wire()
            return await self._send_quietly(ws, frame)
        except ConnectionLostError:
            return False
        return True

    async def _send_quietly(self, ws: Socket, frame: dict[str, Any]) -> bool:
        try:
            await self._send(ws, frame)
        except ConnectionLostError:
            return False
        return True

    # ------------------------------------------------------------------
    # internals: connecting

    async def _establish(self) -> None:
        url = self._urls[self._url_index]
        ws = await open_socket(url, open_timeout=self._connect_timeout, max_size=self._max_message_size)
        try:
            raw = await asyncio.wait_for(ws.recv(), self._connect_timeout)
            welcome = json.loads(raw)
            if not isinstance(welcome, dict) or welcome.get("method") != "welcome":
                raise ConnectError("the gateway did not start with welcome")
        except (asyncio.TimeoutError, ConnectionClosed, ValueError) as e:
            await ws.close()
            raise ConnectError(f"no welcome from the gateway: {e or type(e).__name__}") from e
        except BaseException:
            await ws.close()
            raise
        self._gen += 1
        gen = self._gen
        self._ws = ws
        self.welcome = welcome.get("params") or {}
        reader = asyncio.ensure_future(self._read_loop(ws, gen))
        self._reader_task = reader
        token = _restoring.set((id(self), gen))
        try:
            await self._handshake()
        except BaseException:
            await ws.close()
            await asyncio.gather(reader, return_exceptions=True)
            raise
        finally:
            _restoring.reset(token)

    async def _handshake(self) -> None:
        # Everything replayed while restoring is held back until the replies
        # have said which epoch it belongs to.
        self._hold_depth += 1
        try:
            await self._restore()
        finally:
            self._unhold()

    async def _restore(self) -> None:
        params: dict[str, Any] = {"client": self._client_info}
        if self._auth:
            params["auth"] = dict(self._auth)
        if self._role is not None:
            params["role"] = self._role
        owned = [s for s in self._sessions.values() if s.is_owner and s.resume_token]
        if owned:
            params["resume"] = owned[0]._resume_params()
        hello = await self.call("connect", params, timeout=self._connect_timeout)
        self.info = ConnectionInfo.from_hello(self.welcome, hello)
        if owned:
            owned[0]._resumed(hello.get("resume") or {})
        for hook in self._restore_hooks:
            await hook()
        for session in owned[1:]:
            try:
                session._resumed(await self.call("session.resume", session._resume_params()))
            except RpcError as e:
                session._fail(e)
        for session in [s for s in self._sessions.values() if not s.is_owner]:
            await session._rejoin()
        await self._resubscribe()

    async def _resubscribe(self) -> None:
        states = list(self._channels.values())
        if not states:
            return
        try:
            await self._subscribe_states(states)
        except RpcError:
            # Find the channel(s) refused now; the others carry on.
            for state in states:
                try:
                    await self._subscribe_states([state])
                except RpcError as e:
                    log.warning("switchyard: cannot subscribe again to %s: %s", state.name, e)
                    self._channels.pop(state.name, None)
                    for sub in state.subs:
                        sub._box.close(e)

    async def _subscribe_states(self, states: list[_Channel]) -> None:
        params: dict[str, Any] = {"channels": [s.name for s in states]}
        recover = {s.name: s.offset for s in states if s.history and s.offset is not None}
        if recover:
            params["recover"] = recover
            if self._epoch is not None:
                params["recoverEpoch"] = self._epoch
        reply = await self.call("subscribe", params)
        for name, done in (reply.get("recovered") or {}).items():
            state = self._channels.get(name)
            if state is None or not isinstance(done, dict):
                continue
            self._observe_epoch(done.get("epoch"))
            if done.get("epochChanged"):
                state.offsets.start_over()
            elif not done.get("complete", True):
                log.warning("switchyard: publications on %s were lost while disconnected", name)
            for sub in state.subs:
                sub.recovered = done

    async def _supervise(self) -> None:
        while not self._closed:
            reader = self._reader_task
            if reader is not None:
                await asyncio.gather(reader, return_exceptions=True)
            if self._closed:
                return
            code = self._last_close_code
            if not self._reconnect or code in _TERMINAL_CLOSE_CODES:
                await self._shutdown(ClientClosedError(f"connection closed by the gateway (code {code})"))
                return
            await self._reconnect_loop()

    async def _reconnect_loop(self) -> None:
        delay = self._backoff_initial
        if self._reconnect_hint is not None:
            delay = max(delay, min(self._reconnect_hint, self._backoff_max))
            self._reconnect_hint = None
        attempt = 0
        not_before = 0.0  # a rate-limited attempt: the gateway's Retry-After
        while not self._closed:
            attempt += 1
            if self._max_attempts is not None and attempt > self._max_attempts:
                await self._shutdown(ClientClosedError(f"gave up reconnecting after {self._max_attempts} attempts"))
                return
            # Jitter in the upper half: instances restarting together are
            # not hit by every client at the same instant.
            if await self._sleep_unless_closed(max(not_before, delay * random.uniform(0.5, 1.0))):
                return
            not_before = 0.0
            # The next URL after a failed attempt, or at once when the
            # instance said it is shutting down (close code 1012).
            if len(self._urls) > 1 and (attempt > 1 or self._last_close_code == 1012):
                self._url_index = (self._url_index + 1) % len(self._urls)
            try:
                await self._establish()
            except (Unauthorized, Forbidden) as e:
                await self._shutdown(ClientClosedError(f"credentials refused on reconnect: {e}"))
                return
            except RateLimited as e:
                not_before = e.retry_after or 0.0
            except (SwitchyardError, OSError, ConnectionClosed) as e:
                log.debug("switchyard: reconnect attempt %d to %s failed: %s", attempt, self._urls[self._url_index], e)
            else:
                self.reconnects += 1
                self._ready.set()
                log.info("switchyard: reconnected to %s", self.info.node_id if self.info else "?")
                return
            delay = min(delay * 2.0, self._backoff_max)

    async def _sleep_unless_closed(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self._closed_event.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return self._closed

    async def _shutdown(self, error: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_error = error
        self._ready.clear()
        self._closed_event.set()
        ws = self._ws
        if ws is not None:
            await ws.close()
        reader = self._reader_task
        if reader is not None and reader is not asyncio.current_task():
            await asyncio.gather(reader, return_exceptions=True)
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not asyncio.current_task():
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        closing = ClientClosedError("client closed")
        if error is not None:
            closing.__cause__ = error
        for fut, _ in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(closing)
        self._pending.clear()
        end = None if error is None else closing
        for state in self._channels.values():
            for sub in state.subs:
                sub._box.close(end)
        for session in self._sessions.values():
            session._box.close(end)
        for stream in self._streams:
            stream._box.close(end)
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()

    async def _wait_ready(self, deadline: float | None, what: str = "call") -> None:
        if self._closed:
            raise ClientClosedError("client is closed") from self._close_error
        if self._ready.is_set():
            return
        if self._supervisor is None:
            raise ConnectionLostError("not connected: call connect() first")
        loop = asyncio.get_running_loop()
        ready = asyncio.ensure_future(self._ready.wait())
        closed = asyncio.ensure_future(self._closed_event.wait())
        try:
            timeout = None if deadline is None else max(deadline - loop.time(), 0)
            await asyncio.wait({ready, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            closed.cancel()
        if self._closed:
            raise ClientClosedError("client is closed") from self._close_error
        if not self._ready.is_set():
            raise CallTimeoutError(f"{what}: not connected in time")

    # ------------------------------------------------------------------
    # internals: frames

    async def _send_call(self, method: str, params: Any, deadline: float, timeout: float) -> Any:
        ws, gen = self._ws, self._gen
        if ws is None:
            raise ConnectionLostError(f"{method}: not connected")
        loop = asyncio.get_running_loop()
        call_id = next(self._ids)
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[call_id] = (fut, gen)
        frame: dict[str, Any] = {"jsonrpc": "2.0", "id": call_id, "method": method}
        if params is not None:
            frame["params"] = params
        try:
            await self._send(ws, frame)
            return await asyncio.wait_for(fut, max(deadline - loop.time(), 0))
        except asyncio.TimeoutError:
            raise CallTimeoutError(f"{method}: no reply within {timeout:g} s") from None
        finally:
            self._pending.pop(call_id, None)

    async def _send(self, ws: Socket, frame: dict[str, Any]) -> None:
        text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
        limit = self._max_payload()
        if limit is not None and len(text) > limit // 4 and len(text.encode()) > limit:
            # The gateway would close the whole connection (1009) over it.
            what = frame.get("method") or f"answer to {frame.get('id')}"
            raise FrameTooLargeError(f"{what}: {len(text.encode())} bytes, the gateway accepts {limit}")
        try:
            await ws.send(text)
        except ConnectionClosed as e:
            raise ConnectionLostError(f"connection closed (code {close_code(e)})") from e

    def _max_payload(self) -> int | None:
        limits = self.info.raw.get("limits") if self.info is not None else None
        limit = limits.get("maxPayload") if isinstance(limits, dict) else None
        return limit if isinstance(limit, int) and limit > 0 else None

    async def _read_loop(self, ws: Socket, gen: int) -> None:
        error: BaseException | None = None
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue
                try:
                    frame = json.loads(raw)
                except ValueError:
                    log.warning("switchyard: dropped a frame that is not JSON")
                    continue
                for item in frame if isinstance(frame, list) else [frame]:
                    if isinstance(item, dict):
                        self._dispatch(item, gen)
        except ConnectionClosed as e:
            error = e
        except Exception as e:  # a bug in a dispatch path must not kill the client silently
            log.exception("switchyard: reader failed")
            error = e
        finally:
            code = close_code(error) if error is not None else getattr(ws, "close_code", None)
            self._connection_lost(gen, code)

    def _connection_lost(self, gen: int, code: int | None) -> None:
        lost = ConnectionLostError(f"connection lost (code {code})")
        for call_id, (fut, g) in list(self._pending.items()):
            if g == gen:
                del self._pending[call_id]
                if not fut.done():
                    fut.set_exception(lost)
        if gen != self._gen:
            return
        self._ws = None
        self._ready.clear()
        self._last_close_code = code
        for hook in self._disconnect_hooks:
            try:
                hook()
            except Exception:
                log.exception("switchyard: disconnect hook failed")

    def _dispatch(self, frame: dict[str, Any], gen: int) -> None:
        method = frame.get("method")
        if isinstance(method, str):
            params = frame.get("params")
            if frame.get("id") is not None:
                self._on_request(
                    ServerRequest(str(frame["id"]), method, params if isinstance(params, dict) else {}, gen)
                )
            else:
                self._on_notification(method, params)
            return
        call_id = frame.get("id")
        entry = self._pending.get(call_id) if isinstance(call_id, int) else None
        if entry is None:
            return
        fut = entry[0]
        if fut.done():
            return
        if "error" in frame:
            fut.set_exception(RpcError.from_wire(frame["error"]))
        else:
            fut.set_result(frame.get("result"))

    def _on_request(self, request: ServerRequest) -> None:
        handler = self._request_handler
        if handler is None:
            from .errors import MethodNotFound

            self._spawn(self.respond(request, error=MethodNotFound(message=f"method not found: {request.method}")))
            return
        self._spawn(handler(request))

    def _on_notification(self, method: str, params: Any) -> None:
        p = params if isinstance(params, dict) else {}
        if method == "notify":
            if not self._route_channel(p):
                return
        elif method in ("session.event", "agent.event"):
            if not self._route_session(method, p):
                return
        elif method == "session.closed":
            session = self._sessions.pop(str(p.get("sessionId")), None)
            if session is not None:
                session._on_closed(str(p.get("reason", "closed")))
        elif method == "session.updated":
            session = self._sessions.get(str(p.get("sessionId")))
            if session is not None:
                session.meta = p.get("meta")
        elif method == "invoke.progress":
            callback = self._progress.get(str(p.get("invokeId")))
            if callback is not None:
                self._run_callback(callback, p.get("data"))
        elif method == "shutdown":
            after = p.get("reconnectAfterMs")
            if isinstance(after, (int, float)):
                self._reconnect_hint = after / 1000.0
        elif method == "epoch.changed":
            self._epoch_pushed(p.get("epoch"))
        self._emit(method, params)

    def _emit(self, method: str, params: Any) -> None:
        """Hand a push to the callbacks and streams that want it."""
        note = Notification(method, params)
        for callback in self._listeners.get(method, []) + self._listeners.get("*", []):
            self._run_callback(callback, note)
        for stream in list(self._streams):
            if stream.methods is None or method in stream.methods:
                stream._box.put(note)

    def _route_channel(self, p: dict[str, Any]) -> bool:
        message = ChannelMessage.from_params(p)
        state = self._channels.get(message.channel)
        if state is None:
            return True
        if message.offset is None:
            for sub in state.subs:
                sub._box.put(message)
            return True
        state.history = True
        return self._deliver_message(state, message, p)

    def _deliver_message(
        self, state: _Channel, message: ChannelMessage, params: dict[str, Any] | None, *, replay: bool = False
    ) -> bool:
        """Deliver a numbered message unless delivered already; False when
        it was not delivered now (a duplicate, or held back). ``replay``:
        read from the log, delivered at once."""
        assert message.offset is not None
        admitted = state.offsets.admit(
            message.offset,
            message.timestamp,
            (message, params),
            replay=replay,
            check_epoch=lambda: self._check_epoch(channel=state.name),
            holding=lambda: self._holding,
            limit=self.queue_size,
        )
        if admitted is Admit.OVERFLOW:
            overflow = QueueOverflowError(f"subscription {state.name}: too many messages while catching up")
            for sub in state.subs:
                sub._box.close(overflow)
        if admitted is not Admit.DELIVER:
            return False
        for sub in state.subs:
            sub._box.put(message)
        if self._epoch is None:
            self._learn_epoch(channel=state.name)
        return True

    def _flush_channel(self, state: _Channel) -> None:
        """Deliver what was held back, once nothing holds it any more."""
        if state.offsets.holds or self._holding:
            return
        for message, params in state.offsets.release():
            if self._deliver_message(state, message, params, replay=True) and params is not None:
                self._emit("notify", params)

    # ------------------------------------------------------------------
    # internals: epochs

    @property
    def _holding(self) -> bool:
        return self._hold_depth > 0

    def _unhold(self) -> None:
        self._hold_depth = max(self._hold_depth - 1, 0)
        if self._hold_depth:
            return
        for state in list(self._channels.values()):
            self._flush_channel(state)
        for session in list(self._sessions.values()):
            session._flush()

    def _observe_epoch(self, epoch: Any, skip: _Channel | Session | None = None) -> None:
        """A reply named the backend's epoch. A new one means every log
        started over: every offset goes back to 0 (but ``skip``'s, which
        the reply itself placed in the new epoch), and, outside a restore
        (which reads every log again anyway), every log is read again from
        its new start."""
        if not isinstance(epoch, str) or epoch == self._epoch:
            return
        if self._epoch is None:
            self._epoch = epoch
            return
        channels, sessions = self._start_over(epoch, skip)
        if _restoring.get() == (id(self), self._gen):
            return
        self._hold_depth += 1
        self._spawn(self._catch_up_then_release(channels, sessions, epoch))

    def _start_over(self, epoch: str, skip: _Channel | Session | None) -> tuple[list[_Channel], list[Session]]:
        previous, self._epoch = self._epoch, epoch
        self.epoch_changes += 1
        log.warning(
            "switchyard: the gateway's backend lost its state (epoch %s, was %s): channel and session logs "
            "started over; reading them again from their new start",
            epoch,
            previous,
        )
        channels = [s for s in self._channels.values() if s is not skip and s.offsets.offset is not None]
        for state in channels:
            state.offsets.start_over()
            info = {"replayed": 0, "latest": 0, "complete": False, "epoch": epoch, "epochChanged": True}
            for sub in state.subs:
                sub.recovered = info
        sessions = [s for s in self._sessions.values() if s is not skip]
        for session in sessions:
            session._start_over()
        return channels, sessions

    async def _catch_up_then_release(self, channels: list[_Channel], sessions: list[Session], epoch: str) -> None:
        try:
            await self._catch_up(channels, sessions, epoch)
        except (SwitchyardError, asyncio.TimeoutError) as e:
            log.warning("switchyard: reading the logs again after the epoch changed failed: %s", e)
        finally:
            self._unhold()

    async def _catch_up(self, channels: list[_Channel], sessions: list[Session], epoch: str) -> None:
        """Deliver what the new epoch logged, from its start, minus what was
        delivered already."""
        for state in channels:
            if self._channels.get(state.name) is not state:
                continue
            try:
                replayed, latest = await self._read_channel_log(state, epoch)
            except RpcError as e:
                log.warning("switchyard: cannot read %s again after the epoch changed: %s", state.name, e)
                continue
            info = {"replayed": replayed, "latest": latest, "complete": False, "epoch": epoch, "epochChanged": True}
            for sub in state.subs:
                sub.recovered = info
        for session in sessions:
            if self._sessions.get(session.session_id) is not session:
                continue
            try:
                await session._read_log(epoch)
            except RpcError as e:
                log.warning(
                    "switchyard: cannot read session %s again after the epoch changed: %s", session.session_id, e
                )

    async def _read_channel_log(self, state: _Channel, epoch: str) -> tuple[int, int]:
        replayed, latest, since = 0, 0, state.offsets.offset or 0
        for _ in range(_LOG_PAGES):
            page = await self.history(state.name, since=since, limit=_HISTORY_PAGE, epoch=epoch)
            latest = int(page.get("latest") or 0)
            events = page.get("events") or []
            for event in events:
                message = ChannelMessage.from_params(event)
                if message.offset is not None and self._deliver_message(state, message, None, replay=True):
                    replayed += 1
            # Entries skipped as delivered already move the read on too.
            last = events[-1].get("offset") if events else None
            if not page.get("more") or not isinstance(last, int) or last <= since:
                break
            since = last
        return replayed, latest

    def _check_epoch(self, *, channel: str | None = None, session: Session | None = None) -> bool:
        """A push arrived behind the newest offset without having been
        delivered: ask for the current epoch, holding pushes back until the
        answer. True when pushes are held (the push is judged again then)."""
        if self._holding:
            return True
        if self._closed or self._ws is None or self._epoch is None:
            return False
        if asyncio.get_running_loop().time() < self._quiet_until:
            return False
        self._hold_depth += 1
        self._spawn(self._run_epoch_check(channel, session))
        return True

    def _epoch_pushed(self, epoch: Any) -> None:
        """The gateway pushed ``epoch.changed``: the shared state may have
        lost writes, so the offsets held may belong to the old epoch. Unless
        the push names the epoch the client has, check as a push behind the
        newest offset would (pushes held back until the answer)."""
        if not isinstance(epoch, str) or epoch == self._epoch or self._closed:
            return
        tracked = bool(self._sessions) or any(s.offsets.offset is not None for s in self._channels.values())
        if self._epoch is None and not tracked:
            self._epoch = epoch
            return
        self._hold_depth += 1
        self._spawn(self._run_epoch_check(None, None, pushed=epoch))

    async def _run_epoch_check(self, channel: str | None, session: Session | None, pushed: str | None = None) -> None:
        """``pushed``: the epoch an ``epoch.changed`` named, taken when no
        read names one."""
        try:
            current = await self._current_epoch(channel, session) or pushed
            if current is None or current == self._epoch:
                if pushed is None:
                    self._quiet_until = asyncio.get_running_loop().time() + _EPOCH_QUIET
                return
            channels, sessions = self._start_over(current, None)
            await self._catch_up(channels, sessions, current)
        except (SwitchyardError, asyncio.TimeoutError) as e:
            log.debug("switchyard: checking the backend's epoch failed: %s", e)
        finally:
            self._unhold()

    def _learn_epoch(self, *, channel: str | None = None, session: Session | None = None) -> None:
        """Offsets are being tracked but no reply named their epoch yet:
        ask once per connection."""
        if self._learning or self._closed or self._learn_gen == self._gen:
            return
        self._learning = True
        self._learn_gen = self._gen
        self._spawn(self._learn(channel, session))

    async def _learn(self, channel: str | None, session: Session | None) -> None:
        try:
            current = await self._current_epoch(channel, session)
            if current is not None and self._epoch is None:
                self._epoch = current
        except (SwitchyardError, asyncio.TimeoutError) as e:
            log.debug("switchyard: reading the backend's epoch failed: %s", e)
        finally:
            self._learning = False

    async def _current_epoch(self, channel: str | None, session: Session | None) -> str | None:
        """The backend's epoch now, from the cheapest read that names it: a
        one-entry page of a channel's or a session's log."""
        reads: list[tuple[str, dict[str, Any]]] = []
        names = ([channel] if channel else []) + [s.name for s in self._channels.values() if s.history]
        for name in dict.fromkeys(names):
            reads.append(("history", {"channel": name, "limit": 1}))
        ids = ([session.session_id] if session else []) + list(self._sessions)
        for sid in dict.fromkeys(ids):
            reads.append(("session.history", {"sessionId": sid, "limit": 1}))
        for method, params in reads[:3]:
            try:
                reply = await self.call(method, params)
            except RpcError:
                continue
            epoch = reply.get("epoch") if isinstance(reply, dict) else None
            if isinstance(epoch, str):
                return epoch
        return None

    def _route_session(self, method: str, p: dict[str, Any]) -> bool:
        event = SessionEvent.from_params(method, p)
        session = self._sessions.get(event.session_id)
        if session is not None:
            return session._deliver(event, p)
        held = self._orphans.setdefault(event.session_id, [])
        self._orphans.move_to_end(event.session_id)
        if len(held) < _ORPHAN_EVENTS:
            held.append(event)
        while len(self._orphans) > _ORPHAN_SESSIONS:
            self._orphans.popitem(last=False)
        return True

    def _run_callback(self, callback: Callable[[Any], Any], arg: Any) -> None:
        try:
            result = callback(arg)
        except Exception:
            log.exception("switchyard: callback failed")
            return
        if inspect.isawaitable(result):
            self._spawn(result)

    def _spawn(self, awaitable: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(awaitable)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("switchyard: background task failed", exc_info=task.exception())
