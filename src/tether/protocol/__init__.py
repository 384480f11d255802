"""Sans-I/O WebSocket protocol: no sockets, no event loop, no threads.

Bytes go in through ``receive_data``/``receive_eof``; frames to write come out
of ``data_to_send`` and events of ``events_received``.
"""

from tether.protocol.client import ClientProtocol, WebSocketURI, parse_uri
from tether.protocol.connection import Connection, Side, State
from tether.protocol.events import (
    CloseReceived,
    Event,
    Fragment,
    Ping,
    Pong,
    RequestReceived,
    ResponseReceived,
)
from tether.protocol.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidHeader,
    InvalidState,
    InvalidStatus,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    WebSocketError,
)
from tether.protocol.frames import CloseCode, Frame, Opcode
from tether.protocol.handshake import Request, Response
from tether.protocol.headers import Headers
from tether.protocol.server import ServerProtocol

__all__ = [
    "ClientProtocol",
    "CloseCode",
    "CloseReceived",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Event",
    "Fragment",
    "Frame",
    "Headers",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidState",
    "InvalidStatus",
    "NegotiationError",
    "Opcode",
    "PayloadTooBig",
    "Ping",
    "Pong",
    "ProtocolError",
    "Request",
    "RequestReceived",
    "Response",
    "ResponseReceived",
    "ServerProtocol",
    "Side",
    "State",
    "WebSocketError",
    "WebSocketURI",
    "parse_uri",
]
