"""Plain HTTP beside the WebSocket endpoint, answered from ``process_request``.

tether's ``process_request`` sees each request head before any upgrade. The
hub answers there: the JSON API (``POST /api/*``, body read with
:meth:`ServerConnection.read_body`), ``/healthz``, ``/metrics``, the browser
client and the demo page. Only requests for the WebSocket path, with the
hub's subprotocol and an allowed Origin, go on to the upgrade.

The answers do not depend on the server: :meth:`HttpRoutes.respond` takes a
request head and a body reader and returns a :class:`Response` (or ``None``
to upgrade), which tether's server writes as bytes and :mod:`tether.asgi`
sends as ASGI events.

Every error body is ``{"error": {"message": ..., "code": ...}}`` with a code
of docs/hub.md's table (the wire protocol's codes, plus a few for HTTP
itself), and every refusal of an API request is counted in
``tether_refusals_total`` (publishes also in ``tether_publish_errors_total``).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from tether.asyncio.server import RequestBodyError, ServerConnection
from tether.hub import metrics as metrics_module
from tether.hub.auth import api_key_matches, bearer_matches
from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.errors import ErrorCode, HubError
from tether.hub.history.errors import unavailable_error
from tether.hub.inbound import check_params
from tether.hub.model import JSON
from tether.hub.node import Node
from tether.hub.wire import (
    SUBPROTOCOL,
    dumps,
    loads,
    opt_bool,
    opt_int,
    opt_str,
    position_param,
    req_str,
)
from tether.protocol.handshake import Request, Response
from tether.protocol.headers import Headers, parse_token_list

logger = logging.getLogger("tether.hub")

STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/tether.js": ("tether.js", "text/javascript; charset=utf-8"),
    # The demo's icon; /favicon.ico too, which browsers ask for on pages without a <link>.
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}

# How a command error maps onto an HTTP status for API callers (others: 400).
_STATUS: dict[int, int] = {
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_AVAILABLE: 404,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.TOO_MANY_REQUESTS: 429,
    ErrorCode.BROKER_UNAVAILABLE: 503,
    ErrorCode.HISTORY_UNAVAILABLE: 503,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.HTTP_METHOD_NOT_ALLOWED: 405,
    ErrorCode.HOST_NOT_ALLOWED: 403,
    ErrorCode.NOT_FOUND: 404,
}
# How read_body's refusals map onto error codes.
_BODY_CODES = {411: ErrorCode.LENGTH_REQUIRED, 413: ErrorCode.PAYLOAD_TOO_LARGE}
# Hosts and Origins development mode accepts (any port): this machine only.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

ApiHandler = Callable[[dict[str, JSON]], Awaitable[JSON]]

BodyReader = Callable[[int], Awaitable[bytes]]
"""Reads the request body, at most the given bytes; raises :class:`RequestBodyError`."""


def json_response(status: int, body: JSON, headers: Headers | None = None) -> Response:
    data = (dumps(body) + "\n").encode()
    out = Headers(headers) if headers is not None else Headers()
    out["Content-Type"] = "application/json"
    out["Content-Length"] = str(len(data))
    out["Cache-Control"] = "no-store"
    out["Connection"] = "close"
    return Response(status, HTTPStatus(status).phrase, out, data)


def error_response(status: int, message: str, code: int) -> Response:
    """``{"error": {"message", "code"}}``: every HTTP error of the hub has this shape."""
    return json_response(status, {"error": {"message": message, "code": int(code)}})


class ApiRefusal(Exception):
    """An API request refused before or instead of running: its status and error code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def hostname(value: str) -> str | None:
    """The host name of a ``Host`` value or an ``Origin`` URL (lower case, no port)."""
    try:
        parts = urlsplit(value if "//" in value else "//" + value)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return None
    return parts.hostname


def _content(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Connection", "close"),
        ]
    )
    return Response(status, HTTPStatus(status).phrase, headers, body)


# One API call must not turn into unbounded work.
MAX_BROADCAST_CHANNELS = 1000
# ``/api/history`` without ``limit``: all that is kept (Node.history caps it at history_size).
API_HISTORY_LIMIT = 2**31


