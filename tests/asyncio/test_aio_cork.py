"""Corking: answers to the messages of one read leave in one write per socket, in order."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import tether
from tether.asyncio import cork
from tether.asyncio.connection import Connection, Data
from tether.protocol.events import Fragment
from tether.protocol.frames import serialize_frame

GUARD = 10.0
KEY = base64.b64encode(os.urandom(16))


def count_writes(ws: Connection) -> list[bytes]:
    """Record every transport.write of ``ws`` (the selector transport allows the patch)."""
    writes: list[bytes] = []
    transport: Any = ws.transport
    original = transport.write

    def write(data: bytes) -> None:
        writes.append(bytes(data))
        original(data)

    transport.write = write
    return writes


class RawClient:
    """A client that writes several frames in one TCP write (tether's client never does)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send_all(self, *messages: bytes | str) -> None:
        chunk = b"".join(
            serialize_frame(
                1 if isinstance(m, str) else 2,
                m.encode() if isinstance(m, str) else m,
                mask=os.urandom(4),
            )
            for m in messages
        )
        self.writer.write(chunk)

    async def recv_frame(self) -> tuple[int, bytes]:
        head = await self.reader.readexactly(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self.reader.readexactly(8), "big")
        return head[0] & 0x0F, await self.reader.readexactly(length)


@pytest.fixture
async def raw_client() -> AsyncIterator[Callable[[tether.Server], Any]]:
    clients: list[RawClient] = []

    async def connect(server: tether.Server) -> RawClient:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
        assert head.startswith(b"HTTP/1.1 101")
        client = RawClient(reader, writer)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.writer.close()


class Echo(tether.Listener):
    opened: asyncio.Future[list[bytes]]

    def on_open(self, ws: Connection) -> None:
        Echo.opened.set_result(count_writes(ws))

    def on_message(self, ws: Connection, message: Data | Fragment) -> None:
        if message == "bye":
            ws.send_nowait("last")
            ws.close_nowait(4000, "done")  # a core write: held frames go first
            return
        ws.send_nowait(message)  # type: ignore[arg-type]


async def test_listener_answers_one_read_in_one_write(raw_client: Any) -> None:
    Echo.opened = asyncio.get_running_loop().create_future()
    async with tether.serve(Echo, "127.0.0.1", 0, compression=None) as server:
        client = await raw_client(server)
        writes = await asyncio.wait_for(Echo.opened, GUARD)
        writes.clear()  # the 101 response
        client.send_all("one")  # alone in its read: written at once
        assert await asyncio.wait_for(client.recv_frame(), GUARD) == (1, b"one")
        assert len(writes) == 1
        messages = [f"m{i}" for i in range(20)] + [b"\x00" * 300]
        client.send_all(*messages)
        for m in messages:
            expected = (1, m.encode()) if isinstance(m, str) else (2, m)
            assert await asyncio.wait_for(client.recv_frame(), GUARD) == expected
        # The first answer leaves at once, the rest of the read together (a
        # slow scheduler may split the 21 frames over more reads, never 21).
        assert 2 <= len(writes) <= 4, len(writes)
        client.send_all("x", "y", "bye")
        assert [await asyncio.wait_for(client.recv_frame(), GUARD) for _ in range(4)] == [
            (1, b"x"),
            (1, b"y"),
            (1, b"last"),
            (8, (4000).to_bytes(2, "big") + b"done"),
        ]
        client.writer.close()


@contextlib.asynccontextmanager
async def counted_echo(raw_client: Any) -> AsyncIterator[tuple[RawClient, list[bytes]]]:
    """An ``async for`` echo server, a raw client of it, and the server side's writes."""
    opened: asyncio.Future[list[bytes]] = asyncio.get_running_loop().create_future()

    async def echo(ws: tether.ServerConnection) -> None:
        opened.set_result(count_writes(ws))
        async for message in ws:
            await ws.send(message)

    async with tether.serve(echo, "127.0.0.1", 0, compression=None) as server:
        client = await raw_client(server)
        writes = await asyncio.wait_for(opened, GUARD)
        yield client, writes
        client.writer.close()


async def test_async_for_answers_queued_messages_in_one_write(raw_client: Any) -> None:
    async with counted_echo(raw_client) as (client, writes):
        messages = [b"%d" % i for i in range(30)]
        client.send_all(*messages)
        writes.clear()  # the 101 response
        for m in messages:
            assert await asyncio.wait_for(client.recv_frame(), GUARD) == (2, m)
        assert len(writes) <= 4, len(writes)


async def test_broadcast_while_corked_keeps_order_per_socket(raw_client: Any) -> None:
    clients: list[Connection] = []
    both_open = asyncio.Event()

    class Fanout(tether.Listener):
        def on_open(self, ws: Connection) -> None:
            clients.append(ws)
            if len(clients) == 2:
                both_open.set()

        def on_message(self, ws: Connection, message: Data | Fragment) -> None:
            tether.broadcast(clients, message)  # type: ignore[arg-type]

    async with tether.serve(Fanout, "127.0.0.1", 0, compression=None) as server:
        publisher = await raw_client(server)
        subscriber = await raw_client(server)
        await asyncio.wait_for(both_open.wait(), GUARD)
        messages = [b"p%d" % i for i in range(50)]
        publisher.send_all(*messages)
        for client in (publisher, subscriber):
            for m in messages:
                assert await asyncio.wait_for(client.recv_frame(), GUARD) == (2, m)
            client.writer.close()


async def test_a_cork_left_by_a_stopped_loop_holds_nothing(raw_client: Any) -> None:
    """A loop that stopped before its uncork ran must not leave writes held in the next."""

    dead = asyncio.new_event_loop()
    dead.close()
    cork.cork_state.loop = dead
    try:
        async with counted_echo(raw_client) as (client, _):
            client.send_all("a")
            assert await asyncio.wait_for(client.recv_frame(), GUARD) == (1, b"a")
            client.send_all("b", "c", "d")
            for m in (b"b", b"c", b"d"):
                assert await asyncio.wait_for(client.recv_frame(), GUARD) == (1, m)
    finally:
        cork.cork_state.loop = None


async def test_a_large_broadcast_after_held_frames_keeps_order(raw_client: Any) -> None:
    """Large frames are not held; held small ones still go out before them."""

    clients: list[Connection] = []
    opened = asyncio.Event()

    class Subscriber(tether.Listener):
        def on_open(self, ws: Connection) -> None:
            clients.append(ws)
            opened.set()

    async with tether.serve(Subscriber, "127.0.0.1", 0, compression=None) as server:
        client = await raw_client(server)
        await asyncio.wait_for(opened.wait(), GUARD)
        big = os.urandom(100 * 1024)
        # As while a read's second message is delivered (see Connection.cork_writes):
        cork.cork_state.loop = asyncio.get_running_loop()
        try:
            tether.broadcast(clients, b"s1")
            assert clients[0]._held_frames is not None  # held
            tether.broadcast(clients, big)  # written now, after s1
            tether.broadcast(clients, b"s2")
        finally:
            clients[0].uncork_writes()
        assert cork.cork_state.loop is None
        for m in (b"s1", big, b"s2"):
            assert await asyncio.wait_for(client.recv_frame(), GUARD) == (2, m)
        client.writer.close()


async def test_a_message_before_a_protocol_error_is_answered_first(raw_client: Any) -> None:
    """The same read holds a message and then a bad frame: the handler answers, then 1002.

    The fast path delivers the message; the core then finds the error and
    defers the failure by one loop iteration (``after_messages``), so the
    ``async for`` handler, woken first, still sends its answer.
    """

    async def echo(ws: tether.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with tether.serve(echo, "127.0.0.1", 0, compression=None) as server:
        client = await raw_client(server)
        reserved = serialize_frame(3, b"", mask=os.urandom(4))  # opcode 3 is reserved
        client.writer.write(serialize_frame(1, b"hello", mask=os.urandom(4)) + reserved)
        assert await asyncio.wait_for(client.recv_frame(), GUARD) == (1, b"hello")
        opcode, payload = await asyncio.wait_for(client.recv_frame(), GUARD)
        assert (opcode, int.from_bytes(payload[:2], "big")) == (8, 1002)
        client.writer.close()


async def test_hold_writes_sends_one_iterations_broadcasts_in_one_write(raw_client: Any) -> None:
    """Messages that do not come from a read (a hub's broker) are batched per loop iteration."""
    opened: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()

    async def handler(ws: tether.ServerConnection) -> None:
        opened.set_result(ws)
        await ws.wait_closed()

    async with tether.serve(handler, "127.0.0.1", 0, compression=None) as server:
        client = await raw_client(server)
        ws = await asyncio.wait_for(opened, GUARD)
        writes = count_writes(ws)
        cork.hold_writes()
        cork.hold_writes()  # held already: one release
        for i in range(10):
            tether.broadcast([ws], b"b%d" % i)
        assert writes == []  # held until this iteration ends
        for i in range(10):
            assert await asyncio.wait_for(client.recv_frame(), GUARD) == (2, b"b%d" % i)
        assert len(writes) == 1 and cork.cork_state.loop is None
        tether.broadcast([ws], b"alone")  # nothing held now: written at once
        assert len(writes) == 2
        assert await asyncio.wait_for(client.recv_frame(), GUARD) == (2, b"alone")
        client.writer.close()
