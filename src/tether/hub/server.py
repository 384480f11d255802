"""Serving a hub: a tether WebSocket server whose connections become sessions.

``async with serve_hub(node, host, port) as hub:`` starts the node, listens,
and on exit tells every client to reconnect elsewhere before closing.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any

from tether.asyncio.server import Server, ServerConnection, serve
from tether.hub.auth import token_from_handshake
from tether.hub.node import Node
from tether.hub.routes import HttpRoutes
from tether.hub.session import Session
from tether.hub.transport import WebSocketTransport
from tether.hub.wire import SUBPROTOCOL
from tether.protocol.exceptions import ConnectionClosed
from tether.protocol.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from tether.protocol.frames import CloseCode


async def run_session(node: Node, ws: ServerConnection) -> None:
    """The WebSocket handler: feed each message to a new :class:`Session`."""
    headers = ws.request.headers if ws.request is not None else None
    token = token_from_handshake(headers, node.config.cookie_name) if headers else None
    session = Session(node, WebSocketTransport(ws), handshake_token=token, headers=headers)
    try:
        async for message in ws:
            if not await feed_session(session, message):
                break
    except ConnectionClosed:
        pass
    finally:
        await session.ended(_close_code(ws))


async def feed_session(session: Session, message: str | bytes) -> bool:
    """Hand one received WebSocket message to ``session``; false once reading should stop.

    Shared by every server that carries sessions over WebSocket (tether's own,
    :mod:`tether.asgi`).
    """
    metrics = session.node.metrics
    metrics.messages_in += 1
    metrics.bytes_in += len(message)
    if isinstance(message, bytes):
        # The spec: binary frames are refused with 1003.
        session.disconnect(
            CloseCode.UNSUPPORTED_DATA, "binary messages are not supported", reconnect=False
        )
        return False
    await session.handle(message)
    return not session.closed


def _close_code(ws: ServerConnection) -> int:
    """The code that ended the connection: the side that closed first chose it."""
    proto = ws.protocol
    if proto.close_sent is not None and not proto.close_rcvd_then_sent:
        return proto.close_sent[0]  # we closed (keepalive timeout, protocol error …)
    if proto.close_rcvd is not None:
        return proto.close_rcvd[0]
    return CloseCode.ABNORMAL


class HubServer:
    """A started hub: ``node``, ``server`` (the tether server) and ``port``."""

    def __init__(self, node: Node, host: str | None, port: int | None, **kwargs: Any) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.kwargs = kwargs
        self.server: Server | None = None

    def _tether_options(self) -> dict[str, Any]:
        config = self.node.config
        options: dict[str, Any] = {
            "subprotocols": [SUBPROTOCOL],
            "process_request": HttpRoutes(self.node),
            "ping_interval": config.ping_interval,
            "ping_timeout": config.ping_timeout,
            "close_timeout": config.close_timeout,
            "max_size": config.limits.max_message_size,
            # Fan-out writes one shared frame per publication: without server
            # context takeover the compressed frame can be shared too.
            "compression": None,
            "extensions": (
                [ServerPerMessageDeflateFactory(server_no_context_takeover=True)]
                if config.compression
                else []
            ),
            # Room for a burst of pushes before a client counts as slow.
            "write_limit": 256 * 1024,
        }
        if config.origins is not None and "*" not in config.origins:
            # Clients that send no Origin are not browsers (see HttpRoutes._origin_allowed).
            options["origins"] = [*config.origins, None]
        options.update(self.kwargs)
        return options

    async def start(self) -> HubServer:
        await self.node.start()
        try:
            self.server = await serve(
                lambda ws: run_session(self.node, ws),
                self.host,
                self.port,
                **self._tether_options(),
            )
        except BaseException:
            await self.node.close()
            raise
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        host = self.host or "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def websocket_url(self) -> str:
        return "ws" + self.url[4:].rstrip("/") + self.node.config.websocket_path

    async def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Disconnect every client with ``code`` (1001, or 1012 on restart) and stop."""
        reason = reason or ("server restarting" if code == 1012 else "server going away")
        await self.node.shutdown(code, reason)
        if self.server is not None:
            self.server.close(code=code)
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
        await self.node.close()

    async def serve_forever(self) -> None:
        assert self.server is not None, "not started"
        await self.server.serve_forever()

    def __await__(self) -> Any:
        return self.start().__await__()

    async def __aenter__(self) -> HubServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def serve_hub(
    node: Node | None = None, host: str | None = "127.0.0.1", port: int | None = 8000, **kwargs: Any
) -> HubServer:
    """A hub server for ``node`` (a fresh in-memory one by default).

    ``kwargs`` go to :func:`tether.serve` and override the hub's choices.
    """
    return HubServer(node if node is not None else Node(), host, port, **kwargs)
