"""websockets' connection idioms on tether, with the real websockets library as the peer."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from compat_support import GUARD
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus as WsInvalidStatus

import tether
from tether.asyncio.client import ClientConnection
from tether.asyncio.server import ServerConnection
from tether.frames import CloseCode


async def test_ping_returns_a_pong_waiter(start_server, websockets_server) -> None:
    """``pong_waiter = await ws.ping(); latency = await pong_waiter``, both roles."""
    url = await websockets_server()
    async with tether.connect(url) as ws:
        pong_waiter = await ws.ping()
        assert isinstance(pong_waiter, asyncio.Future)
        latency = await asyncio.wait_for(pong_waiter, GUARD)
        assert 0 <= latency < GUARD
        assert ws.latency == latency
        waiter = await ws.ping(b"payload")
        assert await asyncio.wait_for(waiter, GUARD) >= 0

    server_latency: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        waiter = await ws.ping("from tether")
        server_latency.set_result(await waiter)
        await ws.wait_closed()

    srv = await start_server(handler)
    async with ws_connect(srv.url):
        assert await asyncio.wait_for(server_latency, GUARD) >= 0


async def test_send_text_and_recv_decode(websockets_server) -> None:
    seen: list[object] = []

    async def handler(ws):
        async for message in ws:
            seen.append(message)
            await ws.send(message)

    url = await websockets_server(handler)
    async with tether.connect(url) as ws:
        await ws.send(b"caf\xc3\xa9", text=True)  # bytes as a text frame
        assert await ws.recv() == "café"
        await ws.send("café", text=False)  # str as a binary frame
        assert await ws.recv() == b"caf\xc3\xa9"
        await ws.send("text")
        assert await ws.recv(decode=False) == b"text"  # a text message as bytes
        await ws.send(b"\xe2\x98\x83")
        assert await ws.recv(decode=True) == "☃"  # a binary message decoded
        await ws.send(["frag", "ments"], text=False)
        assert await ws.recv() == b"fragments"
        await ws.send("streamed")
        assert [piece async for piece in ws.recv_streaming(decode=False)] == [b"streamed"]
    assert seen == ["café", b"caf\xc3\xa9", "text", b"\xe2\x98\x83", b"fragments", "streamed"]


async def test_send_nowait_and_broadcast_take_text(start_server) -> None:
    received: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        ws.send_nowait(b"as text", text=True)
        tether.broadcast([ws], "as binary", text=False)
        await ws.wait_closed()

    srv = await start_server(handler)
    async with ws_connect(srv.url) as ws:
        received.set_result([await ws.recv(), await ws.recv()])
    assert await received == ["as text", b"as binary"]


async def test_close_reason_is_echoed_and_exceptions_carry_close_frames(start_server) -> None:
    """The server echoes code and reason; ``rcvd``, ``sent``, ``rcvd_then_sent`` as websockets."""
    closed: asyncio.Future[tether.ConnectionClosed] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        try:
            await ws.recv()
        except tether.ConnectionClosed as exc:
            closed.set_result(exc)

    srv = await start_server(handler)
    ws = await ws_connect(srv.url)
    await ws.close(4000, "see you")
    # websockets' client sees the reason it sent, echoed.
    assert (ws.close_code, ws.close_reason) == (4000, "see you")
    assert ws.protocol.close_rcvd.reason == "see you"
    exc = await asyncio.wait_for(closed, GUARD)
    assert isinstance(exc, tether.ConnectionClosedError)
    assert (exc.rcvd.code, exc.rcvd.reason) == (4000, "see you")
    assert (exc.sent.code, exc.sent.reason) == (4000, "see you")
    assert exc.rcvd_then_sent is True
    assert str(exc) == "received 4000 (private use) see you; then sent 4000 (private use) see you"


async def test_connection_closed_ok_from_websockets_server(websockets_server) -> None:
    async def handler(ws):
        await ws.close(CloseCode.GOING_AWAY, "restart")

    url = await websockets_server(handler)
    async with tether.connect(url) as ws:
        with pytest.raises(tether.ConnectionClosedOK) as caught:
            await ws.recv()
    exc = caught.value
    assert exc.rcvd.code == CloseCode.GOING_AWAY == 1001
    assert exc.rcvd.reason == "restart"
    assert exc.sent is not None and exc.rcvd_then_sent is True
    assert isinstance(exc, tether.WebSocketException)


async def test_id_and_logger(start_server, caplog) -> None:
    """``ws.id`` is a UUID; ``ws.logger`` is the ``logger=`` given, with the connection as extra."""
    server_logger = logging.getLogger("compat.test.server")
    seen: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        ws.logger.info("hello from %s", ws.id)
        seen.set_result(ws)
        await ws.wait_closed()

    srv = await start_server(handler, logger=server_logger)
    with caplog.at_level(logging.INFO, logger="compat.test.server"):
        async with tether.connect(srv.url, logger=logging.getLogger("compat.test.client")) as ws:
            server_ws = await asyncio.wait_for(seen, GUARD)
            assert isinstance(ws.id, uuid.UUID) and isinstance(server_ws.id, uuid.UUID)
            assert ws.id != server_ws.id
            assert ws.logger.logger.name == "compat.test.client"
    records = [r for r in caplog.records if r.name == "compat.test.server"]
    assert records[0].getMessage() == f"hello from {server_ws.id}"
    assert records[0].websocket is server_ws  # type: ignore[attr-defined]


async def test_handler_failure_is_logged_on_the_server_logger(start_server, caplog) -> None:
    async def handler(ws):
        raise RuntimeError("boom")

    srv = await start_server(handler, logger=logging.getLogger("compat.test.failing"))
    with caplog.at_level(logging.ERROR, logger="compat.test.failing"):
        async with tether.connect(srv.url) as ws:
            with pytest.raises(tether.ConnectionClosedError):
                await ws.recv()
    assert any(r.name == "compat.test.failing" and r.exc_info for r in caplog.records)


async def test_create_connection_subclasses(start_server) -> None:
    class TracingServerConnection(ServerConnection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.traced = True

    class TracingClientConnection(ClientConnection):
        pass

    seen: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        seen.set_result(ws)
        await ws.send("hi")
        await ws.wait_closed()

    srv = await start_server(handler, create_connection=TracingServerConnection)
    async with tether.connect(srv.url, create_connection=TracingClientConnection) as ws:
        assert type(ws) is TracingClientConnection
        assert await ws.recv() == "hi"
        server_ws = await asyncio.wait_for(seen, GUARD)
        assert type(server_ws) is TracingServerConnection and server_ws.traced


async def test_connection_is_an_async_context_manager(start_server) -> None:
    srv = await start_server()
    ws = await tether.connect(srv.url)
    async with ws as same:
        assert same is ws
        await ws.send("x")
        assert await ws.recv() == "x"
    assert ws.state is tether.State.CLOSED


async def test_max_queue_tuple(start_server) -> None:
    srv = await start_server()
    async with tether.connect(srv.url, max_queue=(8, 2)) as ws:
        assert (ws.max_queue, ws._queue_low) == (8, 2)
        for i in range(20):
            await ws.send(str(i))
        assert [await ws.recv() for _ in range(20)] == [str(i) for i in range(20)]


async def test_websockets_client_sees_tether_refusal_with_body(start_server) -> None:
    """A peer's InvalidStatus carries tether's exact body (``respond()`` adds nothing)."""

    def process_request(connection, request):
        return connection.respond(403, "forbidden\n")

    srv = await start_server(process_request=process_request)
    with pytest.raises(WsInvalidStatus) as caught:
        await ws_connect(srv.url)
    assert caught.value.response.status_code == 403
    assert caught.value.response.body == b"forbidden\n"


@pytest.mark.parametrize("answer", [b"", b"garbage\r\n\r\n"], ids=["closed", "garbage"])
async def test_no_valid_http_response_is_invalid_message(answer: bytes) -> None:
    """As websockets: a server that hangs up or answers garbage raises InvalidMessage."""

    async def bad_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        writer.close()

    server = await asyncio.start_server(bad_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(tether.InvalidMessage) as caught:
            await tether.connect(f"ws://127.0.0.1:{port}/", open_timeout=GUARD)
    assert isinstance(caught.value, tether.InvalidHandshake)
