"""Differential test: a server connection's fast paths against the sans-I/O core alone.

After ``_enable_fast_paths()`` whole simple frames (unfragmented text/binary,
FIN, no RSV, masked, within max_size) skip ``conn.protocol``. For seeded random
frame sequences, valid and not (fragments, Ping/Pong, bad UTF-8, unmasked,
reserved opcode, RSV1, over max_size, Close then more), cut into reads in
several ways, a connection with the fast paths must end exactly like one
without: messages delivered, bytes written (Pongs, Close), close_sent,
close_rcvd, failure code, state, transport closed. With a Listener and with
the queue, for the native Receiver (when built) and its pure-Python twin. A
failure names the seed: ``_case(seed)`` and ``_splits(seed, n)`` rebuild it.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tether
from tether import _native, _utf8
from tether.asyncio import _native as _native_io
from tether.asyncio import _receiver
from tether.asyncio.server import Server
from tether.protocol.connection import State
from tether.protocol.exceptions import ConnectionClosed
from tether.protocol.frames import serialize_frame

LIMIT = 200_000  # max_size
MAX_FRAMES = 12  # per case
CASES = 200  # per test, each under 4-5 splits, each split twice (core only, fast)
TEXT_CHARS = "aZ0 ~é€中😀"
BAD_UTF8 = (b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82")
# Relative weights of frame kinds; about 9 in 100 break the protocol.
KINDS = collections.Counter(
    binary=25, text=20, ping=8, pong=5, frag=12, close=5, bad_text=2, unmasked=1.5,
    reserved=1, rsv1=1, over=1, bad_close=0.5, big_ping=0.5, orphan=1,
)  # fmt: skip


class RecordingTransport:
    """Enough of an asyncio transport: records writes; once closed or paused, reads stop."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.paused = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        self.writes.extend(map(bytes, chunks))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    abort = write_eof = close  # write_eof: never called, can_write_eof() is False
    can_write_eof = staticmethod(lambda: False)
    get_write_buffer_size = staticmethod(lambda: 0)
    set_write_buffer_limits = staticmethod(lambda high=None, low=None: None)
    get_extra_info = staticmethod(lambda name, default=None: default)


class Recorder(tether.Listener):
    def __init__(self) -> None:
        self.messages: list[str | bytes] = []

    def on_message(self, ws: Any, message: Any) -> None:
        self.messages.append(message)  # and never sends


class Echo(Recorder):
    def on_message(self, ws: Any, message: Any) -> None:
        self.messages.append(message)
        try:
            ws.send_nowait(message)
        except ConnectionClosed as exc:
            self.messages.append(repr(exc))


def _size(rng: random.Random, big: list[bool]) -> int:
    r = rng.random()
    if r < 0.97 and (r < 0.8 or big[0]):
        return rng.randint(0, 300)
    if r < 0.97:
        return rng.choice((124, 125, 126, 127, 65535, 65536, 65537))
    big[0] = True  # at most one payload this large per case
    return rng.randint(100_000, 300_000)


def _text(rng: random.Random, size: int, bad: bool = False) -> bytes:
    """UTF-8 of about ``size`` bytes; with ``bad``, one invalid sequence between characters."""
    data = "".join(rng.choice(TEXT_CHARS) for _ in range(size)).encode()[:size]
    data = data.decode(errors="ignore").encode().ljust(size, b"a")  # exactly size bytes
    cut = len(data[: rng.randint(0, len(data))].decode(errors="ignore").encode())
    return data[:cut] + rng.choice(BAD_UTF8) + data[cut:] if bad else data


