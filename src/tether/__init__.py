"""tether: a WebSocket stack for Python.

``serve`` and ``connect`` are the asyncio server and client; the sans-I/O
protocol core lives in :mod:`tether.protocol`. ``USING_SPEEDUPS``,
``speedups_status()`` and ``version_report()`` say whether the native hot path
is in use and why not (``tether --version`` prints the same).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tether._version import __version__ as __version__
from tether.protocol.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidHeader,
    InvalidStatus,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    WebSocketError,
)
from tether.protocol.frames import CloseCode
from tether.protocol.handshake import Request, Response
from tether.protocol.headers import Headers

if TYPE_CHECKING:
    from tether._about import speedups_status, version_report
    from tether._native import USING_SPEEDUPS
    from tether.asyncio.broadcast import broadcast
    from tether.asyncio.client import ClientConnection, connect
    from tether.asyncio.connection import ConcurrencyError, Connection
    from tether.asyncio.listener import Listener
    from tether.asyncio.server import Server, ServerConnection, serve

# The asyncio layer is imported on first use, so that ``import tether.protocol``
# (the sans-I/O core, usable under any I/O framework) does not load asyncio.
_LAZY = {
    "broadcast": "tether.asyncio.broadcast",
    "ClientConnection": "tether.asyncio.client",
    "connect": "tether.asyncio.client",
    "ConcurrencyError": "tether.asyncio.connection",
    "Connection": "tether.asyncio.connection",
    "Listener": "tether.asyncio.listener",
    "Server": "tether.asyncio.server",
    "ServerConnection": "tether.asyncio.server",
    "serve": "tether.asyncio.server",
    # Whether the native hot path is in use, and why not (tether --version says the same).
    "USING_SPEEDUPS": "tether._native",
    "speedups_status": "tether._about",
    "version_report": "tether._about",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "USING_SPEEDUPS",
    "ClientConnection",
    "CloseCode",
    "ConcurrencyError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Headers",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidStatus",
    "Listener",
    "NegotiationError",
    "PayloadTooBig",
    "ProtocolError",
    "Request",
    "Response",
    "Server",
    "ServerConnection",
    "WebSocketError",
    "broadcast",
    "connect",
    "serve",
    "speedups_status",
    "version_report",
]
