"""Oversized input costs bounded memory: measured with tracemalloc while it is thrown.

The server runs in this process, so tracemalloc sees its allocations (and the
attacking client's, which are kept small: one reused chunk). Each attack sends
far more than the bound asserted here, and each gets its status or close code
while a healthy client keeps echoing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import tracemalloc
from collections.abc import Iterator

import pytest

import tether
from tether.protocol.frames import Opcode

FAST = 5.0
MiB = 1 << 20
BOUND = 8 * MiB  # peak traced growth allowed while tens of MiB are thrown at the server
MASK = b"\x0f\xf0\xaa\x55"


def masked(opcode: int, payload: bytes, *, fin: bool = True, length: int | None = None) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload) if length is None else length
    if n < 126:
        head = bytes((b0, 0x80 | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0xFE, n)
    else:
        head = struct.pack("!BBQ", b0, 0xFF, n)
    # A payload of one repeated byte masks to a 4-byte pattern: cheap to build.
    if payload and payload == payload[:1] * len(payload):
        pattern = bytes(payload[0] ^ m for m in MASK)
        body = (pattern * (len(payload) // 4 + 1))[: len(payload)]
    else:
        body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + body


@contextlib.contextmanager
def traced() -> Iterator[list[int]]:
    """Yield a list that receives the peak traced growth (bytes) when the block ends."""
    result: list[int] = []
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        yield result
        result.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()


async def echo_ok(ws: tether.ClientConnection) -> None:
    message = os.urandom(8).hex()
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), FAST) == message


async def flood(client, chunk: bytes, total: int) -> int:
    """Write ``chunk`` until ``total`` bytes or until the server drops us; return bytes sent."""
    sent = 0
    try:
        while sent < total:
            client.writer.write(chunk)
            await client.writer.drain()
            sent += len(chunk)
    except ConnectionError:
        pass
    return sent


@pytest.fixture
async def target(start_server):
    srv = await start_server(compression=None, ping_interval=None, max_size=MiB)
    async with tether.connect(srv.url, compression=None) as healthy:
        await echo_ok(healthy)
        srv.healthy = healthy  # type: ignore[attr-defined]
        yield srv
        await echo_ok(healthy)
        assert healthy.close_code is None


async def test_100_mib_declared_frame(target, raw_client) -> None:
    client = await raw_client(target.port)
    await client.handshake()
    chunk = b"\xaa" * MiB
    with traced() as growth:
        reading = asyncio.ensure_future(client.read_close(FAST))
        await client.send(masked(Opcode.BINARY, b"", length=100 * MiB))
        sent = await asyncio.wait_for(flood(client, chunk, 100 * MiB), 60)
        code, _ = await reading
        await echo_ok(target.healthy)
    assert code == 1009
    assert growth[0] < BOUND, f"{growth[0] / MiB:.1f} MiB for {sent / MiB:.0f} MiB thrown"


async def test_2000_large_headers(target, raw_client) -> None:
    client = await raw_client(target.port)
    header = b"X-Filler-%04d: " + b"h" * 8000 + b"\r\n"
    head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    with traced() as growth:
        reading = asyncio.ensure_future(client.read_response())

        async def send_headers() -> int:
            sent = 0
            try:
                client.writer.write(head)
                for i in range(2000):  # about 16 MB
                    client.writer.write(header.replace(b"%04d", b"%04d" % i))
                    await client.writer.drain()
                    sent += len(header)
            except ConnectionError:
                pass
            return sent

        sent = await asyncio.wait_for(send_headers(), 60)
        status = await reading
        await echo_ok(target.healthy)
    assert status == 431
    assert growth[0] < BOUND, f"{growth[0] / MiB:.1f} MiB for {sent / MiB:.0f} MiB thrown"


async def test_endless_header_line(target, raw_client) -> None:
    client = await raw_client(target.port)
    with traced() as growth:
        reading = asyncio.ensure_future(client.read_response())
        await client.send(b"GET / HTTP/1.1\r\nX-Endless: ")
        sent = await asyncio.wait_for(flood(client, b"e" * 65536, 50 * MiB), 60)
        status = await reading
        await echo_ok(target.healthy)
    assert status in (400, 431)
    assert growth[0] < BOUND, f"{growth[0] / MiB:.1f} MiB for {sent / MiB:.0f} MiB thrown"


@pytest.mark.parametrize("stream_fragments", [False, True])
async def test_endless_fragments(start_server, raw_client, stream_fragments) -> None:
    srv = await start_server(
        compression=None, ping_interval=None, max_size=MiB, stream_fragments=stream_fragments
    )
    async with tether.connect(srv.url, compression=None) as healthy:
        client = await raw_client(srv.port)
        await client.handshake()
        fragment = masked(Opcode.CONT, b"f" * 65536, fin=False)
        with traced() as growth:
            reading = asyncio.ensure_future(client.read_close(FAST))
            await client.send(masked(Opcode.BINARY, b"f" * 65536, fin=False))
            sent = await asyncio.wait_for(flood(client, fragment, 50 * MiB), 60)
            code, _ = await reading
            await echo_ok(healthy)
        assert code == 1009
        assert growth[0] < BOUND, f"{growth[0] / MiB:.1f} MiB for {sent / MiB:.0f} MiB thrown"


async def test_ping_flood_from_a_peer_that_never_reads(target, raw_client) -> None:
    """Pongs for a peer that does not read are coalesced: the write buffer stays bounded.

    (tracemalloc would slow the 80,000 frames down tenfold; the server's write
    buffer is the memory at stake, so it is measured directly.)
    """
    client = await raw_client(target.port, limit=65536)
    await client.handshake()
    (conn,) = [c for c in target.server.connections if c.request.headers.get("User-Agent") is None]
    pings = b"".join(masked(Opcode.PING, b"%03d" % (i % 1000) + b"p" * 100) for i in range(500))
    high = conn.transport.get_write_buffer_limits()[1]
    most = 0
    for _ in range(160):  # about 10 MB of Pings, 80,000 frames; the client reads nothing
        await asyncio.wait_for(client.send(pings), FAST)
        most = max(most, conn.buffered_amount)
    await client.send(masked(Opcode.PING, b"last ping"))
    await echo_ok(target.healthy)
    # At most one read's worth of Pongs above the high-water mark.
    assert most < high + 256 * 1024, f"{most / MiB:.1f} MiB buffered"
    # Reading again: the most recent Ping is answered (RFC 6455 §5.5.3) and the
    # connection still works.
    marker = b"\x8a\x09last ping"
    seen = b""
    while marker not in seen:
        chunk = await asyncio.wait_for(client.reader.read(65536), FAST)
        assert chunk, "connection closed before the last Pong"
        seen = seen[-len(marker) :] + chunk
    assert seen.endswith(marker)
    await client.send(masked(Opcode.TEXT, b"still here"))
    assert await client.read_frame(FAST) == (True, Opcode.TEXT, b"still here")
