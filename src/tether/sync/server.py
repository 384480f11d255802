"""The threaded WebSocket server: ``serve(handler, host, port)`` returns a :class:`Server`.

The same names, keywords and behaviour as websockets' ``websockets.sync.server``.
:meth:`Server.serve_forever` accepts connections; each gets a thread that
runs the TLS and opening handshakes (bounded together by ``open_timeout``),
then ``handler(connection)``, then the closing handshake. The connection's
own reading thread pumps the socket meanwhile (see :mod:`tether.sync.connection`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import re
import selectors
import socket
import ssl as ssl_module
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from tether.protocol.connection import State
from tether.protocol.events import RequestReceived
from tether.protocol.exceptions import ConnectionClosed, InvalidHandshake
from tether.protocol.extensions.base import ServerExtensionFactory
from tether.protocol.frames import CloseCode
from tether.protocol.handshake import Request, Response, make_response
from tether.protocol.headers import Headers
from tether.protocol.server import ServerProtocol
from tether.sync.broadcast import broadcast
from tether.sync.connection import Connection, LoggerLike
from tether.sync.options import (
    Compression,
    MaxQueue,
    MaxSize,
    queue_marks,
    server_extensions,
    size_limits,
)

__all__ = ["Server", "ServerConnection", "basic_auth", "broadcast", "serve", "unix_serve"]

# What the handshake reads per call: a request head is rarely above 1 KiB.
_HANDSHAKE_READ = 4096

Origin = str
OriginRule = str | re.Pattern[str] | None
ProcessRequest = Callable[["ServerConnection", Request], Response | None]
ProcessResponse = Callable[["ServerConnection", Request, Response], Response | None]
SelectSubprotocol = Callable[["ServerConnection", Sequence[str]], str | None]


class ServerConnection(Connection):
    """The server's side of one WebSocket connection; handed to the handler."""

    protocol: ServerProtocol

    def __init__(
        self,
        socket: socket.socket,
        protocol: ServerProtocol,
        server: Server,
        *,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float | None = 10,
        max_queue: MaxQueue = 16,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(
            socket,
            protocol,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
            logger=logger if logger is not None else server.logger,
        )
        self.server = server
        # Set by basic_auth once the credentials check out.
        self.username: str | None = None
        # Set by tether.sync.router: the handler the path matched, and what it captured.
        self.route_handler: Callable[..., None] = _no_route
        self.route_kwargs: dict[str, Any] = {}

    def respond(self, status: int, text: str) -> Response:
        """A plain-text HTTP response for ``process_request`` (health checks, 401, 403 …).

        The body is ``text`` exactly, as websockets sends it (``respond(200,
        "OK\\n")`` answers ``OK`` and one newline).
        """
        return make_response(int(status), text, end_line=False)

    def handshake(
        self,
        process_request: ProcessRequest | None = None,
        process_response: ProcessResponse | None = None,
        server_header: str | None = None,
        timeout: float | None = None,
        origins: Sequence[OriginRule] | None = None,
    ) -> bool:
        """Read the upgrade request and answer it; True if the connection is now open.

        ``timeout`` bounds reading the request (TimeoutError). A bad request,
        a refused Origin and a hook's own answer are written back as HTTP
        responses and the method returns False.
        """
        proto = self.protocol
        sock = self.socket
        deadline = None if timeout is None else time.monotonic() + timeout
        request: Request | None = None
        while request is None:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out reading the opening handshake")
                sock.settimeout(left)
            try:
                data = sock.recv(_HANDSHAKE_READ)
            except TimeoutError:
                raise TimeoutError("timed out reading the opening handshake") from None
            if not data:
                raise InvalidHandshake("connection closed during the opening handshake")
            with self.protocol_mutex:
                proto.receive_data(data)
                for event in proto.events_received():
                    if isinstance(event, RequestReceived):
                        request = event.request
                if proto.state is State.CLOSED:
                    # Malformed: the core queued its own error response.
                    self._write_out_quietly()
                    raise proto.handshake_exc or InvalidHandshake("invalid request")
        self.request = request
        response: Response | None = None
        try:
            if process_request is not None:
                response = process_request(self, request)
            if response is None:
                response = _check_origin(request, origins)
            if response is None:
                response = proto.accept(request)
            if process_response is not None:
                replaced = process_response(self, request, response)
                if replaced is not None:
                    response = replaced
        except Exception:
            self.logger.exception("opening handshake failed")
            response = make_response(500, "internal server error")
        if server_header is not None and "Server" not in response.headers:
            response.headers["Server"] = server_header
        self.response = response
        with self.protocol_mutex:
            proto.send_response(response)
            self._write_out_quietly()
        sock.settimeout(None)
        if proto.state is not State.OPEN:
            if response.status_code >= 400:
                self.logger.info(
                    "rejected handshake from %s: HTTP %d",
                    self.remote_address,
                    response.status_code,
                )
            return False
        events = proto.events_received()  # frames the client pipelined behind its request
        if events:
            self._process_events(events, self.recv_messages.put)
        return True


def _no_route(connection: ServerConnection, **kwargs: Any) -> None:
    raise RuntimeError("no route was matched for this connection")


def _check_origin(request: Request, origins: Sequence[OriginRule] | None) -> Response | None:
    """403 unless the Origin header matches one of ``origins`` (exact str or regex).

    ``None`` among ``origins`` admits requests without Origin (non-browser
    clients); the defence against cross-site WebSocket hijacking.
    """
    if origins is None:
        return None
    values = request.headers.get_all("Origin")
    if len(values) > 1:
        return make_response(400, "more than one Origin header")
    origin = values[0] if values else None
    for rule in origins:
        if rule is None or isinstance(rule, str):
            if rule == origin:
                return None
        elif origin is not None and rule.fullmatch(origin) is not None:
            return None
    return make_response(403, f"origin {origin!r} not allowed")


class Server:
    """A listening socket and the loop that accepts connections on it.

    ``with serve(...) as server: server.serve_forever()``; another thread
    stops it with :meth:`shutdown`. ``connections`` holds the open ones.
    """

    def __init__(
        self,
        socket: socket.socket,
        handler: Callable[[socket.socket, Any], None],
        logger: LoggerLike | None = None,
    ) -> None:
        self.socket = socket
        self.handler = handler
        self.logger: LoggerLike = (
            logger if logger is not None else logging.getLogger("tether.server")
        )
        self._connections: set[ServerConnection] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._serving = False
        # What shutdown() asked for connections still in their handshake then.
        self._close_late: tuple[bool, int, str] = (True, CloseCode.GOING_AWAY, "")
        # A socket pair that wakes serve_forever's wait when shutdown() is called.
        self._wake_recv, self._wake_send = _socket_pair()

    @property
    def connections(self) -> set[ServerConnection]:
        """The connections open now (a copy)."""
        with self._lock:
            return set(self._connections)

    def fileno(self) -> int:
        return self.socket.fileno()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`; each runs in a thread of its own."""
        with self._lock:
            if self._stopping.is_set() or self._serving:
                return
            self._serving = True
        # Non-blocking: a connection that vanishes between select and accept
        # must not leave this thread blocked in accept(), deaf to shutdown().
        self.socket.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(self.socket, selectors.EVENT_READ)
        selector.register(self._wake_recv, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                ready = selector.select()
                if self._stopping.is_set():
                    break
                if not any(key.fileobj is self.socket for key, _ in ready):
                    continue
                try:
                    sock, addr = self.socket.accept()
                    sock.setblocking(True)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    if self._stopping.is_set():
                        break
                    # EMFILE and friends: say it, and go on with the others.
                    self.logger.error("accept failed: %s", exc)
                    time.sleep(0.1)  # no busy loop while the error lasts
                    continue
                thread = threading.Thread(
                    target=self.handler, args=(sock, addr), name="tether-conn", daemon=True
                )
                thread.start()
        finally:
            selector.close()
            self._close_wake()
            self._stopped.set()

    def shutdown(
        self,
        close_connections: bool = True,
        code: int = CloseCode.GOING_AWAY,
        reason: str = "",
    ) -> None:
        """Stop accepting; by default close every connection with 1001 (going away)."""
        with self._lock:
            self._close_late = (close_connections, code, reason)
            self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_send.send(b"x")
        with contextlib.suppress(OSError):
            self.socket.close()
        if close_connections:
            connections = self.connections
            for connection in connections:
                try:
                    connection.start_close(code, reason)
                except Exception:  # a connection broken meanwhile is closed anyway
                    connection.abort()
            for connection in connections:
                connection.wait_closed()
        with self._lock:
            serving = self._serving
        if not serving:
            self._close_wake()

    def _close_wake(self) -> None:
        # Only once serve_forever stopped waiting on it: an fd closed while
        # registered leaves epoll, and a wake-up sent before would be lost.
        self._wake_recv.close()
        self._wake_send.close()

    def _add(self, connection: ServerConnection) -> None:
        with self._lock:
            self._connections.add(connection)
            stopping = self._stopping.is_set()
            close, code, reason = self._close_late
        if stopping and close:
            # Its handshake finished after shutdown() looked at the connections.
            connection.start_close(code, reason)

    def _discard(self, connection: ServerConnection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    receiver, sender = socket.socketpair()
    receiver.setblocking(False)
    sender.setblocking(False)
    return receiver, sender


def serve(
    handler: Callable[[ServerConnection], None],
    host: str | None = None,
    port: int | None = None,
    *,
    sock: socket.socket | None = None,
    ssl: ssl_module.SSLContext | None = None,
    origins: Sequence[OriginRule] | None = None,
    extensions: Sequence[ServerExtensionFactory] | None = None,
    subprotocols: Sequence[str] | None = None,
    select_subprotocol: SelectSubprotocol | None = None,
    compression: Compression = "deflate",
    process_request: ProcessRequest | None = None,
    process_response: ProcessResponse | None = None,
    server_header: str | None = "tether",
    open_timeout: float | None = 10,
    ping_interval: float | None = 20,
    ping_timeout: float | None = 20,
    close_timeout: float | None = 10,
    max_size: MaxSize = 2**20,
    max_queue: MaxQueue = 16,
    logger: LoggerLike | None = None,
    create_connection: type[ServerConnection] | None = None,
    stream_fragments: bool = False,
    **kwargs: Any,
) -> Server:
    """Listen on ``host``:``port`` (or ``sock``) and return the :class:`Server`.

    Call ``serve_forever()`` to accept connections: each runs
    ``handler(connection)`` in a thread of its own, then the closing
    handshake (1000, or 1011 if the handler raised). Keywords are
    websockets' (see docs/sync.md). Other keyword arguments go to
    :func:`socket.create_server` (``unix_path`` listens on a Unix socket).
    """
    unix_path: str | None = kwargs.pop("unix_path", None)
    queue_marks(max_queue)  # a bad value fails here, not in every connection
    message_limit, frame_limit = size_limits(max_size)
    factories = server_extensions(compression, extensions)
    if sock is None:
        if unix_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(unix_path)
            sock.listen(kwargs.pop("backlog", 128))
        else:
            kwargs.setdefault("backlog", 128)
            sock = socket.create_server((host or "", port or 0), **kwargs)
    server_logger = logger if logger is not None else logging.getLogger("tether.server")
    factory = create_connection if create_connection is not None else ServerConnection

    def handle(conn_sock: socket.socket, address: Any) -> None:
        deadline = None if open_timeout is None else time.monotonic() + open_timeout
        connection: ServerConnection | None = None
        try:
            if conn_sock.family != getattr(socket, "AF_UNIX", None):
                # Small messages go out at once: a round trip must not wait for Nagle.
                conn_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl is not None:
                conn_sock.settimeout(open_timeout)
                conn_sock = ssl.wrap_socket(conn_sock, server_side=True)
            # websockets calls select_subprotocol(connection, offered); the
            # core calls its selector with (offered, available): bridge the two.
            made: list[ServerConnection] = []
            selector = None
            if select_subprotocol is not None:
                user_select = select_subprotocol

                def selector(offered: Sequence[str], available: Sequence[str]) -> str | None:
                    return user_select(made[0], offered)

            protocol = ServerProtocol(
                extensions=factories,
                subprotocols=subprotocols,
                select_subprotocol=selector,
                max_size=message_limit,
                max_frame_size=frame_limit,
                stream_fragments=stream_fragments,
                defer_failure=True,
            )
            connection = factory(
                conn_sock,
                protocol,
                server,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=close_timeout,
                max_queue=max_queue,
                logger=server_logger,
            )
            made.append(connection)
            left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            opened = connection.handshake(
                process_request, process_response, server_header, left, origins=origins
            )
        except Exception as exc:
            server_logger.info("opening handshake from %s failed: %s", address, exc)
            _drop(conn_sock)
            return
        if not opened:
            _drop(conn_sock)
            return
        connection.start_threads()
        server._add(connection)
        try:
            handler(connection)
        except ConnectionClosed:
            connection.close()  # the peer went away; nothing to report
        except Exception:
            connection.logger.exception("connection handler failed")
            connection.close(CloseCode.INTERNAL_ERROR)
        else:
            connection.close()
        finally:
            server._discard(connection)

    server = Server(sock, handle, server_logger)
    return server


def _drop(sock: socket.socket) -> None:
    """End a connection whose handshake failed, after what was written reaches the peer."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    sock.close()


def unix_serve(
    handler: Callable[[ServerConnection], None], path: str | None = None, **kwargs: Any
) -> Server:
    """:func:`serve` on the Unix socket at ``path``."""
    if path is None and kwargs.get("sock") is None:
        raise ValueError("unix_serve needs a path (or sock=)")
    return serve(handler, unix_path=path, **kwargs)


def basic_auth(
    realm: str = "",
    credentials: tuple[str, str] | Iterable[tuple[str, str]] | None = None,
    check_credentials: Callable[[str, str], bool] | None = None,
) -> ProcessRequest:
    """A ``process_request`` hook for HTTP Basic authentication (RFC 7617).

    Give ``credentials`` (one ``(username, password)`` pair or several), or
    ``check_credentials(username, password) -> bool``. A request without
    valid credentials gets 401 with a ``WWW-Authenticate`` challenge; an
    accepted one sets ``connection.username``.
    """
    if (credentials is None) == (check_credentials is None):
        raise TypeError("give either credentials or check_credentials")
    if credentials is not None:
        if (
            isinstance(credentials, tuple)
            and len(credentials) == 2
            and isinstance(credentials[0], str)
        ):
            pairs = [credentials]
        else:
            pairs = list(credentials)
        for pair in pairs:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise TypeError(f"invalid credentials argument: {credentials!r}")
        known = dict(pairs)

        def check(username: str, password: str) -> bool:
            expected = known.get(username)
            # Compare in constant time: the answer's timing must not leak the password.
            return expected is not None and hmac.compare_digest(
                expected.encode("utf-8"), password.encode("utf-8")
            )

        check_credentials = check
    assert check_credentials is not None
    verify = check_credentials
    challenge = f'Basic realm="{realm}", charset="UTF-8"'

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            return _unauthorized("missing credentials", challenge)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return _unauthorized("unsupported credentials", challenge)
        try:
            decoded = base64.b64decode(token.strip().encode("ascii"), validate=True).decode()
        except (binascii.Error, UnicodeError):
            return _unauthorized("unsupported credentials", challenge)
        username, sep, password = decoded.partition(":")
        if not sep or not verify(username, password):
            return _unauthorized("invalid credentials", challenge)
        connection.username = username
        return None

    return process_request


def _unauthorized(text: str, challenge: str) -> Response:
    return make_response(401, text, Headers({"WWW-Authenticate": challenge}))