class HttpRoutes:
    """The hub's ``process_request``: answer HTTP, or return ``None`` to upgrade."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.api: dict[str, ApiHandler] = {
            "/api/publish": self._publish,
            "/api/broadcast": self._broadcast,
            "/api/history": self._history,
            "/api/presence": self._presence,
            "/api/presence_stats": self._presence_stats,
            "/api/disconnect": self._disconnect,
        }

    async def __call__(self, conn: ServerConnection, request: Request) -> Response | None:
        return await self.respond(request, conn.read_body)

    async def respond(self, request: Request, read_body: BodyReader) -> Response | None:
        """The answer to ``request`` (its path relative to the hub), or ``None`` to upgrade.

        ``None`` only for the WebSocket path when the upgrade may go ahead.
        """
        # (HEAD answers lose their body in the protocol layer: RFC 9110 section 9.3.2.)
        path = urlsplit(request.path).path
        if not self.host_allowed(request.headers):
            logger.info(
                "refused a request for host %r from origin %r",
                request.headers.get("Host"),
                request.headers.get("Origin"),
            )
            return error_response(403, "host not allowed", ErrorCode.HOST_NOT_ALLOWED)
        if path == self.config.websocket_path:
            return self._check_upgrade(request)
        if path in self.api:
            return await self._api(read_body, request, path)
        if request.method not in ("GET", "HEAD"):
            response = error_response(405, "method not allowed", ErrorCode.HTTP_METHOD_NOT_ALLOWED)
            response.headers["Allow"] = "GET, HEAD"
            return response
        if path == "/healthz":
            # 503 while the backplane (Redis, NATS) is down, so a load balancer
            # stops sending new clients to a node that cannot publish.
            if not self.node.broker.up:
                body = {"status": "backplane down", "node": self.node.id, "backplane": "down"}
                return json_response(503, body)
            return json_response(200, {"status": "ok", "node": self.node.id})
        if path == "/metrics":
            if self.config.metrics_key and not bearer_matches(
                request.headers.get("Authorization"), self.config.metrics_key
            ):
                response = error_response(
                    401,
                    "missing or wrong metrics key (Authorization: Bearer KEY)",
                    ErrorCode.UNAUTHORIZED,
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
                return response
            text = self._render_metrics()
            return _content(200, text.encode(), metrics_module.CONTENT_TYPE)
        if path in STATIC_FILES:
            return self._static(*STATIC_FILES[path])
        return error_response(404, "not found", ErrorCode.NOT_FOUND)

    # ------------------------------------------------------------- upgrade

    def _check_upgrade(self, request: Request) -> Response | None:
        headers = request.headers
        try:
            offered = parse_token_list(headers.get_all("Sec-WebSocket-Protocol"), "Protocol")
        except Exception:
            offered = []
        if SUBPROTOCOL not in offered:
            return error_response(
                400, f"offer the {SUBPROTOCOL} subprotocol", ErrorCode.BAD_REQUEST
            )
        if not self.origin_allowed(headers):
            origin = headers.get("Origin")
            logger.info("refused a connection from origin %r", origin)
            return error_response(403, "origin not allowed", ErrorCode.PERMISSION_DENIED)
        return None

    def host_allowed(self, headers: Headers) -> bool:
        """``Host`` and ``Origin`` name an allowed host (when the config lists them).

        A DNS-rebinding page is served from ``evil.example``, then points that
        name at 127.0.0.1: its requests reach a loopback-only hub with
        ``Host`` and ``Origin`` both ``evil.example``, same-origin by every
        other check. Only an exact list of names stops it.
        """
        allowed = self.config.allowed_hosts
        if allowed is None:
            return True
        names = {name.lower() for name in allowed}
        if hostname(headers.get("Host") or "") not in names:
            return False
        origin = headers.get("Origin")
        return origin is None or hostname(origin) in names

    def origin_allowed(self, headers: Headers) -> bool:
        origin = headers.get("Origin")
        if origin is None:
            # Not a browser: no page whose visitor's cookies could be abused.
            return True
        allowed = self.config.origins
        if allowed is None:
            # Same-origin only: the page must come from this host (and port).
            return urlsplit(origin).netloc.lower() == (headers.get("Host") or "").lower()
        return "*" in allowed or origin in allowed

    # -------------------------------------------------------------- static

    def _static(self, name: str, content_type: str) -> Response:
        directory = self.config.static_dir
        if directory is None:
            return error_response(404, "not found", ErrorCode.NOT_FOUND)
        try:
            body = (Path(directory) / name).read_bytes()
        except OSError:
            return error_response(404, f"{name} not found", ErrorCode.NOT_FOUND)
        return _content(200, body, content_type)

    def _render_metrics(self) -> str:
        node = self.node
        return node.metrics.render(
            {
                "connections": ("Open client connections.", len(node.sessions)),
                "subscriptions": ("Subscriptions of local clients.", node.registry.subscriptions),
                "channels": ("Channels with local subscribers.", len(node.registry)),
                "backplane_up": ("1 while the broker is connected, else 0.", int(node.broker.up)),
                "backplane_malformed": (
                    "Broker messages dropped because they were not envelopes.",
                    node.broker.malformed,
                ),
            },
            by_transport=collections.Counter(s.transport_name for s in node.sessions.values()),
        )

    # ----------------------------------------------------------------- API

    async def _api(self, read_body: BodyReader, request: Request, path: str) -> Response:
        self.node.metrics.api_requests[path] += 1
        try:
            params = await self._api_params(read_body, request)
            return json_response(200, await self.api[path](params))
        except ApiRefusal as exc:
            refusal = exc
        except HubError as err:
            refusal = ApiRefusal(_STATUS.get(err.code, 400), err.code, err.message)
        except BrokerUnavailable as exc:  # the backplane, or history storage (127)
            unavailable = unavailable_error(exc)
            refusal = ApiRefusal(503, unavailable.code, unavailable.message)
        except Exception:
            logger.exception("API %s failed", path)
            refusal = ApiRefusal(500, ErrorCode.INTERNAL, "internal error")
        self.node.metrics.refused("api", path, refusal.code)
        response = error_response(refusal.status, refusal.message, refusal.code)
        if refusal.status == 405:
            response.headers["Allow"] = "POST"
        return response

    async def _api_params(self, read_body: BodyReader, request: Request) -> dict[str, JSON]:
        """The request's JSON object, or the :class:`ApiRefusal` that says what is wrong."""
        if request.method != "POST":
            raise ApiRefusal(405, ErrorCode.HTTP_METHOD_NOT_ALLOWED, "use POST")
        if not api_key_matches(request.headers.get("Authorization"), self.config.api_key):
            if not self.config.api_key:
                message = "the HTTP API is off: no API key is configured"
            else:
                message = "missing or wrong API key (Authorization: apikey KEY)"
            raise ApiRefusal(401, ErrorCode.UNAUTHORIZED, message)
        try:
            body = await read_body(self.config.limits.api_body_size)
        except RequestBodyError as exc:
            code = _BODY_CODES.get(exc.status, ErrorCode.LENGTH_REQUIRED)
            raise ApiRefusal(exc.status, code, exc.reason) from None
        try:
            text = body.decode("utf-8")
            params = loads(text) if text else {}
        except ValueError as exc:  # also UnicodeDecodeError and JSONTooDeep
            raise ApiRefusal(400, ErrorCode.INVALID_JSON, f"invalid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise ApiRefusal(400, ErrorCode.INVALID_JSON, "the body must be a JSON object")
        refusal = check_params(text, params)
        if refusal is not None:
            raise refusal
        return params

    async def _publish(self, params: dict[str, JSON]) -> JSON:
        channel = req_str(params, "channel")
        if "data" not in params:
            raise HubError(ErrorCode.MISSING_PARAMETER, "data is required")
        key = opt_str(params, "idempotency_key")
        result = await self.node.publish(channel, params["data"], idempotency_key=key)
        return result.to_json()

    async def _broadcast(self, params: dict[str, JSON]) -> JSON:
        channels = params.get("channels")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise HubError(ErrorCode.BAD_REQUEST, "channels must be a list of strings")
        if len(channels) > MAX_BROADCAST_CHANNELS:
            raise HubError(
                ErrorCode.LIMIT_EXCEEDED, f"at most {MAX_BROADCAST_CHANNELS} channels per broadcast"
            )
        if "data" not in params:
            raise HubError(ErrorCode.MISSING_PARAMETER, "data is required")
        results: list[JSON] = []
        for channel in channels:
            try:
                published = await self.node.publish(channel, params["data"])
                results.append({"channel": channel, **published.to_json()})
            except HubError as err:
                self.node.metrics.publish_errors[int(err.code)] += 1
                results.append({"channel": channel, "error": err.to_json()})
        return {"results": results}

    async def _history(self, params: dict[str, JSON]) -> JSON:
        since = params.get("since")
        # Without ``limit``, every publication the channel keeps (its
        # history_size); ``"limit": 0`` asks for the position only.
        result = await self.node.history(
            req_str(params, "channel"),
            limit=opt_int(params, "limit", API_HISTORY_LIMIT),
            since=position_param(since, "since") if since is not None else None,
            reverse=opt_bool(params, "reverse"),
        )
        return result.to_json()

    async def _presence(self, params: dict[str, JSON]) -> JSON:
        clients = await self.node.presence(req_str(params, "channel"))
        return {"clients": {cid: info.to_json() for cid, info in clients.items()}}

    async def _presence_stats(self, params: dict[str, JSON]) -> JSON:
        stats = await self.node.presence_stats(req_str(params, "channel"))
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def _disconnect(self, params: dict[str, JSON]) -> JSON:
        await self.node.disconnect(req_str(params, "user"))
        return {}
