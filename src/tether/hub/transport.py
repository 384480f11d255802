"""The seam between a hub session and whatever carries it to the client.

A :class:`~tether.hub.session.Session` does not know how it is carried. It
writes whole ``tether.v1`` messages (JSON text) to a :class:`Transport` and
closes it with a close code; the transport frames them for its wire: a
WebSocket text frame, a line of an HTTP stream, a server-sent event, a batch
of a long-poll answer. Commands reach the session from whoever owns the
transport (a WebSocket read loop, an HTTP ``POST``), through
:meth:`Session.handle`.

Every transport belongs to a :class:`TransportKind`, which holds what all
transports of that kind share: the name the hub reports (``SessionInfo``,
``/metrics``), whether clients can send commands on it, who keeps the
connection alive, and how one message is written to many transports, framed
once (a publication fanned out to N WebSockets is one frame written N times).
A new transport (WebTransport, RFC 8441 WebSocket over HTTP/2) is a new
module in :mod:`tether.hub.transports` with its kind; the hub does not change.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol


class PingPolicy(enum.Enum):
    """Who keeps an idle connection alive and finds out when it died."""

    CARRIER = "carrier"
    """The carrier pings itself (WebSocket ping frames, RFC 6455 section 5.5.2)."""
    HEARTBEAT = "heartbeat"
    """The transport writes a heartbeat (an empty line, an SSE comment) every ``ping``
    seconds; the client treats a longer silence as a dead connection."""
    CLIENT = "client"
    """The client's own requests show it is alive (long polling): a session whose
    client stops asking ends after the transport's own timeout."""


class TransportKind:
    """What every transport of one kind shares. Kinds are module-level singletons."""

    def __init__(
        self,
        name: str,
        *,
        unidirectional: bool = False,
        ping: PingPolicy = PingPolicy.CARRIER,
        buffered: bool = False,
    ) -> None:
        self.name = name
        self.unidirectional = unidirectional
        """The client sends no commands (plain SSE): the hub runs them on its behalf."""
        self.ping = ping
        self.buffered = buffered
        """Messages wait in the transport until the client fetches them (long polling):
        :meth:`Transport.ready` stays true until the transport's own limit."""

    def write_many(self, transports: Sequence[Transport], text: str) -> None:
        """Write ``text`` to every one of ``transports`` (all of this kind and ready).

        The default writes each in turn; kinds whose framed bytes do not depend
        on the transport frame once and write the same bytes everywhere.
        """
        for transport in transports:
            transport.write_now(text)

    def __repr__(self) -> str:
        return f"<TransportKind {self.name}>"


class Transport(Protocol):
    @property
    def kind(self) -> TransportKind:
        """What this transport shares with the others of its kind."""

    def ready(self) -> bool:
        """Open, and a write now would not go over the transport's buffer limit."""

    def write_now(self, text: str) -> None:
        """Write without waiting; only when :meth:`ready`."""

    async def write(self, text: str) -> None:
        """Write, then wait while the transport's buffer is over its limit."""

    async def close(self, code: int, reason: str) -> None:
        """End the transport; ``code`` is a close code of docs/wire-protocol.md."""


def write_many(transports: Sequence[Transport], text: str) -> None:
    """Write ``text`` to ready transports, framed once per transport kind."""
    if not transports:
        return
    first = transports[0].kind
    if all(transport.kind is first for transport in transports):
        first.write_many(transports, text)  # the usual case: one kind
        return
    groups: dict[TransportKind, list[Transport]] = {}
    for transport in transports:
        groups.setdefault(transport.kind, []).append(transport)
    for kind, group in groups.items():
        kind.write_many(group, text)
