"""An ``https://`` proxy: TLS to the proxy, CONNECT inside it, TLS to a wss:// server in that.

Debian's tinyproxy speaks plain HTTP only, so the proxy here is a small
CONNECT relay behind TLS, written for the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest

from tether import connect
from tether.protocol.exceptions import InvalidProxy, InvalidProxyStatus
from tether.proxy import open_tunnel_sync

GUARD = 10.0


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def https_proxy(tls):  # type: ignore[no-untyped-def]
    """A TLS CONNECT relay on 127.0.0.1 (certificate for localhost/127.0.0.1): its port."""
    requests: list[bytes] = []
    tasks: set[asyncio.Task[None]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        requests.append(head)
        method, target, _ = head.split(b"\r\n", 1)[0].split(b" ")
        if method != b"CONNECT" or b"Proxy-Authorization: Basic" not in head:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")
            writer.close()
            return
        host, _, port = target.decode().rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        both = [
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ]
        tasks.update(both)
        await asyncio.gather(*both)

    server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=tls.server)
    yield server.sockets[0].getsockname()[1], requests
    for task in tasks:
        task.cancel()
    server.close()


async def test_wss_through_an_https_proxy(start_server, tls, https_proxy) -> None:
    port, requests = https_proxy
    srv = await start_server(ssl=tls.server)
    if sys.version_info < (3, 11):
        # start_tls() over a TLS transport came with Python 3.11: a clear refusal before.
        with pytest.raises(InvalidProxy, match=r"3\.11"):
            await connect(
                srv.url_for("/", "wss", "localhost"),
                ssl=tls.client,
                proxy=f"https://u:p@localhost:{port}",
                proxy_ssl=tls.client,
            )
        return
    async with connect(
        srv.url_for("/", "wss", "localhost"),
        ssl=tls.client,
        proxy=f"https://u:p@localhost:{port}",
        proxy_ssl=tls.client,
        open_timeout=GUARD,
    ) as ws:
        await ws.send("two layers of TLS")
        assert await ws.recv() == "two layers of TLS"
    assert requests[0].startswith(f"CONNECT localhost:{srv.port} HTTP/1.1\r\n".encode())


async def test_https_proxy_checks_its_certificate(start_server, https_proxy) -> None:
    port, requests = https_proxy
    srv = await start_server()
    # The default context does not trust the test CA: the TLS handshake to the proxy fails.
    with pytest.raises(OSError):  # ssl.SSLCertVerificationError is an OSError
        await connect(srv.url, proxy=f"https://u:p@localhost:{port}", open_timeout=GUARD)
    assert requests == []


async def test_https_proxy_with_the_blocking_tunnel(start_server, tls, https_proxy) -> None:
    port, _ = https_proxy
    srv = await start_server()

    def tunnel(proxy: str) -> bytes:
        sock = open_tunnel_sync(proxy, "127.0.0.1", srv.port, timeout=GUARD, proxy_ssl=tls.client)
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not an upgrade: the server says so
            sock.settimeout(GUARD)
            return sock.recv(12)

    assert await asyncio.to_thread(tunnel, f"https://u:p@localhost:{port}") == b"HTTP/1.1 426"
    with pytest.raises(InvalidProxyStatus):
        await asyncio.to_thread(tunnel, f"https://localhost:{port}")


def test_proxy_tls_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="https:// proxy"):
        open_tunnel_sync("http://127.0.0.1:9", "h", 80, proxy_ssl=True)
    with pytest.raises(ValueError, match="cannot be False"):
        open_tunnel_sync("https://127.0.0.1:9", "h", 80, proxy_ssl=False)
    with pytest.raises(ValueError, match="https:// proxy"):
        open_tunnel_sync("socks5://127.0.0.1:9", "h", 80, proxy_server_hostname="x")
