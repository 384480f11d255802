"""asyncio WebSocket server: ``serve(handler, host, port)``."""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, cast

from tether.asyncio.auth import basic_auth
from tether.asyncio.broadcast import broadcast
from tether.asyncio.connection import Connection
from tether.asyncio.listener import Listener
from tether.asyncio.options import (
    Compression,
    MaxQueue,
    MaxSize,
    WriteLimit,
    connection_options,
    server_extensions,
    split_max_size,
)
from tether.protocol.connection import State
from tether.protocol.events import RequestReceived
from tether.protocol.exceptions import ConnectionClosed, NegotiationError
from tether.protocol.extensions.base import ServerExtensionFactory
from tether.protocol.frames import CloseCode
from tether.protocol.handshake import Request, Response, make_response
from tether.protocol.headers import Headers, HeadersLike
from tether.protocol.server import OriginLike, ServerProtocol, SubprotocolSelector
from tether.typing import LoggerLike, StatusLike

__all__ = [
    "RequestBodyError",
    "Server",
    "ServerConnection",
    "basic_auth",
    "broadcast",
    "serve",
    "unix_serve",
]

CoroutineHandler = Callable[["ServerConnection"], Awaitable[Any]]
Handler = CoroutineHandler | type[Listener]
ProcessRequest = Callable[
    ["ServerConnection", Request], Response | Awaitable[Response | None] | None
]
SelectSubprotocol = Callable[["ServerConnection", Sequence[str]], str | None]
ProcessResponse = Callable[
    ["ServerConnection", Request, Response], Response | Awaitable[Response | None] | None
]


