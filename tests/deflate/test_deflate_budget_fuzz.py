"""Deferring frames to the worker (the inflate budget) never changes what a handler gets.

Random mixes of large and small, binary and text (multi-byte) compressed
messages, in 1 to 5 fragments with Pings between them, then a Close, all in
one write: the large ones go past the 4 MiB a read may inflate on the event
loop and move to the worker. Every message must arrive once, whole and in
order, whatever the queue size, with and without ``stream_fragments``.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from deflate_support import GUARD, MiB

import tether
from tether.protocol import Connection, Side
from tether.protocol.extensions.permessage_deflate import PerMessageDeflate


def scenario(seed: int) -> tuple[list[bytes | str], bytes]:
    rng = random.Random(seed)
    client = Connection(Side.CLIENT, extensions=[PerMessageDeflate()])
    messages: list[bytes | str] = []
    for _ in range(rng.randrange(3, 9)):
        kind = rng.choice(["big", "small", "text", "bigtext"])
        if kind == "big":
            m: bytes | str = bytes([rng.randrange(3)]) * rng.choice([1, 3, 5, 9]) * MiB
        elif kind == "small":
            m = rng.randbytes(rng.randrange(0, 2000))
        elif kind == "text":
            m = "é€x" * rng.randrange(0, 3000)
        else:
            m = "é" * rng.choice([1, 3]) * MiB
        messages.append(m)
        raw = m.encode() if isinstance(m, str) else m
        nfrag = rng.choice([1, 1, 2, 3, 5])
        step = max(1, -(-len(raw) // nfrag))
        parts = [raw[i : i + step] for i in range(0, len(raw), step)] or [b""]
        for i, part in enumerate(parts):
            fin = i == len(parts) - 1
            if i == 0:
                (client.send_text if isinstance(m, str) else client.send_binary)(part, fin=fin)
            else:
                client.send_continuation(part, fin=fin)
            if rng.random() < 0.4:
                client.send_ping(b"p%d" % rng.randrange(100))
    client.send_close(1000, "bye")
    return messages, b"".join(client.data_to_send())


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("max_queue", [1, 3, 16, None])
@pytest.mark.parametrize("stream", [False, True])
async def test_deferrals_keep_every_message(
    start_server: Any, raw: Any, seed: int, max_queue: int | None, stream: bool
) -> None:
    messages, data = scenario(seed)
    got: list[object] = []
    done = asyncio.Event()

    async def handler(ws: tether.ServerConnection) -> None:
        try:
            while len(got) < len(messages):
                got.append(await ws.recv())
        except tether.ConnectionClosed:
            pass
        done.set()

    srv = await start_server(
        handler, ping_interval=None, max_size=16 * MiB, max_queue=max_queue, stream_fragments=stream
    )
    client = await raw(srv.port)
    assert await client.handshake("permessage-deflate") == 101
    await client.send(data)
    await asyncio.wait_for(done.wait(), GUARD * 3)
    assert [len(m) for m in got] == [len(m) for m in messages]
    assert got == messages
