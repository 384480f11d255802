"""Interop with the ``websockets`` library, both roles, over real sockets.

tether client <-> websockets server, and websockets client <-> tether server:
framing at every length boundary, text and binary, ping/pong both ways, every
close path, and permessage-deflate with each side's defaults.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve

import tether
from tether import ConnectionClosedError, ConnectionClosedOK

GUARD = 30.0
MiB = 1 << 20
SIZES = [0, 125, 126, 65535, 65536, MiB, 16 * MiB]
MAX_SIZE = 32 * MiB


def payload(kind: str, size: int) -> str | bytes:
    data = random.Random(size).randbytes(size)
    if kind == "text":
        # ASCII keeps the byte length exact; non-ASCII text is covered separately.
        return data.translate(_ASCII).decode("ascii")
    return data


_ASCII = bytes(32 + b % 95 for b in range(256))


def has_deflate() -> bool:
    try:
        return importlib.util.find_spec("tether.protocol.extensions.permessage_deflate") is not None
    except ImportError:
        return False


async def ws_echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.fixture
async def websockets_server() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """``url = await websockets_server(handler, **serve_kwargs)`` on 127.0.0.1:0."""
    servers: list[Any] = []

    async def start(handler: Any = ws_echo, **kwargs: Any) -> str:
        kwargs.setdefault("ping_interval", None)
        server = await ws_serve(handler, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    yield start
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), GUARD)


# ---------------------------------------------------------------------- framing


@pytest.mark.parametrize("size", SIZES, ids=[f"{s}B" for s in SIZES])
@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_tether_client_websockets_server_echo(websockets_server, kind, size) -> None:
    url = await websockets_server(compression=None, max_size=MAX_SIZE)
    message = payload(kind, size)
    async with tether.connect(url, compression=None, max_size=MAX_SIZE) as ws:
        await ws.send(message)
        echoed = await asyncio.wait_for(ws.recv(), GUARD)
        assert type(echoed) is type(message)
        assert echoed == message


@pytest.mark.parametrize("size", SIZES, ids=[f"{s}B" for s in SIZES])
@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_websockets_client_tether_server_echo(start_server, kind, size) -> None:
    srv = await start_server(compression=None, max_size=MAX_SIZE)
    message = payload(kind, size)
    async with ws_connect(srv.url, compression=None, max_size=MAX_SIZE) as ws:
        await ws.send(message)
        echoed = await asyncio.wait_for(ws.recv(), GUARD)
        assert type(echoed) is type(message)
        assert echoed == message


async def test_non_ascii_text_and_fragments_both_ways(start_server, websockets_server) -> None:
    text = "naïve ☃ 𝄞 " * 1000
    srv = await start_server(compression=None)
    async with ws_connect(srv.url, compression=None) as ws:
        await ws.send(text)
        assert await ws.recv() == text
        await ws.send(["frag", "mented ☃"])  # websockets sends fragments
        assert await ws.recv() == "fragmented ☃"
    url = await websockets_server(compression=None)
    async with tether.connect(url, compression=None) as ws:
        await ws.send(text)
        assert await ws.recv() == text
        await ws.send([b"frag", b"mented"])
        assert await ws.recv() == b"fragmented"


async def test_message_over_max_size_closes_1009_both_ways(start_server, websockets_server) -> None:
    srv = await start_server(compression=None, max_size=1000)
    async with ws_connect(srv.url, compression=None) as ws:
        await ws.send(b"x" * 1001)
        with pytest.raises(websockets.ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), GUARD)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    url = await websockets_server(compression=None, max_size=1000)
    async with tether.connect(url, compression=None) as ws:
        await ws.send(b"x" * 1001)
        with pytest.raises(ConnectionClosedError) as info2:
            await asyncio.wait_for(ws.recv(), GUARD)
        assert info2.value.code == 1009


# -------------------------------------------------------------------- ping/pong


async def test_ping_pong_tether_client_websockets_server(websockets_server) -> None:
    server_pinged: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        message = await ws.recv()
        assert message == "ping me"
        pong_waiter = await ws.ping(b"from websockets")
        server_pinged.set_result(await pong_waiter)
        await ws.send("done")
        await ws.wait_closed()

    url = await websockets_server(handler, compression=None)
    async with tether.connect(url, compression=None) as ws:
        latency = await asyncio.wait_for(await ws.ping(b"from tether"), GUARD)
        assert isinstance(latency, float) and latency >= 0
        await ws.send("ping me")
        assert await asyncio.wait_for(ws.recv(), GUARD) == "done"
        assert await asyncio.wait_for(server_pinged, GUARD) >= 0


async def test_ping_pong_websockets_client_tether_server(start_server) -> None:
    server_pinged: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        assert await ws.recv() == "ping me"
        server_pinged.set_result(await (await ws.ping(b"from tether")))
        await ws.send("done")
        await ws.wait_closed()

    srv = await start_server(handler, compression=None)
    async with ws_connect(srv.url, compression=None) as ws:
        pong_waiter = await ws.ping(b"from websockets")
        assert await asyncio.wait_for(pong_waiter, GUARD) >= 0
        await ws.send("ping me")
        assert await asyncio.wait_for(ws.recv(), GUARD) == "done"
        assert await asyncio.wait_for(server_pinged, GUARD) >= 0


async def test_keepalive_pings_interoperate(start_server, websockets_server) -> None:
    """Both sides' keepalive pings get answered: nobody is closed with 1011."""
    srv = await start_server(compression=None, ping_interval=0.05, ping_timeout=1)
    async with ws_connect(srv.url, compression=None, ping_interval=0.05, ping_timeout=1) as ws:
        for _ in range(10):
            await ws.send("x")
            assert await ws.recv() == "x"
            await asyncio.sleep(0.02)  # pacing across several ping intervals
        assert ws.close_code is None
    url = await websockets_server(compression=None, ping_interval=0.05, ping_timeout=1)
    async with tether.connect(url, compression=None, ping_interval=0.05, ping_timeout=1) as ws:
        for _ in range(10):
            await ws.send("x")
            assert await ws.recv() == "x"
            await asyncio.sleep(0.02)
        assert ws.close_code is None


