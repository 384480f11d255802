"""The threaded WebSocket client: ``connect(uri)`` returns an open :class:`ClientConnection`.

The same names, keywords and behaviour as websockets' ``websockets.sync.client``:
the opening handshake runs on the calling thread under one ``open_timeout``
(TCP connect, TLS, HTTP upgrade); then the connection's reading thread
takes over (see :mod:`tether.sync.connection`).
"""

from __future__ import annotations

import logging
import socket
import ssl as ssl_module
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from tether.protocol import redirects
from tether.protocol.client import ClientProtocol, WebSocketURI, parse_uri
from tether.protocol.events import ResponseReceived
from tether.protocol.exceptions import InvalidMessage, InvalidStatus
from tether.protocol.extensions.base import ClientExtensionFactory
from tether.protocol.headers import HeadersLike
from tether.protocol.reconnect import backoff, process_exception
from tether.proxy import get_proxy, open_tunnel_sync
from tether.sync.connection import Connection, LoggerLike
from tether.sync.options import (
    Compression,
    MaxQueue,
    MaxSize,
    client_extensions,
    queue_marks,
    size_limits,
)

__all__ = ["ClientConnection", "connect", "reconnect", "unix_connect", "unix_reconnect"]

# What the handshake reads per call: a response head is rarely above 1 KiB.
_HANDSHAKE_READ = 4096


