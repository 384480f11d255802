"""asyncio WebSocket client: ``connect(uri)``.

``await connect(uri)``, ``async with connect(uri) as ws`` and, to reconnect
forever with backoff, ``async for ws in connect(uri)``. Opening follows
redirects (:mod:`tether.protocol.redirects`) and goes through a proxy when
one is configured (:mod:`tether.proxy`); the retry policy is
:mod:`tether.protocol.reconnect`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import sys
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from types import TracebackType
from typing import Any, Literal

from tether.asyncio.connection import Connection
from tether.asyncio.options import (
    Compression,
    MaxQueue,
    MaxSize,
    WriteLimit,
    client_extensions,
    connection_options,
    split_max_size,
)
from tether.protocol import reconnect, redirects
from tether.protocol.client import ClientProtocol, WebSocketURI, parse_uri
from tether.protocol.connection import FrameObserver, State
from tether.protocol.events import ResponseReceived
from tether.protocol.exceptions import (
    InvalidHandshake,
    InvalidMessage,
    InvalidProxy,
    InvalidStatus,
)
from tether.protocol.extensions.base import ClientExtensionFactory
from tether.protocol.headers import HeadersLike
from tether.proxy import get_proxy, open_tunnel
from tether.typing import LoggerLike

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:
    # The same context manager, before it joined asyncio. Not wait_for: opening in
    # a task of its own changed what the caller sees first (the Autobahn client
    # cases 3.3, 4.2.3 and 5.15, a valid message then a bad frame, went NON-STRICT).
    from async_timeout import timeout


class ClientConnection(Connection):
    """The client's side of a WebSocket connection."""

    protocol: ClientProtocol

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.protocol = protocol
        self._handshake: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        request = self.protocol.connect()
        self.request = request
        self.protocol.send_request(request)
        self._flush()

    def _handshake_data(self, data: bytes) -> None:
        proto = self.protocol
        # Frames may follow the response in this read.
        self._set_parse_budget(self._read_inflate_budget())
        proto.receive_data(data)
        events = proto.events_received()
        for event in events:
            if isinstance(event, ResponseReceived):
                self.response = event.response
                if proto.state is State.CLOSED:
                    exc = proto.handshake_exc or InvalidHandshake("handshake failed")
                    if not self._handshake.done():
                        self._handshake.set_exception(exc)
                elif not self._handshake.done():
                    self._handshake.set_result(None)
                    self._start_keepalive()
                    self._enable_fast_paths()
            else:
                self._handle_events([event])
        if proto.handshake_exc is not None and not self._handshake.done():
            self._handshake.set_exception(proto.handshake_exc)
        if proto.parse_paused:
            self._after_receive()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._handshake.done():
            # A refusal whose body was still arriving ends here, with its body.
            self.protocol.receive_eof()
            failure = self.protocol.handshake_exc
            if failure is None:
                # websockets' InvalidMessage: no valid HTTP response arrived. Caused
                # by an EOFError, so the reconnecting client retries it.
                failure = InvalidMessage(f"connection closed during handshake: {exc or 'EOF'}")
                failure.__cause__ = EOFError(str(exc or "EOF"))
            self._handshake.set_exception(failure)
        super().connection_lost(exc)


# Keyword arguments that configure TLS with the server, not the connection to a proxy.
_SERVER_TLS_KWARGS = ("server_hostname", "ssl_handshake_timeout", "ssl_shutdown_timeout")


