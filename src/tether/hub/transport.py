"""What a session writes to: the WebSocket today, SSE or long-polling later.

A :class:`Transport` carries whole text messages one way (hub to client). The
session reads commands itself, so only sending and closing are abstracted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from tether.asyncio.broadcast import broadcast
from tether.asyncio.server import ServerConnection
from tether.protocol.connection import State


class Transport(Protocol):
    def ready(self) -> bool:
        """Open, and a write now would not go over the transport's buffer limit."""

    def write_now(self, text: str) -> None:
        """Write without waiting; only when :meth:`ready`."""

    async def write(self, text: str) -> None:
        """Write, then wait while the transport's buffer is over its limit."""

    async def close(self, code: int, reason: str) -> None: ...


class WebSocketTransport:
    """A hub session over a tether server connection."""

    __slots__ = ("ws",)

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    def ready(self) -> bool:
        return self.ws.state is State.OPEN and not self.ws.writing_paused

    def write_now(self, text: str) -> None:
        broadcast((self.ws,), text)

    async def write(self, text: str) -> None:
        await self.ws.send(text)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)


def write_many(transports: Iterable[Transport], text: str) -> None:
    """Write ``text`` to ready transports; WebSockets share one frame (framed once)."""
    sockets: list[ServerConnection] = []
    for transport in transports:
        if isinstance(transport, WebSocketTransport):
            sockets.append(transport.ws)
        else:
            transport.write_now(text)
    if sockets:
        broadcast(sockets, text)
