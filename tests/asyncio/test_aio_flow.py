"""Flow control over real sockets: bounded incoming queue, write water marks, broadcast."""

from __future__ import annotations

import asyncio
import importlib
import logging

import pytest

import tether
from tether import broadcast, connect
from tether.protocol.frames import Opcode

GUARD = 10.0


def on_pause_writing(conn: tether.Connection) -> asyncio.Event:
    """An event set when the transport asks ``conn`` to pause writing (buffer above high water)."""
    paused = asyncio.Event()
    original = conn.pause_writing

    def pause_writing() -> None:
        original()
        paused.set()

    conn.pause_writing = pause_writing  # type: ignore[method-assign]
    return paused


def on_reading_paused(conn: tether.Connection) -> asyncio.Event:
    """An event set once ``conn`` pauses reading because its incoming queue is full."""
    paused = asyncio.Event()
    original = conn._deliver

    def deliver(message):
        original(message)
        if conn._reading_paused:
            paused.set()

    conn._deliver = deliver  # type: ignore[method-assign]
    # Whole simple frames reach _deliver through the fast read path's callback.
    conn._rx.enable(lambda _conn, message: deliver(message))
    return paused


async def test_bounded_incoming_queue_pushes_back_on_the_sender(start_server) -> None:
    max_queue = 4
    # Messages bigger than one transport read (256 KiB) complete at most one per
    # data_received, so the queue cannot overshoot max_queue.
    size = 300 * 1024
    server_side: asyncio.Future[tether.ServerConnection] = (
        asyncio.get_running_loop().create_future()
    )
    release = asyncio.Event()
    max_seen = 0
    received: list[bytes] = []

    async def handler(ws):
        nonlocal max_seen
        if ws.request.path != "/":
            async for message in ws:
                await ws.send(message)
            return
        original = ws._deliver

        def deliver(message):
            nonlocal max_seen
            original(message)
            max_seen = max(max_seen, len(ws._queue))

        ws._deliver = deliver
        ws._rx.enable(lambda _conn, message: deliver(message))
        server_side.set_result(ws)
        await release.wait()  # does not read until released
        async for message in ws:
            received.append(message)
            if message == b"end":
                await ws.send("done")

    srv = await start_server(handler, compression=None, max_queue=max_queue)
    async with connect(srv.url, compression=None) as ws:
        server_ws = await asyncio.wait_for(server_side, GUARD)
        server_paused = on_reading_paused(server_ws)
        bytes_read = 0
        original_buffer_updated = server_ws.buffer_updated

        def buffer_updated(nbytes: int) -> None:
            nonlocal bytes_read
            bytes_read += nbytes
            original_buffer_updated(nbytes)

        server_ws.buffer_updated = buffer_updated  # type: ignore[method-assign]
        client_paused = on_pause_writing(ws)
        payload = b"\xab" * size
        sent = 0
        stop = False

        async def sender() -> None:
            nonlocal sent
            while not stop:
                await ws.send(payload)
                sent += 1

        sending = asyncio.ensure_future(sender())
        # The handler does not read: the queue fills and the server stops reading.
        await asyncio.wait_for(server_paused.wait(), GUARD)
        assert len(server_ws._queue) <= max_queue
        # The kernel buffers fill, then the client's own write buffer grows past
        # its high-water mark and stays there (send() blocks).
        while not ws._writing_paused:
            client_paused.clear()
            await asyncio.wait_for(client_paused.wait(), GUARD)
        assert ws.buffered_amount > 32768
        assert not sending.done()
        read_when_paused = bytes_read
        # An awaited round trip on another connection: the server read nothing
        # more from the paused one, and its queue stayed bounded.
        async with connect(srv.url_for("/other"), compression=None) as other:
            await other.send(b"other")
            assert await other.recv() == b"other"
        assert bytes_read == read_when_paused
        assert server_ws._reading_paused
        assert len(server_ws._queue) <= max_queue
        assert max_seen <= max_queue
        # What the client sent but the server did not read waits in the kernel and
        # the client's buffer, not in the server's memory.
        assert sent * (size + 10) - bytes_read > 0

        # Release the handler: everything sent arrives, in order, nothing lost.
        stop = True
        release.set()
        await asyncio.wait_for(sending, GUARD)
        await ws.send(b"end")
        assert await asyncio.wait_for(ws.recv(), GUARD) == "done"
    assert len(received) == sent + 1
    assert all(m == payload for m in received[:-1])
    assert max_seen <= max_queue


