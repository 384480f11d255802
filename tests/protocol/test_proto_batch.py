"""The native batch frame parser agrees with the pure-Python parser on every stream."""

from __future__ import annotations

import random

import pytest

from tether import _native
from tether.protocol import Connection, Side
from tether.protocol.frames import Opcode, serialize_frame
from tether_testing import load_native, needs_native

native = load_native()
native_batch = native.parse_simple_frames if native is not None else None
pytestmark = needs_native

KEY = b"\x01\x02\x03\x04"


def random_stream(rng: random.Random, masked: bool) -> bytes:
    mask = KEY if masked else None
    parts = []
    for _ in range(rng.randrange(1, 30)):
        kind = rng.random()
        size = rng.choice([0, 1, 5, 125, 126, 300, 65535, 65536, 70000])
        if kind < 0.4:
            parts.append(serialize_frame(Opcode.BINARY, rng.randbytes(size), mask=mask))
        elif kind < 0.7:
            text = "".join(rng.choice("aé€😀 ") for _ in range(size // 3))
            parts.append(serialize_frame(Opcode.TEXT, text.encode(), mask=mask))
        elif kind < 0.8:
            parts.append(serialize_frame(Opcode.PING, rng.randbytes(min(size, 125)), mask=mask))
        elif kind < 0.9:
            parts.append(serialize_frame(Opcode.TEXT, b"ab", fin=False, mask=mask))
            parts.append(serialize_frame(Opcode.CONT, b"cd", mask=mask))
        elif kind < 0.95:
            parts.append(serialize_frame(Opcode.TEXT, b"ok\xff", mask=mask))  # invalid UTF-8
        else:
            parts.append(serialize_frame(Opcode.BINARY, b"x", mask=None if masked else KEY))
    return b"".join(parts)


def run(stream: bytes, side: Side, chunks: list[int], batch: object) -> tuple[object, ...]:
    _native.parse_simple_frames = batch  # type: ignore[assignment]
    try:
        conn = Connection(side, max_size=None)
        pos = 0
        for size in chunks:
            conn.receive_data(stream[pos : pos + size])
            pos += size
        conn.receive_data(stream[pos:])
        failure = conn.failure.code if conn.failure else None
        out = conn.data_to_send()
        # A client masks with random keys: compare its output by size only.
        written = b"".join(out) if side is Side.SERVER else sum(map(len, out))
        return (conn.events_received(), failure, written)
    finally:
        _native.parse_simple_frames = native_batch


@pytest.mark.parametrize("seed", range(40))
def test_native_and_pure_parsers_agree(seed: int) -> None:
    rng = random.Random(seed)
    side = rng.choice([Side.SERVER, Side.CLIENT])
    stream = random_stream(rng, masked=side is Side.SERVER)
    chunks = [rng.choice([1, 2, 3, 7, 100, 4096, 70000]) for _ in range(50)]
    assert run(stream, side, chunks, native_batch) == run(stream, side, chunks, None)


def test_limit_and_invalid_utf8_are_left_to_the_full_parser() -> None:
    assert native_batch is not None
    events: list[object] = []
    big = serialize_frame(Opcode.BINARY, b"x" * 200)
    bad = serialize_frame(Opcode.TEXT, b"\xff")
    good = serialize_frame(Opcode.TEXT, b"hi")
    assert native_batch(good + big, 0, False, 100, events) == len(good)
    assert native_batch(good + bad, 0, False, 1000, events) == len(good)
    assert native_batch(good[:3], 0, False, 1000, events) == 0
    assert events == ["hi", "hi"]
    with pytest.raises(TypeError):
        native_batch(good, 0, False, 10, ())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        native_batch(good, 99, False, 10, events)
