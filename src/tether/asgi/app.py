"""HubApp: everything ``tether serve`` serves, as one ASGI 3 application.

Mount it in the app you already have::

    hub = HubApp(Node(HubConfig(allow_anonymous=True)))
    app = FastAPI(lifespan=hub.lifespan)
    app.mount("/realtime", hub)

Routes resolve relative to the mount (ASGI ``root_path``): the WebSocket at
``/realtime/connection/websocket``, ``/realtime/api/*``,
``/realtime/tether.js``, ``/realtime/healthz``, ``/realtime/metrics``, and
with ``demo=True`` the demo page at ``/realtime/``. The HTTP answers are the
ones tether's own server gives (:class:`~tether.hub.routes.HttpRoutes`); the
WebSocket sessions are the same :class:`~tether.hub.session.Session` over
:class:`~tether.asgi.transport.AsgiWebSocketTransport`.

The node starts on the first of: the host's lifespan (``lifespan=hub.lifespan``
or ``async with hub:`` in your own lifespan; ASGI ``lifespan`` events when the
hub is the top-level app), the first request, or app code's first
``await node.publish(...)``. Only the lifespan also stops it cleanly (clients
told to reconnect elsewhere with 1001, backplane connections closed).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType

from tether.asgi.fallbacks import AsgiExchange, fallback_request
from tether.asgi.http import BodyReader, send_response
from tether.asgi.lifespan import serve_lifespan
from tether.asgi.scope import ASGIApp, Receive, Scope, Send, route_path, scope_request
from tether.asgi.transport import DEFAULT_WRITE_LIMIT
from tether.asgi.websocket import refuse_websocket, serve_websocket
from tether.hub.errors import ErrorCode
from tether.hub.fallbacks import PATHS as FALLBACK_PATHS
from tether.hub.fallbacks import Fallbacks
from tether.hub.node import Node
from tether.hub.routes import HttpRoutes, error_response
from tether.protocol.handshake import Response
from tether.protocol.headers import Headers

logger = logging.getLogger("tether.asgi")

# The demo chat's page; /tether.js is always served (pages of the host app use it).
DEMO_PATHS = frozenset({"/", "/index.html"})


class HubApp:
    """The hub of ``node`` as an ASGI 3 application (``http``, ``websocket``, ``lifespan``)."""

    def __init__(
        self,
        node: Node | None = None,
        *,
        demo: bool = False,
        write_limit: int = DEFAULT_WRITE_LIMIT,
    ) -> None:
        self.node = node if node is not None else Node()
        self.demo = demo
        """Serve the demo chat page at the mount's root."""
        self.write_limit = write_limit
        """Characters buffered per WebSocket before the session queues (see transport)."""
        self.routes = HttpRoutes(self.node)
        # Paths answered by an ASGI endpoint of their own rather than one
        # HttpRoutes response: the WebSocket, and the HTTP fallbacks (SSE,
        # HTTP streaming, long polling: docs/wire-protocol.md).
        self.websocket_endpoints: dict[str, ASGIApp] = {
            self.node.config.websocket_path: self._websocket_session,
        }
        self.fallbacks = Fallbacks(self.node, self.routes)
        self.http_endpoints: dict[str, ASGIApp] = (
            dict.fromkeys(FALLBACK_PATHS, self._fallback)
            if self.node.config.fallbacks.enabled
            else {}
        )

    # ----------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            endpoint = self.http_endpoints.get(route_path(scope), self._http)
            await endpoint(scope, receive, send)
        elif kind == "websocket":
            endpoint = self.websocket_endpoints.get(route_path(scope), self._websocket_not_found)
            await endpoint(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            raise ValueError(f"tether.asgi.HubApp does not handle {kind!r} scopes")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._started_or_refusal()
        if response is None:
            request = scope_request(scope)
            path = route_path(scope)
            if path in DEMO_PATHS and not self.demo:
                response = error_response(404, "not found", ErrorCode.NOT_FOUND)
            else:
                response = await self.routes.respond(request, BodyReader(receive))
                if path in DEMO_PATHS and response is not None and response.status_code == 200:
                    response = _relocated(response, scope.get("root_path") or "")
            if response is None:
                # The WebSocket path, asked without an upgrade.
                response = error_response(426, "upgrade to a WebSocket here", ErrorCode.BAD_REQUEST)
                response.headers["Upgrade"] = "websocket"
        await send_response(send, response)

    async def _fallback(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = await self._started_or_refusal()
        if refusal is not None:
            await send_response(send, refusal)
            return
        exchange = AsgiExchange(receive, send, self.write_limit)
        try:
            await self.fallbacks.handle(fallback_request(scope), exchange)
        finally:
            await exchange.finish()

    async def _websocket_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = await self._started_or_refusal()
        if refusal is not None:
            await refuse_websocket(scope, receive, send, refusal)
            return
        await serve_websocket(
            self.node, self.routes, scope, receive, send, write_limit=self.write_limit
        )

    async def _websocket_not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await refuse_websocket(
            scope, receive, send, error_response(404, "not found", ErrorCode.NOT_FOUND)
        )

    async def _started_or_refusal(self) -> Response | None:
        """Start the node on first use; a 503 if its backplane cannot start."""
        try:
            await self.node.ensure_started()
        except Exception as exc:
            logger.warning("the hub's node did not start: %s", exc)
            return error_response(
                503, "the hub's backplane is unavailable", int(ErrorCode.BROKER_UNAVAILABLE)
            )
        return None

    # ------------------------------------------------------------ lifespan

    async def startup(self) -> None:
        """Start the node (idempotent)."""
        await self.node.start()

    async def shutdown(self) -> None:
        """Tell connected clients to reconnect elsewhere (1001) and stop the node."""
        await self.node.close()

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """The hub's lifespan, for ``FastAPI(lifespan=hub.lifespan)`` or Starlette's.

        Starlette and FastAPI do not send lifespan events to mounted apps; this
        is the one line that starts and stops the hub with the host app.
        """
        async with self:
            yield

    async def __aenter__(self) -> HubApp:
        await self.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol, when the hub is the app the server runs."""
        await serve_lifespan(receive, send, self)


def _relocated(page: Response, root: str) -> Response:
    """The demo page with its absolute hub URLs moved under the mount's ``root``.

    The page is written for a hub at the site's root (``/tether.js``,
    ``/connection/websocket``); mounted at ``/realtime`` those live under it.
    """
    if not root:
        return page
    body = page.body
    for url in (b"/tether.js", b"/connection/websocket"):
        body = body.replace(b'"' + url + b'"', b'"' + root.encode() + url + b'"')
    headers = Headers(page.headers)
    del headers["Content-Length"]
    headers["Content-Length"] = str(len(body))
    return Response(page.status_code, page.reason_phrase, headers, body)
