"""Decompression bombs over a real socket, against a tether server in a child process.

The issue asks for "a 1 KiB message that inflates to 100 MiB". DEFLATE cannot
do that: its best case is a 258-byte match coded in 2 bits, 1032 bytes out per
byte in, and context takeover does not help (a reference into the previous
message's window costs the same bits). So the bombs here are the honest
versions of that sentence:

* 100 MiB of zeros in 101 KiB on the wire (DEFLATE's floor: 99.2 KiB), under
  the default ``max_size`` (1 MiB), whose wire-size check lets a compressed
  frame be up to max_size + max_size/1024 + 64 bytes: inflation itself must
  stop;
* a 1 KiB message (1,049 bytes on the wire) inflating to 1 MiB + 16 KiB, just
  over the default ``max_size``;

each sent whole and spread across 1,000 fragments (RSV1 on the first only,
RFC 7692 §6), where no single fragment exceeds the limit and only the total
does. Every bomb must be refused with 1009 within 100 ms of its last byte
leaving the client, while the server's resident memory (peak ``VmHWM`` from
/proc, reset just before the attack) grows by less than 4 MiB, and while
another connection's echo and ping round trips stay under 50 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from deflate_support import (
    GUARD,
    MAX_DEFLATE_RATIO,
    OP_BINARY,
    OP_TEXT,
    RSV1,
    KiB,
    MiB,
    RttProbe,
    ServerProcess,
    bomb,
    close_code,
    fragments,
    frame,
    inflate,
    json_text,
    peak_reset_unsupported,
)

import tether

REFUSED_WITHIN = 0.100  # seconds from the bomb's last byte to the server's Close frame
RSS_GROWTH = 4 * MiB  # peak resident growth of the server process allowed per bomb
PROBE_RTT = 0.050  # worst round trip of the healthy connection meanwhile
ATTEMPTS = 3

BOMBS = {
    # name: (inflated size, expected wire size at most)
    "100MiB": (100 * MiB, 102 * KiB),
    "1KiB": (MiB + 16 * KiB, 1060),
}


@pytest.fixture
async def server(tmp_path, require) -> AsyncIterator[ServerProcess]:
    """A fresh tether server process with the defaults (compression on, max_size 1 MiB)."""
    reason = peak_reset_unsupported()
    require(reason is None, f"cannot measure the server's peak RSS: {reason}")
    running = ServerProcess(stderr_path=str(tmp_path / "server.stderr")).start()
    yield running
    running.stop()
    with open(running.stderr_path) as f:
        log = f.read()
    assert "Traceback" not in log, log


def test_bombs_are_what_they_claim() -> None:
    """The payloads are valid permessage-deflate data of the advertised sizes."""
    for inflated, wire in BOMBS.values():
        payload = bomb(inflated)
        assert len(payload) <= wire
        assert len(payload) * MAX_DEFLATE_RATIO >= inflated  # no better ratio exists
        out = inflate(payload)
        assert len(out) == inflated and out.count(0) == inflated


@pytest.mark.parametrize("pieces", [1, 1000], ids=["whole", "1000-fragments"])
@pytest.mark.parametrize("kind", list(BOMBS))
async def test_bomb_refused_with_1009_fast_and_small(server, raw, kind, pieces) -> None:
    """1009, peak RSS growth and timing, for each bomb.

    The memory bound and the close code hold on every attempt, the first one
    included (a fresh server process, nothing inflated before). Timing on this
    shared machine occasionally suffers from other processes alone, so the
    attack is repeated on a new connection, up to ATTEMPTS times, until one
    meets both time bounds; inflating the whole bomb would miss them every time.
    """
    inflated, _ = BOMBS[kind]
    payload = bomb(inflated)
    if pieces == 1:
        attack = frame(OP_BINARY, payload, rsv=RSV1)
    else:
        attack = fragments(OP_BINARY, payload, pieces)
        # No fragment alone is over the limit: only the running total is.
        assert inflated // pieces < MiB

    timings: list[tuple[float, float]] = []
    async with tether.connect(server.url) as healthy:
        assert healthy.protocol.extensions, "the healthy client negotiated compression"
        # Warm the server's compressed echo path before measuring from a baseline.
        message = json_text(1024)
        for _ in range(3):
            await healthy.send(message)
            assert await asyncio.wait_for(healthy.recv(), GUARD) == message

        for _ in range(ATTEMPTS):
            attacker = await raw(server.port)
            offer = "permessage-deflate; client_max_window_bits"
            assert await attacker.handshake(offer) == 101
            assert attacker.extensions is not None
            assert attacker.extensions.startswith("permessage-deflate")

            server.reset_peak()
            before = server.memory()["VmRSS"]
            async with RttProbe(healthy, message) as probe:
                started = time.perf_counter()
                sent = await attacker.send(attack)
                close = await attacker.read_close()
                await attacker.read_eof()
            peak = server.memory()["VmHWM"]

            assert close is not None and close_code(close) == 1009, close
            growth = peak - before
            assert growth < RSS_GROWTH, f"server RSS grew by {growth / MiB:.2f} MiB"
            during = probe.overlapping(started, close.at)
            assert during, "no healthy round trip overlapped the attack"
            # With fragments the server may refuse before the client has sent the rest.
            delay = close.at - sent
            timings.append((delay, probe.worst))
            print(
                f"{kind} x{pieces}: {len(payload)} B on the wire, Close {delay * 1e3:+.1f} ms "
                f"after the last byte, peak RSS +{growth / KiB:.0f} KiB, "
                f"{len(probe.spans)} probe round trips ({len(during)} during), "
                f"worst {probe.worst * 1e3:.1f} ms"
            )
            if delay < REFUSED_WITHIN and probe.worst < PROBE_RTT:
                break

    assert any(d < REFUSED_WITHIN and w < PROBE_RTT for d, w in timings), (
        "(Close after the last byte, worst healthy round trip) in ms: "
        f"{[(round(d * 1e3, 1), round(w * 1e3, 1)) for d, w in timings]}"
    )


async def test_server_survives_bombs_and_serves_the_next_client(server, raw) -> None:
    """After a bomb on one connection, a new client negotiates and echoes (text, compressed)."""
    attacker = await raw(server.port)
    assert await attacker.handshake() == 101
    await attacker.send(frame(OP_TEXT, bomb(100 * MiB), rsv=RSV1))
    assert close_code(await attacker.read_close()) == 1009
    async with tether.connect(server.url) as ws:
        text = json_text(64 * KiB)
        await ws.send(text)
        assert await asyncio.wait_for(ws.recv(), GUARD) == text


async def test_many_small_bombs_in_one_read_stay_within_max_queue(server, raw) -> None:
    """Messages within max_size, but many per read: memory must stay near max_queue x max_size."""
    count = 240  # about 250 KB on the wire, in one write
    one = frame(OP_BINARY, bomb(MiB - 1), rsv=RSV1)
    attacker = await raw(server.port)
    assert await attacker.handshake("permessage-deflate; client_max_window_bits") == 101
    server.reset_peak()
    before = server.memory()["VmRSS"]
    await attacker.send(one * count)
    echoed = 0
    while echoed < count:  # the server echoes each one, compressed again
        got = await attacker.read_frame()
        echoed += got.opcode == OP_BINARY
    growth = server.memory()["VmHWM"] - before
    # max_queue (16) messages of max_size (1 MiB), as much again in flight, and
    # allocator slack (freed 1 MiB buffers are not all returned to the OS at once).
    # Without the parse budget this was ~184 MiB.
    assert growth < 40 * MiB, f"server RSS grew by {growth / MiB:.0f} MiB"
