"""The keepalive wheel: one loop timer for every connection's Pings and Pong deadlines.

Intervals of seconds use the wheel; the tests shrink its tick (and the
threshold for using it) so that they run in well under a second.
"""

from __future__ import annotations

import asyncio

import pytest

from tether import connect
from tether.asyncio import keepalive, wheel
from tether.protocol.frames import Opcode

GUARD = 10.0
TICK = 0.02
INTERVAL, TIMEOUT = 0.2, 0.2


@pytest.fixture(autouse=True)
def small_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wheel, "TICK", TICK)
    monkeypatch.setattr(keepalive, "MIN_PERIOD", 0.1)


async def test_many_connections_share_the_wheel_and_keep_answering(start_server) -> None:
    conns = []

    async def handler(ws):
        conns.append(ws)
        async for message in ws:
            await ws.send(message)

    srv = await start_server(handler, ping_interval=INTERVAL, ping_timeout=TIMEOUT)
    clients = [await connect(srv.url, ping_interval=None) for _ in range(50)]
    try:
        loop = asyncio.get_running_loop()
        ring = wheel.wheel_of(loop)
        assert len(conns) == 50
        # No connection has its own keepalive timer: each waits in one slot of the wheel.
        assert all(c._keepalive_handle is None and c._keepalive_slot is not None for c in conns)
        assert len(ring) == 50
        # Several intervals later every connection was pinged and answered, none closed.
        await asyncio.sleep(4 * INTERVAL)  # the behaviour under test is time passing
        assert all(c.latency > 0 for c in conns)
        for client in clients:
            await client.send("still here")
            assert await asyncio.wait_for(client.recv(), GUARD) == "still here"
    finally:
        for client in clients:
            await client.close()
    await asyncio.wait_for(asyncio.gather(*(c.wait_closed() for c in conns)), GUARD)
    assert len(ring) == 0  # closed connections leave the wheel


async def test_a_peer_that_never_answers_is_closed_with_1011(start_server, raw_client) -> None:
    srv = await start_server(ping_interval=INTERVAL, ping_timeout=TIMEOUT)
    loop = asyncio.get_running_loop()
    deaf = await raw_client(srv.port)
    await deaf.handshake()
    start = loop.time()
    pings = 0
    while True:
        _, opcode, payload = await asyncio.wait_for(deaf.read_frame(), GUARD)
        if opcode != Opcode.PING:
            break
        pings += 1  # never answered
    elapsed = loop.time() - start
    assert opcode == Opcode.CLOSE
    assert int.from_bytes(payload[:2], "big") == 1011
    assert pings == 1
    # The first Ping comes within the interval's second half, the timeout on top,
    # each rounded up to a tick.
    assert INTERVAL / 2 + TIMEOUT - 0.01 <= elapsed < INTERVAL + TIMEOUT + 2 * TICK + 1.5
    deaf.writer.close()
