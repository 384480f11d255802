"""The blocking tunnel: a connected socket to a server through an HTTP or SOCKS proxy.

For the threaded (sync) client; the asyncio client uses :mod:`tether.proxy.aio`.
"""

from __future__ import annotations

import socket
import ssl as ssl_module
import time

from tether.proxy.address import Proxy, parse_proxy, proxy_context
from tether.proxy.http_connect import ConnectResponseReader, connect_request
from tether.proxy.socks import NO_LIMIT, socks_arguments, translate


def open_tunnel_sync(
    proxy: str | Proxy,
    host: str,
    port: int,
    *,
    timeout: float | None = None,
    user_agent: str | None = "tether",
    proxy_ssl: ssl_module.SSLContext | bool | None = None,
    proxy_server_hostname: str | None = None,
    source_address: tuple[str, int] | None = None,
) -> socket.socket:
    """Open a TCP tunnel to ``host:port`` through ``proxy``; return the connected socket.

    Signature::

        open_tunnel_sync(proxy, host, port, *, timeout=None, user_agent="tether",
                         proxy_ssl=None, proxy_server_hostname=None,
                         source_address=None) -> socket.socket

    - ``proxy``: a URL (``http://[user:pass@]host[:port]``, ``https://…``,
      ``socks5h://…``, ``socks5://…``, ``socks4a://…``, ``socks4://…``) or a
      :class:`~tether.proxy.address.Proxy` from ``parse_proxy``. Credentials
      in an HTTP proxy's URL are sent as ``Proxy-Authorization: Basic``; a
      SOCKS5 proxy gets them as RFC 1929 username/password.
    - ``host``, ``port``: the WebSocket server, as the proxy should reach it
      (the proxy resolves the name, except for ``socks5://`` and ``socks4://``).
    - ``timeout``: seconds for the whole tunnel set-up (connect to the proxy,
      its TLS, its answer); None waits as long as the network does.
    - ``user_agent``: the ``User-Agent`` of the CONNECT request (None: none).
    - ``proxy_ssl``: TLS to an ``https://`` proxy: an SSLContext, or True or
      None for a default context. Refused for any other scheme.
    - ``proxy_server_hostname``: the name checked in the proxy's certificate
      (default: the proxy's host).
    - ``source_address``: the local ``(host, port)`` to bind, as for
      :func:`socket.create_connection`.

    Returns the socket in blocking mode (``settimeout(None)``), positioned
    right after the proxy's answer: the caller's TLS handshake to a
    ``wss://`` server or its upgrade request goes next. Through an
    ``https://`` proxy the socket is an :class:`ssl.SSLSocket` to the proxy;
    TLS to the server on top of it needs :class:`ssl.SSLObject` (MemoryBIO).

    Raises :class:`~tether.protocol.exceptions.InvalidProxy` for a bad URL,
    :class:`~tether.protocol.exceptions.InvalidProxyStatus` when an HTTP
    proxy refuses (``.response.status_code``: 403, 407 …),
    :class:`~tether.protocol.exceptions.InvalidProxyMessage` when it answers
    something that is not HTTP, :class:`~tether.protocol.exceptions.ProxyError`
    when a SOCKS proxy refuses, :class:`TimeoutError` past ``timeout``,
    :class:`OSError` when the proxy cannot be reached, and
    :class:`~tether._extras.MissingDependency` (an ImportError)
    for a SOCKS proxy without python-socks installed.
    """
    parsed = parse_proxy(proxy) if isinstance(proxy, str) else proxy
    deadline = None if timeout is None else time.monotonic() + timeout
    if parsed.is_socks:
        if proxy_ssl is not None or proxy_server_hostname is not None:
            raise ValueError("proxy_ssl and proxy_server_hostname are for an https:// proxy")
        return _socks_tunnel(parsed, host, port, timeout, source_address)
    context = proxy_context(parsed, proxy_ssl)
    sock = socket.create_connection(
        (parsed.host, parsed.port), _remaining(deadline), source_address=source_address
    )
    try:
        if context is not None:
            sock.settimeout(_remaining(deadline))
            sock = context.wrap_socket(sock, server_hostname=proxy_server_hostname or parsed.host)
        sock.sendall(connect_request(parsed, host, port, user_agent))
        reader = ConnectResponseReader()
        while True:
            sock.settimeout(_remaining(deadline))
            data = sock.recv(4096)
            if not data:
                reader.feed_eof()
            # One recv at a time, and stop at the end of the answer: bytes
            # after it would belong to the server (and the reader refuses them).
            if reader.feed(data):
                break
        sock.settimeout(None)
        return sock
    except TimeoutError:
        sock.close()
        raise TimeoutError(
            f"timed out opening a tunnel through {parsed.host}:{parsed.port}"
        ) from None
    except BaseException:
        sock.close()
        raise


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _socks_tunnel(
    proxy: Proxy,
    host: str,
    port: int,
    timeout: float | None,
    source_address: tuple[str, int] | None,
) -> socket.socket:
    arguments = socks_arguments(proxy)
    from python_socks.sync import Proxy as SyncSocksProxy

    socks = SyncSocksProxy(**arguments)
    try:
        sock = socks.connect(
            host,
            port,
            timeout=NO_LIMIT if timeout is None else timeout,
            local_addr=source_address,
        )
    except Exception as exc:
        translated = translate(exc, proxy)
        if translated is exc:
            raise
        raise translated from exc
    sock.settimeout(None)
    return sock
