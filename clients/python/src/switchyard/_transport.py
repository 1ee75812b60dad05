"""The WebSocket underneath: ``websockets``' asyncio client (13+), or its
legacy client on ``websockets`` 12. Only text frames are used; nothing
secret goes in the URL or the upgrade headers (credentials travel in-band,
in ``connect``)."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .errors import ConnectError

try:  # websockets >= 13
    from websockets.asyncio.client import connect as _connect  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - websockets 12
    from websockets.client import connect as _connect  # type: ignore[no-redef,attr-defined,unused-ignore]

__all__ = ["ConnectionClosed", "Socket", "check_url", "close_code", "open_socket"]

# Query parameters that would carry a credential; refused in URLs.
_SECRET_PARAMS = {"token", "access_token", "apikey", "api_key", "password", "key"}


class Socket(Protocol):
    async def send(self, message: str) -> None: ...
    async def recv(self) -> str | bytes: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...
    def __aiter__(self) -> Any: ...


def check_url(url: str) -> str:
    """``url`` if it is a ``ws://`` / ``wss://`` URL without credentials."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a ws:// or wss:// URL: {parts.scheme or '(no scheme)'}://…")
    if parts.username or parts.password:
        raise ValueError("credentials do not belong in the URL: pass token=, api_key= or password=")
    for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if name.lower() in _SECRET_PARAMS:
            raise ValueError(f"credentials do not belong in the URL (query parameter {name!r})")
    return url


async def open_socket(url: str, *, open_timeout: float, max_size: int) -> Socket:
    """Open the WebSocket, or raise :class:`ConnectError` naming why."""
    try:
        return await _connect(  # type: ignore[no-any-return,unused-ignore]
            url,
            open_timeout=open_timeout,
            max_size=max_size,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
        )
    except InvalidHandshake as e:
        raise ConnectError(f"upgrade refused by {_where(url)}: {e}") from e
    except (OSError, asyncio.TimeoutError) as e:
        raise ConnectError(f"cannot connect to {_where(url)}: {e or type(e).__name__}") from e


def close_code(e: BaseException | None) -> int | None:
    """The close code the server sent, if it sent one."""
    if isinstance(e, ConnectionClosed):
        rcvd = getattr(e, "rcvd", None)
        if rcvd is not None:
            return int(rcvd.code)
    return None


def _where(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
