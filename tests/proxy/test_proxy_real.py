"""The client through real proxies: tinyproxy (HTTP CONNECT) and dante (SOCKS4/SOCKS5).

To ws:// and wss:// tether servers on 127.0.0.1, with the asyncio client and
with the blocking tunnel (``open_tunnel_sync``) the threaded client uses.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import tether
from tether import connect
from tether.protocol.exceptions import InvalidProxyStatus, ProxyError
from tether.proxy import open_tunnel_sync

GUARD = 10.0


def recording_echo(seen: list[tether.ServerConnection]):  # type: ignore[no-untyped-def]
    async def handler(ws: tether.ServerConnection) -> None:
        seen.append(ws)
        async for message in ws:
            await ws.send(message)

    return handler


async def test_tinyproxy_ws_and_wss(start_server, tinyproxy, tls) -> None:
    proxy = await tinyproxy()
    seen: list[tether.ServerConnection] = []
    plain = await start_server(recording_echo(seen))
    secure = await start_server(recording_echo(seen), ssl=tls.server)
    proxy_port = int(proxy.rsplit(":", 1)[1])
    async with connect(plain.url, proxy=proxy, open_timeout=GUARD) as ws:
        assert ws.remote_address[1] == proxy_port  # the peer is the proxy
        await ws.send("through tinyproxy")
        assert await ws.recv() == "through tinyproxy"
        big = bytes(range(256)) * 3000  # many reads: the tunnel carries the fast read path
        await ws.send(big)
        assert await ws.recv() == big
    async with connect(
        secure.url_for("/s", "wss", "localhost"), proxy=proxy, ssl=tls.client, open_timeout=GUARD
    ) as ws:
        assert ws.transport.get_extra_info("ssl_object") is not None
        await ws.send(b"\x00secret")
        assert await ws.recv() == b"\x00secret"
    assert len(seen) == 2
    assert seen[1].request is not None and seen[1].request.path == "/s"


async def test_tinyproxy_basic_auth(start_server, tinyproxy) -> None:
    proxy = await tinyproxy(auth=("alice", "pa55word"))
    srv = await start_server()
    host_port = proxy.removeprefix("http://")
    # Percent-encoded in the URL ("%35" is "5"), decoded before Basic auth.
    async with connect(srv.url, proxy=f"http://alice:pa%355word@{host_port}") as ws:
        await ws.send("authorized")
        assert await ws.recv() == "authorized"
    with pytest.raises(InvalidProxyStatus) as refused:
        await connect(srv.url, proxy=proxy, open_timeout=GUARD)
    assert refused.value.response.status_code == 407
    assert "Basic" in (refused.value.response.headers.get("Proxy-Authenticate") or "")
    with pytest.raises(InvalidProxyStatus) as wrong:
        await connect(srv.url, proxy=f"http://alice:nope@{host_port}", open_timeout=GUARD)
    assert wrong.value.response.status_code in (401, 407)


async def test_tinyproxy_from_the_environment(start_server, tinyproxy, monkeypatch) -> None:
    proxy = await tinyproxy(auth=("env", "pw"))
    srv = await start_server()
    monkeypatch.setenv("https_proxy", proxy.replace("http://", "http://env:pw@"))
    async with connect(srv.url) as ws:  # proxy=True: the environment's
        assert ws.remote_address[1] != srv.port  # the proxy's port, not the server's
        await ws.send("via env")
        assert await ws.recv() == "via env"
    # NO_PROXY sends 127.0.0.1 around the proxy: straight to the server.
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    async with connect(srv.url) as ws:
        assert ws.remote_address[1] == srv.port
    # proxy=None ignores the environment altogether.
    monkeypatch.delenv("NO_PROXY")
    async with connect(srv.url, proxy=None) as ws:
        assert ws.remote_address[1] == srv.port


async def test_dante_socks5_and_socks4(start_server, danted, tls) -> None:
    address = await danted()
    plain = await start_server()
    secure = await start_server(ssl=tls.server)
    for scheme in ("socks5h", "socks5", "socks4a", "socks4"):
        async with connect(plain.url, proxy=f"{scheme}://{address}", open_timeout=GUARD) as ws:
            await ws.send(scheme)
            assert await ws.recv() == scheme
    async with connect(
        secure.url_for("/", "wss", "localhost"),
        proxy=f"socks5h://{address}",
        ssl=tls.client,
        open_timeout=GUARD,
    ) as ws:
        assert ws.transport.get_extra_info("ssl_object") is not None
        await ws.send("tls through socks")
        assert await ws.recv() == "tls through socks"


async def test_dante_socks_proxy_from_the_environment(start_server, danted, monkeypatch) -> None:
    address = await danted()
    srv = await start_server()
    # A socks_proxy without a scheme means socks5h (and wins over https_proxy).
    monkeypatch.setenv("socks_proxy", address)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # would fail if used
    async with connect(srv.url, open_timeout=GUARD) as ws:
        await ws.send("socks from env")
        assert await ws.recv() == "socks from env"


async def test_dante_refuses_bad_credentials(start_server, danted) -> None:
    # With "username", dante checks RFC 1929 credentials against system users:
    # these exist nowhere, so it refuses, and that is a ProxyError, not a hang.
    address = await danted(method="username")
    srv = await start_server()
    with pytest.raises(ProxyError):
        await connect(srv.url, proxy=f"socks5://nobody-here:wrong@{address}", open_timeout=GUARD)


def _round_trip(sock: socket.socket, host: str, port: int) -> bytes:
    """A WebSocket upgrade by hand over the tunnel's socket: the status line comes back."""
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    sock.settimeout(GUARD)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(1024)
        assert chunk, "closed before the status line"
        data += chunk
    return data.split(b"\r\n", 1)[0]


async def test_blocking_tunnel_through_both(start_server, tinyproxy, danted) -> None:
    http_proxy = await tinyproxy(auth=("bob", "pw"))
    socks = await danted()
    srv = await start_server()
    for proxy in (http_proxy.replace("http://", "http://bob:pw@"), f"socks5h://{socks}"):
        sock = await asyncio.to_thread(
            open_tunnel_sync, proxy, "127.0.0.1", srv.port, timeout=GUARD
        )
        with sock:
            assert sock.gettimeout() is None  # blocking mode, as documented
            status = await asyncio.to_thread(_round_trip, sock, "127.0.0.1", srv.port)
        assert status == b"HTTP/1.1 101 Switching Protocols"
    with pytest.raises(InvalidProxyStatus) as refused:
        await asyncio.to_thread(open_tunnel_sync, http_proxy, "127.0.0.1", srv.port, timeout=GUARD)
    assert refused.value.response.status_code == 407
