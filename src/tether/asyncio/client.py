"""asyncio WebSocket client: ``connect(uri)``."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import sys
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any

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
from tether.protocol.client import ClientProtocol, parse_uri
from tether.protocol.connection import FrameObserver, State
from tether.protocol.events import ResponseReceived
from tether.protocol.exceptions import InvalidHandshake, InvalidMessage
from tether.protocol.extensions.base import ClientExtensionFactory
from tether.protocol.headers import HeadersLike
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
            self._handshake.set_exception(
                self.protocol.handshake_exc
                # websockets' InvalidMessage: no valid HTTP response arrived.
                or InvalidMessage(f"connection closed during handshake: {exc or 'EOF'}")
            )
        super().connection_lost(exc)


class connect:
    """Open a WebSocket connection.

    Use ``async with connect(uri) as ws`` or ``ws = await connect(uri)``.
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
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 10.0,
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
        self.uri = parse_uri(uri)
        self.origin = origin
        self.extension_factories = client_extensions(compression, extensions)
        self.subprotocols = subprotocols
        self.additional_headers = additional_headers
        self.user_agent_header = user_agent_header
        self.open_timeout = open_timeout
        self.max_size, self.max_frame_size = split_max_size(max_size, max_frame_size)
        self.stream_fragments = stream_fragments
        if self.uri.secure and ssl is None:
            ssl = True
        if not self.uri.secure and ssl:
            raise ValueError("ssl given for a ws:// URI; use wss://")
        self.ssl = ssl_module.create_default_context() if ssl is True else ssl or None
        self.host = host
        self.port = port
        self.frame_observer = frame_observer
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

    async def _open(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        kwargs = dict(self.create_connection_kwargs)
        if self.ssl is not None:
            kwargs.setdefault("server_hostname", self.uri.host)
        if self.unix:
            _, conn = await loop.create_unix_connection(
                self._make_connection, self.path, ssl=self.ssl, **kwargs
            )
        elif "sock" in kwargs:
            _, conn = await loop.create_connection(self._make_connection, ssl=self.ssl, **kwargs)
        else:
            _, conn = await loop.create_connection(
                self._make_connection,
                self.host or self.uri.host,
                self.port or self.uri.port,
                ssl=self.ssl,
                **kwargs,
            )
        try:
            await conn._handshake
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            raise
        return conn

    async def create(self) -> ClientConnection:
        try:
            async with timeout(self.open_timeout):
                self.connection = await self._open()
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


def unix_connect(path: str | None = None, uri: str | None = None, **kwargs: Any) -> connect:
    """Open a WebSocket connection over the Unix socket at ``path`` (websockets' ``unix_connect``).

    ``uri`` (``ws://localhost/`` by default, ``wss://localhost/`` with
    ``ssl=``) gives the Host header and the path; the other options are
    :class:`connect`'s.
    """
    if uri is None:
        uri = "wss://localhost/" if kwargs.get("ssl") else "ws://localhost/"
    return connect(uri, unix=True, path=path, **kwargs)