class connect:
    """Open a WebSocket connection.

    ``async with connect(uri) as ws`` or ``ws = await connect(uri)`` opens
    one connection; ``async for ws in connect(uri)`` reconnects forever,
    waiting ``reconnect_delays()`` between failed attempts (exponential
    backoff with jitter) and raising what ``process_exception`` calls fatal.

    Redirects (300, 301, 302, 303, 307, 308 with a Location) are followed up
    to ``max_redirects`` times within ``open_timeout``; not from ``wss://``
    to ``ws://`` (SecurityError) nor to another scheme (InvalidURI).

    ``proxy``: True (default) uses the proxy the environment sets for the
    URI (``wss_proxy``/``ws_proxy``, ``socks_proxy``, ``https_proxy``,
    ``http_proxy``, ``all_proxy``, less ``no_proxy``); a URL
    (``http://``, ``https://``, ``socks5h://``, ``socks5://``,
    ``socks4a://``, ``socks4://``) uses that one; None connects directly.
    ``proxy_ssl``, ``proxy_server_hostname`` and
    ``proxy_ssl_handshake_timeout`` configure TLS to an ``https://`` proxy.
    Credentials in the URI (``ws://user:pass@host/``) are sent as
    ``Authorization: Basic``.
    """

    def __init__(
        self,
        uri: str,
        *,
        origin: str | None = None,
        extensions: Sequence[ClientExtensionFactory] | None = None,
        subprotocols: Sequence[str] | None = None,
        compression: Compression = "deflate",
        additional_headers: HeadersLike | None = None,
        user_agent_header: str | None = "tether",
        proxy: str | Literal[True] | None = True,
        process_exception: Callable[[Exception], Exception | None] = reconnect.process_exception,
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 10.0,
        reconnect_delays: Callable[[], Generator[float, None, None]] = reconnect.backoff,
        max_redirects: int = redirects.MAX_REDIRECTS,
        max_size: MaxSize = 2**20,
        max_frame_size: int | None = None,
        max_queue: MaxQueue = 16,
        write_limit: WriteLimit = 32768,
        offload_threshold: int = 256 * 1024,
        stream_fragments: bool = False,
        ssl: ssl_module.SSLContext | bool | None = None,
        host: str | None = None,
        port: int | None = None,
        frame_observer: FrameObserver | None = None,
        logger: LoggerLike | None = None,
        create_connection: type[ClientConnection] | None = None,
        unix: bool = False,
        path: str | None = None,
        **create_connection_kwargs: Any,
    ) -> None:
        self.uri_text = uri
        self.uri = parse_uri(uri)
        self.origin = origin
        self.extension_factories = client_extensions(compression, extensions)
        self.subprotocols = subprotocols
        self.additional_headers = additional_headers
        self.user_agent_header = user_agent_header
        if proxy is not True and proxy is not None and not isinstance(proxy, str):
            raise TypeError("proxy must be True, None or a proxy URL")
        self.proxy = proxy
        self.process_exception = process_exception
        self.reconnect_delays = reconnect_delays
        self.max_redirects = max_redirects
        self.open_timeout = open_timeout
        self.max_size, self.max_frame_size = split_max_size(max_size, max_frame_size)
        self.stream_fragments = stream_fragments
        if not self.uri.secure and ssl:
            raise ValueError("ssl given for a ws:// URI; use wss://")
        # A context given for wss:// also serves a wss:// redirect target.
        self._ssl_given = ssl
        self.ssl = self._ssl_for(self.uri)
        self.host = host
        self.port = port
        self.frame_observer = frame_observer
        self.proxy_kwargs = {
            key: create_connection_kwargs.pop(key)
            for key in ("proxy_ssl", "proxy_server_hostname", "proxy_ssl_handshake_timeout")
            if key in create_connection_kwargs
        }
        self.logger: LoggerLike = (
            logger if logger is not None else logging.getLogger("tether.client")
        )
        # websockets' create_connection=: a ClientConnection subclass to instantiate.
        self.create_connection = create_connection if create_connection else ClientConnection
        self.unix = unix
        self.path = path
        self.create_connection_kwargs = create_connection_kwargs
        self._conn_kwargs = connection_options(
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_queue=max_queue,
            write_limit=write_limit,
            offload_threshold=offload_threshold,
            logger=self.logger,
        )
        self.connection: ClientConnection | None = None

    def _ssl_for(self, uri: WebSocketURI) -> ssl_module.SSLContext | None:
        if not uri.secure or self._ssl_given is False:
            return None
        if isinstance(self._ssl_given, ssl_module.SSLContext):
            return self._ssl_given
        return ssl_module.create_default_context()

    def _make_connection(self) -> ClientConnection:
        protocol = ClientProtocol(
            self.uri,
            origin=self.origin,
            extensions=self.extension_factories,
            subprotocols=self.subprotocols,
            additional_headers=self.additional_headers,
            user_agent=self.user_agent_header,
            max_size=self.max_size,
            max_frame_size=self.max_frame_size,
            stream_fragments=self.stream_fragments,
            # Messages that arrive just before a protocol error reach the
            # application before the connection fails (see Connection._fail_pending).
            defer_failure=True,
            frame_observer=self.frame_observer,
        )
        return self.create_connection(protocol, **self._conn_kwargs)

    def _proxy_url(self) -> str | None:
        if self.proxy is None or self.unix or "sock" in self.create_connection_kwargs:
            return None
        if self.proxy is True:
            return get_proxy(self.uri)
        return self.proxy

    async def _connect_transport(self) -> ClientConnection:
        """A TCP connection (direct or through the proxy) with TLS if wss://, not yet upgraded."""
        loop = asyncio.get_running_loop()
        kwargs = dict(self.create_connection_kwargs)
        if self.ssl is not None:
            kwargs.setdefault("server_hostname", self.uri.host)
        if self.unix:
            _, conn = await loop.create_unix_connection(
                self._make_connection, self.path, ssl=self.ssl, **kwargs
            )
            return conn
        proxy = self._proxy_url()
        if proxy is not None:
            return await self._connect_through(proxy, kwargs)
        if "sock" in kwargs:
            _, conn = await loop.create_connection(self._make_connection, ssl=self.ssl, **kwargs)
        else:
            _, conn = await loop.create_connection(
                self._make_connection,
                self.host or self.uri.host,
                self.port or self.uri.port,
                ssl=self.ssl,
                **kwargs,
            )
        return conn

    async def _connect_through(self, proxy: str, kwargs: dict[str, Any]) -> ClientConnection:
        tls = {key: kwargs.pop(key) for key in _SERVER_TLS_KWARGS if key in kwargs}
        if sys.version_info < (3, 11) and self.ssl is not None and proxy.startswith("https:"):
            # asyncio's start_tls() accepts a TLS transport from Python 3.11 on.
            raise InvalidProxy(proxy, "wss:// through an https:// proxy needs Python 3.11+")
        tunnel = await open_tunnel(
            proxy,
            self.host or self.uri.host,
            self.port or self.uri.port,
            user_agent=self.user_agent_header,
            **self.proxy_kwargs,
            **kwargs,
        )
        conn = self._make_connection()
        try:
            if self.ssl is not None:
                # start_tls resumes reading itself, and leaves connection_made to us.
                transport = await asyncio.get_running_loop().start_tls(
                    tunnel, conn, self.ssl, **tls
                )
                assert transport is not None
            else:
                transport = tunnel
                transport.set_protocol(conn)
                transport.resume_reading()
        except BaseException:
            tunnel.abort()
            raise
        conn.connection_made(transport)
        return conn

    async def _open(self) -> ClientConnection:
        conn = await self._connect_transport()
        try:
            await conn._handshake
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            raise
        return conn

    async def _open_following_redirects(self) -> ClientConnection:
        for _ in range(self.max_redirects + 1):
            try:
                return await self._open()
            except InvalidStatus as exc:
                target = redirects.location(exc.response)
                if target is None:
                    raise
                self._redirect(target)
        raise redirects.too_many(self.max_redirects)

    def _redirect(self, target: str) -> None:
        redirect = redirects.follow(self.uri_text, self.uri, target)
        if "sock" in self.create_connection_kwargs:
            raise ValueError(f"cannot follow a redirect to {redirect.uri} over the socket given")
        if redirect.cross_origin:
            if self.unix:
                raise ValueError(f"cannot follow a redirect to {redirect.uri} over a Unix socket")
            if self.host is not None or self.port is not None:
                raise ValueError(
                    f"cannot follow a redirect to {redirect.uri} to another server "
                    "with host= or port= given"
                )
            # What the user meant for one server is not sent to another.
            self.additional_headers = redirects.without_credentials(self.additional_headers)
            self.create_connection_kwargs.pop("server_hostname", None)
        self.uri_text = redirect.uri
        self.uri = redirect.parsed
        self.ssl = self._ssl_for(redirect.parsed)

    async def create(self) -> ClientConnection:
        try:
            async with timeout(self.open_timeout):
                self.connection = await self._open_following_redirects()
        except asyncio.TimeoutError:  # not yet the built-in TimeoutError on Python 3.10
            raise TimeoutError(f"timed out opening {self.uri.host}:{self.uri.port}") from None
        return self.connection

    def __await__(self) -> Generator[Any, None, ClientConnection]:
        return self.create().__await__()

    async def __aenter__(self) -> ClientConnection:
        return await self.create()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def __aiter__(self) -> AsyncIterator[ClientConnection]:
        """Connect, yield the connection, close it; again, forever.

        A failed attempt is passed to ``process_exception``: None means retry
        after the next of ``reconnect_delays()``; an exception is raised and
        ends the loop. A connection that opened starts a new series of delays.
        """
        delays: Generator[float, None, None] | None = None
        while True:
            try:
                async with self as connection:
                    yield connection
            except Exception as exc:
                try:
                    verdict = self.process_exception(exc)
                except Exception as raised:
                    # Raising instead of returning is a common slip; honour it.
                    verdict = raised
                if verdict is exc:
                    raise
                if verdict is not None:
                    raise verdict from exc
                if delays is None:
                    delays = self.reconnect_delays()
                delay = next(delays)
                self.logger.info(
                    "connect to %s failed; reconnecting in %.1f seconds: %s",
                    self.uri_text,
                    delay,
                    f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(delay)
            else:
                delays = None


def unix_connect(path: str | None = None, uri: str | None = None, **kwargs: Any) -> connect:
    """Open a WebSocket connection over the Unix socket at ``path`` (websockets' ``unix_connect``).

    ``uri`` (``ws://localhost/`` by default, ``wss://localhost/`` with
    ``ssl=``) gives the Host header and the path; the other options are
    :class:`connect`'s.
    """
    if uri is None:
        uri = "wss://localhost/" if kwargs.get("ssl") else "ws://localhost/"
    return connect(uri, unix=True, path=path, **kwargs)