async def test_max_queue_none_reads_everything(start_server) -> None:
    release = asyncio.Event()
    server_side: asyncio.Future[tether.ServerConnection] = (
        asyncio.get_running_loop().create_future()
    )

    async def handler(ws):
        server_side.set_result(ws)
        await release.wait()
        async for message in ws:
            await ws.send(message)

    srv = await start_server(handler, compression=None, max_queue=None)
    async with connect(srv.url, compression=None) as ws:
        for i in range(100):
            await ws.send(str(i))
        await ws.send("mark")
        server_ws = await asyncio.wait_for(server_side, GUARD)
        # A ping is answered by the core while reading: once it returns, "mark" was read too.
        await asyncio.wait_for(await ws.ping(), GUARD)
        assert len(server_ws._queue) == 101
        assert not server_ws._reading_paused
        release.set()
        assert [await ws.recv() for _ in range(101)][-1] == "mark"


async def test_send_blocks_above_high_water_mark_when_peer_stops_reading(
    start_server, raw_client
) -> None:
    high, low = 65536, 16384
    chunk = b"\x00" * 65536
    state: dict[str, object] = {"sent": 0}
    paused: asyncio.Future[tether.ServerConnection] = asyncio.get_running_loop().create_future()
    progressed = asyncio.Event()

    async def handler(ws):
        if ws.request.path != "/":
            async for message in ws:
                await ws.send(message)
            return
        pause_event = on_pause_writing(ws)
        pause_event_task = asyncio.ensure_future(pause_event.wait())
        pause_event_task.add_done_callback(lambda _: paused.set_result(ws))
        while True:
            await ws.send(chunk)
            state["sent"] = int(state["sent"]) + 1  # type: ignore[call-overload]
            if paused.done():
                progressed.set()

    srv = await start_server(handler, compression=None, write_limit=(high, low))
    reader = await raw_client(srv.port)
    await reader.handshake()  # ... and then stops reading
    server_ws = await asyncio.wait_for(paused, GUARD)
    assert server_ws.write_limit == (high, low)
    assert server_ws.buffered_amount > high
    sent_when_paused = state["sent"]

    # Something else the server does completes (an awaited condition) while
    # the handler's send() stays blocked.
    async with connect(srv.url_for("/other")) as other:
        await other.send("meanwhile")
        assert await other.recv() == "meanwhile"
    assert state["sent"] == sent_when_paused
    assert not progressed.is_set()
    assert server_ws.buffered_amount > 0

    # The peer reads again: the buffer drains below low water and send() resumes.
    async def drain_reader() -> None:
        while True:
            await reader.read_frame()

    draining = asyncio.ensure_future(drain_reader())
    try:
        await asyncio.wait_for(progressed.wait(), GUARD)
        assert int(state["sent"]) > int(sent_when_paused)  # type: ignore[call-overload]
    finally:
        draining.cancel()


async def test_default_write_limit_low_water_is_a_quarter(start_server) -> None:
    seen: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        seen.set_result(ws.transport.get_write_buffer_limits())
        await ws.wait_closed()

    srv = await start_server(handler, write_limit=40000)
    async with connect(srv.url):
        low, high = await asyncio.wait_for(seen, GUARD)
    assert (low, high) == (10000, 40000)


