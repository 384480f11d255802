"""The callback fast path: tether.Listener and send_nowait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

import tether
from tether.asyncio.connection import Connection, Data
from tether.protocol.events import Fragment


class Recorder(tether.Listener):
    events: list[tuple[str, object]] = []
    closed: asyncio.Event

    def on_open(self, ws: Connection) -> None:
        Recorder.events.append(("open", ws.request.path if ws.request else None))

    def on_message(self, ws: Connection, message: Data | Fragment) -> None:
        Recorder.events.append(("message", message))
        if message == "fail":
            raise RuntimeError("boom")
        if message == "bye":
            ws.close_nowait(4000, "asked")
            return
        ws.send_nowait(message)  # type: ignore[arg-type]

    def on_close(self, ws: Connection) -> None:
        Recorder.events.append(("close", ws.close_code))
        Recorder.closed.set()


@pytest.fixture
async def listener_server() -> object:
    Recorder.events = []
    Recorder.closed = asyncio.Event()
    async with tether.serve(Recorder, "127.0.0.1", 0, compression=None) as server:
        yield server


def url(server: tether.Server) -> str:
    return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/room"


async def test_listener_echoes_without_a_task(listener_server: tether.Server) -> None:
    async with tether.connect(url(listener_server)) as ws:
        await ws.send("hi")
        assert await ws.recv() == "hi"
        await ws.send(b"\x00\x01")
        assert await ws.recv() == b"\x00\x01"
        (conn,) = listener_server.connections
        assert conn._handler_task is None  # no per-connection task
    await asyncio.wait_for(Recorder.closed.wait(), 5)
    assert Recorder.events == [
        ("open", "/room"),
        ("message", "hi"),
        ("message", b"\x00\x01"),
        ("close", 1000),
    ]


async def test_listener_close_nowait(listener_server: tether.Server) -> None:
    async with tether.connect(url(listener_server)) as ws:
        await ws.send("bye")
        with pytest.raises(tether.ConnectionClosedError) as info:
            await ws.recv()
        assert info.value.code == 4000
        assert info.value.reason == "asked"


async def test_listener_exception_closes_with_1011(listener_server: tether.Server) -> None:
    async with tether.connect(url(listener_server)) as ws:
        await ws.send("fail")
        with pytest.raises(tether.ConnectionClosedError) as info:
            await ws.recv()
        assert info.value.code == 1011


async def test_send_nowait_after_close_raises(listener_server: tether.Server) -> None:
    async with tether.connect(url(listener_server)) as ws:
        with pytest.raises(TypeError):
            ws.send_nowait(42)  # type: ignore[arg-type]
        ws.send_nowait(bytearray(b"ok"))
        assert await ws.recv() == b"ok"
        await ws.close()
        with pytest.raises(tether.ConnectionClosed):
            ws.send_nowait("late")


async def test_cancelled_recv_of_a_fragmented_message_loses_nothing() -> None:
    release = asyncio.Event()

    async def slow_fragments(ws: tether.ServerConnection) -> None:
        async def pieces() -> AsyncIterator[str]:
            yield "first "
            yield "middle "  # "first " goes out once the next piece is known
            await release.wait()  # the client's recv() is cancelled meanwhile
            yield "last"

        await ws.send(pieces())
        await ws.wait_closed()

    async with (
        tether.serve(
            slow_fragments, "127.0.0.1", 0, compression=None, stream_fragments=True
        ) as server,
        tether.connect(url(server), compression=None, stream_fragments=True) as ws,
    ):
        receiving = asyncio.ensure_future(ws.recv())
        while not ws._recv_parts:  # the first fragment was taken
            await asyncio.sleep(0)
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
        release.set()
        assert await asyncio.wait_for(ws.recv(), 5) == "first middle last"
