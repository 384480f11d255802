"""The fast read path, ``Receiver``: the native one and its pure-Python twin must agree.

Every test runs against ``tether.asyncio._speedups.Receiver`` (skipped, with the
reason shown, when the C extension is not built) and
``tether.asyncio._receiver.Receiver``.
Reads are simulated the way an asyncio BufferedProtocol does them:
``get_buffer()``, copy bytes in, then ``feed(n)``, ``take(n)`` or
``buffer_updated(n)``. Whatever the fast path does not deliver must come back
from ``take()`` byte for byte as it was on the wire.
"""

from __future__ import annotations

import importlib
import itertools
import random
import types
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tether.asyncio import _receiver
from tether.protocol.frames import serialize_frame


def _load_native() -> types.ModuleType | None:
    try:
        return importlib.import_module("tether.asyncio._speedups")
    except ImportError:
        return None


native = _load_native()
NATIVE_MISSING = "tether.asyncio._speedups is not built (no C compiler at install time?)"

OK, SLOW = 0, 1
MASK = b"\x37\xfa\x21\x3d"
CONN = object()  # the first argument every callback must receive
MASKED = pytest.mark.parametrize("masked", [True, False], ids=["server", "client"])


@pytest.fixture(
    params=[
        pytest.param("native", marks=pytest.mark.skipif(native is None, reason=NATIVE_MISSING)),
        "pure",
    ]
)
def impl(request: pytest.FixtureRequest) -> Any:
    if request.param == "native":
        assert native is not None
        return native.Receiver
    return _receiver.Receiver


def frame(opcode: int, payload: bytes, masked: bool, *, fin: bool = True) -> bytes:
    return serialize_frame(opcode, payload, fin=fin, mask=MASK if masked else None)


def new_core(discard: bool = False) -> Any:
    return types.SimpleNamespace(discarding_input=discard)


def write_into(rx: Any, data: bytes) -> int:
    """One simulated read: as much of ``data`` as the handed-out buffer takes."""
    buf = rx.get_buffer(-1)
    assert len(buf) >= 1
    n = min(len(buf), len(data))
    buf[:n] = data[:n]
    return n


class Sink:
    """A ``deliver`` callback recording what it gets."""

    def __init__(self, conn: object = CONN) -> None:
        self.conn = conn
        self.messages: list[str | bytes] = []

    def __call__(self, conn: object, message: str | bytes) -> None:
        assert conn is self.conn
        self.messages.append(message)


def feed_stream(rx: Any, data: bytes, sizes: int | Iterator[int], deliver: Any) -> None:
    """Feed ``data`` in reads of the given sizes (a read may take fewer); each must be OK."""
    sizes = itertools.repeat(sizes) if isinstance(sizes, int) else sizes
    pos, core = 0, new_core()
    while pos < len(data):
        n = write_into(rx, data[pos : pos + next(sizes)])
        pos += n
        assert rx.feed(n, deliver, CONN, core) == OK


def feed_once(rx: Any, data: bytes, deliver: Any, core: Any = None) -> int:
    n = write_into(rx, data)
    assert n == len(data)
    return int(rx.feed(n, deliver, CONN, new_core() if core is None else core))


def sample_messages(count: int) -> list[str | bytes]:
    rng = random.Random(count)
    texts = ["", "a", "héllo wörld", "日本語 ✓ 𝄞", "x" * 125, "y" * 126, "z" * 300]
    sizes = [0, 1, 2, 125, 126, 127, 1000]
    return [rng.randbytes(rng.choice(sizes)) if i % 2 else texts[i % 7] for i in range(count)]


def encode(messages: list[str | bytes], masked: bool) -> bytes:
    return b"".join(
        frame(0x1, m.encode(), masked) if isinstance(m, str) else frame(0x2, m, masked)
        for m in messages
    )


# --- Construction and attributes ---


def test_defaults_and_read_only_attributes(impl: Any) -> None:
    rx = impl()
    assert (rx.fast, rx.pending, rx.delivered) == (False, 0, 0)
    rx.fast = True
    assert rx.fast is True
    for name in ("pending", "delivered"):
        with pytest.raises(AttributeError):
            setattr(rx, name, 5)
    with pytest.raises(ValueError):
        impl(True, -1)
    with pytest.raises(ValueError):
        rx.bind(CONN, new_core(), True, -1)


