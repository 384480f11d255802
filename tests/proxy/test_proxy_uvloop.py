"""The tunnel on uvloop: its transports are not asyncio's, and the client swaps their protocol.

Through a CONNECT relay (plain, and behind TLS) to ws:// and wss:// tether
servers, all on one uvloop loop: set_protocol() and resume_reading() on a
uvloop transport, start_tls() over it, and TLS inside TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from typing import Any

import tether
from tether_testing import require

GUARD = 10.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    host, _, port = head.split(b" ")[1].decode().rpartition(":")
    upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def _echo(ws: tether.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def _through_proxies(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> list[str]:
    seen: list[str] = []
    plain = await tether.serve(_echo, "127.0.0.1", 0)
    secure = await tether.serve(_echo, "127.0.0.1", 0, ssl=server_ctx)
    relay = await asyncio.start_server(_relay, "127.0.0.1", 0)
    tls_relay = await asyncio.start_server(_relay, "127.0.0.1", 0, ssl=server_ctx)
    ports = [s.sockets[0].getsockname()[1] for s in (plain, secure, relay, tls_relay)]
    big = bytes(range(256)) * 2000
    cases: list[tuple[str, str, dict[str, Any]]] = [
        (f"ws://127.0.0.1:{ports[0]}/", f"http://127.0.0.1:{ports[2]}", {}),
        (f"wss://localhost:{ports[1]}/", f"http://127.0.0.1:{ports[2]}", {"ssl": client_ctx}),
    ]
    if sys.version_info >= (3, 11):  # TLS inside TLS: refused before (test_proxy_https.py)
        tls_in_tls = {"ssl": client_ctx, "proxy_ssl": client_ctx}
        cases.append((f"wss://localhost:{ports[1]}/", f"https://localhost:{ports[3]}", tls_in_tls))
    try:
        for uri, proxy, options in cases:
            async with tether.connect(uri, proxy=proxy, open_timeout=GUARD, **options) as ws:
                await ws.send(big)
                assert await ws.recv() == big
                seen.append(f"{uri.split(':')[0]} via {proxy.split(':')[0]}")
    finally:
        for server in (plain, secure, relay, tls_relay):
            server.close()
    return seen


def test_tunnels_on_uvloop(tls) -> None:  # type: ignore[no-untyped-def]
    try:
        import uvloop
    except ImportError:
        uvloop = None
    require(uvloop is not None, "uvloop is not installed (the test extra has it)")
    assert uvloop is not None
    seen = uvloop.run(asyncio.wait_for(_through_proxies(tls.server, tls.client), GUARD * 3))
    expected = ["ws via http", "wss via http", "wss via https"]
    assert seen == (expected if sys.version_info >= (3, 11) else expected[:2])
