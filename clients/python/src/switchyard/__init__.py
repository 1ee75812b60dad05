"""Asyncio client and agent SDK for the Switchyard gateway.

* :class:`Client` — an operator's (or any) connection: calls, pushes,
  channel subscriptions, sessions, agent runs, approvals; reconnects by
  itself and restores what it had.
* :class:`Agent` — a node that registers tools, models and methods and
  answers the gateway's requests.

See the package README for examples.
"""

__version__ = "0.1.0"

from .agent import Agent, RequestContext, RunEvent, RunResult, Tool
from .client import Client, ServerRequest
from .errors import (
    CallTimeoutError,
    ClientClosedError,
    Conflict,
    ConnectError,
    ConnectionLostError,
    ErrorCode,
    Forbidden,
    FrameTooLargeError,
    InternalError,
    InvalidParams,
    InvalidRequest,
    LimitExceeded,
    MethodNotFound,
    NotFound,
    ParseError,
    QueueOverflowError,
    RateLimited,
    RpcError,
    RpcTimeout,
    SwitchyardError,
    Unauthorized,
    Unavailable,
)
from .sessions import Run, Session
from .subscriptions import NotificationStream, Subscription
from .types import Approval, ChannelMessage, ConnectionInfo, InvokeResult, Notification, SessionEvent

__all__ = [
    "Agent",
    "Approval",
    "CallTimeoutError",
    "ChannelMessage",
    "Client",
    "ClientClosedError",
    "Conflict",
    "ConnectError",
    "ConnectionInfo",
    "ConnectionLostError",
    "ErrorCode",
    "Forbidden",
    "FrameTooLargeError",
    "InternalError",
    "InvalidParams",
    "InvalidRequest",
    "InvokeResult",
    "LimitExceeded",
    "MethodNotFound",
    "NotFound",
    "Notification",
    "NotificationStream",
    "ParseError",
    "QueueOverflowError",
    "RateLimited",
    "RequestContext",
    "RpcError",
    "RpcTimeout",
    "Run",
    "RunEvent",
    "RunResult",
    "ServerRequest",
    "Session",
    "SessionEvent",
    "Subscription",
    "SwitchyardError",
    "Tool",
    "Unauthorized",
    "Unavailable",
    "__version__",
]
