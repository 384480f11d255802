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
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    DuplicateParameter,
    HeaderLineTooLong,
    InvalidHandshake,
    InvalidHeader,
    InvalidHeaderFormat,
    InvalidHeaderValue,
    InvalidMessage,
    InvalidMethod,
    InvalidOrigin,
    InvalidParameterName,
    InvalidParameterValue,
    InvalidProtocol,
    InvalidProxy,
    InvalidProxyMessage,
    InvalidProxyStatus,
    InvalidState,
    InvalidStatus,
    InvalidUpgrade,
    InvalidURI,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    ProxyError,
    RequestLineTooLong,
    SecurityError,
    StatusLineTooLong,
    TooManyFragments,
    TooManyHeaders,
    WebSocketError,
    WebSocketException,
)
from tether.protocol.frames import Close, CloseCode, Frame, Opcode
from tether.protocol.handshake import Request, Response
from tether.protocol.headers import Headers, HeadersLike, MultipleValuesError

if TYPE_CHECKING:
    from tether._about import speedups_status, version_report
    from tether._native import USING_SPEEDUPS
    from tether.asyncio.auth import basic_auth
    from tether.asyncio.broadcast import broadcast
    from tether.asyncio.client import ClientConnection, connect, unix_connect
    from tether.asyncio.connection import Connection
    from tether.asyncio.listener import Listener
    from tether.asyncio.router import Router, route, unix_route
    from tether.asyncio.server import Server, ServerConnection, serve, unix_serve
    from tether.protocol.client import ClientProtocol
    from tether.protocol.connection import Connection as Protocol
    from tether.protocol.connection import Side, State
    from tether.protocol.server import ServerProtocol
    from tether.typing import (
        Data,
        ExtensionName,
        ExtensionParameter,
        LoggerLike,
        Origin,
        StatusLike,
        Subprotocol,
    )

# The asyncio layer is imported on first use, so that ``import tether.protocol``
# (the sans-I/O core, usable under any I/O framework) does not load asyncio.
_LAZY = {
    "basic_auth": "tether.asyncio.auth",
    "broadcast": "tether.asyncio.broadcast",
    "ClientConnection": "tether.asyncio.client",
    "connect": "tether.asyncio.client",
    "unix_connect": "tether.asyncio.client",
    "Connection": "tether.asyncio.connection",
    "Listener": "tether.asyncio.listener",
    "Router": "tether.asyncio.router",
    "route": "tether.asyncio.router",
    "unix_route": "tether.asyncio.router",
    "Server": "tether.asyncio.server",
    "ServerConnection": "tether.asyncio.server",
    "serve": "tether.asyncio.server",
    "unix_serve": "tether.asyncio.server",
    # The sans-I/O core under websockets' names (Protocol is tether's core Connection).
    "ClientProtocol": "tether.protocol.client",
    "ServerProtocol": "tether.protocol.server",
    "Side": "tether.protocol.connection",
    "State": "tether.protocol.connection",
    "Protocol": "tether.protocol.connection:Connection",
    # websockets' type aliases (tether.typing).
    "Data": "tether.typing",
    "ExtensionName": "tether.typing",
    "ExtensionParameter": "tether.typing",
    "LoggerLike": "tether.typing",
    "Origin": "tether.typing",
    "StatusLike": "tether.typing",
    "Subprotocol": "tether.typing",
    # Whether the native hot path is in use, and why not (tether --version says the same).
    "USING_SPEEDUPS": "tether._native",
    "speedups_status": "tether._about",
    "version_report": "tether._about",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "USING_SPEEDUPS",
    "ClientConnection",
    "ClientProtocol",
    "Close",
    "CloseCode",
    "ConcurrencyError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Data",
    "DuplicateParameter",
    "ExtensionName",
    "ExtensionParameter",
    "Frame",
    "HeaderLineTooLong",
    "Headers",
    "HeadersLike",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidHeaderFormat",
    "InvalidHeaderValue",
    "InvalidMessage",
    "InvalidMethod",
    "InvalidOrigin",
    "InvalidParameterName",
    "InvalidParameterValue",
    "InvalidProtocol",
    "InvalidProxy",
    "InvalidProxyMessage",
    "InvalidProxyStatus",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "InvalidUpgrade",
    "Listener",
    "LoggerLike",
    "MultipleValuesError",
    "NegotiationError",
    "Opcode",
    "Origin",
    "PayloadTooBig",
    "Protocol",
    "ProtocolError",
    "ProxyError",
    "Request",
    "RequestLineTooLong",
    "Response",
    "Router",
    "SecurityError",
    "Server",
    "ServerConnection",
    "ServerProtocol",
    "Side",
    "State",
    "StatusLike",
    "StatusLineTooLong",
    "Subprotocol",
    "TooManyFragments",
    "TooManyHeaders",
    "WebSocketError",
    "WebSocketException",
    "basic_auth",
    "broadcast",
    "connect",
    "route",
    "serve",
    "speedups_status",
    "unix_connect",
    "unix_route",
    "unix_serve",
    "version_report",
]
