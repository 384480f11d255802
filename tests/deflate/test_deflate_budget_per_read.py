"""One read inflates at most 16 x offload_threshold (4 MiB) on the event loop, in all.

When the parse stops early for the message budget (``max_messages``) and goes
on at once, what is left of the read's inflate budget carries over; a fresh
budget each time round would let one read inflate without bound (found in
review: 19.5 MiB for a Listener, 36 MiB with Pings, before the fix).
"""

from __future__ import annotations

import asyncio
import threading

from deflate_support import GUARD, OP_BINARY, OP_PING, RSV1, KiB, MiB, bomb, frame

import tether
from tether.asyncio.connection import Connection
from tether.protocol.extensions.permessage_deflate import PerMessageDeflate

BUDGET = 16 * 256 * KiB  # 16 x the default offload_threshold


def instrument(monkeypatch):
    """Bytes inflated on the event loop's thread, per call of Connection.receive_read."""
    loop_thread = threading.current_thread()
    per_read: list[int] = []
    current = [0]
    original_decode = PerMessageDeflate.decode
    original_receive = Connection.receive_read

    def decode(self, frame, **kwargs):
        result = original_decode(self, frame, **kwargs)
        if threading.current_thread() is loop_thread:
            current[0] += len(result.data)
        return result

    def receive(self, data, after_messages):
        current[0] = 0
        try:
            return original_receive(self, data, after_messages)
        finally:
            per_read.append(current[0])

    monkeypatch.setattr(PerMessageDeflate, "decode", decode)
    monkeypatch.setattr(Connection, "receive_read", receive)
    return per_read


async def test_listener_read_inflates_at_most_the_budget(start_server, raw, monkeypatch) -> None:
    per_read = instrument(monkeypatch)
    size, count = 200 * KiB, 100  # 16 messages (max_queue) = 3.2 MiB < 4 MiB per parse
    got: list[int] = []
    done = asyncio.Event()

    class Count(tether.Listener):
        def on_message(self, ws, message):
            got.append(len(message))
            if len(got) == count:
                done.set()

    srv = await start_server(Count, ping_interval=None)
    client = await raw(srv.port)
    assert await client.handshake("permessage-deflate; client_max_window_bits") == 101
    data = frame(OP_BINARY, bomb(size), rsv=RSV1) * count
    assert len(data) < 64 * KiB
    await client.send(data)
    await asyncio.wait_for(done.wait(), GUARD)
    assert got == [size] * count
    assert max(per_read) <= BUDGET, (
        f"{max(per_read) / MiB:.1f} MiB inflated on the loop in one read"
    )


async def test_pings_do_not_reset_the_budget(start_server, raw, monkeypatch) -> None:
    per_read = instrument(monkeypatch)
    size, groups = 3 * MiB, 12
    received: list[int] = []
    done = asyncio.Event()

    async def handler(ws):
        await asyncio.sleep(0.5)  # the application is slow: the queue holds what arrives
        async for message in ws:
            received.append(len(message))
            if len(received) == groups:
                done.set()

    srv = await start_server(handler, ping_interval=None, max_size=8 * MiB)
    client = await raw(srv.port)
    assert await client.handshake("permessage-deflate; client_max_window_bits") == 101
    group = frame(OP_BINARY, bomb(size), rsv=RSV1) + frame(OP_PING, b"p") * 15
    data = group * groups
    assert len(data) < 64 * KiB
    await client.send(data)
    await asyncio.wait_for(done.wait(), GUARD)
    assert max(per_read) <= BUDGET, (
        f"{max(per_read) / MiB:.1f} MiB inflated on the loop in one read"
    )


async def test_listener_answers_a_message_inflated_in_the_worker(start_server) -> None:
    """on_message for a message the worker inflated may send at once (no ConcurrencyError)."""

    class Echo(tether.Listener):
        def on_message(self, ws, message):
            ws.send_nowait(message)

    srv = await start_server(Echo, ping_interval=None, max_size=32 * MiB)
    async with tether.connect(srv.url, max_size=32 * MiB) as ws:
        assert ws.protocol.extensions
        big = bytes(16 * MiB)  # 16 KiB on the wire: past the loop's 4 MiB, so a worker's
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), GUARD * 3) == big
        await ws.send("small")
        assert await asyncio.wait_for(ws.recv(), GUARD) == "small"
