"""A big compressed message must not stall the event loop for everyone else.

One connection echoes a 16 MiB, highly compressible binary message (16 KiB
of zeros or 100 KiB of repetitive JSON on the wire, each way) through a tether
server in this process, while another connection keeps making round trips.
Server and both clients share this event loop, so work on the 16 MiB there
shows up directly in the other connection's round trips. Large inflation and
deflation belong in a worker thread (``_receive_in_worker`` /
``_encode_in_worker``). What is "large" for inflation depends on what the
compressed bytes can expand to, not on their own size: both frames are far
below the 256 KiB ``offload_threshold``. Zeros are the slow case (inflating
16 MiB of them on the loop stalled it for 166 to 245 ms here); the JSON
inflates quickly and guards against regressions.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
from deflate_support import (
    GUARD,
    OP_BINARY,
    RSV1,
    KiB,
    MiB,
    RttProbe,
    bomb,
    deflate_stream,
    frame,
    json_text,
)

import tether
from tether.protocol.extensions.permessage_deflate import PerMessageDeflate

BIG = 16 * MiB
WORST_RTT = 0.100
ATTEMPTS = 3


def big_message(kind: str) -> bytes:
    # Binary: a 16 MiB *text* message also costs UTF-8 encoding and validation
    # (35-110 ms each here), which hold the GIL, so no worker thread can hide them.
    if kind == "zeros":
        return bytes(BIG)  # about 16 KiB compressed
    chunk = json_text(2 * KiB).encode()  # a 2 KiB period: about 100 KiB compressed
    return (chunk * (BIG // len(chunk) + 1))[:BIG]


@pytest.mark.parametrize("kind", ["zeros", "json"])
async def test_big_compressed_echo_does_not_stall_other_connections(start_server, kind) -> None:
    """Worst healthy round trip during a 16 MiB compressed echo stays under 100 ms.

    A loaded machine alone (2 shared cores) sometimes delays one round trip
    beyond that, so an echo gets up to ATTEMPTS tries and the best one counts;
    inflating 16 MiB on the event loop stalls every try, so it still fails.
    """
    srv = await start_server(max_size=2 * BIG, ping_interval=None)
    message = big_message(kind)
    wire: list[int] = []

    def observe(direction, opcode, fin, rsv, length, masked, payload) -> None:
        if opcode in (1, 2):
            wire.append(length)

    async with (
        tether.connect(srv.url, max_size=2 * BIG, frame_observer=observe) as bulk,
        tether.connect(srv.url) as healthy,
    ):
        assert bulk.protocol.extensions and healthy.protocol.extensions
        probe_message = json_text(1024)
        tries = []
        for _ in range(ATTEMPTS):
            wire.clear()
            async with RttProbe(healthy, probe_message) as probe:
                started = time.perf_counter()
                await bulk.send(message)
                echoed = await asyncio.wait_for(bulk.recv(), GUARD * 3)
                ended = time.perf_counter()
            assert echoed == message
            # Both ways compressed, and small enough on the wire that a rule judging by
            # wire size alone (offload_threshold, 256 KiB) would inflate on the loop.
            assert len(wire) == 2 and max(wire) < bulk.offload_threshold, wire
            during = probe.overlapping(started, ended)
            assert len(during) >= 2, "the healthy connection made no round trips meanwhile"
            tries.append(max(during))
            print(
                f"{kind}: 16 MiB echo in {(ended - started) * 1e3:.0f} ms ({wire} B on the wire);"
                f" {len(during)} healthy round trips meanwhile, worst {tries[-1] * 1e3:.1f} ms"
            )
            if tries[-1] < WORST_RTT:
                break
        assert min(tries) < WORST_RTT, f"worst round trips {[round(t * 1e3) for t in tries]} ms"


async def test_inflation_of_a_small_frame_runs_in_a_worker(start_server, monkeypatch) -> None:
    """Where inflation runs: a thread for a 16 KiB bomb-ratio frame, the loop for a small one."""
    srv = await start_server(max_size=2 * BIG, ping_interval=None)
    threads: list[bool] = []  # per decoded frame: did it run off the event loop's thread?
    original = PerMessageDeflate.decode
    loop_thread = threading.current_thread()

    def decode(self, frame, **kwargs):
        result = original(self, frame, **kwargs)
        # Only decodes that finish count (not a try that was deferred).
        threads.append(threading.current_thread() is not loop_thread)
        return result

    monkeypatch.setattr(PerMessageDeflate, "decode", decode)
    async with tether.connect(srv.url, max_size=2 * BIG) as ws:
        small = json_text(1024)
        await ws.send(small)
        assert await asyncio.wait_for(ws.recv(), GUARD) == small
        # server decode + client decode of the echo, both on the loop
        assert threads == [False, False], threads
        threads.clear()
        await ws.send(bytes(BIG))
        assert await asyncio.wait_for(ws.recv(), GUARD * 3) == bytes(BIG)
        assert threads == [True, True], threads


def _offload_cases() -> dict[str, tuple[int | None, bytes, int, bool | list[bool]]]:
    """name: (server max_size, bytes written at once, bytes they carry, inflated off the loop).

    The last item is one bool for every frame, or a list with one per frame.
    One read may inflate 4 MiB (16 x offload_threshold) on the event loop; a
    frame that could go past what is left, at DEFLATE's best ratio, is tried
    within it and, if it needs more, goes to a worker with everything after it.
    """
    noise = random.Random(1).randbytes(8 * KiB)
    one_kib = frame(OP_BINARY, deflate_stream(noise[:KiB]), rsv=RSV1)
    json = json_text(64 * KiB).encode()
    return {
        # 16 KiB that may inflate to 16 MiB, and does: a worker.
        "bomb frame, no max_size": (
            None,
            frame(OP_BINARY, bomb(16 * MiB), rsv=RSV1),
            16 * MiB,
            True,
        ),
        # 64 KiB of JSON, a few KiB on the wire: could inflate past 4 MiB, but
        # does not, so the loop's try succeeds.
        "64 KiB JSON frame, no max_size": (
            None,
            frame(OP_BINARY, deflate_stream(json), rsv=RSV1),
            len(json),
            False,
        ),
        # max_size caps a single frame at 1 MiB: inflating that inline is fine.
        "8 KiB frame, max_size 1 MiB": (
            MiB,
            frame(OP_BINARY, deflate_stream(noise), rsv=RSV1),
            8 * KiB,
            False,
        ),
        # Many frames in one read, each capped by max_size, really inflating to 8 KiB.
        "8 x 1 KiB frames, max_size 1 MiB": (MiB, one_kib * 8, 8 * KiB, False),
        # Five bombs of 1 MiB each: four use up the read's 4 MiB, the fifth waits.
        "5 x 1 MiB bombs, max_size 1 MiB": (
            MiB,
            frame(OP_BINARY, bomb(MiB), rsv=RSV1) * 5,
            5 * MiB,
            [False, False, False, False, True],
        ),
        # Too little to matter even at DEFLATE's best ratio.
        "3 x 1 KiB frames, no max_size": (None, one_kib * 3, 3 * KiB, False),
        # A single uncompressed frame: nothing to inflate.
        "8 KiB uncompressed frame, no max_size": (None, frame(OP_BINARY, noise), 8 * KiB, False),
    }


OFFLOAD_CASES = _offload_cases()


@pytest.mark.parametrize("case", list(OFFLOAD_CASES))
async def test_where_the_server_inflates(start_server, raw, monkeypatch, case) -> None:
    """Which thread runs the server's decoding, for bytes written in one go."""
    max_size, data, total, in_worker = OFFLOAD_CASES[case]
    threads: list[bool] = []
    original = PerMessageDeflate.decode
    loop_thread = threading.current_thread()

    def decode(self, frame, **kwargs):
        result = original(self, frame, **kwargs)
        # Only decodes that finish count (not a try that was deferred).
        threads.append(threading.current_thread() is not loop_thread)
        return result

    monkeypatch.setattr(PerMessageDeflate, "decode", decode)
    received = 0
    done = asyncio.Event()

    async def handler(ws: tether.ServerConnection) -> None:
        nonlocal received
        async for message in ws:
            received += len(message)
            if received >= total:
                done.set()

    srv = await start_server(handler, max_size=max_size)
    client = await raw(srv.port)
    assert await client.handshake("permessage-deflate; client_max_window_bits") == 101
    await client.send(data)
    await asyncio.wait_for(done.wait(), GUARD)
    assert received == total
    if isinstance(in_worker, list):
        assert threads == in_worker
    else:
        assert threads and all(t is in_worker for t in threads), threads