# ----------------------------------------------------------------------- close


def _record_close(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Future[Any], Any]:
    seen: asyncio.Future[Any] = loop.create_future()

    async def handler(ws):
        try:
            async for message in ws:
                await ws.send(message)
        except (ConnectionClosedError, websockets.ConnectionClosedError):
            pass
        await ws.wait_closed()
        seen.set_result((ws.close_code, ws.close_reason))

    return seen, handler


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "away"), (4000, "app reason ☃")])
async def test_client_close_tether_to_websockets(websockets_server, code, reason) -> None:
    seen, handler = _record_close(asyncio.get_running_loop())
    url = await websockets_server(handler, compression=None)
    ws = await tether.connect(url, compression=None)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    await asyncio.wait_for(ws.close(code, reason), GUARD)
    assert await asyncio.wait_for(seen, GUARD) == (code, reason)
    assert ws.close_code == code
    with pytest.raises(ConnectionClosedOK if code in (1000, 1001) else ConnectionClosedError):
        await ws.recv()


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "away"), (4000, "app reason ☃")])
async def test_client_close_websockets_to_tether(start_server, code, reason) -> None:
    seen, handler = _record_close(asyncio.get_running_loop())
    srv = await start_server(handler, compression=None)
    ws = await ws_connect(srv.url, compression=None)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    await asyncio.wait_for(ws.close(code, reason), GUARD)
    assert await asyncio.wait_for(seen, GUARD) == (code, reason)
    assert ws.close_code == code


@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (4001, "server reason")])
async def test_server_close_websockets_to_tether_client(websockets_server, code, reason) -> None:
    async def handler(ws):
        await ws.recv()
        await ws.close(code, reason)

    url = await websockets_server(handler, compression=None)
    async with tether.connect(url, compression=None) as ws:
        await ws.send("go")
        await asyncio.wait_for(ws.wait_closed(), GUARD)
        assert (ws.close_code, ws.close_reason) == (code, reason)


@pytest.mark.parametrize(("code", "reason"), [(1000, "done"), (4001, "server reason")])
async def test_server_close_tether_to_websockets_client(start_server, code, reason) -> None:
    async def handler(ws):
        await ws.recv()
        await ws.close(code, reason)

    srv = await start_server(handler, compression=None)
    async with ws_connect(srv.url, compression=None) as ws:
        await ws.send("go")
        await asyncio.wait_for(ws.wait_closed(), GUARD)
        assert (ws.close_code, ws.close_reason) == (code, reason)


async def test_handler_exception_1011_websockets_server(websockets_server) -> None:
    async def handler(ws):
        await ws.recv()
        raise RuntimeError("websockets handler bug")

    url = await websockets_server(handler, compression=None)
    async with tether.connect(url, compression=None) as ws:
        await ws.send("boom")
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), GUARD)
        assert info.value.code == 1011


async def test_handler_exception_1011_tether_server(start_server) -> None:
    async def handler(ws):
        await ws.recv()
        raise RuntimeError("tether handler bug")

    srv = await start_server(handler, compression=None)
    async with ws_connect(srv.url, compression=None) as ws:
        await ws.send("boom")
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), GUARD)
        assert ws.close_code == 1011