async def _server_side_pairs(srv, count: int, **connect_kwargs):
    """Open ``count`` clients; return them with their server-side connections, in order."""
    clients, servers = [], []
    for i in range(count):
        ws = await connect(srv.url_for(f"/{i}"), **connect_kwargs)
        clients.append(ws)
        await ws.send("hello")
        assert await ws.recv() == "hello"
        by_path = {c.request.path: c for c in srv.server.connections}
        servers.append(by_path[f"/{i}"])
    return clients, servers


async def test_broadcast_frames_once_and_reaches_everyone(start_server, monkeypatch) -> None:
    calls: list[tuple[int, int]] = []
    broadcast_module = importlib.import_module(broadcast.__module__)
    real_frame_header = broadcast_module.frame_header

    def counting_frame_header(opcode, length, **kwargs):
        calls.append((opcode, length))
        return real_frame_header(opcode, length, **kwargs)

    monkeypatch.setattr(broadcast_module, "frame_header", counting_frame_header)
    srv = await start_server(compression=None)
    clients, server_conns = await _server_side_pairs(srv, 5, compression=None)
    writes: list[bytes] = []
    for conn in server_conns:
        original = conn.transport.write

        def spy(data, original=original):
            writes.append(bytes(data))
            original(data)

        monkeypatch.setattr(conn.transport, "write", spy)

    broadcast(server_conns, "news ☃")
    broadcast(server_conns, b"\x01\x02")
    assert calls == [(Opcode.TEXT, len("news ☃".encode())), (Opcode.BINARY, 2)]
    # Identical bytes on every socket.
    assert len(writes) == 10
    assert len(set(writes[:5])) == 1 and len(set(writes[5:])) == 1
    for ws in clients:
        assert await asyncio.wait_for(ws.recv(), GUARD) == "news ☃"
        assert await asyncio.wait_for(ws.recv(), GUARD) == b"\x01\x02"
        await ws.close()


async def test_broadcast_from_client_side_masks_each_frame(start_server) -> None:
    srv = await start_server(compression=None)
    async with connect(srv.url, compression=None) as a, connect(srv.url, compression=None) as b:
        broadcast([a, b], "from clients")
        assert await asyncio.wait_for(a.recv(), GUARD) == "from clients"
        assert await asyncio.wait_for(b.recv(), GUARD) == "from clients"