def _case(seed: str) -> tuple[bytes, list[str]]:
    """The wire bytes of 1 to MAX_FRAMES random frames, and a description of each."""
    rng = random.Random(seed)
    frames: list[bytes] = []
    desc: list[str] = []
    big = [False]

    def add(op: int, payload: bytes, fin: bool = True, rsv1: bool = False, mask: bool = True):
        key = rng.randbytes(4) if mask else None
        frames.append(serialize_frame(op, payload, fin=fin, rsv1=rsv1, mask=key))
        flags = ("" if fin else "~") + ("+rsv1" if rsv1 else "") + ("" if mask else "+unmasked")
        desc.append(f"{op}{flags}:{len(payload)}:{payload[:12]!r}")

    for _ in range(rng.randint(1, MAX_FRAMES)):
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        opcode = rng.choice((1, 2))
        data = _text(rng, _size(rng, big)) if opcode == 1 else rng.randbytes(_size(rng, big))
        if kind in ("binary", "text"):
            add(opcode, data)
        elif kind == "bad_text":
            add(1, _text(rng, rng.randint(0, 300), bad=True))
        elif kind in ("ping", "pong", "big_ping"):
            add(9 if kind != "pong" else 10, rng.randbytes(126 if kind == "big_ping" else 6))
        elif kind == "frag":
            if opcode == 1 and rng.random() < 0.15:
                data = _text(rng, len(data), bad=True)
            cuts = sorted(rng.randint(0, len(data)) for _ in range(rng.randint(1, 3)))
            parts = [data[a:b] for a, b in itertools.pairwise([0, *cuts, len(data)])]
            if rng.random() < 0.1:
                parts.pop()  # left unfinished
            for i, part in enumerate(parts):
                add(0 if i else opcode, part, fin=i == len(parts) - 1 and i > 0)
                if rng.random() < 0.2:
                    add(9, rng.randbytes(4))  # control frame between fragments
        elif kind in ("unmasked", "rsv1", "orphan", "reserved"):
            op = {"orphan": 0, "reserved": rng.choice((3, 11))}.get(kind, opcode)
            add(op, data[:40], rsv1=kind == "rsv1", mask=kind != "unmasked")
        elif kind == "over":
            add(opcode, b"a" * (LIMIT + rng.randint(1, 3)))
        else:
            code = rng.choice((1000, 1001, 1003, 1011, 3000, 4999))
            if kind == "bad_close":
                code = rng.choice((999, 1004, 1005, 5000))
            payload = code.to_bytes(2, "big") + _text(rng, rng.randint(0, 20))
            add(8, rng.choice((b"", payload)) if kind == "close" else payload)
    return b"".join(frames), desc


def _splits(seed: str, n: int) -> dict[str, Callable[[], Iterator[int]]]:
    """Ways to cut ``n`` bytes into reads: name -> factory of read sizes."""

    def random_sizes() -> Iterator[int]:
        rng = random.Random(f"{seed}/split")
        while True:
            yield rng.choice((rng.randint(1, 16), rng.randint(1, 700), rng.randint(700, 70_000)))

    splits = {"whole": lambda: itertools.repeat(n), "fixed 4096": lambda: itertools.repeat(4096)}
    if n <= 60_000:
        splits["fixed 7"] = lambda: itertools.repeat(7)
    if n <= 1500:
        splits["1 byte"] = lambda: itertools.repeat(1)
    splits[f"random (seed {seed!r}/split)"] = random_sizes
    return splits


async def feed(conn: Any, transport: RecordingTransport, data: bytes, sizes: Any) -> None:
    """Read ``data`` as a transport does, until it stops reading (closed or paused)."""
    pos = 0
    for size in sizes:
        if pos >= len(data) or transport.closed or transport.paused:
            break
        buf = conn.get_buffer(-1)
        n = min(len(buf), size, len(data) - pos)
        buf[:n] = data[pos : pos + n]
        del buf
        conn.buffer_updated(n)
        pos += n
        # Sleeps only drain call_soon callbacks (the deferred _fail_pending):
        # a real event loop runs them before the next read, and after the last.
        await asyncio.sleep(0)
    for _ in range(3):
        await asyncio.sleep(0)


def _summary(message: str | bytes) -> tuple[str, int, object]:
    raw = message.encode(errors="surrogatepass") if isinstance(message, str) else message
    kept = message if len(raw) <= 24 else hashlib.sha1(raw).hexdigest()[:12]
    return type(message).__name__, len(message), kept


def _frames_out(raw: bytes) -> list[tuple[int, object]]:
    """Parse what the server wrote (unmasked frames): Close as (code, reason)."""
    out: list[tuple[int, object]] = []
    pos = 0
    while pos < len(raw):
        length, head = raw[pos + 1] & 0x7F, 2
        if length >= 126:
            head = 4 if length == 126 else 10
            length = int.from_bytes(raw[pos + 2 : pos + head], "big")
        payload = raw[pos + head : pos + head + length]
        opcode = raw[pos] & 0x0F
        if opcode == 8 and payload:
            out.append((8, (int.from_bytes(payload[:2], "big"), payload[2:].decode())))
        else:
            out.append((opcode, payload))
        pos += head + length
    return out


async def observe(
    data: bytes, sizes: Iterator[int], fast: bool, listener: type[Recorder] | None
) -> dict[str, Any]:
    """Feed ``data`` to a fresh open server connection; what it delivered, wrote and ended in."""
    server = Server(Recorder, compression=None, ping_interval=None, max_size=LIMIT)
    conn: Any = server._make_connection()
    transport = RecordingTransport()
    conn.connection_made(transport)
    conn.protocol._set_state(State.OPEN)
    recorder = conn._listener = listener() if listener else None
    if fast:
        conn._enable_fast_paths()
    await feed(conn, transport, data, sizes)
    for handle in filter(None, (conn._open_handle, conn._close_handle)):
        handle.cancel()
    proto = conn.protocol
    raw = b"".join(transport.writes)
    messages = recorder.messages if recorder else conn._queue
    return {
        "message_count": len(messages),
        "messages": [_summary(m) for m in messages],
        "written": _frames_out(raw),
        "written_sha1": hashlib.sha1(raw).hexdigest(),
        "close_sent": proto.close_sent,
        "close_rcvd": proto.close_rcvd,
        "failure": None if proto.failure is None else proto.failure.code,
        "pending_failure": proto.pending_failure,
        "state": proto.state.name,
        "transport": (transport.closed, transport.paused),
    }


