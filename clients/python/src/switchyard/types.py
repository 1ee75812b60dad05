"""Typed views of what the gateway pushes and answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Notification:
    """A server push: ``method`` and ``params`` as sent."""

    method: str
    params: Any


@dataclass(frozen=True)
class ConnectionInfo:
    """What the gateway said about this connection (``welcome`` and the
    ``connect`` reply)."""

    conn_id: str
    node_id: str
    """The gateway instance holding the socket."""
    authenticated: bool
    role: str | None
    scopes: list[str]
    protocol: int
    raw: dict[str, Any] = field(repr=False)

    @staticmethod
    def from_hello(welcome: dict[str, Any], hello: dict[str, Any]) -> ConnectionInfo:
        return ConnectionInfo(
            conn_id=str(hello.get("connId") or welcome.get("connId") or ""),
            node_id=str(hello.get("nodeId") or welcome.get("nodeId") or ""),
            authenticated=bool(hello.get("authenticated")),
            role=hello.get("role"),
            scopes=list(hello.get("scopes") or []),
            protocol=int(hello.get("protocol") or welcome.get("protocol") or 0),
            raw=hello,
        )


@dataclass(frozen=True)
class ChannelMessage:
    """A publication on a subscribed channel (``notify``)."""

    channel: str
    event: str
    data: Any
    timestamp: int
    offset: int | None = None
    """1, 2, 3… on a channel that keeps history, else None."""

    @staticmethod
    def from_params(p: dict[str, Any]) -> ChannelMessage:
        offset = p.get("offset")
        return ChannelMessage(
            channel=str(p.get("channel", "")),
            event=str(p.get("event", "")),
            data=p.get("data"),
            timestamp=int(p.get("timestamp") or 0),
            offset=int(offset) if isinstance(offset, int) else None,
        )


@dataclass(frozen=True)
class SessionEvent:
    """One entry of a session's log: a member's ``session.event`` or an
    ``agent.event`` of a run on the session. ``offset`` numbers both
    together, 1, 2, 3…, the same for every member."""

    method: str
    """``session.event`` or ``agent.event``."""
    session_id: str
    offset: int
    event: str
    """The ``event`` name of a ``session.event``; the ``type`` of an ``agent.event``."""
    data: Any
    timestamp: int
    sender: dict[str, Any] | None = None
    """``from`` of a ``session.event``: ``{connId, identity}``."""
    run_id: str | None = None
    agent_id: str | None = None

    @property
    def is_agent_event(self) -> bool:
        return self.method == "agent.event"

    @staticmethod
    def from_params(method: str, p: dict[str, Any]) -> SessionEvent:
        name = p.get("type") if method == "agent.event" else p.get("event")
        return SessionEvent(
            method=method,
            session_id=str(p.get("sessionId", "")),
            offset=int(p.get("offset") or 0),
            event=str(name or ""),
            data=p.get("data"),
            timestamp=int(p.get("timestamp") or 0),
            sender=p.get("from"),
            run_id=p.get("runId"),
            agent_id=p.get("agentId"),
        )


@dataclass(frozen=True)
class Approval:
    """An approval record (``approval.request`` / ``approval.wait`` /
    ``approval.resolve``)."""

    approval_id: str
    status: str
    """``pending``, ``approved``, ``denied`` or ``expired``."""
    tool: str
    decided_by: str | None
    note: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def approved(self) -> bool:
        return self.status == "approved"

    @staticmethod
    def from_record(r: dict[str, Any]) -> Approval:
        return Approval(
            approval_id=str(r.get("approvalId", "")),
            status=str(r.get("status", "")),
            tool=str(r.get("tool", "")),
            decided_by=r.get("decidedBy"),
            note=r.get("note"),
            raw=r,
        )


@dataclass(frozen=True)
class InvokeResult:
    """The answer to ``node.invoke``: the node's ``result`` and who gave it."""

    result: Any
    node_id: str
    """The agent that answered."""
    conn_id: str
    invoke_id: str

    @staticmethod
    def from_reply(r: dict[str, Any]) -> InvokeResult:
        return InvokeResult(
            result=r.get("result"),
            node_id=str(r.get("nodeId", "")),
            conn_id=str(r.get("connId", "")),
            invoke_id=str(r.get("invokeId", "")),
        )
