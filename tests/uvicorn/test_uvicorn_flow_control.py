"""--ws-max-queue under the real uvicorn, in this process (to look at the connection).

uvicorn.Server serves a socket this test bound, so the client can connect
at once; ``server.server_state.connections`` holds the WebSocketProtocol.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import websockets

from tether.uvicorn import WebSocketProtocol

uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is in the test extra")

GUARD = 10.0


async def wait_until(predicate: Any) -> None:
    """Yield to the loop until ``predicate()`` (the server runs in this loop)."""

    async def spin() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(spin(), GUARD)


@pytest.mark.parametrize("deflate", [True, False])
async def test_ws_max_queue_stops_reading_until_the_app_catches_up(deflate: bool) -> None:
    release = asyncio.Event()
    received: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while len(received) < 200:
            message = await receive()
            received.append(message["text"])
        await send({"type": "websocket.send", "text": "all read"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        ws=WebSocketProtocol,
        ws_max_queue=4,
        ws_per_message_deflate=deflate,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
            for i in range(200):
                await ws.send(f"{i:04d}" * 64)
            await wait_until(lambda: server.server_state.connections)
            conn = next(iter(server.server_state.connections))
            assert isinstance(conn, WebSocketProtocol)
            await wait_until(lambda: conn.reading_paused)
            held = conn.pending_messages
            if deflate:
                # Each compressed message may inflate to --ws-max-size: the core
                # parses no more than the queue's worth.
                assert held == 4
            else:
                # Plain messages: no more than one read's worth (at most 256 KiB).
                assert 4 <= held <= 256 * 1024 // 258
            release.set()
            assert await asyncio.wait_for(ws.recv(), GUARD) == "all read"
            assert received == [f"{i:04d}" * 64 for i in range(200)]
            assert not conn.reading_paused
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, GUARD)


async def test_senders_wait_for_a_slow_reader_and_all_resume() -> None:
    """Two tasks send while the write buffer is full: both wait, then both finish."""
    sent: list[str] = []
    chunk = b"x" * 2**20

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

        async def sender(name: str) -> None:
            for _ in range(12):
                await send({"type": "websocket.send", "bytes": chunk})
            sent.append(name)

        await asyncio.gather(sender("a"), sender("b"))
        await send({"type": "websocket.send", "text": "done"})
        await receive()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, ws=WebSocketProtocol, ws_per_message_deflate=False, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # The client stops reading after 2 messages (max_queue): the server's buffer fills.
        async with websockets.connect(
            f"ws://127.0.0.1:{port}/", max_size=2**21, max_queue=2, compression=None
        ) as ws:
            await wait_until(lambda: server.server_state.connections)
            conn = next(iter(server.server_state.connections))
            await wait_until(lambda: conn.writing_paused)
            assert sent == []
            received = [await asyncio.wait_for(ws.recv(), GUARD) for _ in range(25)]
            assert received[:24] == [chunk] * 24
            assert received[24] == "done"
            assert sorted(sent) == ["a", "b"]
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, GUARD)
