"""tether: a WebSocket stack for Python.

``serve`` and ``connect`` are the asyncio server and client; the sans-I/O
protocol core lives in :mod:`tether.protocol`.
"""

from tether.asyncio.broadcast import broadcast
from tether.asyncio.client import ClientConnection, connect
from tether.asyncio.connection import ConcurrencyError, Connection
from tether.asyncio.listener import Listener
from tether.asyncio.server import Server, ServerConnection, serve
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

__version__ = "0.1.0"

__all__ = [
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
]
