"""Errors raised by the client and the agent.

Two families:

* :class:`RpcError` and its subclasses: the gateway (or the agent serving a
  call) answered with a JSON-RPC error. ``code``, ``message`` and ``data``
  are as sent; the subclass follows the code (:class:`Forbidden` for
  -32003, …), so ``except Forbidden`` and ``err.code == -32003`` agree.
  An agent's handler raises them too: they reach the caller as they are.
* Client-side failures: :class:`ConnectError` (no WebSocket could be
  opened), :class:`ConnectionLostError` (the connection dropped while a
  call was waiting), :class:`ClientClosedError` (the client was closed or
  gave up reconnecting), :class:`CallTimeoutError` (no reply in time),
  :class:`FrameTooLargeError` (more than the gateway accepts) and
  :class:`QueueOverflowError` (a consumer fell so far behind that its
  bounded queue filled up).
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar


class ErrorCode(enum.IntEnum):
    """The JSON-RPC error codes of the protocol."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    UNAUTHORIZED = -32000
    NOT_FOUND = -32001
    LIMIT_EXCEEDED = -32002
    FORBIDDEN = -32003
    RATE_LIMITED = -32004
    UNAVAILABLE = -32005
    TIMEOUT = -32006
    CONFLICT = -32007


class SwitchyardError(Exception):
    """Base class of every error this package raises."""


class RpcError(SwitchyardError):
    """A JSON-RPC error: ``code``, ``message`` and optional ``data``.

    Constructing ``RpcError(code, ...)`` directly gives the plain class;
    :meth:`from_wire` picks the subclass matching the code.
    """

    default_code: ClassVar[int] = ErrorCode.INTERNAL_ERROR
    default_message: ClassVar[str] = "error"

    def __init__(self, code: int | None = None, message: str | None = None, data: Any = None):
        self.code = int(code if code is not None else self.default_code)
        self.message = message if message is not None else self.default_message
        self.data = data
        super().__init__(self.code, self.message, self.data)

    def __str__(self) -> str:
        text = f"{self.message} ({self.code})"
        if self.data is not None:
            text += f": {self.data}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r}, data={self.data!r})"

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` member of a JSON-RPC response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    @staticmethod
    def from_wire(error: Any) -> RpcError:
        """The error a response's ``error`` member describes."""
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            return InternalError(message="malformed error", data=error)
        code = error["code"]
        cls = _BY_CODE.get(code, RpcError)
        return cls(code, str(error.get("message", "")), error.get("data"))


class ParseError(RpcError):
    default_code = ErrorCode.PARSE_ERROR
    default_message = "parse error"


class InvalidRequest(RpcError):
    default_code = ErrorCode.INVALID_REQUEST
    default_message = "invalid request"


class MethodNotFound(RpcError):
    default_code = ErrorCode.METHOD_NOT_FOUND
    default_message = "method not found"


class InvalidParams(RpcError):
    """-32602; ``data`` names the ``field`` and the ``reason``."""

    default_code = ErrorCode.INVALID_PARAMS
    default_message = "invalid params"

    @property
    def field(self) -> str | None:
        return self.data.get("field") if isinstance(self.data, dict) else None


class InternalError(RpcError):
    default_code = ErrorCode.INTERNAL_ERROR
    default_message = "internal error"


class Unauthorized(RpcError):
    """-32000: not authenticated, or the credentials were refused."""

    default_code = ErrorCode.UNAUTHORIZED
    default_message = "unauthorized"


class NotFound(RpcError):
    default_code = ErrorCode.NOT_FOUND
    default_message = "not found"


class LimitExceeded(RpcError):
    default_code = ErrorCode.LIMIT_EXCEEDED
    default_message = "limit exceeded"


class Forbidden(RpcError):
    default_code = ErrorCode.FORBIDDEN
    default_message = "forbidden"


class RateLimited(RpcError):
    """-32004; retry after :attr:`retry_after` seconds."""

    default_code = ErrorCode.RATE_LIMITED
    default_message = "rate limited"

    @property
    def retry_after(self) -> float | None:
        if isinstance(self.data, dict) and isinstance(self.data.get("retryAfterMs"), (int, float)):
            return float(self.data["retryAfterMs"]) / 1000.0
        return None


class Unavailable(RpcError):
    default_code = ErrorCode.UNAVAILABLE
    default_message = "unavailable"


class RpcTimeout(RpcError):
    """-32006: no answer in time from an agent or approver, or cancelled."""

    default_code = ErrorCode.TIMEOUT
    default_message = "timeout"


class Conflict(RpcError):
    default_code = ErrorCode.CONFLICT
    default_message = "conflict"


_BY_CODE: dict[int, type[RpcError]] = {
    cls.default_code: cls
    for cls in (
        ParseError,
        InvalidRequest,
        MethodNotFound,
        InvalidParams,
        InternalError,
        Unauthorized,
        NotFound,
        LimitExceeded,
        Forbidden,
        RateLimited,
        Unavailable,
        RpcTimeout,
        Conflict,
    )
}


class ConnectError(SwitchyardError):
    """No WebSocket could be opened to the gateway (refused, TLS, HTTP status…)."""


class ConnectionLostError(SwitchyardError):
    """The connection dropped before the reply came.

    The call may or may not have run on the gateway; retry only what is
    safe to repeat (or use an ``idempotencyKey``).
    """


class ClientClosedError(SwitchyardError):
    """The client is closed: :meth:`Client.close` was called, the gateway
    closed the connection for good (kicked, revoked), or reconnecting gave up.
    ``__cause__`` holds the reason when there is one."""


class CallTimeoutError(SwitchyardError, TimeoutError):
    """No reply within the call's timeout (the call may still run)."""


class FrameTooLargeError(SwitchyardError, ValueError):
    """A call or answer is larger than the gateway accepts
    (``limits.maxPayload`` of the ``connect`` reply); it was not sent, and
    the connection stays up."""


class QueueOverflowError(SwitchyardError):
    """A bounded queue of pushed messages filled up because its consumer
    fell behind; messages after that point were dropped."""