@pytest.fixture(params=["native", "pure"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The native twins (skipped when not built) or the pure-Python ones, as the core sees them."""
    native = pytest.importorskip("tether._speedups") if request.param == "native" else None
    native_io = (
        pytest.importorskip("tether.asyncio._speedups") if request.param == "native" else None
    )
    receiver = native_io.Receiver if native_io else _receiver.Receiver
    monkeypatch.setattr(_native_io, "Receiver", receiver)
    monkeypatch.setattr(_native, "parse_simple_frames", native and native.parse_simple_frames)
    validator = native.Utf8Validator if native else _utf8.Utf8Validator
    monkeypatch.setattr(_native, "Utf8Validator", validator)
    return str(request.param)


async def compare(data: bytes, sizes: Any, listener: Any, label: str) -> dict[str, Any]:
    """Observe ``data`` read in ``sizes()`` by core only and fast path: they must agree."""
    core = await observe(data, sizes(), fast=False, listener=listener)
    fast = await observe(data, sizes(), fast=True, listener=listener)
    assert fast == core, f"fast path (left) != core only (right): {listener=} {label}"
    return core


async def check_seed(seed: str, listener: Any, impl: str = "native") -> dict[str, Any]:
    """Compare both for one case under every split; return the last outcome."""
    data, desc = _case(seed)
    core: dict[str, Any] = {}
    for name, sizes in _splits(seed, len(data)).items():
        label = f"{seed=} {impl=} split={name!r} bytes={len(data)}\nframes: {desc}"
        core = await compare(data, sizes, listener, label)
    return core


@pytest.mark.parametrize("mode", ["listener", "queue"])
async def test_fast_path_matches_core(impl: str, mode: str) -> None:
    outcomes: collections.Counter[object] = collections.Counter()
    listener = Recorder if mode == "listener" else None
    for i in range(CASES):
        result = await check_seed(f"fastpath/{mode}/{i}", listener, impl)
        outcomes[result["failure"]] += 1
        outcomes["close_rcvd"] += result["close_rcvd"] is not None
        outcomes["pong"] += any(op == 10 for op, _ in result["written"])
        outcomes["messages"] += len(result["messages"])
    # The generator must keep reaching the interesting outcomes.
    assert {None, 1002, 1007, 1009} <= outcomes.keys(), outcomes
    assert min(outcomes["close_rcvd"], outcomes["pong"], outcomes["messages"]) > 0, outcomes


# Where the two differ on purpose. The core parses a whole read before the
# connection sees its events, so messages that precede a Close in the same
# read reach the application after the connection is already closing: the
# queue drops what does not fit, and an answer cannot be sent. The fast path
# delivers each message as its frame is parsed, while the connection is still
# open, as the core does when the same bytes arrive in smaller reads.
def _wire(*frames: tuple[int, bytes]) -> bytes:
    return b"".join(serialize_frame(op, data, mask=b"\x01\x02\x03\x04") for op, data in frames)


async def test_messages_before_a_close_in_the_same_read_are_delivered(impl: str) -> None:
    close = (8, (1000).to_bytes(2, "big"))
    data = _wire(*[(2, bytes([i])) for i in range(17)], close)  # default max_queue=16
    fast = await observe(data, itertools.repeat(len(data)), fast=True, listener=None)
    assert fast["messages"] == [_summary(bytes([i])) for i in range(17)]
    assert fast["close_rcvd"] == (1000, "")


async def test_an_answer_to_a_message_before_a_close_goes_out(impl: str) -> None:
    data = _wire((1, b"a"), (8, (1000).to_bytes(2, "big")))
    fast = await observe(data, itertools.repeat(len(data)), fast=True, listener=Echo)
    assert [op for op, _ in fast["written"]] == [1, 8]  # the echo, then the Close
    # The core alone answers too when the Close comes in a later read.
    split = await observe(data, iter([9, len(data)]), fast=False, listener=Echo)
    assert split["written"] == fast["written"]


async def test_a_pong_goes_out_before_the_answer_to_a_later_message(impl: str) -> None:
    data = _wire((9, b"p"), (1, b"a"))
    for fast in (False, True):
        result = await observe(data, itertools.repeat(len(data)), fast=fast, listener=Echo)
        assert [op for op, _ in result["written"]] == [10, 1], fast
