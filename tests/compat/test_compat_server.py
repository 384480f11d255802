"""websockets' server API on tether: options, hooks and the Server object, with websockets peers."""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

import pytest
from compat_support import GUARD
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.client import unix_connect as ws_unix_connect
from websockets.asyncio.server import unix_serve as ws_unix_serve
from websockets.exceptions import ConnectionClosedError as WsClosedError
from websockets.exceptions import ConnectionClosedOK as WsClosedOK
from websockets.exceptions import InvalidStatus as WsInvalidStatus
from werkzeug.routing import Map, Rule

import tether
from tether.asyncio.router import route
from tether.asyncio.server import basic_auth, unix_serve


async def test_origins_accept_regexes(start_server) -> None:
    srv = await start_server(origins=[re.compile(r"https://[a-z]+\.example\.com"), None])
    async with ws_connect(srv.url, origin="https://chat.example.com") as ws:
        await ws.send("ok")
        assert await ws.recv() == "ok"
    async with ws_connect(srv.url):  # no Origin header: None is listed
        pass
    for refused in ["https://evil.com", "https://chat.example.com.evil.com"]:
        with pytest.raises(WsInvalidStatus) as caught:
            await ws_connect(srv.url, origin=refused)
        assert caught.value.response.status_code == 403


async def test_max_size_tuple_limits_messages_and_fragments(start_server) -> None:
    """``max_size=(message, fragment)``: long messages in short fragments pass."""
    srv = await start_server(max_size=(4096, 1024))
    async with ws_connect(srv.url, compression=None) as ws:
        await ws.send([b"x" * 1000] * 4)  # 4000 bytes in fragments of 1000
        assert await ws.recv() == b"x" * 4000
        await ws.send(b"y" * 2000)  # one frame above the fragment limit
        with pytest.raises(WsClosedError) as caught:
            await ws.recv()
    assert caught.value.rcvd.code == 1009
    async with ws_connect(srv.url, compression=None) as ws:
        await ws.send([b"z" * 1000] * 5)  # 5000 bytes: above the message limit
        with pytest.raises(WsClosedError) as caught:
            await ws.recv()
    assert caught.value.rcvd.code == 1009


async def test_max_size_tuple_on_the_client(websockets_server) -> None:
    async def handler(ws):
        await ws.send([b"a" * 500] * 4)
        await ws.wait_closed()

    url = await websockets_server(handler, compression=None)
    async with tether.connect(url, max_size=(2048, 512), compression=None) as ws:
        assert ws.protocol.max_size == 2048 and ws.protocol.max_frame_size == 512
        assert await ws.recv() == b"a" * 2000


async def test_select_subprotocol_gets_the_connection(start_server) -> None:
    def select_subprotocol(connection, subprotocols):
        assert isinstance(connection, tether.ServerConnection)
        if "chat" in subprotocols:
            return "chat"
        return None

    srv = await start_server(select_subprotocol=select_subprotocol)
    async with ws_connect(srv.url, subprotocols=["superchat", "chat"]) as ws:
        assert ws.subprotocol == "chat"
    async with ws_connect(srv.url, subprotocols=["other"]) as ws:
        assert ws.subprotocol is None


async def test_subprotocols_in_server_order_as_websockets(start_server) -> None:
    srv = await start_server(subprotocols=["v2", "v1"])
    async with ws_connect(srv.url, subprotocols=["v1", "v2"]) as ws:
        assert ws.subprotocol == "v2"
    with pytest.raises(WsInvalidStatus) as caught:
        await ws_connect(srv.url)
    assert caught.value.response.status_code == 400


async def test_health_check_body_is_exact(start_server) -> None:
    def health_check(connection, request):
        if request.path == "/healthz":
            return connection.respond(200, "OK\n")
        return None

    srv = await start_server(process_request=health_check)
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), GUARD)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length: 3" in head
    assert body == b"OK\n"


async def test_server_object(start_server) -> None:
    srv = await start_server()
    server = srv.server
    assert server.is_serving()
    assert server.get_loop() is asyncio.get_running_loop()
    assert isinstance(server.server, asyncio.Server)
    async with ws_connect(srv.url) as ws:
        server.close(code=1012, reason="restarting")
        with pytest.raises(WsClosedError) as caught:
            await ws.recv()
    assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (1012, "restarting")
    await asyncio.wait_for(server.wait_closed(), GUARD)
    assert not server.is_serving()


async def test_start_serving_later_and_serve_forever() -> None:
    server = await tether.serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, start_serving=False)
    assert not server.is_serving()
    await server.start_serving()
    assert server.is_serving()
    port = server.sockets[0].getsockname()[1]
    forever = asyncio.create_task(server.serve_forever())
    async with ws_connect(f"ws://127.0.0.1:{port}/"):
        pass
    forever.cancel()
    with pytest.raises(asyncio.CancelledError):
        await forever
    server.close()
    await asyncio.wait_for(server.wait_closed(), GUARD)
    assert not server.is_serving()