async def test_broadcast_skips_closing_connections(start_server, raw_client) -> None:
    closing: asyncio.Future[tether.ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        if ws.request.path == "/closing":
            closing_task = asyncio.ensure_future(ws.close(1000, "closing"))
            closing.set_result(ws)
            await closing_task
        else:
            async for message in ws:
                await ws.send(message)

    srv = await start_server(handler, compression=None)
    clients, healthy = await _server_side_pairs(srv, 2, compression=None)
    slow_closer = await raw_client(srv.port)
    await slow_closer.handshake("/closing")
    closing_conn = await asyncio.wait_for(closing, GUARD)
    _, opcode, _ = await slow_closer.read_frame()
    assert opcode == Opcode.CLOSE
    assert closing_conn.state is tether.protocol.State.CLOSING

    broadcast([healthy[0], closing_conn, healthy[1]], "only to open ones")
    for ws in clients:
        assert await asyncio.wait_for(ws.recv(), GUARD) == "only to open ones"
    # Answer the Close: nothing but the end of the connection follows.
    await slow_closer.send_frame(Opcode.CLOSE, slow_closer.close_payload(1000))
    assert await slow_closer.read_eof() == b""
    for ws in clients:
        await ws.close()


async def test_broadcast_skips_connections_over_their_write_limit(
    start_server, raw_client, caplog
) -> None:
    stuck: asyncio.Future[tether.ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        if ws.request.path == "/stuck":
            paused = on_pause_writing(ws)

            async def fill() -> None:
                while True:
                    await ws.send(b"\x00" * 65536)  # blocks once above high water

            filling = asyncio.ensure_future(fill())
            await paused.wait()
            stuck.set_result(ws)
            await ws.wait_closed()
            filling.cancel()
        else:
            async for message in ws:
                await ws.send(message)

    srv = await start_server(handler, compression=None, write_limit=65536)
    clients, healthy = await _server_side_pairs(srv, 2, compression=None)
    non_reader = await raw_client(srv.port)
    await non_reader.handshake("/stuck")  # then never reads
    stuck_conn = await asyncio.wait_for(stuck, GUARD)
    buffered = stuck_conn.buffered_amount
    assert buffered > 65536

    with caplog.at_level(logging.WARNING, logger="tether"):
        broadcast([healthy[0], stuck_conn, healthy[1]], "fast ones only")
    assert any("skipped 1" in r.getMessage() for r in caplog.records)
    assert stuck_conn.buffered_amount <= buffered  # nothing was added
    for ws in clients:
        assert await asyncio.wait_for(ws.recv(), GUARD) == "fast ones only"

    with pytest.raises(RuntimeError, match="1 connection"):
        broadcast([healthy[0], stuck_conn], "again", raise_exceptions=True)
    assert await asyncio.wait_for(clients[0].recv(), GUARD) == "again"
    for ws in clients:
        await ws.close()


async def test_broadcast_skips_connection_sending_a_fragmented_message(start_server) -> None:
    gate = asyncio.Event()
    sending: asyncio.Future[tether.ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        if ws.request.path == "/fragments":

            async def parts():
                yield "first "
                yield "second "  # pulling this one sends "first " (FIN=0)
                sending.set_result(ws)
                await gate.wait()
                yield "last"

            await ws.send(parts())
            await ws.wait_closed()
        else:
            async for message in ws:
                await ws.send(message)

    srv = await start_server(handler, compression=None)
    clients, healthy = await _server_side_pairs(srv, 1, compression=None)
    async with connect(srv.url_for("/fragments"), compression=None) as frag_client:
        frag_conn = await asyncio.wait_for(sending, GUARD)
        broadcast([frag_conn, healthy[0]], "interleaved?")
        assert await asyncio.wait_for(clients[0].recv(), GUARD) == "interleaved?"
        gate.set()
        assert await asyncio.wait_for(frag_client.recv(), GUARD) == "first second last"
    await clients[0].close()


def test_broadcast_rejects_other_types() -> None:
    with pytest.raises(TypeError):
        broadcast([], 42)  # type: ignore[arg-type]


async def test_close_completes_while_reading_is_paused(start_server) -> None:
    """The peer's Close sits behind unread messages: close() must still finish promptly."""
    result: asyncio.Future[tuple[float, int | None]] = asyncio.get_running_loop().create_future()
    filled = asyncio.Event()

    async def handler(ws):
        await filled.wait()
        assert ws._reading_paused
        loop = asyncio.get_running_loop()
        start = loop.time()
        await ws.close(1000, "enough")
        result.set_result((loop.time() - start, ws.close_code))

    srv = await start_server(handler, compression=None, max_queue=2, close_timeout=5)
    async with connect(srv.url, compression=None) as ws:
        (server_ws,) = srv.server.connections
        await_paused = on_reading_paused(server_ws)
        for i in range(4):
            await ws.send(f"unread {i}")
        await asyncio.wait_for(await_paused.wait(), GUARD)
        filled.set()
        elapsed, code = await asyncio.wait_for(result, GUARD)
        assert elapsed < 2.0, "close() waited for close_timeout"
        assert code == 1000
        assert ws.close_code == 1000
        assert ws.close_reason == "enough"


async def test_recv_reassembles_more_fragments_than_max_queue(start_server) -> None:
    """With stream_fragments=True, recv() of a message with many fragments must not stall."""
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        got.set_result(await ws.recv())
        await ws.wait_closed()

    srv = await start_server(handler, compression=None, max_queue=4, stream_fragments=True)
    async with connect(srv.url, compression=None) as ws:
        await ws.send([f"{i}," for i in range(50)])
        assert await asyncio.wait_for(got, 5) == "".join(f"{i}," for i in range(50))
