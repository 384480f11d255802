"""receive_data never raises, whatever arrives (seeded, reproducible random input)."""

from __future__ import annotations

import random
import re

import pytest
from proto_helpers import KEY, raw_frame

from tether.protocol import ClientProtocol, Connection, ServerProtocol, Side, State, parse_uri

SIZES = [1, 2, 3, 7, 10, 14, 50, 126, 200, 1000, 4096, 65536]
ALLOWED_FAILURES = {1002, 1007, 1009}


def check_outcome(conn: Connection) -> None:
    """Either still usable, closed by a valid Close frame, or failed with an allowed code."""
    if conn.failure is None:
        assert conn.state in (State.OPEN, State.CLOSING)
        if conn.state is State.CLOSING:
            assert conn.close_rcvd is not None
    else:
        assert conn.failure.code in ALLOWED_FAILURES, conn.failure
        assert conn.state is State.CLOSING
        assert conn.close_transport
    conn.events_received()
    conn.data_to_send()


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT], ids=["server", "client"])
@pytest.mark.parametrize("size", SIZES)
def test_random_garbage(side: Side, size: int) -> None:
    rng = random.Random(f"garbage-{side.value}-{size}")
    for _ in range(60 if size < 1000 else 10):
        conn = Connection(side, max_size=rng.choice([None, 100, 2**20]))
        data = rng.randbytes(size)
        # Random chunking too, so partial-frame code paths see the same bytes.
        pos = 0
        while pos < len(data):
            step = rng.randint(1, max(1, size // 3))
            conn.receive_data(data[pos : pos + step])
            pos += step
        check_outcome(conn)


def _payload(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.2:
        return rng.randbytes(rng.randint(0, 140))
    if kind < 0.95:
        text = "".join(rng.choice("aé€😀 ") for _ in range(rng.randint(0, 40)))
        raw = text.encode()
        # Sometimes cut a character in two: valid across fragments, not at the end.
        return raw[: rng.randint(0, len(raw))] if rng.random() < 0.1 else raw
    code = rng.choice([1000, 1001, 1011, 3000, 4999, rng.randint(0, 6000)])
    return code.to_bytes(2, "big") + rng.randbytes(rng.randint(0, 4))


def _plausible_stream(rng: random.Random, side: Side) -> bytes:
    """Frames that mostly follow the rules, with an occasional random violation."""
    stream = bytearray()
    in_message = False
    for _ in range(rng.randint(1, 40)):
        if rng.random() < 0.25:
            opcode = (
                rng.choice([8, 9, 9, 9, 10, 10, 10]) if rng.random() < 0.95 else rng.randrange(16)
            )
            fin = rng.random() < 0.97
            payload = _payload(rng)[:125] if rng.random() < 0.97 else rng.randbytes(126)
        else:
            opcode = 0 if in_message else rng.choice([1, 2])
            if rng.random() < 0.02:
                opcode = rng.randrange(16)
            fin = rng.random() < 0.6
            in_message = not fin
            payload = _payload(rng)
        rsv = 0 if rng.random() < 0.99 else rng.choice([0x40, 0x20, 0x10])
        masked = (side is Side.SERVER) != (rng.random() < 0.01)
        b0 = (0x80 if fin else 0) | rsv | opcode
        stream += raw_frame(b0, payload, mask=KEY if masked else None)
    return bytes(stream)


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT], ids=["server", "client"])
@pytest.mark.parametrize("seed", range(100))
def test_random_plausible_frames(side: Side, seed: int) -> None:
    rng = random.Random(seed)
    conn = Connection(
        side,
        max_size=rng.choice([None, 200, 1000]),
        max_frame_size=rng.choice([None, 100]),
        stream_fragments=rng.random() < 0.3,
    )
    stream = _plausible_stream(rng, side)
    pos = 0
    while pos < len(stream) and not conn.close_transport:
        step = rng.choice([1, 2, 5, 17, 100, len(stream)])
        conn.receive_data(stream[pos : pos + step])
        pos += step
    check_outcome(conn)


@pytest.mark.parametrize("seed", range(30))
def test_random_garbage_during_handshake(seed: int) -> None:
    rng = random.Random(f"handshake-{seed}")
    server = ServerProtocol()
    client = ClientProtocol(parse_uri("ws://example.com/"))
    prefix = rng.choice([b"", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 101 OK\r\n"])
    data = prefix + rng.randbytes(rng.choice([1, 10, 100, 5000, 20000]))
    if rng.random() < 0.5:
        data = data.replace(b"\x00", b"\r\n")
    for conn in (server, client):
        for i in range(0, len(data), 333):
            conn.receive_data(data[i : i + 333])
        assert conn.state in (State.CONNECTING, State.CLOSED)
    if server.state is State.CLOSED:
        assert re.match(rb"HTTP/1\.1 [45]\d\d ", server.data_to_send()[0])