async def test_close_without_closing_connections() -> None:
    release = asyncio.Event()

    async def handler(ws):
        await release.wait()
        await ws.send("still here")

    server = await tether.serve(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with ws_connect(f"ws://127.0.0.1:{port}/") as ws:
        server.close(close_connections=False)
        assert not server.is_serving()
        release.set()
        assert await asyncio.wait_for(ws.recv(), GUARD) == "still here"
        with pytest.raises(WsClosedOK):
            await ws.recv()
    await asyncio.wait_for(server.wait_closed(), GUARD)


async def test_unix_serve_and_unix_connect_both_ways() -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "tether.sock")
        async with unix_serve(lambda ws: _echo(ws), path):
            async with ws_unix_connect(path) as ws:  # websockets client
                await ws.send("over unix")
                assert await ws.recv() == "over unix"
            async with tether.unix_connect(path) as ws:  # tether client
                await ws.send("again")
                assert await ws.recv() == "again"
                assert ws.request.headers["Host"] == "localhost"
        other = str(Path(directory) / "websockets.sock")
        async with (
            ws_unix_serve(_echo, other),
            tether.unix_connect(other, "ws://example/room") as ws,
        ):
            await ws.send("to websockets")
            assert await ws.recv() == "to websockets"
            assert ws.request.path == "/room"


async def _echo(ws) -> None:
    async for message in ws:
        await ws.send(message)


async def test_basic_auth_with_websockets_client(start_server) -> None:
    async def handler(ws):
        await ws.send(f"hello {ws.username}")

    srv = await start_server(
        handler, process_request=basic_auth(realm="test", credentials=("alice", "s3cret"))
    )
    url = f"ws://alice:s3cret@127.0.0.1:{srv.port}/"
    async with ws_connect(url) as ws:
        assert await ws.recv() == "hello alice"
    for bad in [f"ws://alice:wrong@127.0.0.1:{srv.port}/", srv.url]:
        with pytest.raises(WsInvalidStatus) as caught:
            await ws_connect(bad)
        response = caught.value.response
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="test", charset="UTF-8"'
        assert response.body in (b"Invalid credentials\n", b"Missing credentials\n")


async def test_basic_auth_with_a_coroutine_check(start_server) -> None:
    async def check(username: str, password: str) -> bool:
        await asyncio.sleep(0)
        return password == username[::-1]

    srv = await start_server(process_request=basic_auth(check_credentials=check))
    async with ws_connect(f"ws://bob:bob@127.0.0.1:{srv.port}/") as ws:
        await ws.send("in")
        assert await ws.recv() == "in"
    with pytest.raises(TypeError):
        basic_auth()
    with pytest.raises(TypeError):
        basic_auth(credentials=("a", "b"), check_credentials=check)


async def test_route_dispatches_by_url() -> None:
    async def room(ws, room_id):
        await ws.send(f"room {room_id}")

    async def lobby(ws):
        await ws.send("lobby")

    url_map = Map([Rule("/", endpoint=lobby), Rule("/rooms/<int:room_id>", endpoint=room)])
    async with route(url_map, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with ws_connect(f"ws://127.0.0.1:{port}/rooms/42?x=1") as ws:
            assert await ws.recv() == "room 42"
        async with ws_connect(f"ws://127.0.0.1:{port}/") as ws:
            assert await ws.recv() == "lobby"
        with pytest.raises(WsInvalidStatus) as caught:
            await ws_connect(f"ws://127.0.0.1:{port}/nowhere")
        assert caught.value.response.status_code == 404
    assert tether.route is route


async def test_permessage_deflate_factories_take_compress_settings(start_server) -> None:
    from tether.extensions import permessage_deflate

    server_factory = permessage_deflate.ServerPerMessageDeflateFactory(
        server_max_window_bits=11, client_max_window_bits=11, compress_settings={"memLevel": 4}
    )
    client_factory = permessage_deflate.ClientPerMessageDeflateFactory(
        False, False, 11, 11, {"memLevel": 4, "level": 9}
    )
    assert (server_factory.mem_level, server_factory.level) == (4, 6)
    assert (client_factory.mem_level, client_factory.level) == (4, 9)
    with pytest.raises(ValueError, match="wbits"):
        permessage_deflate.ServerPerMessageDeflateFactory(compress_settings={"wbits": 9})
    srv = await start_server(compression=None, extensions=[server_factory])
    async with ws_connect(srv.url) as ws:  # websockets' client offers permessage-deflate
        assert "server_max_window_bits=11" in ws.response.headers["Sec-WebSocket-Extensions"]
        await ws.send("squeeze " * 100)
        assert await ws.recv() == "squeeze " * 100
    async with tether.connect(srv.url, compression=None, extensions=[client_factory]) as ws:
        await ws.send("again " * 100)
        assert await ws.recv() == "again " * 100