class ClientConnection(Connection):
    """The client's side of a WebSocket connection, as :func:`connect` returns it."""

    protocol: ClientProtocol

    def __init__(
        self,
        socket: socket.socket,
        protocol: ClientProtocol,
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
            logger=logger if logger is not None else logging.getLogger("tether.client"),
        )

    def handshake(
        self,
        additional_headers: HeadersLike | None = None,
        user_agent_header: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Send the upgrade request and read the answer; raise InvalidHandshake if refused.

        The request carries what the core was built with, plus
        ``additional_headers`` and a ``User-Agent`` given here (websockets'
        signature). ``timeout`` bounds the whole exchange (TimeoutError).
        Frames the server sent right behind its 101 answer are kept for ``recv``.
        """
        proto = self.protocol
        sock = self.socket
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.protocol_mutex:
            request = proto.connect()
            if additional_headers is not None:
                request.headers.update(additional_headers)
            if user_agent_header is not None:
                del request.headers["User-Agent"]
                request.headers["User-Agent"] = user_agent_header
            self.request = request
            proto.send_request(request)
            self._write_out_handshake()
        leftover: list[Any] = []
        while self.response is None:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("timed out during the opening handshake")
                sock.settimeout(left)
            try:
                data = sock.recv(_HANDSHAKE_READ)
            except TimeoutError:
                raise TimeoutError("timed out during the opening handshake") from None
            with self.protocol_mutex:
                if data:
                    proto.receive_data(data)
                else:
                    proto.receive_eof()
                for event in proto.events_received():
                    if isinstance(event, ResponseReceived):
                        self.response = event.response
                    else:
                        leftover.append(event)
            if proto.handshake_exc is not None:
                raise proto.handshake_exc
            if not data and self.response is None:
                raise InvalidMessage("connection closed during the opening handshake") from (
                    EOFError("the server closed the connection")
                )
        sock.settimeout(None)
        with self.protocol_mutex:
            self._write_out_quietly()
        if leftover:
            self._process_events(leftover, self.recv_messages.put)

    def _write_out_handshake(self) -> None:
        out = self.protocol.data_to_send()
        if out:
            self.socket.sendall(b"".join(out))


def connect(
    uri: str,
    *,
    sock: socket.socket | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    origin: str | None = None,
    extensions: Sequence[ClientExtensionFactory] | None = None,
    subprotocols: Sequence[str] | None = None,
    compression: Compression = "deflate",
    additional_headers: HeadersLike | None = None,
    user_agent_header: str | None = "tether",
    proxy: str | Literal[True] | None = True,
    proxy_ssl: ssl_module.SSLContext | None = None,
    proxy_server_hostname: str | None = None,
    open_timeout: float | None = 10,
    ping_interval: float | None = 20,
    ping_timeout: float | None = 20,
    close_timeout: float | None = 10,
    max_size: MaxSize = 2**20,
    max_queue: MaxQueue = 16,
    logger: LoggerLike | None = None,
    create_connection: type[ClientConnection] | None = None,
    stream_fragments: bool = False,
    **kwargs: Any,
) -> ClientConnection:
    """Open a WebSocket connection to ``uri`` and return it, open.

    Use it as a context manager (``with connect(uri) as ws:``) to close it
    at the end, or call ``ws.close()``. Keywords are websockets' (see
    docs/sync.md): ``sock`` a connected socket to use instead of dialing,
    ``ssl`` the TLS context (a default one for ``wss://``), ``proxy`` (the
    environment's by default), ``open_timeout`` bounds TCP connect, the
    proxy's tunnel, TLS and the HTTP upgrade together, redirects included.
    Other keyword arguments go to :func:`socket.create_connection`;
    ``address=(host, port)`` dials elsewhere than the URI says (Host and
    TLS still use the URI's host).

    Redirects (301, 302, 303, 307, 308) are followed, at most
    ``TETHER_MAX_REDIRECTS`` (10) times; not from ``wss://`` to ``ws://``
    (SecurityError), and credentials do not follow to another server.

    Raises InvalidURI (a ValueError) for a URI that is not ``ws://`` or
    ``wss://``, OSError when TCP fails, InvalidHandshake (InvalidStatus for
    an HTTP refusal, InvalidProxyStatus for a proxy's) when the upgrade
    fails, TimeoutError past ``open_timeout``.
    """
    parsed = parse_uri(uri)
    deadline = None if open_timeout is None else time.monotonic() + open_timeout
    for _ in range(redirects.MAX_REDIRECTS + 1):
        if deadline is not None:
            open_timeout = deadline - time.monotonic()
            if open_timeout <= 0:
                raise TimeoutError(f"timed out opening {uri}")
        try:
            return _connect_once(
                uri,
                parsed,
                sock=sock,
                ssl=ssl,
                server_hostname=server_hostname,
                origin=origin,
                extensions=extensions,
                subprotocols=subprotocols,
                compression=compression,
                additional_headers=additional_headers,
                user_agent_header=user_agent_header,
                proxy=proxy,
                proxy_ssl=proxy_ssl,
                proxy_server_hostname=proxy_server_hostname,
                open_timeout=open_timeout,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=close_timeout,
                max_size=max_size,
                max_queue=max_queue,
                logger=logger,
                create_connection=create_connection,
                stream_fragments=stream_fragments,
                **kwargs,
            )
        except InvalidStatus as exc:
            target = redirects.location(exc.response)
            if target is None:
                raise
            redirect = redirects.follow(uri, parsed, target)
            if sock is not None:
                raise ValueError(
                    f"cannot follow a redirect to {redirect.uri} over the socket given"
                ) from exc
            if redirect.cross_origin:
                if "unix_path" in kwargs:
                    raise ValueError(
                        f"cannot follow a redirect to {redirect.uri} over a Unix socket"
                    ) from exc
                # What the user meant for one server is not sent to another.
                additional_headers = redirects.without_credentials(additional_headers)
                server_hostname = None
                kwargs.pop("address", None)
            uri, parsed = redirect.uri, redirect.parsed
            if not parsed.secure:
                ssl = None
    raise redirects.too_many(redirects.MAX_REDIRECTS)


def _connect_once(
    uri: str,
    parsed: WebSocketURI,
    *,
    sock: socket.socket | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    origin: str | None = None,
    extensions: Sequence[ClientExtensionFactory] | None = None,
    subprotocols: Sequence[str] | None = None,
    compression: Compression = "deflate",
    additional_headers: HeadersLike | None = None,
    user_agent_header: str | None = "tether",
    proxy: str | Literal[True] | None = True,
    proxy_ssl: ssl_module.SSLContext | None = None,
    proxy_server_hostname: str | None = None,
    open_timeout: float | None = 10,
    ping_interval: float | None = 20,
    ping_timeout: float | None = 20,
    close_timeout: float | None = 10,
    max_size: MaxSize = 2**20,
    max_queue: MaxQueue = 16,
    logger: LoggerLike | None = None,
    create_connection: type[ClientConnection] | None = None,
    stream_fragments: bool = False,
    **kwargs: Any,
) -> ClientConnection:
    """One attempt of :func:`connect`: no redirect followed."""
    unix_path: str | None = kwargs.pop("unix_path", None)
    wsuri = parsed
    if proxy is True:
        # websockets' default: the environment's proxy, if it sets one for this host.
        proxy = get_proxy(wsuri) if sock is None and unix_path is None else None
    if not wsuri.secure and ssl is not None:
        raise ValueError("ssl given for a ws:// URI; use wss://")
    if wsuri.secure and ssl is None:
        ssl = ssl_module.create_default_context()
    headers = additional_headers
    queue_marks(max_queue)  # a bad value fails here, before dialing
    message_limit, frame_limit = size_limits(max_size)
    factories = client_extensions(compression, extensions)
    deadline = None if open_timeout is None else time.monotonic() + open_timeout

    def remaining() -> float | None:
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out opening {wsuri.host}:{wsuri.port}")
        return left

    try:
        if sock is None:
            if unix_path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(remaining())
                sock.connect(unix_path)
            elif proxy is not None:
                # A tunnel to the server through the proxy; TLS to the server
                # and the upgrade request go through it as over TCP.
                sock = open_tunnel_sync(
                    proxy,
                    wsuri.host,
                    wsuri.port,
                    timeout=remaining(),
                    user_agent=user_agent_header,
                    proxy_ssl=proxy_ssl,
                    proxy_server_hostname=proxy_server_hostname,
                    source_address=kwargs.get("source_address"),
                )
            else:
                address = kwargs.pop("address", (wsuri.host, wsuri.port))
                sock = socket.create_connection(address, remaining(), **kwargs)
    except TimeoutError:
        raise TimeoutError(f"timed out opening {wsuri.host}:{wsuri.port}") from None
    try:
        if sock.family != getattr(socket, "AF_UNIX", None):
            # Small messages go out at once: a round trip must not wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl is not None:
            if isinstance(sock, ssl_module.SSLSocket):
                raise ValueError(
                    "wss:// through an https:// proxy (TLS inside TLS) is not supported "
                    "by tether.sync yet; use an http:// or socks5h:// proxy"
                )
            sock.settimeout(remaining())
            sock = ssl.wrap_socket(sock, server_hostname=server_hostname or wsuri.host)
        protocol = ClientProtocol(
            wsuri,
            origin=origin,
            extensions=factories,
            subprotocols=subprotocols,
            additional_headers=headers,
            user_agent=user_agent_header,
            max_size=message_limit,
            max_frame_size=frame_limit,
            stream_fragments=stream_fragments,
            # Messages that arrive just before a protocol error reach the
            # application before the connection fails (see recv_events).
            defer_failure=True,
        )
        factory = create_connection if create_connection is not None else ClientConnection
        connection = factory(
            sock,
            protocol,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
            logger=logger,
        )
        connection.handshake(timeout=remaining())
    except TimeoutError:
        sock.close()
        raise TimeoutError(f"timed out opening {wsuri.host}:{wsuri.port}") from None
    except BaseException:
        sock.close()
        raise
    connection.start_threads()
    return connection


def unix_connect(
    path: str | None = None, uri: str | None = None, **kwargs: Any
) -> ClientConnection:
    """:func:`connect` over the Unix socket at ``path``.

    ``uri`` only fills the request's Host and path: ``ws://localhost/`` by
    default, ``wss://localhost/`` with ``ssl``.
    """
    if uri is None:
        uri = "wss://localhost/" if kwargs.get("ssl") is not None else "ws://localhost/"
    if path is None and kwargs.get("sock") is None:
        raise ValueError("unix_connect needs a path (or sock=)")
    return connect(uri, unix_path=path, **kwargs)


def reconnect(
    uri: str,
    *,
    process_exception: Callable[[Exception], Exception | None] = process_exception,
    reconnect_delays: Callable[[], Iterator[float]] = backoff,
    **kwargs: Any,
) -> Iterator[ClientConnection]:
    """Yield an open connection to ``uri``, again after each iteration, until stopped.

    Keywords are :func:`~tether.sync.client.connect`'s, plus
    ``process_exception`` and ``reconnect_delays`` (see module docstring).
    """
    delays: Iterator[float] | None = None
    while True:
        try:
            websocket = connect(uri, **kwargs)
        except Exception as exc:
            fatal = process_exception(exc)
            if fatal is exc:
                raise
            if fatal is not None:
                raise fatal from exc
            if delays is None:
                delays = reconnect_delays()
            delay = next(delays)
            logging.getLogger("tether.client").info(
                "connecting to %s failed (%s); retrying in %.1f s", uri, exc, delay
            )
            time.sleep(delay)
            continue
        delays = None  # a success starts the backoff over
        try:
            yield websocket
        finally:
            websocket.close()


def unix_reconnect(
    path: str | None = None, uri: str | None = None, **kwargs: Any
) -> Iterator[ClientConnection]:
    """:func:`reconnect` over the Unix socket at ``path`` (see :func:`unix_connect`)."""
    if uri is None:
        uri = "wss://localhost/" if kwargs.get("ssl") is not None else "ws://localhost/"
    return reconnect(uri, unix_path=path, **kwargs)
