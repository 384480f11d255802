"""Keepalive, opening-handshake and closing-handshake timeouts over real sockets."""

from __future__ import annotations

import asyncio

import pytest

from tether import ConnectionClosedError, connect
from tether.protocol.frames import Opcode
from tether_testing import answer_upgrade

GUARD = 10.0
MARGIN = 1.5  # slack for a loaded machine on top of the configured timeouts


async def test_keepalive_closes_peer_that_never_answers_pings(start_server, raw_client) -> None:
    ping_interval, ping_timeout = 0.2, 0.2
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosedError:
            pass
        await ws.wait_closed()
        if not closed.done():
            closed.set_result(ws.protocol.close_sent[0] if ws.protocol.close_sent else None)

    srv = await start_server(handler, ping_interval=ping_interval, ping_timeout=ping_timeout)
    loop = asyncio.get_running_loop()
    deaf = await raw_client(srv.port)
    await deaf.handshake()
    start = loop.time()
    pings = 0
    while True:
        _, opcode, payload = await deaf.read_frame()
        if opcode != Opcode.PING:
            break
        pings += 1  # never answered
    elapsed = loop.time() - start
    assert opcode == Opcode.CLOSE
    assert int.from_bytes(payload[:2], "big") == 1011
    assert pings == 1
    assert ping_interval + ping_timeout - 0.05 <= elapsed < ping_interval + ping_timeout + MARGIN
    assert await deaf.read_eof() == b""  # the server ended its side
    deaf.writer.close()
    assert await asyncio.wait_for(closed, GUARD) == 1011


async def test_keepalive_close_code_and_answering_peer_stays(start_server, raw_client) -> None:
    """The Close frame carries 1011; a tether client (which answers pings) stays connected."""
    srv = await start_server(ping_interval=0.1, ping_timeout=0.2)
    async with connect(srv.url, ping_interval=None) as healthy:
        deaf = await raw_client(srv.port)
        await deaf.handshake()
        code, reason = await deaf.read_close()
        assert code == 1011
        assert "keepalive" in reason
        # Several ping intervals later, the answering client is still served.
        await healthy.send("alive")
        assert await healthy.recv() == "alive"
        assert healthy.close_code is None


async def test_client_keepalive_times_out_on_a_deaf_server() -> None:
    """A tether client against a hand-written server that never answers pings."""
    frames_seen: list[int] = []
    done = asyncio.Event()

    async def deaf_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await answer_upgrade(reader))
        try:
            while True:
                b0, b1 = await reader.readexactly(2)
                length = b1 & 0x7F
                await reader.readexactly(4 + length)  # mask + payload (all < 126 here)
                frames_seen.append(b0 & 0x0F)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(deaf_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        ws = await connect(
            f"ws://127.0.0.1:{port}/",
            compression=None,
            ping_interval=0.1,
            ping_timeout=0.2,
            close_timeout=0.5,
        )
        start = loop.time()
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), GUARD)
        elapsed = loop.time() - start
        assert info.value.sent is not None and info.value.sent[0] == 1011
        assert elapsed < 0.1 + 0.2 + 0.5 + MARGIN
        await asyncio.wait_for(done.wait(), GUARD)
        assert frames_seen[:2] == [Opcode.PING, Opcode.CLOSE]
    finally:
        server.close()
        await server.wait_closed()


async def test_open_timeout_drops_slowloris_while_others_echo(start_server, raw_client) -> None:
    open_timeout = 0.5
    srv = await start_server(open_timeout=open_timeout)
    loop = asyncio.get_running_loop()
    slow = await raw_client(srv.port)
    request = slow.request()
    start = loop.time()

    async def slowloris() -> float:
        for byte in request[:-2]:  # never finishes the head
            try:
                await slow.send(bytes([byte]))
            except ConnectionError:
                break
            if slow.reader.at_eof():
                break
            # The attack's own pace: one byte every 20 ms; not a wait for a condition.
            await asyncio.sleep(0.02)
            if slow.writer.transport.is_closing():
                break
        await slow.read_eof()
        return loop.time() - start

    attack = asyncio.ensure_future(slowloris())
    # Meanwhile another client connects and echoes.
    async with connect(srv.url) as ws:
        for i in range(5):
            await ws.send(f"echo {i}")
            assert await ws.recv() == f"echo {i}"
        assert not attack.done(), "the slowloris client was dropped before open_timeout"
    elapsed = await asyncio.wait_for(attack, GUARD)
    assert open_timeout - 0.05 <= elapsed < open_timeout + MARGIN
    assert len(srv.server.connections) == 0


async def test_open_timeout_drops_idle_tcp_connection(start_server, raw_client) -> None:
    srv = await start_server(open_timeout=0.2)
    loop = asyncio.get_running_loop()
    idle = await raw_client(srv.port)
    start = loop.time()
    assert await idle.read_eof() == b""
    assert loop.time() - start < 0.2 + MARGIN


async def test_open_timeout_does_not_close_open_connections(start_server) -> None:
    srv = await start_server(open_timeout=0.1, ping_interval=None)
    async with connect(srv.url) as ws:
        # Round trips spanning several open_timeouts: the timer was cancelled on 101.
        first = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - first < 0.3:
            await ws.send("x")
            assert await ws.recv() == "x"
            await asyncio.sleep(0.05)  # pacing, not waiting for a condition
        assert ws.close_code is None


async def test_client_open_timeout() -> None:
    """A server that accepts TCP but never answers the upgrade: connect() times out."""
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(TimeoutError):
            await connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)
        assert 0.25 <= loop.time() - start < 0.3 + MARGIN
        assert accepted.is_set()
    finally:
        server.close()
        await server.wait_closed()


async def test_server_close_timeout_when_peer_never_answers_close(start_server, raw_client) -> None:
    close_timeout = 0.3
    result: asyncio.Future[tuple[float, int | None]] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        loop = asyncio.get_running_loop()
        start = loop.time()
        await ws.close(1000, "bye")
        result.set_result((loop.time() - start, ws.close_code))

    srv = await start_server(handler, close_timeout=close_timeout)
    deaf = await raw_client(srv.port)
    await deaf.handshake()
    _, opcode, payload = await deaf.read_frame()
    assert (opcode, payload) == (Opcode.CLOSE, b"\x03\xe8bye")
    # The raw client neither answers nor closes TCP.
    elapsed, code = await asyncio.wait_for(result, GUARD)
    assert close_timeout - 0.05 <= elapsed < close_timeout + MARGIN
    assert code == 1006  # no Close frame came back
    assert await deaf.read_eof() == b""


async def test_client_close_timeout_when_server_never_answers_close() -> None:
    got_close = asyncio.Event()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await answer_upgrade(reader))
        b0, _ = await reader.readexactly(2)
        if b0 & 0x0F == Opcode.CLOSE:
            got_close.set()
        await reader.read()  # never answers; waits for the client to drop TCP
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        loop = asyncio.get_running_loop()
        ws = await connect(f"ws://127.0.0.1:{port}/", compression=None, close_timeout=0.3)
        start = loop.time()
        await asyncio.wait_for(ws.close(), GUARD)
        elapsed = loop.time() - start
        assert got_close.is_set()
        assert 0.25 <= elapsed < 0.3 + MARGIN
        assert ws.close_code == 1006
    finally:
        server.close()
        await server.wait_closed()