async def test_abrupt_drop_by_websockets_client_is_1006_on_tether_server(start_server) -> None:
    seen, handler = _record_close(asyncio.get_running_loop())
    srv = await start_server(handler, compression=None)
    ws = await ws_connect(srv.url, compression=None)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    ws.transport.abort()
    assert await asyncio.wait_for(seen, GUARD) == (1006, "")


async def test_abrupt_drop_by_tether_client_is_1006_on_websockets_server(websockets_server) -> None:
    seen, handler = _record_close(asyncio.get_running_loop())
    url = await websockets_server(handler, compression=None)
    ws = await tether.connect(url, compression=None)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    ws.transport.abort()
    code, _ = await asyncio.wait_for(seen, GUARD)
    assert code == 1006
    await ws.wait_closed()
    assert ws.close_code == 1006


async def test_abrupt_drop_by_websockets_server_is_1006_on_tether_client(websockets_server) -> None:
    async def handler(ws):
        await ws.recv()
        ws.transport.abort()

    url = await websockets_server(handler, compression=None)
    async with tether.connect(url, compression=None) as ws:
        await ws.send("drop me")
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), GUARD)
        assert info.value.code == 1006
        assert ws.close_code == 1006


async def test_abrupt_drop_by_tether_server_is_1006_on_websockets_client(start_server) -> None:
    async def handler(ws):
        await ws.recv()
        ws.transport.abort()

    srv = await start_server(handler, compression=None)
    async with ws_connect(srv.url, compression=None) as ws:
        await ws.send("drop me")
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), GUARD)
        assert ws.close_code == 1006


async def test_server_shutdown_1001_reaches_websockets_client(start_server) -> None:
    srv = await start_server(compression=None)
    async with ws_connect(srv.url, compression=None) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        srv.server.close()
        with pytest.raises(websockets.ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), GUARD)
        assert ws.close_code == 1001


# ------------------------------------------------------------------ subprotocols


async def test_subprotocol_and_headers_both_ways(start_server, websockets_server) -> None:
    srv = await start_server(subprotocols=["chat.v2", "chat.v1"], compression=None)
    async with ws_connect(
        srv.url, subprotocols=["chat.v1"], additional_headers={"X-Token": "t"}, compression=None
    ) as ws:
        assert ws.subprotocol == "chat.v1"
        assert ws.response.headers["Server"] == "tether"
    url = await websockets_server(subprotocols=["chat.v1"], compression=None)
    async with tether.connect(url, subprotocols=["chat.v1"], compression=None) as ws:
        assert ws.subprotocol == "chat.v1"
        assert ws.response_headers["Sec-WebSocket-Protocol"] == "chat.v1"


async def test_websockets_client_sees_tether_rejections(start_server) -> None:
    def process_request(conn, request):
        return conn.respond(401, "no") if request.path == "/private" else None

    srv = await start_server(process_request=process_request, origins=["https://ok.example"])
    with pytest.raises(websockets.InvalidStatus) as info:
        await ws_connect(srv.url_for("/private"), origin="https://ok.example")
    assert info.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as info:
        await ws_connect(srv.url, origin="https://evil.example")
    assert info.value.response.status_code == 403


async def test_tether_client_sees_websockets_rejection(websockets_server) -> None:
    def process_request(conn, request):
        return conn.respond(418, "teapot")

    url = await websockets_server(process_request=process_request)
    with pytest.raises(tether.InvalidStatus) as info:
        await tether.connect(url)
    assert info.value.response.status_code == 418


# ------------------------------------------------------------------ compression


@pytest.fixture
def deflate(require) -> None:
    if not has_deflate():
        pytest.skip("tether.protocol.extensions.permessage_deflate is not there yet")


async def test_default_compression_websockets_client_tether_server(deflate, start_server) -> None:
    srv = await start_server(max_size=MAX_SIZE)  # default compression
    text = '{"event": "tick", "value": 12345, "tags": ["a", "b", "c"]}\n' * 20000
    binary = payload("binary", MiB)
    async with ws_connect(srv.url, max_size=MAX_SIZE) as ws:  # websockets' default: deflate
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        for message in (text, binary, "small", b""):
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), GUARD) == message


async def test_default_compression_tether_client_websockets_server(
    deflate, websockets_server
) -> None:
    url = await websockets_server(max_size=MAX_SIZE)  # websockets' default: deflate
    text = '{"event": "tick", "value": 12345, "tags": ["a", "b", "c"]}\n' * 20000
    binary = payload("binary", MiB)
    async with tether.connect(url, max_size=MAX_SIZE) as ws:  # tether's default: deflate
        assert "permessage-deflate" in ws.response_headers["Sec-WebSocket-Extensions"]
        assert ws.protocol.extensions
        for message in (text, binary, "small", b""):
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), GUARD) == message
        await ws.send(["compressed ", "fragments"])
        assert await asyncio.wait_for(ws.recv(), GUARD) == "compressed fragments"
