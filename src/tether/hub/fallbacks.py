"""The HTTP fallbacks' endpoints: SSE, HTTP streaming, long polling, upstream POST.

docs/wire-protocol.md ("HTTP fallbacks") is the specification. Each endpoint
makes a :class:`~tether.hub.session.Session` over a transport of
:mod:`tether.hub.transports`, or hands a request to the session it names:

- ``GET /connection/sse``: one-way events for ``EventSource``/``curl -N``;
- ``POST /connection/stream`` and ``GET /connection/eventsource``: the
  downstream of an emulated session, open as long as the session;
- ``POST /connection/poll``: the downstream, one batch per request;
- ``POST /connection/send``: commands for an emulated session.

An emulated session is found by its key ``<node id>.<random>``; requests for
another node's session go there over the broker (:mod:`tether.hub.relay`).
Streams and waiting polls are counted per client IP and per node.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tether.asyncio.server import RequestBodyError
from tether.http.messages import Exchange, HttpRequest
from tether.hub.auth import cookie
from tether.hub.errors import ErrorCode, HubCloseCode, HubError
from tether.hub.node import Node
from tether.hub.relay import SESSION_NOT_FOUND, Answer, Relay, error_body
from tether.hub.routes import HttpRoutes
from tether.hub.session import Session
from tether.hub.transports.http_stream import EVENTSOURCE, HTTP_STREAM, StreamKind, StreamTransport
from tether.hub.transports.long_poll import PollTransport
from tether.hub.transports.sse import SseTransport, decode_resume
from tether.hub.wire import dumps, loads

logger = logging.getLogger("tether.hub")

SSE_PATH = "/connection/sse"
STREAM_PATH = "/connection/stream"
EVENTSOURCE_PATH = "/connection/eventsource"
POLL_PATH = "/connection/poll"
SEND_PATH = "/connection/send"
PATHS = frozenset({SSE_PATH, STREAM_PATH, EVENTSOURCE_PATH, POLL_PATH, SEND_PATH})

# Close code for a client that went away from its stream (no close frame on HTTP).
GONE = 1001

# How a refused ``connect`` maps onto an HTTP status (others: 400).
_CONNECT_STATUS: dict[int, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNKNOWN_NAMESPACE: 404,
    ErrorCode.LIMIT_EXCEEDED: 400,
    ErrorCode.BROKER_UNAVAILABLE: 503,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.INTERNAL: 500,
    ErrorCode.APP_TIMEOUT: 503,
    ErrorCode.APP_UNAVAILABLE: 503,
    ErrorCode.APP_ERROR: 502,
}


# How a body that cannot be read maps onto an error code (411 and 400: 122).
_BODY_CODES: dict[int, int] = {413: ErrorCode.PAYLOAD_TOO_LARGE, 408: ErrorCode.BAD_REQUEST}


class Refusal(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, int(code), message


@dataclass(eq=False)
class Emulated:
    """An emulated session this node holds."""

    key: str
    session: Session
    transport: StreamTransport | PollTransport
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """``send`` requests run one at a time: commands stay in order."""


def session_key(node_id: str) -> str:
    """``<node id>.<192 random bits>``: says where the session lives, and cannot be guessed."""
    return f"{node_id}.{secrets.token_urlsafe(24)}"


class Fallbacks:
    """Serves :data:`PATHS` for one node; :meth:`handle` answers one request."""

    def __init__(self, node: Node, routes: HttpRoutes) -> None:
        self.node = node
        self.routes = routes
        self.config = node.config.fallbacks
        self.sessions: dict[str, Emulated] = {}
        self.relay = Relay(node, self._local)
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._open = 0

    # ----------------------------------------------------------- plumbing

    async def handle(self, request: HttpRequest, exchange: Exchange) -> None:
        path = request.path
        try:
            if not self.config.enabled:
                raise Refusal(404, ErrorCode.NOT_FOUND, "HTTP fallbacks are off")
            if not self.routes.host_allowed(request.headers):
                raise Refusal(403, ErrorCode.HOST_NOT_ALLOWED, "host not allowed")
            if not self.routes.origin_allowed(request.headers):
                raise Refusal(403, ErrorCode.PERMISSION_DENIED, "origin not allowed")
            if request.method == "OPTIONS":
                await exchange.respond(204, self._cors(request, preflight=True))
                return
            expected = "GET" if path in (SSE_PATH, EVENTSOURCE_PATH) else "POST"
            if request.method != expected:
                raise Refusal(405, ErrorCode.HTTP_METHOD_NOT_ALLOWED, f"use {expected}")
            if path == SSE_PATH:
                await self._sse(request, exchange)
            elif path == STREAM_PATH:
                await self._stream(request, exchange, HTTP_STREAM, await self._body(exchange))
            elif path == EVENTSOURCE_PATH:
                await self._stream(request, exchange, EVENTSOURCE, self._connect_param(request))
            elif path == POLL_PATH:
                await self._poll(request, exchange)
            elif path == SEND_PATH:
                await self._send(request, exchange)
            else:
                raise Refusal(404, ErrorCode.NOT_FOUND, "not found")
        except Refusal as refusal:
            self.node.metrics.refused("http", path, refusal.code)
            if not exchange.responded:
                body = error_body(refusal.code, refusal.message)
                await self._answer(request, exchange, (refusal.status, body))

    def _cors(self, request: HttpRequest, *, preflight: bool = False) -> list[tuple[str, str]]:
        origin = request.headers.get("Origin")
        if origin is None:
            return []
        headers = [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Vary", "Origin"),
        ]
        if preflight:
            headers.append(("Access-Control-Allow-Methods", "GET, POST"))
            headers.append(("Access-Control-Allow-Headers", "Content-Type, Authorization"))
            headers.append(("Access-Control-Max-Age", "600"))
        return headers

    async def _answer(self, request: HttpRequest, exchange: Exchange, answer: Answer) -> None:
        status, body = answer
        headers = [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            *self._cors(request),
        ]
        if status == 405:
            headers.append(("Allow", "GET" if request.path.endswith(("sse", "source")) else "POST"))
        await exchange.respond(status, headers, (body + "\n").encode())

    def _stream_headers(self, request: HttpRequest, content_type: str) -> list[tuple[str, str]]:
        return [
            ("Content-Type", content_type),
            ("Cache-Control", "no-cache"),
            # nginx: pass each chunk on at once instead of buffering the response.
            ("X-Accel-Buffering", "no"),
            *self._cors(request),
        ]

    async def _body(self, exchange: Exchange) -> dict[str, Any]:
        """The request's JSON object (stream, poll, send)."""
        try:
            raw = await exchange.read_body(self.config.max_body_size)
        except RequestBodyError as exc:
            code = _BODY_CODES.get(exc.status, ErrorCode.LENGTH_REQUIRED)
            raise Refusal(exc.status, code, exc.reason) from None
        try:
            body = loads(raw.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError and too deep JSON too
            raise Refusal(400, ErrorCode.INVALID_JSON, f"invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise Refusal(400, ErrorCode.BAD_REQUEST, "the body must be a JSON object")
        return body

    def _connect_param(self, request: HttpRequest) -> dict[str, Any]:
        text = request.param("connect")
        if text is None:
            raise Refusal(400, ErrorCode.BAD_REQUEST, "connect (the connect command) is required")
        try:
            command = loads(text)
        except ValueError as exc:
            raise Refusal(400, ErrorCode.INVALID_JSON, f"invalid JSON: {exc}") from None
        if not isinstance(command, dict):
            raise Refusal(400, ErrorCode.BAD_REQUEST, "connect must be a JSON object")
        return command

    def _token(self, request: HttpRequest, *, query: bool) -> str | None:
        """The token a request carries: ``Authorization: Bearer``, the cookie, maybe ``?token=``."""
        authorization = request.headers.get("Authorization") or ""
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        token = cookie(request.headers, self.node.config.cookie_name)
        if token is None and query and self.config.query_token:
            token = request.param("token")
        return token or None

    def _requester(self, request: HttpRequest) -> str | None:
        """The user the request's own credentials name (``None`` without valid ones)."""
        token = self._token(request, query=False)
        if token is None or not self.node.verifier.enabled:
            return None
        try:
            return self.node.verifier.verify(token).user
        except HubError:
            return None

    @contextlib.contextmanager
    def _counted(self, request: HttpRequest) -> Any:
        """One open stream or waiting poll for the client's IP (429, code 126 past the limits)."""
        ip = request.remote
        if self._open >= self.config.max_streams:
            raise Refusal(429, ErrorCode.TOO_MANY_STREAMS, "too many streams on this node")
        if self._per_ip[ip] >= self.config.max_streams_per_ip:
            raise Refusal(429, ErrorCode.TOO_MANY_STREAMS, "too many streams from this address")
        self._open += 1
        self._per_ip[ip] += 1
        try:
            yield
        finally:
            self._open -= 1
            self._per_ip[ip] -= 1
            if not self._per_ip[ip]:
                del self._per_ip[ip]

    def _new_session(
        self, request: HttpRequest, transport: Any, *, query_token: bool = False
    ) -> Session:
        return Session(
            self.node,
            transport,
            handshake_token=self._token(request, query=query_token),
            headers=request.headers,
        )

    # --------------------------------------------------------------- SSE

    async def _sse(self, request: HttpRequest, exchange: Exchange) -> None:
        channels = list(dict.fromkeys(request.query.get("channel", [])))
        if not channels:
            raise Refusal(400, ErrorCode.MISSING_PARAMETER, "channel is required")
        if len(channels) > self.node.config.limits.max_subscriptions:
            raise Refusal(400, ErrorCode.LIMIT_EXCEEDED, "too many channels")
        last_id = request.headers.get("Last-Event-ID") or request.param("last_event_id")
        resume = {ch: pos for ch, pos in decode_resume(last_id).items() if ch in channels}
        with self._counted(request):
            await self.node.ensure_started()
            transport = SseTransport(
                presence=request.param("presence") == "1",
                envelope=request.param("envelope") == "1",
                resume_from=resume,
                ping_interval=self.node.config.ping_interval,
                metrics=self.node.metrics,
            )
            session = self._new_session(request, transport, query_token=True)
            subs = {
                ch: {"offset": resume[ch][0], "epoch": resume[ch][1]} if ch in resume else None
                for ch in channels
            }
            await session.handle(dumps({"id": 1, "method": "connect", "params": {"subs": subs}}))
            refusal = _connect_refusal(transport.connect_reply)
            if refusal is not None:
                session.disconnect(HubCloseCode.FORBIDDEN, refusal.message, reconnect=False)
                await session.ended(HubCloseCode.FORBIDDEN)
                raise refusal
            stream = exchange.start_stream(200, self._stream_headers(request, "text/event-stream"))
            transport.start(stream)
            await stream.done
            await session.ended(GONE)

    # --------------------------------------------------------- emulation

    def _check_connect(self, command: Any) -> str:
        if not isinstance(command, dict) or command.get("method") != "connect":
            raise Refusal(400, ErrorCode.BAD_REQUEST, "the first command must be connect")
        return dumps(command)

    async def _stream(
        self,
        request: HttpRequest,
        exchange: Exchange,
        kind: StreamKind,
        command: dict[str, Any],
    ) -> None:
        text = self._check_connect(command)
        with self._counted(request):
            await self.node.ensure_started()
            key = session_key(self.node.id)
            stream = exchange.start_stream(200, self._stream_headers(request, kind.content_type))
            ping = self.node.config.ping_interval
            transport = StreamTransport(kind, stream, ping_interval=ping, metrics=self.node.metrics)
            session = self._new_session(request, transport)
            emulated = Emulated(key, session, transport)
            self.sessions[key] = emulated
            try:
                hello = {"session": key, "seq": 0, "transport": kind.name, "ping": ping}
                transport.write_now(dumps(hello))
                async with emulated.lock:
                    await self._feed(session, text)
                await stream.done
                await session.ended(GONE)
            finally:
                self.sessions.pop(key, None)

    async def _feed(self, session: Session, text: str) -> None:
        metrics = self.node.metrics
        metrics.messages_in += 1
        metrics.bytes_in += len(text)
        await session.handle(text)

    async def _poll(self, request: HttpRequest, exchange: Exchange) -> None:
        body = await self._body(exchange)
        if "connect" in body:
            answer = await self._poll_connect(request, body["connect"])
            await self._answer(request, exchange, answer)
            return
        key = body.get("session")
        ack = body.get("ack", 0)
        wait = body.get("wait", self.config.poll_timeout)
        if not isinstance(key, str):
            raise Refusal(400, ErrorCode.BAD_REQUEST, "session (a string) is required")
        if not isinstance(ack, int) or isinstance(ack, bool) or ack < 0:
            raise Refusal(400, ErrorCode.BAD_REQUEST, "ack must be an integer >= 0")
        if not isinstance(wait, int | float) or isinstance(wait, bool) or wait < 0:
            raise Refusal(400, ErrorCode.BAD_REQUEST, "wait must be a number >= 0")
        params = {"session": key, "ack": ack, "wait": min(float(wait), self.config.poll_timeout)}
        with self._counted(request):
            answer = await self._route("poll", key, self._requester(request), params)
        await self._answer(request, exchange, answer)

    async def _poll_connect(self, request: HttpRequest, command: Any) -> Answer:
        text = self._check_connect(command)
        await self.node.ensure_started()
        key = session_key(self.node.id)
        transport = PollTransport(
            max_bytes=self.node.config.limits.send_queue_size,
            session_timeout=self.config.session_timeout,
            metrics=self.node.metrics,
        )
        session = self._new_session(request, transport)
        emulated = Emulated(key, session, transport)
        self.sessions[key] = emulated
        transport.on_idle = lambda: session.disconnect(
            HubCloseCode.KEEPALIVE_TIMEOUT, "no poll", reconnect=True
        )
        transport.on_forget = _forgetter(self.sessions, key, emulated)
        async with emulated.lock:
            await self._feed(session, text)
        seq, texts = transport.pending()
        return 200, _batch(key, seq, texts)

    async def _send(self, request: HttpRequest, exchange: Exchange) -> None:
        body = await self._body(exchange)
        key, commands = body.get("session"), body.get("commands")
        if not isinstance(key, str):
            raise Refusal(400, ErrorCode.BAD_REQUEST, "session (a string) is required")
        if not isinstance(commands, list):
            raise Refusal(400, ErrorCode.BAD_REQUEST, "commands (a list) is required")
        if len(commands) > self.config.max_commands:
            limit = self.config.max_commands
            raise Refusal(400, ErrorCode.LIMIT_EXCEEDED, f"more than {limit} commands")
        params = {"session": key, "commands": commands}
        answer = await self._route("send", key, self._requester(request), params)
        await self._answer(request, exchange, answer)

    async def _route(self, op: str, key: str, user: str | None, params: dict[str, Any]) -> Answer:
        """Answer here if this node holds the session, else ask the node that does."""
        owner, dot, _ = key.partition(".")
        if not dot or not owner:
            return SESSION_NOT_FOUND
        if owner == self.node.id:
            return await self._local(op, key, user, params)
        timeout = self.config.relay_timeout + float(params.get("wait", 0))
        return await self.relay.forward(owner, op, key, user, params, timeout)

    async def _local(self, op: str, key: str, user: str | None, params: dict[str, Any]) -> Answer:
        """``send`` or ``poll`` for a session of this node (asked here or relayed)."""
        emulated = self.sessions.get(key)
        if emulated is None:
            return SESSION_NOT_FOUND
        session = emulated.session
        if user is not None and session.credentials is not None and user != session.user:
            logger.info("refused a %s for session of %r by %r", op, session.user, user)
            self.node.metrics.refused("http", op, ErrorCode.PERMISSION_DENIED)
            message = "the session belongs to another user"
            return 403, error_body(ErrorCode.PERMISSION_DENIED, message)
        if op == "send":
            if session.closed:
                return SESSION_NOT_FOUND
            async with emulated.lock:
                for command in params["commands"]:
                    if session.closed:
                        break
                    await self._feed(session, dumps(command))
            return 200, "{}"
        transport = emulated.transport
        if not isinstance(transport, PollTransport):
            return 400, error_body(ErrorCode.BAD_REQUEST, "this session is not polled")
        got = await transport.poll(int(params["ack"]), float(params["wait"]))
        if got is None:
            self.sessions.pop(key, None)
            return SESSION_NOT_FOUND
        return 200, _batch(key, *got)


def _batch(key: str, seq: int, texts: list[str]) -> str:
    # The messages are JSON already: joined, not parsed and dumped again.
    return f'{{"session":{dumps(key)},"seq":{seq},"messages":[{",".join(texts)}]}}'


def _forgetter(sessions: dict[str, Emulated], key: str, emulated: Emulated) -> Callable[[], None]:
    def forget() -> None:
        if sessions.get(key) is emulated:
            del sessions[key]

    return forget


def _connect_refusal(reply: dict[str, Any] | None) -> Refusal | None:
    """The HTTP refusal for a failed ``connect`` (or a channel of its ``subs``), if any."""
    if reply is None:
        return Refusal(500, ErrorCode.INTERNAL, "no connect reply")
    error = reply.get("error")
    if error is None:
        subs = reply.get("result", {}).get("subs") or {}
        error = next(
            (s["error"] for s in subs.values() if isinstance(s, dict) and "error" in s), None
        )
    if error is None:
        return None
    code = int(error.get("code", ErrorCode.INTERNAL))
    return Refusal(_CONNECT_STATUS.get(code, 400), code, str(error.get("message", "refused")))
