"""The asyncio tunnel: a transport to a server through an HTTP or SOCKS proxy.

The transport comes back with reading paused and a placeholder protocol; the
caller attaches its own (``transport.set_protocol``, then
``protocol.connection_made`` and ``transport.resume_reading()``), or starts
TLS to a ``wss://`` server with ``loop.start_tls``.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from typing import Any, cast

from tether.protocol.exceptions import ProxyError
from tether.proxy.address import Proxy, parse_proxy, proxy_context
from tether.proxy.http_connect import ConnectResponseReader, connect_request
from tether.proxy.socks import NO_LIMIT, socks_arguments, translate


class _TunnelProtocol(asyncio.Protocol):
    """Holds the transport while the proxy answers CONNECT; pauses reading once it has."""

    def __init__(self, request: bytes | None) -> None:
        self.request = request
        self.reader = ConnectResponseReader()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: a cast, no isinstance.
        self.transport = cast(asyncio.Transport, transport)
        if self.request is None:  # a SOCKS tunnel: already open
            self._open()
        else:
            self.transport.write(self.request)

    def _open(self) -> None:
        # The caller attaches its protocol later: nothing may be read meanwhile.
        assert self.transport is not None
        self.transport.pause_reading()
        if not self.opened.done():
            self.opened.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            if self.reader.feed(data):
                self._open()
        except ProxyError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        try:
            self.reader.feed_eof()
        except ProxyError as exc:
            self._fail(exc)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            try:
                self.reader.feed_eof()
            except ProxyError as eof_exc:
                self.opened.set_exception(eof_exc)


async def open_tunnel(
    proxy: str | Proxy,
    host: str,
    port: int,
    *,
    user_agent: str | None = "tether",
    proxy_ssl: ssl_module.SSLContext | bool | None = None,
    proxy_server_hostname: str | None = None,
    proxy_ssl_handshake_timeout: float | None = None,
    local_addr: tuple[str, int] | None = None,
    **create_connection_kwargs: Any,
) -> asyncio.Transport:
    """Open a TCP tunnel to ``host:port`` through ``proxy``; return its transport.

    The asyncio twin of :func:`~tether.proxy.blocking.open_tunnel_sync`, with
    the same ``proxy``, ``host``, ``port``, ``user_agent``, ``proxy_ssl`` and
    ``proxy_server_hostname`` and the same exceptions. It has no timeout of
    its own: wrap it in ``asyncio.timeout`` (the client's ``open_timeout``
    does). ``local_addr`` and any other keyword arguments go to
    :meth:`asyncio.loop.create_connection` for the connection to the proxy.

    The transport returned has reading paused and a placeholder protocol.
    """
    parsed = parse_proxy(proxy) if isinstance(proxy, str) else proxy
    loop = asyncio.get_running_loop()
    if parsed.is_socks:
        if proxy_ssl is not None or proxy_server_hostname is not None:
            raise ValueError("proxy_ssl and proxy_server_hostname are for an https:// proxy")
        sock = await _socks_socket(parsed, host, port, local_addr)
        try:
            transport, tunnel = await loop.create_connection(
                lambda: _TunnelProtocol(None), sock=sock
            )
        except BaseException:
            sock.close()
            raise
    else:
        context = proxy_context(parsed, proxy_ssl)
        tls: dict[str, Any] = {}
        if context is not None:
            tls = {
                "ssl": context,
                "server_hostname": proxy_server_hostname or parsed.host,
                "ssl_handshake_timeout": proxy_ssl_handshake_timeout,
            }
        elif proxy_server_hostname is not None:
            raise ValueError("proxy_server_hostname is for an https:// proxy")
        request = connect_request(parsed, host, port, user_agent)
        transport, tunnel = await loop.create_connection(
            lambda: _TunnelProtocol(request),
            parsed.host,
            parsed.port,
            local_addr=local_addr,
            **tls,
            **create_connection_kwargs,
        )
    try:
        await tunnel.opened
    except BaseException:
        transport.abort()
        raise
    return transport


async def _socks_socket(
    proxy: Proxy, host: str, port: int, local_addr: tuple[str, int] | None
) -> Any:
    arguments = socks_arguments(proxy)
    from python_socks.async_.asyncio import Proxy as AsyncSocksProxy

    socks = AsyncSocksProxy(**arguments, loop=asyncio.get_running_loop())
    try:
        # No limit here: the caller's timeout cancels this coroutine.
        return await socks.connect(host, port, timeout=NO_LIMIT, local_addr=local_addr)
    except Exception as exc:
        translated = translate(exc, proxy)
        if translated is exc:
            raise
        raise translated from exc