class RequestBodyError(Exception):
    """:meth:`ServerConnection.read_body` cannot read the body; answer with ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ServerConnection(Connection):
    """The server's side of one WebSocket connection; handed to the handler."""

    protocol: ServerProtocol

    def __init__(self, protocol: ServerProtocol, server: Server, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.protocol = protocol
        # Set by basic_auth's process_request once the credentials check out.
        self.username: str | None = None
        self._open_handle: asyncio.TimerHandle | None = None
        self._handler_task: asyncio.Task[None] | None = None
        self._body_waiter: asyncio.Future[None] | None = None

    def respond(
        self, status: StatusLike, text: str = "", headers: HeadersLike | None = None
    ) -> Response:
        """A plain-text HTTP response for ``process_request`` (health checks, 401, 403 …).

        The body is ``text`` exactly, as websockets sends it (``respond(200,
        "OK\\n")`` answers ``OK`` and one newline).
        """
        extra = Headers(headers) if headers is not None else None
        return make_response(int(status), text, extra, end_line=False)

    async def read_body(self, max_size: int = 2**20) -> bytes:
        """Read the request's ``Content-Length`` body, for ``process_request``.

        Lets ``process_request`` answer plain HTTP requests with a body (a
        JSON API beside the WebSocket endpoint). The body is the bytes the
        client sent after the head, which the handshake keeps aside. Answers
        ``Expect: 100-continue``. Raises :class:`RequestBodyError` with the
        status to answer: 411 for chunked bodies, 400 for a bad
        ``Content-Length`` or a body cut short, 413 beyond ``max_size``. The
        server's ``open_timeout`` bounds how long a slow body can take.
        """
        request = self.request
        proto = self.protocol
        if request is None or proto.state is not State.CONNECTING:
            raise RuntimeError("read_body works only in process_request")
        headers = request.headers
        if "Transfer-Encoding" in headers:
            raise RequestBodyError(411, "chunked bodies are not supported; send Content-Length")
        values = headers.get_all("Content-Length")
        if not values:
            return b""
        if len(set(values)) != 1 or not (values[0].isascii() and values[0].isdigit()):
            raise RequestBodyError(400, "invalid Content-Length")
        length = int(values[0])
        if length > max_size:
            raise RequestBodyError(413, f"request body larger than {max_size} bytes")
        expects = (headers.get("Expect") or "").lower() == "100-continue"
        transport = self.transport
        if length and expects and transport is not None and not transport.is_closing():
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # RFC 9112 §6.3: the body is exactly Content-Length bytes after the head.
        while proto.body_received < length:
            if self._lost:
                raise RequestBodyError(400, "connection closed before the body was complete")
            self._body_waiter = self.loop.create_future()
            try:
                await self._body_waiter
            finally:
                self._body_waiter = None
        return proto.take_body(length)

    def _wake_body_reader(self) -> None:
        waiter = self._body_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._connections.add(self)
        timeout = self.server.open_timeout
        if timeout is not None:
            self._open_handle = self.loop.call_later(timeout, self._open_timed_out)

    def _open_timed_out(self) -> None:
        if self.protocol.state is State.CONNECTING and self.transport is not None:
            self.logger.info("opening handshake timed out from %s", self.remote_address)
            self.transport.abort()

    def _handshake_data(self, data: bytes) -> None:
        proto = self.protocol
        proto.receive_data(data)
        self._wake_body_reader()
        for event in proto.events_received():
            if isinstance(event, RequestReceived):
                self.request = event.request
                if self.server.process_request is None and self.server.process_response is None:
                    try:
                        response = proto.accept(event.request)
                    except Exception:
                        # e.g. a select_subprotocol callback that raised
                        self.logger.exception("error while accepting the handshake")
                        response = make_response(500, "internal server error")
                    self._finish_handshake(response)
                else:
                    self._handler_task = self.server._track(self._hooked_handshake(event.request))
        if proto.state is State.CLOSED:
            if proto.handshake_exc is not None:
                self.logger.info(
                    "rejected handshake from %s: %s", self.remote_address, proto.handshake_exc
                )
            self._flush()

    async def _hooked_handshake(self, request: Request) -> None:
        server = self.server
        response: Response | None = None
        try:
            if server.process_request is not None:
                result = server.process_request(self, request)
                response = await result if inspect.isawaitable(result) else result
            if response is None:
                response = self.protocol.accept(request)
            if server.process_response is not None:
                result2 = server.process_response(self, request, response)
                replaced = await result2 if inspect.isawaitable(result2) else result2
                if replaced is not None:
                    response = replaced
        except Exception:
            self.logger.exception("error in process_request/process_response")
            response = make_response(500, "internal server error")
        if self.protocol.state is State.CONNECTING and not self._lost:
            self._finish_handshake(response, in_task=True)
            # This task ran the hooks; it now runs the handler (a Listener needs none).
            if self.server.listener_factory is None and self._is_open():
                await self._run_handler()

    def _is_open(self) -> bool:
        # A method call, so type checkers re-read the state after the handshake.
        return self.protocol.state is State.OPEN

    def _finish_handshake(self, response: Response, in_task: bool = False) -> None:
        proto = self.protocol
        if self.server.server_header and "Server" not in response.headers:
            response.headers["Server"] = self.server.server_header
        self.response = response
        # Frames pipelined behind the request are parsed by send_response:
        # the same parse budget as for any read applies to them.
        self._set_parse_budget(self._read_inflate_budget())
        proto.send_response(response)
        if self._open_handle is not None:
            self._open_handle.cancel()
            self._open_handle = None
        if proto.state is State.OPEN:
            self._start_keepalive()
            factory = self.server.listener_factory
            if factory is not None:
                self._listener = factory()
                self._call_listener(self._listener.on_open)
            elif not in_task:
                self._handler_task = self.server._track(self._run_handler())
            self._enable_fast_paths()
            # Frames pipelined behind the request were parsed by send_response.
            self._after_receive()
        elif proto.handshake_exc is not None and response.status_code >= 400:
            # A plain HTTP answer from process_request (an API, a health check)
            # is not worth a log line; a refused upgrade is.
            self.logger.info(
                "rejected handshake from %s: %s", self.remote_address, proto.handshake_exc
            )
        self._flush()

    async def _run_handler(self) -> None:
        handler = cast(CoroutineHandler, self.server.handler)
        try:
            await handler(self)
        except ConnectionClosed:
            pass  # the peer went away; nothing to report
        except Exception:
            self.logger.exception("connection handler failed")
            if self.protocol.state is State.OPEN:
                self.fail(CloseCode.INTERNAL_ERROR, "")
        if self.protocol.state is State.OPEN:
            await self.close()
        else:
            await self.wait_closed()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._wake_body_reader()
        if self._open_handle is not None:
            self._open_handle.cancel()
        self.server._connections.discard(self)
        self.server._maybe_done()


class Server:
    """A listening WebSocket server; an async context manager and awaitable."""

    def __init__(
        self,
        handler: Handler,
        host: str | None = None,
        port: int | None = None,
        *,
        origins: Sequence[OriginLike] | None = None,
        extensions: Sequence[ServerExtensionFactory] | None = None,
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        compression: Compression = "deflate",
        process_request: ProcessRequest | None = None,
        process_response: ProcessResponse | None = None,
        server_header: str | None = "tether",
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 10.0,
        max_size: MaxSize = 2**20,
        max_frame_size: int | None = None,
        max_queue: MaxQueue = 16,
        write_limit: WriteLimit = 32768,
        offload_threshold: int = 256 * 1024,
        max_header_line: int = 8192,
        max_headers: int = 128,
        stream_fragments: bool = False,
        ssl: ssl_module.SSLContext | None = None,
        logger: LoggerLike | None = None,
        create_connection: type[ServerConnection] | None = None,
        unix: bool = False,
        path: str | None = None,
        front: Callable[[Server], asyncio.BaseProtocol] | None = None,
        **create_server_kwargs: Any,
    ) -> None:
        """``front``: makes each new connection's protocol in place of the WebSocket
        one (a router that serves plain HTTP itself, and hands WebSocket requests
        to :meth:`new_connection`)."""
        self.handler = handler
        self.front = front
        # A Listener subclass as the handler selects the callback fast path.
        self.listener_factory: type[Listener] | None = (
            handler if isinstance(handler, type) and issubclass(handler, Listener) else None
        )
        self.host = host
        self.port = port
        self.origins = origins
        self.extension_factories = server_extensions(compression, extensions)
        self.subprotocols = subprotocols
        self.select_subprotocol = select_subprotocol
        self.process_request = process_request
        self.process_response = process_response
        self.server_header = server_header
        self.open_timeout = open_timeout
        self.max_size, self.max_frame_size = split_max_size(max_size, max_frame_size)
        self.max_header_line = max_header_line
        self.max_headers = max_headers
        self.stream_fragments = stream_fragments
        self.ssl = ssl
        self.logger: LoggerLike = (
            logger if logger is not None else logging.getLogger("tether.server")
        )
        self.create_connection = create_connection if create_connection else ServerConnection
        self.unix = unix
        self.path = path
        self.create_server_kwargs = create_server_kwargs
        self._conn_kwargs = connection_options(
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
            write_limit=write_limit,
            offload_threshold=offload_threshold,
            logger=self.logger,
        )
        self._connections: set[ServerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._closing = False
        self._done: asyncio.Future[None] | None = None

    @property
    def connections(self) -> set[ServerConnection]:
        return set(self._connections)

    @property
    def sockets(self) -> tuple[Any, ...]:
        return self._server.sockets if self._server is not None else ()

    def new_connection(self) -> ServerConnection:
        """A WebSocket connection protocol of this server, for a ``front`` to hand a socket to."""
        return self._make_connection()

    def _make_connection(self) -> ServerConnection:
        connection: ServerConnection | None = None
        selector: SubprotocolSelector | None = None
        select = self.select_subprotocol
        if select is not None:
            # websockets' hook takes the connection; the core's takes (offered,
            # available). The core calls it once the request is in, long
            # after ``connection`` below is bound.
            def selector(offered: Sequence[str], available: Sequence[str]) -> str | None:
                assert connection is not None
                return select(connection, offered)

        elif self.subprotocols:
            selector = _select_in_server_order
        protocol = ServerProtocol(
            origins=self.origins,
            extensions=self.extension_factories,
            subprotocols=self.subprotocols,
            select_subprotocol=selector,
            max_size=self.max_size,
            max_frame_size=self.max_frame_size,
            max_header_line=self.max_header_line,
            max_headers=self.max_headers,
            stream_fragments=self.stream_fragments,
            # Messages that arrive just before a protocol error reach the
            # handler before the connection fails (see Connection._fail_pending).
            defer_failure=True,
        )
        connection = self.create_connection(protocol, self, **self._conn_kwargs)
        return connection

    @property
    def server(self) -> asyncio.Server | None:
        """The underlying :class:`asyncio.Server`, once started."""
        return self._server

    async def start(self) -> Server:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        front = self.front
        factory: Callable[[], asyncio.BaseProtocol] = (
            self._make_connection if front is None else lambda: front(self)
        )
        if self.unix:
            self._server = await loop.create_unix_server(
                factory, self.path, ssl=self.ssl, **self.create_server_kwargs
            )
        else:
            self._server = await loop.create_server(
                factory, self.host, self.port, ssl=self.ssl, **self.create_server_kwargs
            )
        return self

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the server runs on (as :meth:`asyncio.Server.get_loop`)."""
        if self._server is not None:
            return self._server.get_loop()
        return asyncio.get_running_loop()

    def is_serving(self) -> bool:
        """Whether the server accepts new connections."""
        return self._server is not None and self._server.is_serving()

    async def start_serving(self) -> None:
        """Start accepting connections (for ``serve(..., start_serving=False)``)."""
        assert self._server is not None, "server not started"
        await self._server.start_serving()

    def __await__(self) -> Any:
        return self.start().__await__()

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        await self.wait_closed()

    async def serve_forever(self) -> None:
        assert self._server is not None, "server not started"
        await self._server.serve_forever()

    def close(
        self,
        close_connections: bool = True,
        code: int = CloseCode.GOING_AWAY,
        reason: str = "",
    ) -> None:
        """Stop listening and, by default, close every connection with ``code`` and ``reason``.

        With ``close_connections=False`` the open connections go on until
        their handlers return; :meth:`wait_closed` waits for them.
        """
        if self._server is not None:
            self._server.close()
        self._closing = True
        if close_connections:
            for conn in list(self._connections):
                if conn.protocol.state is State.OPEN:
                    conn.loop.create_task(conn.close(code, reason))
                elif conn.transport is not None and conn.protocol.state is State.CONNECTING:
                    conn.transport.abort()
        self._maybe_done()

    def _track(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._maybe_done()

    def _maybe_done(self) -> None:
        if (
            self._closing
            and not self._connections
            and not self._tasks
            and self._done is not None
            and not self._done.done()
        ):
            self._done.set_result(None)

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
        if self._done is not None:
            await self._done


def _select_in_server_order(offered: Sequence[str], available: Sequence[str]) -> str | None:
    """websockets' default: the first of the server's subprotocols the client offers.

    A server with subprotocols refuses (HTTP 400) a client that offers none of them.
    """
    if not offered:
        raise NegotiationError("missing subprotocol")
    for subprotocol in available:
        if subprotocol in offered:
            return subprotocol
    raise NegotiationError("invalid subprotocol; expected one of " + ", ".join(available))


def serve(
    handler: Handler, host: str | None = None, port: int | None = None, **kwargs: Any
) -> Server:
    """Create a WebSocket server; use ``async with serve(...)`` or ``await serve(...)``."""
    return Server(handler, host, port, **kwargs)


def unix_serve(handler: Handler, path: str | None = None, **kwargs: Any) -> Server:
    """Create a WebSocket server on a Unix socket at ``path`` (as websockets' ``unix_serve``).

    Same options as :func:`serve`; ``sock=`` takes an already bound socket instead.
    """
    return Server(handler, unix=True, path=path, **kwargs)
