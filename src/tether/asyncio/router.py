"""URL routing for WebSocket servers: ``route(url_map, host, port)`` (websockets' API).

A werkzeug :class:`~werkzeug.routing.Map` maps request paths to handlers;
each handler receives the connection and the values the rule captured::

    url_map = Map([Rule("/rooms/<int:room>", endpoint=room_handler)])
    async with route(url_map, "127.0.0.1", 8765) as server: ...

    async def room_handler(connection, room): ...

A path that matches no rule gets 404; one that werkzeug redirects (a
missing trailing slash …) gets 302 with ``Location``. werkzeug is an
optional dependency: ``pip install 'tether[router]'``.
"""

from __future__ import annotations

import inspect
import ssl as ssl_module
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from tether.asyncio.server import Server, ServerConnection, serve
from tether.protocol.handshake import Request, Response
from tether.protocol.headers import Headers

if TYPE_CHECKING:
    from werkzeug.routing import Map

__all__ = ["Router", "route", "unix_route"]

ProcessRequest = Callable[[ServerConnection, Request], Response | Awaitable[Response | None] | None]


def _werkzeug() -> Any:
    try:
        import werkzeug.exceptions
        import werkzeug.routing
    except ImportError:  # pragma: no cover - the test extra installs it
        raise ImportError("route() requires werkzeug: pip install 'tether[router]'") from None
    return werkzeug


class Router:
    """Dispatches each connection to the handler its path maps to (used by :func:`route`)."""

    def __init__(
        self, url_map: Map, server_name: str | None = None, url_scheme: str = "ws"
    ) -> None:
        self.werkzeug = _werkzeug()
        self.url_map = url_map
        self.server_name = server_name
        self.url_scheme = url_scheme
        for rule in url_map.iter_rules():
            # werkzeug then matches these rules for WebSocket requests only.
            rule.websocket = True

    def get_server_name(self, connection: ServerConnection, request: Request) -> str:
        """The host the rules are bound to: ``server_name``, else the request's Host."""
        if self.server_name is not None:
            return self.server_name
        return request.headers.get("Host") or ""

    def redirect(self, connection: ServerConnection, url: str) -> Response:
        return connection.respond(302, f"Found at {url}", Headers([("Location", url)]))

    def not_found(self, connection: ServerConnection) -> Response:
        return connection.respond(404, "Not Found")

    def route_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Find the handler for ``request``; answer 404 or 302 when there is none."""
        routing = self.werkzeug.routing
        adapter = self.url_map.bind(
            server_name=self.get_server_name(connection, request), url_scheme=self.url_scheme
        )
        target = urllib.parse.urlsplit(request.path)
        try:
            endpoint, values = adapter.match(
                path_info=target.path, query_args=target.query, websocket=True
            )
        except routing.RequestRedirect as redirect:
            return self.redirect(connection, redirect.new_url)
        except self.werkzeug.exceptions.NotFound:
            return self.not_found(connection)
        # Kept on the connection (it has a __dict__) until the handler runs.
        connection.handler = endpoint  # type: ignore[attr-defined]
        connection.handler_kwargs = values  # type: ignore[attr-defined]
        return None

    async def handler(self, connection: ServerConnection) -> None:
        """Run the handler :meth:`route_request` found, with the captured values."""
        endpoint = connection.handler  # type: ignore[attr-defined]
        await endpoint(connection, **connection.handler_kwargs)  # type: ignore[attr-defined]


def route(
    url_map: Map,
    *args: Any,
    server_name: str | None = None,
    ssl: ssl_module.SSLContext | Literal[True] | None = None,
    create_router: type[Router] | None = None,
    **kwargs: Any,
) -> Server:
    """Serve WebSocket connections, each to the handler its URL maps to.

    The other arguments are :func:`~tether.asyncio.server.serve`'s. ``ssl=True``
    says that a proxy in front terminates TLS (the rules see ``wss``).
    A ``process_request`` given runs first; if it answers, routing is skipped.
    """
    url_scheme = "ws" if ssl is None else "wss"
    if ssl is not None and ssl is not True:
        kwargs["ssl"] = ssl
    router = (create_router or Router)(url_map, server_name, url_scheme)
    first: ProcessRequest | None = kwargs.pop("process_request", None)
    if first is None:
        process_request: ProcessRequest = router.route_request
    else:

        async def process_request(
            connection: ServerConnection, request: Request
        ) -> Response | None:
            response = first(connection, request)
            if inspect.isawaitable(response):
                response = await response
            if response is not None:
                return response
            return router.route_request(connection, request)

    return serve(router.handler, *args, process_request=process_request, **kwargs)


def unix_route(url_map: Map, path: str | None = None, **kwargs: Any) -> Server:
    """:func:`route` on a Unix socket at ``path``."""
    return route(url_map, unix=True, path=path, **kwargs)