# --- Whole simple frames ---


@MASKED
def test_many_small_frames_in_one_read(impl: Any, masked: bool) -> None:
    messages = sample_messages(60)
    rx, sink = impl(masked, 1000), Sink()
    assert feed_once(rx, encode(messages, masked), sink) == OK
    assert sink.messages == messages
    assert [type(m) for m in sink.messages] == [type(m) for m in messages]
    assert (rx.delivered, rx.pending) == (60, 0)
    assert rx.take() == b""


@MASKED
@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536])
def test_every_split_point(impl: Any, size: int, masked: bool) -> None:
    payloads = [random.Random(size).randbytes(size), (bytes(range(256)) * (size // 256 + 1))[:size]]
    one = frame(0x2, payloads[0], masked)
    data = one + frame(0x2, payloads[1], masked)
    if size <= 127:
        cuts: list[int] = list(range(1, len(data)))
    else:
        near = [1, 2, 3, 4, 5, 9, 10, 11, 13, 14, 15, 100, len(one) // 2]
        cuts = sorted(
            {c for c in near + [len(one) + d for d in range(-2, 16)] if 0 < c < len(data)}
        )
    for cut in cuts:
        rx, sink = impl(masked, 70000), Sink()
        feed_stream(rx, data, itertools.chain([cut], itertools.repeat(len(data))), sink)
        assert sink.messages == payloads, cut
        assert rx.pending == 0
    if size <= 127:  # and one byte per read
        rx, sink = impl(masked, 70000), Sink()
        feed_stream(rx, data, 1, sink)
        assert sink.messages == payloads


# --- What the fast path leaves to the full parser ---

SLOW_CASES: dict[str, Callable[[bool], bytes]] = {
    "ping": lambda m: frame(0x9, b"hi", m),
    "pong": lambda m: frame(0xA, b"", m),
    "close": lambda m: frame(0x8, b"\x03\xe8", m),
    "ping-first-byte-only": lambda m: b"\x89",
    "continuation": lambda m: frame(0x0, b"abc", m),
    "text-not-fin": lambda m: frame(0x1, b"abc", m, fin=False),
    "binary-not-fin": lambda m: frame(0x2, b"abc", m, fin=False),
    "rsv1": lambda m: b"\xc2" + frame(0x2, b"abc", m)[1:],
    "rsv2": lambda m: b"\xa1" + frame(0x1, b"abc", m)[1:],
    "rsv3": lambda m: b"\x92" + frame(0x2, b"abc", m)[1:],
    "reserved-opcode": lambda m: b"\x83" + frame(0x2, b"abc", m)[1:],
    "wrong-mask-bit": lambda m: frame(0x2, b"abc", not m),
    "wrong-mask-bit-header-only": lambda m: frame(0x2, b"abc", not m)[:2],
    "over-limit": lambda m: frame(0x2, b"x" * 1001, m),
    "over-limit-header-only": lambda m: frame(0x2, b"x" * 70000, m)[:10],
    "length-2**63": lambda m: b"\x82" + bytes([0xFF if m else 0x7F]) + b"\xff" * 8,
    "invalid-utf8": lambda m: frame(0x1, b"ok\xff", m),
    "text-incomplete": lambda m: frame(0x1, b"abcdef", m)[:-3],
}


@MASKED
@pytest.mark.parametrize("case", list(SLOW_CASES))
def test_slow_frames_come_back_byte_for_byte(impl: Any, case: str, masked: bool) -> None:
    before = [b"first", "second"]
    rest = SLOW_CASES[case](masked)
    if not case.endswith(("only", "incomplete", "2**63")):
        rest += frame(0x2, b"after", masked)
    rx, sink = impl(masked, 1000), Sink()
    assert feed_once(rx, encode(before, masked) + rest, sink) == SLOW
    assert (sink.messages, rx.delivered, rx.pending) == (before, 2, len(rest))
    assert rx.take() == rest
    assert (rx.pending, rx.take()) == (0, b"")


UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"a\xe2\x82"]


@MASKED
@pytest.mark.parametrize("payload", ["héllo ✓ 𝄞 日本 \u0000 \U0010ffff".encode(), *UTF8])
def test_utf8_strict(impl: Any, payload: bytes, masked: bool) -> None:
    wire = frame(0x1, payload, masked)
    rx, sink = impl(masked, 1000), Sink()
    if payload in UTF8:  # invalid: the full parser fails the connection (1007)
        assert feed_once(rx, wire, sink) == SLOW
        assert (sink.messages, rx.delivered) == ([], 0)
        assert rx.take() == wire
    else:
        assert feed_once(rx, wire, sink) == OK
        assert sink.messages == [payload.decode()]  # a str


@MASKED
@pytest.mark.parametrize("size", [10, 200, 70000])
def test_incomplete_text_frame(impl: Any, size: int, masked: bool) -> None:
    wire = frame(0x1, b"t" * size, masked)
    head = len(wire) - size
    for cut in range(1, head):  # header still incomplete: wait for more
        rx, sink = impl(masked, 100000), Sink()
        assert feed_once(rx, wire[:cut], sink) == OK
        assert rx.pending == cut
        n = write_into(rx, wire[cut:])  # the native one may take less: its own buffer
        status = rx.feed(n, sink, CONN, new_core())
        if cut + n == len(wire):
            assert (status, sink.messages, rx.pending) == (OK, ["t" * size], 0)
        else:
            assert (status, sink.messages) == (SLOW, [])
            assert rx.take() == wire[: cut + n]
    for cut in (head, head + 1, len(wire) - 1):  # header complete: the full parser's
        rx, sink = impl(masked, 100000), Sink()
        assert feed_once(rx, wire[:cut], sink) == SLOW
        assert (rx.take(), sink.messages) == (wire[:cut], [])


@pytest.mark.parametrize("limit", [0, 1, 125, 126, 65535, 65536])
def test_limit(impl: Any, limit: int) -> None:
    for opcode, payload in ((0x2, b"b" * limit), (0x1, "t" * limit)):
        rx, sink = impl(True, limit), Sink()
        wire = frame(opcode, payload.encode() if isinstance(payload, str) else payload, True)
        assert feed_once(rx, wire, sink) == OK
        assert sink.messages == [payload]
        too_big = frame(opcode, b"x" * (limit + 1), True)
        assert feed_once(rx, too_big, sink) == SLOW
        assert rx.take() == too_big


def test_discard_input_stops_after_the_message(impl: Any) -> None:
    core = new_core()
    rest = frame(0x2, b"two", True) + frame(0x1, b"three", True)
    seen: list[object] = []

    def deliver(conn: object, message: object) -> None:
        seen.append(message)
        core.discarding_input = True

    rx = impl(True, 1000)
    assert feed_once(rx, frame(0x1, b"one", True) + rest, deliver, core) == SLOW
    assert (seen, rx.delivered) == (["one"], 1)
    assert rx.take() == rest
    # Nothing left after the message: nothing to stop.
    assert feed_once(rx, frame(0x2, b"last", True), deliver, core) == OK
    assert rx.pending == 0


# --- Callback errors and re-entry ---


def test_deliver_error_propagates_and_keeps_the_rest(impl: Any) -> None:
    boom = ValueError("boom")
    seen: list[object] = []

    def deliver(conn: object, message: object) -> None:
        seen.append(message)
        if message == b"two":
            raise boom

    rest = frame(0x9, b"", True) + frame(0x2, b"three", True) + frame(0x2, b"fo", True)[:3]
    wire = frame(0x1, b"one", True) + frame(0x2, b"two", True) + rest
    rx = impl(True, 1000)
    with pytest.raises(ValueError) as info:
        feed_once(rx, wire, deliver)
    assert info.value is boom
    assert seen == ["one", b"two"]
    assert rx.pending == len(rest)
    assert rx.take() == rest

    conn = RecordingConn()
    rx = impl()
    rx.bind(conn, new_core(), True, 1000)
    rx.enable(deliver)
    seen.clear()
    assert rx.buffer_updated(write_into(rx, wire)) is None
    assert conn.errors == [boom]
    # The rest of the read still reaches the core (which drops it if the
    # failure failed the connection).
    assert (seen, conn.slow) == (["one", b"two"], [(rest, True)])
    assert rx.take() == b""


@pytest.mark.parametrize("op", ["take", "get_buffer", "feed"])
def test_reentry_from_deliver_is_refused(impl: Any, op: str) -> None:
    rx = impl(True, 1000)
    calls = {
        "take": lambda: rx.take(),
        "get_buffer": lambda: rx.get_buffer(-1),
        "feed": lambda: rx.feed(0, print, CONN, new_core()),
    }

    def deliver(conn: object, message: object) -> None:
        calls[op]()

    rest = frame(0x2, b"rest", True)
    with pytest.raises(RuntimeError):
        feed_once(rx, frame(0x2, b"first", True) + rest, deliver)
    assert rx.take() == rest  # usable again, nothing lost
    sink = Sink()
    assert feed_once(rx, frame(0x2, b"again", True), sink) == OK
    assert sink.messages == [b"again"]


# --- buffer_updated ---


class RecordingConn:
    """The connection side of bind(): records what buffer_updated hands back."""

    def __init__(self) -> None:
        self.slow: list[tuple[bytes, bool]] = []
        self.errors: list[Exception] = []
        self.corks: list[str] = []

    def receive_read(self, data: bytes, after_messages: bool) -> None:
        self.slow.append((data, after_messages))

    def fast_receive_failed(self, exc: Exception) -> None:
        self.errors.append(exc)

    def cork_writes(self) -> None:
        self.corks.append("cork")

    def uncork_writes(self) -> None:
        self.corks.append("uncork")


class Bound:
    """A bound receiver with a recording connection."""

    def __init__(self, impl: Any, enable: bool = True, fast: bool = True) -> None:
        self.core = new_core()
        self.conn = RecordingConn()
        self.sink = Sink(self.conn)
        self.slow = self.conn.slow
        self.errors = self.conn.errors
        self.rx = impl()
        self.rx.bind(self.conn, self.core, True, 1000)
        if enable:
            self.rx.enable(self.sink)
        self.rx.fast = fast

    def read(self, data: bytes) -> None:
        assert self.rx.buffer_updated(write_into(self.rx, data)) is None


def test_buffer_updated_routing(impl: Any) -> None:
    ping = frame(0x9, b"p", True)
    two = frame(0x1, b"a", True) + frame(0x2, b"b", True)
    for enable, fast, discard in ((True, False, False), (False, True, False), (True, True, True)):
        b = Bound(impl, enable=enable, fast=fast)
        b.core.discarding_input = discard
        b.read(two)
        assert (b.sink.messages, b.slow) == ([], [(two, False)]), (enable, fast, discard)

    b = Bound(impl)
    b.read(two + ping + two)
    assert b.sink.messages == ["a", b"b"]
    assert b.slow == [(ping + two, True)]
    b.slow.clear()
    b.read(ping)
    assert b.slow == [(ping, False)]
    assert b.rx.pending == 0

    b = Bound(impl)  # an incomplete frame waits, then completes
    b.read(two[:4])
    b.read(two[4:])
    assert (b.sink.messages, b.slow, b.errors) == (["a", b"b"], [], [])

    with pytest.raises(RuntimeError):
        impl().buffer_updated(0)


# --- Large binary frames (the native one reads them straight into the message) ---

KIB = 1024
LARGE = [(size, chunk) for size in (100 * KIB, 1024 * KIB, 5 * 1024 * KIB)
         for chunk in (1, 7, 4096, 65536, 300000, 0)
         if chunk == 0 or size // chunk <= 200_000]  # fmt: skip


def read_sizes(chunk: int, seed: int) -> Iterator[int]:
    if chunk:
        return itertools.repeat(chunk)
    rng = random.Random(seed)
    return iter(lambda: rng.randint(1, rng.choice([16, 5000, 70000, 300000])), 0)


@MASKED
@pytest.mark.parametrize(("size", "chunk"), LARGE)
def test_large_binary_any_reads(impl: Any, size: int, chunk: int, masked: bool) -> None:
    big = random.Random(size).randbytes(size)
    messages: list[str | bytes] = [b"before", big, b"after", big[:70000], b"end"]
    rx, sink = impl(masked, size), Sink()
    feed_stream(rx, encode(messages, masked), read_sizes(chunk, size + chunk), sink)
    assert len(sink.messages) == len(messages)  # each exactly once
    assert (sink.messages, rx.pending) == (messages, 0)


@MASKED
@pytest.mark.parametrize("part", [0, 100, 2300, 2400, 5000, 50000, 102399])
def test_take_in_the_middle_of_a_large_binary_frame(impl: Any, part: int, masked: bool) -> None:
    size = 100 * KIB
    prefix = frame(0x2, b"small", masked)
    wire = frame(0x2, random.Random(part).randbytes(size), masked)
    cut = len(wire) - size + part
    for chunk in (4096, 1000000):
        rx, sink = impl(masked, size), Sink()
        feed_stream(rx, prefix + wire[:cut], chunk, sink)
        assert (sink.messages, rx.pending) == ([b"small"], cut)
        assert (rx.take(), rx.pending) == (wire[:cut], 0)
        feed_stream(rx, prefix, chunk, sink)  # usable again
        assert sink.messages == [b"small", b"small"]
        # take(n) accounts for the last read first.
        feed_stream(rx, wire[: cut - 1], chunk, sink)
        assert rx.take(write_into(rx, wire[cut - 1 : cut])) == wire[:cut]


def test_idle_receiver_holds_nothing(impl: Any) -> None:
    rx, sink = impl(True, 10 * KIB * KIB), Sink()
    for message in (b"x" * 10, b"y" * 300 * KIB, b"z" * 1000):
        wire = encode([message], True)
        feed_stream(rx, wire, len(wire) // 3 + 1, sink)
        assert rx.pending == 0
        assert sink.messages[-1] == message
    assert rx.take() == b""


# --- nbytes validation ---

STATES = ["fresh", "holding", "large"]


def prepare(impl: Any, state: str) -> Any:
    rx = impl(True, KIB * KIB)
    if state == "holding":
        assert feed_once(rx, frame(0x2, b"h" * 1000, True)[:100], Sink()) == OK
    elif state == "large":
        assert feed_once(rx, frame(0x2, b"L" * 500 * KIB, True)[: 200 * KIB], Sink()) == OK
    return rx


def call(rx: Any, op: str, nbytes: int) -> object:
    if op == "take":
        return rx.take(nbytes)
    return rx.feed(nbytes, Sink(), CONN, new_core())


@pytest.mark.parametrize("op", ["feed", "take"])
@pytest.mark.parametrize("state", STATES)
def test_nbytes_validation(impl: Any, state: str, op: str) -> None:
    rx = prepare(impl, state)
    held = rx.pending
    with pytest.raises(ValueError):
        call(rx, op, -1)
    with pytest.raises(ValueError):
        call(rx, op, len(rx.get_buffer(-1)) + 1)
    assert rx.pending == held


@pytest.mark.parametrize("op", ["feed", "take"])
@pytest.mark.parametrize("state", STATES)
def test_nbytes_without_a_new_buffer(impl: Any, state: str, op: str) -> None:
    """The buffer from get_buffer() is valid until the next feed() or take() only."""
    rx = prepare(impl, state)
    held = rx.pending
    with pytest.raises(ValueError):
        call(rx, op, 1)
    assert rx.pending == held
    assert feed_once(rx, b"", Sink()) == OK  # a zero-byte read is fine
    assert rx.pending == held


# --- Several receivers on one thread (one shared read buffer) ---


@pytest.mark.parametrize("size", [1000, 100 * KIB])
def test_receivers_interleaved(impl: Any, size: int) -> None:
    a_msgs: list[str | bytes] = [b"A" * size, "a-text", b"A2"]
    b_msgs = sample_messages(20)
    a_wire, b_wire = encode(a_msgs, True), encode(b_msgs, True)
    a, b = impl(True, size), impl(True, size)
    a_sink, b_sink = Sink(), Sink()
    half = size // 2
    feed_stream(a, a_wire[:half], len(a_wire), a_sink)
    assert a.pending == half
    feed_stream(b, b_wire, len(b_wire), b_sink)
    feed_stream(b, b_wire[:7], 7, b_sink)
    feed_stream(a, a_wire[half:], len(a_wire), a_sink)
    feed_stream(b, b_wire[7:], len(b_wire), b_sink)
    assert a_sink.messages == a_msgs
    assert b_sink.messages == b_msgs + b_msgs
    assert a.pending == b.pending == 0


def test_other_receiver_read_from_inside_deliver(impl: Any) -> None:
    """A callback that makes another receiver read must not clobber the bytes still parsed."""
    a, b = impl(True, 1000), impl(True, 1000)
    a_msgs: list[str | bytes] = [bytes([i]) * 50 for i in range(4)]
    b_msgs: list[str | bytes] = [b"B" * 300, "bee"]
    a_sink, b_sink = Sink(), Sink()

    def deliver(conn: object, message: str | bytes) -> None:
        a_sink(conn, message)
        if len(a_sink.messages) == 1:
            assert feed_once(b, encode(b_msgs, True), b_sink) == OK

    assert feed_once(a, encode(a_msgs, True), deliver) == OK
    assert a_sink.messages == a_msgs
    assert b_sink.messages == b_msgs


def test_buffer_updated_corks_from_the_second_message(impl: Any) -> None:
    """One message per read: never corked. Several: cork before the second, uncork at the end."""
    b = Bound(impl)
    b.read(frame(0x2, b"one", True))
    assert b.conn.corks == []
    b.read(frame(0x2, b"a", True) + frame(0x2, b"b", True) + frame(0x2, b"c", True))
    assert b.conn.corks == ["cork", "uncork"]
    assert b.sink.messages == [b"one", b"a", b"b", b"c"]

    order: list[str] = []
    b = Bound(impl)
    b.conn.cork_writes = lambda: order.append("cork")  # type: ignore[method-assign]
    b.conn.uncork_writes = lambda: order.append("uncork")  # type: ignore[method-assign]

    def deliver(conn: object, message: object) -> None:
        order.append(f"msg {message!r}")
        if message == b"b":
            raise ValueError("boom")

    b.rx.enable(deliver)
    b.read(frame(0x2, b"a", True) + frame(0x2, b"b", True) + frame(0x2, b"c", True))
    # The error still uncorks (held frames must leave) and reaches the connection.
    assert order == ["msg b'a'", "cork", "msg b'b'", "uncork"]
    assert [str(e) for e in b.errors] == ["boom"]


def test_feed_never_corks(impl: Any) -> None:
    """feed() is for callers without cork_writes/uncork_writes (only buffer_updated corks)."""
    rx = impl(True, 1000)
    sink = Sink()
    assert feed_once(rx, frame(0x2, b"a", True) + frame(0x2, b"b", True), sink) == OK
    assert sink.messages == [b"a", b"b"]


def test_deliver_error_then_the_rest_goes_to_the_core(impl: Any) -> None:
    """After a failed callback, the rest of the read still reaches receive_read (a Close, say)."""
    b = Bound(impl)

    def deliver(conn: object, message: object) -> None:
        raise ValueError("boom")

    b.rx.enable(deliver)
    close = frame(0x8, b"\x03\xe8", True)
    b.read(frame(0x1, b"a", True) + close)
    assert [str(e) for e in b.errors] == ["boom"]
    assert b.slow == [(close, True)]
    assert b.rx.pending == 0


@pytest.mark.skipif(native is None, reason=NATIVE_MISSING)
def test_announced_length_alone_allocates_little() -> None:
    """A large frame's buffer follows the bytes that came, not the length announced.

    Native only: the pure twin never reads a frame in place, it keeps what
    arrived in a bytearray.
    """
    assert native is not None
    rx = native.Receiver(True, 1 << 30)
    sent = 100 * 1024
    wire = frame(0x2, bytes(5 << 20), True)
    head = len(wire) - (5 << 20)
    sink = Sink()
    fed = 0
    while fed < head + sent:
        n = write_into(rx, wire[fed : head + sent])
        assert rx.feed(n, sink, CONN, new_core()) == OK
        fed += n
    room = len(rx.get_buffer(-1))
    assert room <= 3 * sent + 64 * 1024  # at most 4x what came, plus 64 KiB
    assert rx.take() == wire[:fed]


@pytest.mark.skipif(native is None, reason=NATIVE_MISSING)
def test_native_is_what_the_asyncio_layer_uses() -> None:
    import os

    from tether.asyncio import _native as native_io

    if os.environ.get("TETHER_NO_SPEEDUPS"):
        assert native_io.USING_SPEEDUPS is False
        assert native_io.Receiver is _receiver.Receiver
    else:
        assert native is not None
        assert native_io.USING_SPEEDUPS is True
        assert native_io.Receiver is native.Receiver
