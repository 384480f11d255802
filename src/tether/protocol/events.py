"""Events the sans-I/O core hands back from :meth:`Connection.events_received`.

Whole messages are returned as plain ``str`` (text) and ``bytes`` (binary)
objects, with no wrapper: the common case allocates nothing extra. Everything
else is one of the small frozen dataclasses below.
"""

from __future__ import annotations

from dataclasses import dataclass

from tether.protocol.handshake import Request, Response


@dataclass(frozen=True, slots=True)
class Fragment:
    """Part of a message, delivered only when the connection streams fragments."""

    data: str | bytes
    fin: bool


@dataclass(frozen=True, slots=True)
class Ping:
    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A server received a complete upgrade request."""

    request: Request


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A client received the server's answer to its upgrade request."""

    response: Response


Event = str | bytes | Fragment | Ping | Pong | CloseReceived | RequestReceived | ResponseReceived
