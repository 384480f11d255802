"""``route(url_map, host, port)``: a sync server that dispatches connections by path.

websockets' ``websockets.sync.router`` under the same names: the URL map is
werkzeug's (:class:`werkzeug.routing.Map`, the ``router`` extra), each rule's
``endpoint`` is a handler called as ``handler(connection, **captured)``.
A path no rule matches gets 404; a rule that redirects (``redirect_to=``, a
missing trailing slash) gets 302 with the new ``Location``, built from
``server_name`` (default: the request's Host) and ``ws``/``wss``.
"""

from __future__ import annotations

import ssl as ssl_module
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether._extras import MissingDependency
from tether.protocol.handshake import Request, Response, make_response
from tether.protocol.headers import Headers
from tether.sync.server import Server, ServerConnection, serve

if TYPE_CHECKING:
    from werkzeug.routing import Map

__all__ = ["Router", "route", "unix_route"]


def _werkzeug_routing() -> Any:
    try:
        import werkzeug.exceptions
        import werkzeug.routing
    except ImportError:
        raise MissingDependency("tether.sync.router", "werkzeug", "router") from None
    return werkzeug


class Router:
    """Matches a request's path against the URL map and remembers the handler for it."""

    def __init__(self, url_map: Map, server_name: str | None = None, url_scheme: str = "ws"):
        self.url_map = url_map
        self.server_name = server_name
        self.url_scheme = url_scheme
        for rule in url_map.iter_rules():
            # werkzeug matches WebSocket rules only for WebSocket requests.
            rule.websocket = True

    def get_server_name(self, connection: ServerConnection, request: Request) -> str:
        """The host redirects point to: ``server_name``, else the request's Host header."""
        if self.server_name is not None:
            return self.server_name
        return request.headers.get("Host") or "localhost"

    def redirect(self, connection: ServerConnection, url: str) -> Response:
        """302 to ``url`` (a client follows it if it follows redirects)."""
        return make_response(302, f"redirect to {url}", Headers({"Location": url}))

    def not_found(self, connection: ServerConnection) -> Response:
        return make_response(404, "no route for this path")

    def route_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """``process_request``: a 404 or a redirect, or ``None`` with the handler chosen."""
        werkzeug = _werkzeug_routing()
        adapter = self.url_map.bind(
            server_name=self.get_server_name(connection, request),
            url_scheme=self.url_scheme,
        )
        parsed = urllib.parse.urlsplit(request.path)
        try:
            endpoint, values = adapter.match(path_info=parsed.path, query_args=parsed.query)
        except werkzeug.routing.RequestRedirect as redirect:
            return self.redirect(connection, redirect.new_url)
        except werkzeug.exceptions.NotFound:
            return self.not_found(connection)
        connection.route_handler = endpoint
        connection.route_kwargs = dict(values)
        return None

    def handler(self, connection: ServerConnection) -> None:
        """The server's handler: the matched endpoint with what the path captured."""
        connection.route_handler(connection, **connection.route_kwargs)


def route(
    url_map: Map,
    *args: Any,
    server_name: str | None = None,
    ssl: ssl_module.SSLContext | bool | None = None,
    create_router: type[Router] | None = None,
    **kwargs: Any,
) -> Server:
    """:func:`~tether.sync.server.serve` with handlers chosen by the request path.

    Takes ``serve``'s arguments but the handler. ``ssl=True`` only makes
    redirects use ``wss://`` (TLS terminated by a proxy in front); an
    ``SSLContext`` also enables TLS. A ``process_request`` given runs first.
    """
    _werkzeug_routing()  # fail now, with the extra to install
    url_scheme = "ws" if ssl is None or ssl is False else "wss"
    if isinstance(ssl, ssl_module.SSLContext):
        kwargs["ssl"] = ssl
    router = (create_router or Router)(url_map, server_name, url_scheme)
    user_process_request: Callable[[ServerConnection, Request], Response | None] | None = (
        kwargs.pop("process_request", None)
    )

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if user_process_request is not None:
            response = user_process_request(connection, request)
            if response is not None:
                return response
        return router.route_request(connection, request)

    return serve(router.handler, *args, process_request=process_request, **kwargs)


def unix_route(url_map: Map, path: str | None = None, **kwargs: Any) -> Server:
    """:func:`route` on the Unix socket at ``path``."""
    return route(url_map, unix_path=path, **kwargs)
