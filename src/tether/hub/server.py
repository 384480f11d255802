"""Serving a hub: a tether WebSocket server whose connections become sessions.

``async with serve_hub(node, host, port) as hub:`` starts the node, listens,
and on exit tells every client to reconnect elsewhere before closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tether._extras import MissingDependency
from tether.asyncio.server import Server, ServerConnection, serve
from tether.http.messages import HttpLimits, HttpRequest
from tether.http.router import FirstLineRouter, request_path
from tether.hub.auth import token_from_handshake
from tether.hub.fallbacks import PATHS as FALLBACK_PATHS
from tether.hub.fallbacks import Fallbacks
from tether.hub.node import Node
from tether.hub.routes import HttpRoutes, error_response
from tether.hub.session import Session
from tether.hub.transports.websocket import WebSocketTransport
from tether.hub.wire import SUBPROTOCOL
from tether.protocol.exceptions import ConnectionClosed
from tether.protocol.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from tether.protocol.frames import CloseCode
from tether.protocol.handshake import Request

if TYPE_CHECKING:
    from tether.http.server import HttpConnection, HttpExchange


def require_h11() -> None:
    """The HTTP fallbacks parse HTTP with h11 (the ``hub`` extra)."""
    if importlib.util.find_spec("h11") is None:
        raise MissingDependency("the hub's HTTP fallbacks", "h11", "hub")


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


class HubHttp:
    """The hub's plain HTTP/1.1 (keep-alive, streaming): the fallbacks, and every other
    route on a connection that started with a fallback request."""

    def __init__(self, node: Node, routes: HttpRoutes) -> None:
        self.routes = routes
        self.fallbacks = Fallbacks(node, routes)
        fallbacks = node.config.fallbacks
        self.limits = HttpLimits(
            request_timeout=fallbacks.request_timeout,
            keepalive_timeout=fallbacks.keepalive_timeout,
        )
        self.connections: set[HttpConnection] = set()

    async def __call__(self, request: HttpRequest, exchange: HttpExchange) -> None:
        if request.path in FALLBACK_PATHS:
            await self.fallbacks.handle(request, exchange)
            return
        head = Request(request.target, request.headers, request.method)
        response = await self.routes.respond(head, exchange.read_body)
        if response is None:  # an upgrade request on a plain HTTP connection
            response = error_response(400, "open the WebSocket on a new connection", 107)
        await exchange.respond(response.status_code, response.headers.raw_items(), response.body)

    def connection(self) -> HttpConnection:
        from tether.http.server import HttpConnection  # h11: the hub extra

        conn = HttpConnection(self, self.limits)
        self.connections.add(conn)
        conn.closed.add_done_callback(lambda _: self.connections.discard(conn))
        return conn

    def close(self) -> None:
        for conn in list(self.connections):
            conn.close()


class HubServer:
    """A started hub: ``node``, ``server`` (the tether server) and ``port``."""

    def __init__(self, node: Node, host: str | None, port: int | None, **kwargs: Any) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.kwargs = kwargs
        self.server: Server | None = None
        self.routes = HttpRoutes(node)
        self.http = HubHttp(node, self.routes)
        self._routers: set[FirstLineRouter] = set()
        """Connections whose first request line has not arrived yet."""

    def _front(self, server: Server) -> asyncio.BaseProtocol:
        """Fallback paths go to the HTTP/1.1 layer, everything else to the WebSocket server."""
        paths = {path.encode() for path in FALLBACK_PATHS}

        def choose(line: bytes) -> asyncio.BaseProtocol:
            if request_path(line)[1] in paths:
                return self.http.connection()
            return server.new_connection()

        router = FirstLineRouter(
            choose,
            timeout=self.node.config.fallbacks.request_timeout,
            finished=self._routers.discard,
        )
        self._routers.add(router)
        return router

    def _tether_options(self) -> dict[str, Any]:
        config = self.node.config
        options: dict[str, Any] = {
            "subprotocols": [SUBPROTOCOL],
            "process_request": self.routes,
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
        if config.fallbacks.enabled:
            require_h11()
            options["front"] = self._front
        if config.origins is not None and "*" not in config.origins:
            # Clients that send no Origin are not browsers (see HttpRoutes.origin_allowed).
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
        self.http.close()
        for router in list(self._routers):
            router.close()
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
