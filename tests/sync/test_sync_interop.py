"""tether.sync against other implementations, over real sockets.

The sync client against tether's asyncio server and the ``websockets``
asyncio server; the sync server against the ``websockets`` asyncio and sync
clients and tether's asyncio client: text, binary, sizes across the frame
length boundaries, fragments, compression both ways, close codes and reasons.
"""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import pytest
from sync_testing import GUARD

from tether.protocol.exceptions import ConnectionClosedError, ConnectionClosedOK
from tether.sync.client import connect
from tether.sync.server import ServerConnection

websockets = pytest.importorskip("websockets", reason="websockets is in the test extra")

SIZES = [0, 125, 126, 65535, 65536, 1 << 20]


def payloads() -> list[str | bytes]:
    rng = random.Random(7)
    out: list[str | bytes] = []
    for size in SIZES:
        out.append(rng.randbytes(size))
        out.append("é" * (size // 2))
    return out


@pytest.mark.parametrize("kind", ["tether", "websockets"])
@pytest.mark.parametrize("compression", ["deflate", None])
def test_sync_client_against_asyncio_servers(
    asyncio_server: Any, kind: str, compression: str | None
) -> None:
    url = asyncio_server(kind, max_size=2 << 20, compression=compression)
    with connect(url, max_size=2 << 20, compression=compression) as ws:
        for message in payloads():
            ws.send(message)
            assert ws.recv(timeout=GUARD) == message
        ws.send(["frag", "ments"])
        assert ws.recv(timeout=GUARD) == "fragments"
        assert ws.ping().wait(GUARD)
        assert ws.response is not None
        negotiated = "Sec-WebSocket-Extensions" in ws.response.headers
        assert negotiated == (compression is not None)
    assert ws.close_code == 1000


@pytest.mark.parametrize("kind", ["tether", "websockets"])
def test_sync_client_sees_the_servers_close_code_and_reason(asyncio_server: Any, kind: str) -> None:
    async def closer(ws: Any) -> None:
        await ws.close(4001, "custom reason")

    url = asyncio_server(kind, closer)
    with connect(url) as ws, pytest.raises(ConnectionClosedError) as caught:
        ws.recv(timeout=GUARD)
    assert caught.value.rcvd == (4001, "custom reason")


def test_sync_client_oversized_message_from_websockets_server(asyncio_server: Any) -> None:
    async def big(ws: Any) -> None:
        await ws.send(b"x" * 5000)
        await ws.wait_closed()

    url = asyncio_server("websockets", big)
    with connect(url, max_size=4096) as ws, pytest.raises(ConnectionClosedError) as caught:
        ws.recv(timeout=GUARD)
    assert caught.value.sent is not None and caught.value.sent[0] == 1009


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, GUARD * 3))


@pytest.mark.parametrize("compression", ["deflate", None])
def test_websockets_asyncio_client_against_sync_server(
    sync_server: Any, compression: str | None
) -> None:
    from websockets.asyncio.client import connect as ws_connect

    srv = sync_server(max_size=2 << 20, compression=compression)

    async def main() -> None:
        async with ws_connect(
            srv.url, max_size=2 << 20, compression=compression, ping_interval=None
        ) as ws:
            for message in payloads():
                await ws.send(message)
                assert await ws.recv() == message
            await ws.send(["frag", "ments"])
            assert await ws.recv() == "fragments"
            pong = await ws.ping()
            await pong
        assert ws.close_code == 1000

    _run(main())


def test_websockets_client_close_reason_reaches_sync_handler(sync_server: Any) -> None:
    from websockets.asyncio.client import connect as ws_connect

    seen: list[Any] = []
    handled = threading.Event()

    def handler(ws: ServerConnection) -> None:
        try:
            ws.recv()
        except ConnectionClosedOK as exc:
            seen.append(exc.rcvd)
        handled.set()

    srv = sync_server(handler)

    async def main() -> None:
        async with ws_connect(srv.url) as ws:
            await ws.close(1000, "bye from websockets")

    _run(main())
    assert handled.wait(GUARD)
    assert seen == [(1000, "bye from websockets")]


def test_websockets_invalid_utf8_gets_1007_from_sync_server(sync_server: Any) -> None:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import ConnectionClosedError as WsClosedError

    srv = sync_server(compression=None)

    async def main() -> Any:
        async with ws_connect(srv.url, compression=None) as ws:
            await ws.send(b"\xff\xfe", text=True)  # text frame, not UTF-8
            with pytest.raises(WsClosedError) as caught:
                await ws.recv()
            return caught.value.rcvd

    rcvd = _run(main())
    assert rcvd is not None and rcvd.code == 1007


def test_websockets_sync_client_against_sync_server(sync_server: Any) -> None:
    from websockets.sync.client import connect as ws_sync_connect

    srv = sync_server(max_size=2 << 20)
    with ws_sync_connect(srv.url, max_size=2 << 20) as ws:
        for message in payloads():
            ws.send(message)
            assert ws.recv(timeout=GUARD) == message


def test_tether_asyncio_client_against_sync_server(sync_server: Any) -> None:
    import tether

    srv = sync_server(max_size=2 << 20)

    async def main() -> None:
        async with tether.connect(srv.url, max_size=2 << 20, ping_interval=None) as ws:
            for message in payloads():
                await ws.send(message)
                assert await ws.recv() == message
            pong_waiter = await ws.ping()
            latency = await pong_waiter
            assert latency >= 0

    _run(main())


def test_sync_client_against_websockets_sync_server() -> None:
    from websockets.sync.server import serve as ws_sync_serve

    def echo(ws: Any) -> None:
        for message in ws:
            ws.send(message)

    with ws_sync_serve(echo, "127.0.0.1", 0, max_size=2 << 20) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.socket.getsockname()[1]
        with connect(f"ws://127.0.0.1:{port}/", max_size=2 << 20) as ws:
            for message in payloads():
                ws.send(message)
                assert ws.recv(timeout=GUARD) == message
        server.shutdown()
        thread.join(GUARD)
    assert not thread.is_alive()
