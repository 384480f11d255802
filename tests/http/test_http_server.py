"""tether.http.server and tether.http.router on their own: an HTTP/1.1 server with h11.

Raw sockets play the client, so every byte on the wire is what is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tether.http.messages import HttpLimits, HttpRequest
from tether.http.router import FirstLineRouter, request_path
from tether.http.server import HttpConnection, HttpExchange, RequestBodyError

GUARD = 10.0
Handler = Callable[[HttpRequest, HttpExchange], Awaitable[None]]


async def app(request: HttpRequest, exchange: HttpExchange) -> None:
    if request.path == "/echo":
        try:
            body = await exchange.read_body(16)
        except RequestBodyError as exc:
            await exchange.respond(exc.status, [("Content-Type", "text/plain")], b"refused\n")
            return
        await exchange.respond(200, [("Content-Type", "text/plain")], body)
    elif request.path == "/stream":
        stream = exchange.start_stream(200, [("Content-Type", "text/plain")])
        for word in (b"one\n", b"two\n"):
            stream.write(word)
        stream.end()
    else:
        await exchange.respond(404, [], b"")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler = app, limits: HttpLimits | None = None) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: HttpConnection(handler, limits), "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()


async def exchange_bytes(port: int, data: bytes, *, until_eof: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        if until_eof:
            return await asyncio.wait_for(reader.read(), GUARD)
        return await asyncio.wait_for(reader.read(65536), GUARD)
    finally:
        writer.close()


async def test_keep_alive_and_a_chunked_stream_on_one_connection(
    serve: Callable[..., Awaitable[int]],
) -> None:
    port = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined
    writer.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), GUARD)
    writer.close()
    first, _, rest = data.partition(b"\r\n\r\nhi")
    assert first.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 2" in first
    assert b"Transfer-Encoding: chunked" in rest
    assert b"4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n" in rest
    # After the stream's last chunk, the third answer, and then the connection closed.
    assert rest.split(b"0\r\n\r\n", 1)[1].startswith(b"HTTP/1.1 404")


async def test_http10_stream_ends_with_the_connection(serve: Callable[..., Awaitable[int]]) -> None:
    port = await serve()
    data = await exchange_bytes(port, b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert body == b"one\ntwo\n"


async def test_body_limits(serve: Callable[..., Awaitable[int]]) -> None:
    port = await serve()
    big = await exchange_bytes(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 17\r\n\r\n"
        + b"x" * 17,
    )
    assert big.startswith(b"HTTP/1.1 413")
    chunked = await exchange_bytes(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 411")


async def test_100_continue_then_the_body(serve: Callable[..., Awaitable[int]]) -> None:
    port = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    assert interim.startswith(b"HTTP/1.1 100")
    writer.write(b"ok")
    assert (await asyncio.wait_for(reader.read(), GUARD)).endswith(b"\r\n\r\nok")
    writer.close()


async def test_timeouts_and_bad_heads(serve: Callable[..., Awaitable[int]]) -> None:
    port = await serve(limits=HttpLimits(request_timeout=0.2, keepalive_timeout=0.2))
    # A head that never completes: 408, then closed.
    assert (await exchange_bytes(port, b"GET /echo HTTP/1.1\r\nHost: x\r\n")).startswith(
        b"HTTP/1.1 408"
    )
    # An idle keep-alive connection is closed quietly.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), GUARD)
    assert data.startswith(b"HTTP/1.1 404") and data.count(b"HTTP/1.1") == 1
    writer.close()
    assert (await exchange_bytes(port, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400")


async def test_a_failing_handler_answers_500(serve: Callable[..., Awaitable[int]]) -> None:
    async def broken(request: HttpRequest, exchange: HttpExchange) -> None:
        raise RuntimeError("boom")

    port = await serve(broken)
    data = await exchange_bytes(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 500") and b'"code": 100' in data


async def test_router_hands_the_socket_and_first_bytes_over(
    serve: Callable[..., Awaitable[int]],
) -> None:
    seen: list[bytes] = []
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if not got.done():
                got.set_result(data)
            assert isinstance(self.transport, asyncio.Transport)
            self.transport.write(data.upper())
            self.transport.close()

    def choose(line: bytes) -> asyncio.Protocol:
        seen.append(line)
        if request_path(line)[1] == b"/http":
            return HttpConnection(app)
        return Echo()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FirstLineRouter(choose), "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        answer = await exchange_bytes(port, b"GET /other?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer == b"GET /OTHER?X=1 HTTP/1.1\r\nHOST: X\r\n\r\n"
        assert seen == [b"GET /other?x=1 HTTP/1.1"]
        answer = await exchange_bytes(
            port, b"GET /http HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 404")
        assert request_path(b"garbage") == (b"", b"")
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
