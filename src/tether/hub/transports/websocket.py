"""A hub session over a tether WebSocket server connection."""

from __future__ import annotations

from collections.abc import Sequence

from tether.asyncio.broadcast import broadcast
from tether.asyncio.server import ServerConnection
from tether.hub.transport import Transport, TransportKind
from tether.protocol.connection import State


class _WebSocketKind(TransportKind):
    def write_many(self, transports: Sequence[Transport], text: str) -> None:
        # One frame for every socket (server frames are unmasked).
        broadcast([t.ws for t in transports if isinstance(t, WebSocketTransport)], text)


WEBSOCKET = _WebSocketKind("websocket")


class WebSocketTransport:
    """Implements :class:`~tether.hub.transport.Transport` over a :class:`ServerConnection`."""

    __slots__ = ("ws",)
    kind = WEBSOCKET

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
