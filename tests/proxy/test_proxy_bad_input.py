"""Proxies that misbehave: each a clear exception within ``open_timeout``, never a hang.

Fake proxies on 127.0.0.1 that refuse (403, 407), answer garbage, close at
once, or never answer; for HTTP CONNECT and SOCKS, through the asyncio client
and through the blocking tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import tether
from tether import connect
from tether.protocol.exceptions import (
    InvalidProxy,
    InvalidProxyMessage,
    InvalidProxyStatus,
    ProxyError,
)
from tether.proxy import open_tunnel_sync
from tether_testing import echo

OPEN_TIMEOUT = 0.5
# How much later than open_timeout an error may come (a loaded CI machine).
SLACK = 2.0

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def fake_proxy() -> AsyncIterator[Callable[[Answer], Awaitable[str]]]:
    """``await fake_proxy(answer)``: a TCP server on a free port running ``answer``: host:port."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(answer: Answer) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await answer(reader, writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for writer in writers:
        writer.transport.abort()
    for server in servers:
        server.close()
        await server.wait_closed()


def answer_with(payload: bytes, *, then_close: bool = True) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(payload)
        await writer.drain()
        if then_close:
            writer.close()
        else:
            await reader.read()  # keep the connection open until the client leaves

    return answer


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client gives up and closes


async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def expect_within_timeout(exc_type: type[BaseException], proxy: str) -> BaseException:
    started = time.monotonic()
    with pytest.raises(exc_type) as caught:
        await connect("ws://127.0.0.1:9/", proxy=proxy, open_timeout=OPEN_TIMEOUT)
    assert time.monotonic() - started < OPEN_TIMEOUT + SLACK
    return caught.value


@pytest.mark.parametrize("status", [403, 407, 502])
async def test_http_proxy_that_refuses(fake_proxy, status: int) -> None:
    address = await fake_proxy(
        answer_with(f"HTTP/1.1 {status} No\r\nContent-Length: 3\r\n\r\nno\n".encode())
    )
    exc = await expect_within_timeout(InvalidProxyStatus, f"http://{address}")
    assert isinstance(exc, InvalidProxyStatus)
    assert exc.response.status_code == status
    assert f"HTTP {status}" in str(exc)


@pytest.mark.parametrize(
    "payload",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",  # not HTTP
        b"HTTP/1.1 2OO OK\r\n\r\n",  # a status that is not a number
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",  # a broken header
        b"HTTP/1.1 200 OK\r\n" + b"X-Long: " + b"a" * 10_000 + b"\r\n\r\n",  # a line too long
        b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",  # bytes after the answer
    ],
)
async def test_http_proxy_that_answers_garbage(fake_proxy, payload: bytes) -> None:
    address = await fake_proxy(answer_with(payload, then_close=False))
    await expect_within_timeout(InvalidProxyMessage, f"http://{address}")


async def test_http_proxy_that_streams_headers_forever(fake_proxy) -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for n in range(10_000):
            writer.write(b"X-%d: y\r\n" % n)
            await writer.drain()

    address = await fake_proxy(flood)
    exc = await expect_within_timeout(InvalidProxyMessage, f"http://{address}")
    assert "headers" in str(exc)


async def test_http_proxy_that_closes(fake_proxy) -> None:
    address = await fake_proxy(close_at_once)
    exc = await expect_within_timeout(InvalidProxyMessage, f"http://{address}")
    assert "closed" in str(exc)


async def test_http_proxy_that_hangs(fake_proxy) -> None:
    address = await fake_proxy(never_answer)
    exc = await expect_within_timeout(TimeoutError, f"http://{address}")
    assert "timed out" in str(exc)


async def test_socks_proxy_that_hangs(fake_proxy) -> None:
    address = await fake_proxy(never_answer)
    await expect_within_timeout(TimeoutError, f"socks5h://{address}")


async def test_socks_proxy_that_answers_garbage(fake_proxy) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(3)  # the SOCKS5 greeting
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await reader.read()

    address = await fake_proxy(garbage)
    await expect_within_timeout(ProxyError, f"socks5h://{address}")


async def test_proxy_that_is_not_there() -> None:
    # Port 9 (discard) is closed on the test machine: refused, an OSError.
    await expect_within_timeout(OSError, "http://127.0.0.1:9")
    await expect_within_timeout(OSError, "socks5h://127.0.0.1:9")


@pytest.mark.parametrize(
    "proxy",
    ["ftp://127.0.0.1:21", "http://", "http://host/path", "http://user@host:1", "socks6://h"],
)
async def test_invalid_proxy_urls(proxy: str) -> None:
    with pytest.raises(InvalidProxy):
        await connect("ws://127.0.0.1:9/", proxy=proxy, open_timeout=OPEN_TIMEOUT)


async def test_blocking_tunnel_bad_proxies(fake_proxy) -> None:
    refusing = await fake_proxy(answer_with(b"HTTP/1.1 403 Forbidden\r\n\r\n"))
    garbage = await fake_proxy(answer_with(b"\x00\x01\x02 not http\r\n\r\n"))
    hanging = await fake_proxy(never_answer)

    def tunnel(address: str, scheme: str = "http") -> object:
        return open_tunnel_sync(f"{scheme}://{address}", "127.0.0.1", 9, timeout=OPEN_TIMEOUT)

    with pytest.raises(InvalidProxyStatus) as refused:
        await asyncio.to_thread(tunnel, refusing)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidProxyMessage):
        await asyncio.to_thread(tunnel, garbage)
    for scheme in ("http", "socks5h"):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(tunnel, hanging, scheme)
        assert time.monotonic() - started < OPEN_TIMEOUT + SLACK


async def test_unix_socket_ignores_the_proxy_environment(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A proxy that would fail the test if used: nothing listens on port 9.
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    path = str(tmp_path / "ws.sock")
    async with tether.unix_serve(echo, path), tether.unix_connect(path) as ws:
        await ws.send("local")
        assert await ws.recv() == "local"
