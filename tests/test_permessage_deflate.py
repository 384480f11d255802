"""Tests for permessage-deflate (RFC 7692): codec, limits and negotiation."""

from __future__ import annotations

import itertools
import random
import time
import tracemalloc
import zlib
from collections.abc import Iterable

import pytest

from tether.protocol.exceptions import NegotiationError, PayloadTooBig, ProtocolError
from tether.protocol.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from tether.protocol.frames import Frame, Opcode
from tether.protocol.headers import ExtensionParams

MiB = 1 << 20


def text(n: int, seed: int = 0) -> bytes:
    """Compressible but not trivial data: random words from a small vocabulary."""
    rng = random.Random(seed)
    words = [bytes(rng.randrange(97, 123) for _ in range(rng.randrange(2, 9))) for _ in range(300)]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


def send(
    codec: PerMessageDeflate, frames: Iterable[Frame], compress: bool | None = None
) -> list[Frame]:
    return [codec.encode(frame, compress=compress) for frame in frames]


def receive(codec: PerMessageDeflate, frames: Iterable[Frame]) -> bytes:
    return b"".join(codec.decode(frame).data for frame in frames)


def fragments(opcode: int, data: bytes, count: int) -> list[Frame]:
    size = -(-len(data) // count)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    return [
        Frame(opcode if i == 0 else Opcode.CONT, chunk, fin=i == len(chunks) - 1)
        for i, chunk in enumerate(chunks)
    ]


def deflate(data: bytes, wbits: int = 15) -> bytes:
    """One message compressed the RFC 7692 §7.2.1 way, tail removed."""
    comp = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """~100 KiB of raw DEFLATE that inflates to 100 MiB of zeros.

    A sync-flushed segment ends on a byte boundary and only refers back within
    itself, so 100 copies of a 1 MiB segment form one valid stream.
    """
    segment = deflate(bytes(MiB)) + b"\x00\x00\xff\xff"
    return (segment * 100)[:-4]


# --- codec: round trips ---------------------------------------------------------------


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_round_trip_single_frame(opcode: Opcode) -> None:
    data = text(10_000)
    sender, receiver = PerMessageDeflate(), PerMessageDeflate()
    [wire] = send(sender, [Frame(opcode, data)])
    assert wire.rsv1 and wire.opcode == opcode and wire.fin
    assert len(wire.data) < len(data) // 2
    decoded = receiver.decode(wire)
    assert decoded == Frame(opcode, data)


def test_round_trip_fragmented_sets_rsv1_on_first_frame_only() -> None:
    data = text(30_000, seed=1)
    sender, receiver = PerMessageDeflate(), PerMessageDeflate()
    wire = send(sender, fragments(Opcode.TEXT, data, 5))
    assert [f.rsv1 for f in wire] == [True, False, False, False, False]
    assert [f.opcode for f in wire] == [Opcode.TEXT] + [Opcode.CONT] * 4
    assert [f.fin for f in wire] == [False] * 4 + [True]
    decoded = [receiver.decode(f) for f in wire]
    assert not any(f.rsv1 for f in decoded)
    assert b"".join(f.data for f in decoded) == data


def test_rfc_7692_fragmented_example() -> None:
    # RFC 7692 §7.2.3.1: "Hello" compressed and split into two frames.
    codec = PerMessageDeflate()
    first = codec.decode(Frame(Opcode.TEXT, b"\xf2\x48\xcd", fin=False, rsv1=True))
    last = codec.decode(Frame(Opcode.CONT, b"\xc9\xc9\x07\x00"))
    assert first.data + last.data == b"Hello"


@pytest.mark.parametrize(
    ("payloads", "expected"),
    [
        # RFC 7692 §7.2.3.1: one compressed block.
        ([bytes.fromhex("f248cdc9c90700")], [b"Hello"]),
        # §7.2.3.2: the second message refers back into the first.
        ([bytes.fromhex("f248cdc9c90700"), bytes.fromhex("f200110000")], [b"Hello", b"Hello"]),
        # §7.2.3.3: a stored (uncompressed) block.
        ([bytes.fromhex("000500faff48656c6c6f00")], [b"Hello"]),
        # §7.2.3.4: a block with BFINAL set, followed by a stray byte.
        ([bytes.fromhex("f348cdc9c9070000")], [b"Hello"]),
        # §7.2.3.5: two blocks in one message.
        ([bytes.fromhex("f24805000000ffffcac9c90700")], [b"Hello"]),
    ],
)
def test_rfc_7692_examples(payloads: list[bytes], expected: list[bytes]) -> None:
    codec = PerMessageDeflate()
    assert [codec.decode(Frame(Opcode.TEXT, p, rsv1=True)).data for p in payloads] == expected


def test_stream_ended_by_bfinal_ignores_the_rest_and_restarts() -> None:
    codec = PerMessageDeflate()
    # RFC 7692 §7.2.3.4 example in a non-final frame, then junk that a naive
    # decoder would buffer in zlib's unused_data for as long as it kept coming.
    first = codec.decode(Frame(Opcode.TEXT, bytes.fromhex("f348cdc9c90700"), fin=False, rsv1=True))
    assert first.data == b"Hello"
    for _ in range(100):
        assert codec.decode(Frame(Opcode.CONT, b"\xff" * 1024, fin=False)).data == b""
    assert codec._decoder is not None and len(codec._decoder.unused_data) == 0
    assert codec.decode(Frame(Opcode.CONT, b"\xff")).data == b""
    # The next message is a new DEFLATE stream with a new decompressor.
    assert codec._decoder is None
    assert codec.decode(Frame(Opcode.TEXT, deflate(b"again"), rsv1=True)).data == b"again"


def test_uncompressed_messages_pass_through_decode() -> None:
    codec = PerMessageDeflate()
    frames = [Frame(Opcode.BINARY, b"ab", fin=False), Frame(Opcode.CONT, b"cd")]
    assert [codec.decode(f) for f in frames] == frames
    # A compressed message after an uncompressed one, and vice versa.
    assert codec.decode(Frame(Opcode.TEXT, deflate(b"xyz"), rsv1=True)).data == b"xyz"
    assert codec.decode(frames[0]) is frames[0]
    assert codec.decode(frames[1]) is frames[1]


def test_control_frames_pass_through_between_fragments() -> None:
    sender, receiver = PerMessageDeflate(), PerMessageDeflate()
    ping = Frame(Opcode.PING, b"x" * 125)
    data = text(1_000)
    first, last = fragments(Opcode.TEXT, data, 2)
    wire = [sender.encode(first), sender.encode(ping, compress=True), sender.encode(last)]
    assert wire[1] is ping
    assert wire[0].rsv1 and wire[2].data != last.data  # still compressing
    decoded = [receiver.decode(frame) for frame in wire]
    assert decoded[1] is ping
    assert decoded[0].data + decoded[2].data == data


# --- codec: context takeover and window bits ------------------------------------------


def test_context_takeover_reuses_the_window() -> None:
    data = text(2_000, seed=2)
    sender, receiver = PerMessageDeflate(), PerMessageDeflate()
    first, second = (sender.encode(Frame(Opcode.TEXT, data)) for _ in range(2))
    # The second copy is one back-reference into the first message.
    assert len(second.data) * 10 < len(first.data)
    assert receiver.decode(first).data == receiver.decode(second).data == data
    # A receiver that resets between messages cannot follow such references.
    strict = PerMessageDeflate(remote_no_context_takeover=True)
    strict.decode(first)
    with pytest.raises(ProtocolError) as exc:
        strict.decode(second)
    assert exc.value.code == 1002


def test_no_context_takeover_resets_and_frees_zlib_objects() -> None:
    data = text(2_000, seed=3)
    sender = PerMessageDeflate(local_no_context_takeover=True)
    receiver = PerMessageDeflate(remote_no_context_takeover=True)
    wire = [sender.encode(Frame(Opcode.TEXT, data)) for _ in range(3)]
    assert wire[0] == wire[1] == wire[2]
    assert sender._encoder is None
    for frame in wire:
        assert receiver.decode(frame).data == data
    assert receiver._decoder is None


def test_zlib_objects_are_allocated_lazily() -> None:
    codec = PerMessageDeflate()
    codec.encode(Frame(Opcode.TEXT, b"short"))
    codec.decode(Frame(Opcode.TEXT, b"plain"))
    assert codec._encoder is None and codec._decoder is None
    codec.encode(Frame(Opcode.TEXT, text(500)))
    codec.decode(Frame(Opcode.TEXT, deflate(b"x"), rsv1=True))
    # Context takeover: both are kept for the next message.
    assert codec._encoder is not None and codec._decoder is not None


@pytest.mark.parametrize("bits", range(8, 16))
def test_window_bits_round_trip(bits: int) -> None:
    # Repeats at every distance up to 32 KiB exercise the whole window.
    data = text(100_000, seed=bits)
    sender = PerMessageDeflate(local_max_window_bits=bits)
    receiver = PerMessageDeflate(remote_max_window_bits=bits)
    for _ in range(2):  # the second message also uses the carried-over window
        assert receive(receiver, send(sender, fragments(Opcode.BINARY, data, 4))) == data
    # The strictest check: a raw zlib decompressor with exactly `bits`, which
    # for 8 proves the 9-bit compressor stays within a 256-byte window.
    [wire] = send(PerMessageDeflate(local_max_window_bits=bits), [Frame(Opcode.BINARY, data)])
    inflater = zlib.decompressobj(-bits)
    assert inflater.decompress(wire.data + b"\x00\x00\xff\xff") == data


def test_window_bits_are_applied() -> None:
    # The second message repeats 4 KiB of noise from the first: a 15-bit
    # window reaches back to it, an 11-bit (2 KiB) one cannot. (Within one
    # inflate call zlib resolves references from its output buffer, so the
    # window only shows across messages.)
    noise = random.Random(4).randbytes(4096)
    frame = Frame(Opcode.BINARY, noise)
    wide, narrow = PerMessageDeflate(), PerMessageDeflate(local_max_window_bits=11)
    wide.encode(frame)
    narrow.encode(frame)
    assert len(wide.encode(frame).data) < 100 < 4000 < len(narrow.encode(frame).data)
    wide, receiver = PerMessageDeflate(), PerMessageDeflate(remote_max_window_bits=11)
    assert receiver.decode(wide.encode(frame)).data == noise
    with pytest.raises(ProtocolError):
        receiver.decode(wide.encode(frame))


# --- codec: compression decisions ------------------------------------------------------


def test_compress_threshold_and_override() -> None:
    codec = PerMessageDeflate(compress_threshold=100)
    small, large = Frame(Opcode.TEXT, b"a" * 99), Frame(Opcode.TEXT, b"a" * 100)
    assert codec.encode(small) is small
    assert codec.encode(large).rsv1
    assert codec.encode(small, compress=True).rsv1
    assert codec.encode(large, compress=False) is large
    assert PerMessageDeflate().compress_threshold == 128


def test_continuation_frames_follow_the_first_frame() -> None:
    codec = PerMessageDeflate(compress_threshold=100)
    # Decided on the first frame: small, so the large continuation stays plain.
    plain = [Frame(Opcode.TEXT, b"a", fin=False), Frame(Opcode.CONT, b"b" * 1000)]
    assert send(codec, plain) == plain
    # Forced on: the tiny continuation is compressed too, without RSV1.
    wire = send(codec, [Frame(Opcode.TEXT, b"a", fin=False), Frame(Opcode.CONT, b"b")], True)
    assert wire[0].rsv1 and not wire[1].rsv1
    assert receive(PerMessageDeflate(), wire) == b"ab"


def test_empty_messages() -> None:
    codec = PerMessageDeflate()
    # RFC 7692 §7.2.3.6: an empty final payload is sent as the single octet 0x00.
    [wire] = send(codec, [Frame(Opcode.TEXT, b"")], compress=True)
    assert wire.data == b"\x00" and wire.rsv1
    wire2 = send(codec, [Frame(Opcode.TEXT, b"abc", fin=False), Frame(Opcode.CONT, b"")], True)
    assert wire2[1].data == b"\x00"
    receiver = PerMessageDeflate()
    assert receiver.decode(wire, max_size=0).data == b""
    assert receive(receiver, wire2) == b"abc"


# --- codec: malformed input -------------------------------------------------------------


def test_rsv1_on_continuation_frame_is_a_protocol_error() -> None:
    codec = PerMessageDeflate()
    codec.decode(Frame(Opcode.TEXT, b"\xf2\x48\xcd", fin=False, rsv1=True))
    with pytest.raises(ProtocolError) as exc:
        codec.decode(Frame(Opcode.CONT, b"\xc9\xc9\x07\x00", rsv1=True))
    assert exc.value.code == 1002
    assert "continuation" in exc.value.reason


def test_invalid_compressed_data_is_a_protocol_error() -> None:
    codec = PerMessageDeflate()
    with pytest.raises(ProtocolError) as exc:
        # BTYPE=11 is reserved (RFC 1951 §3.2.3).
        codec.decode(Frame(Opcode.BINARY, b"\xff\xff\xff", rsv1=True))
    assert exc.value.code == 1002 and not isinstance(exc.value, PayloadTooBig)
    assert codec._decoder is None


# --- codec: size limits ------------------------------------------------------------------


def test_max_size_boundary() -> None:
    data = text(5_000)
    wire = PerMessageDeflate().encode(Frame(Opcode.TEXT, data))
    assert PerMessageDeflate().decode(wire, max_size=len(data)).data == data
    with pytest.raises(PayloadTooBig) as exc:
        PerMessageDeflate().decode(wire, max_size=len(data) - 1)
    assert exc.value.code == 1009
    # A budget already spent (the caller may compute a negative one) refuses
    # any output rather than meaning "unlimited".
    with pytest.raises(PayloadTooBig):
        PerMessageDeflate().decode(wire, max_size=-5)


def test_bomb_is_refused_quickly_with_bounded_memory(bomb: bytes) -> None:
    assert len(bomb) < 110_000
    codec = PerMessageDeflate()
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(PayloadTooBig):
            codec.decode(Frame(Opcode.BINARY, bomb, rsv1=True), max_size=MiB)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.1
    assert peak < 4 * MiB
    assert codec._decoder is None  # dropped, with its unconsumed input


def test_one_kib_frame_cannot_exceed_its_budget(bomb: bytes) -> None:
    # DEFLATE tops out near 1032:1, so 1 KiB inflates to ~1 MiB at most.
    codec = PerMessageDeflate()
    frame = Frame(Opcode.BINARY, bomb[:1024], fin=False, rsv1=True)
    with pytest.raises(PayloadTooBig):
        codec.decode(frame, max_size=64 * 1024)


def test_fragmented_bomb_is_judged_by_message_total(bomb: bytes) -> None:
    # 1000 fragments of ~100 bytes, each inflating to ~100 KiB: every one is
    # harmless alone. The caller passes what is left of the message budget.
    limit = MiB
    bounds = [len(bomb) * i // 1000 for i in range(1001)]
    chunks = [bomb[a:b] for a, b in itertools.pairwise(bounds)]
    assert len(chunks) == 1000 and b"".join(chunks) == bomb
    codec = PerMessageDeflate()
    received = 0
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooBig):
            for i, chunk in enumerate(chunks):
                frame = Frame(
                    Opcode.BINARY if i == 0 else Opcode.CONT,
                    chunk,
                    fin=i == len(chunks) - 1,
                    rsv1=i == 0,
                )
                received += len(codec.decode(frame, max_size=limit - received).data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert limit - 200 * 1024 < received <= limit
    assert i < 20  # refused at the fragment that crossed the limit
    assert peak < 4 * MiB


def test_empty_block_flood_does_not_grow_memory() -> None:
    # 200 empty stored blocks (5 bytes each) per frame: no output, ever.
    flood = b"\x00\x00\x00\xff\xff" * 200
    codec = PerMessageDeflate()
    codec.decode(Frame(Opcode.BINARY, flood, fin=False, rsv1=True), max_size=0)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        for _ in range(2_000):
            assert codec.decode(Frame(Opcode.CONT, flood, fin=False), max_size=0).data == b""
        elapsed = time.perf_counter() - start
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 64 * 1024
    assert elapsed < 2
    assert codec._decoder is not None and not codec._decoder.unconsumed_tail


# --- codec: sharing and construction ---------------------------------------------------


def test_shareable_key() -> None:
    assert PerMessageDeflate().shareable_key is None
    key8 = PerMessageDeflate(local_no_context_takeover=True, local_max_window_bits=8)
    key9 = PerMessageDeflate(local_no_context_takeover=True, local_max_window_bits=9)
    key15 = PerMessageDeflate(local_no_context_takeover=True)
    # 8 is compressed with a 9-bit window, so the output is the same.
    assert key8.shareable_key == key9.shareable_key != key15.shareable_key
    assert key8.shareable_key is not None
    assert PerMessageDeflate(local_no_context_takeover=True, level=1).shareable_key != (
        key15.shareable_key
    )
    # Same key, same bytes: the promise broadcasting relies on.
    data = Frame(Opcode.TEXT, text(3_000))
    clone = key15.clone()
    assert clone is not key15 and clone.shareable_key == key15.shareable_key
    key15.encode(Frame(Opcode.TEXT, text(3_000, seed=9)))
    assert key15.encode(data) == clone.encode(data)
    assert "local_no_context_takeover=True" in repr(clone)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"remote_max_window_bits": 7},
        {"local_max_window_bits": 16},
        {"mem_level": 0},
        {"mem_level": 10},
        {"level": 10},
        {"level": -2},
        {"compress_threshold": -1},
    ],
)
def test_invalid_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        PerMessageDeflate(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (ClientPerMessageDeflateFactory, {"server_max_window_bits": 16}),
        (ClientPerMessageDeflateFactory, {"client_max_window_bits": 7}),
        (ClientPerMessageDeflateFactory, {"mem_level": 0}),
        (ServerPerMessageDeflateFactory, {"server_max_window_bits": 7}),
        (ServerPerMessageDeflateFactory, {"client_max_window_bits": 16}),
        (ServerPerMessageDeflateFactory, {"level": 11}),
    ],
)
def test_invalid_factory_settings(factory: type, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        factory(**kwargs)


# --- negotiation: client ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "offer"),
    [
        ({}, [("client_max_window_bits", None)]),
        ({"client_max_window_bits": None}, []),
        ({"client_max_window_bits": False}, []),
        (
            {
                "server_no_context_takeover": True,
                "client_no_context_takeover": True,
                "server_max_window_bits": 10,
                "client_max_window_bits": 9,
            },
            [
                ("server_no_context_takeover", None),
                ("client_no_context_takeover", None),
                ("server_max_window_bits", "10"),
                ("client_max_window_bits", "9"),
            ],
        ),
    ],
)
def test_client_offer(kwargs: dict[str, object], offer: ExtensionParams) -> None:
    factory = ClientPerMessageDeflateFactory(**kwargs)  # type: ignore[arg-type]
    assert factory.name == "permessage-deflate"
    assert factory.get_request_params() == offer


# Expected codec: (remote_no_context_takeover, local_no_context_takeover,
# remote_max_window_bits, local_max_window_bits); remote is the server.
@pytest.mark.parametrize(
    ("kwargs", "response", "expected"),
    [
        ({}, [], (False, False, 15, 15)),
        # The server may impose these unasked (RFC 7692 §7.1.1.1, §7.1.1.2, §7.1.2.1).
        ({}, [("server_no_context_takeover", None)], (True, False, 15, 15)),
        ({}, [("client_no_context_takeover", None)], (False, True, 15, 15)),
        ({}, [("server_max_window_bits", "10")], (False, False, 10, 15)),
        # Answer to the valueless client_max_window_bits offer.
        ({}, [("client_max_window_bits", "8")], (False, False, 15, 8)),
        # Granted requests.
        (
            {"server_no_context_takeover": True, "server_max_window_bits": 12},
            [("server_no_context_takeover", None), ("server_max_window_bits", "9")],
            (True, False, 9, 15),
        ),
        # Our own client_no_context_takeover binds us even if not echoed.
        ({"client_no_context_takeover": True}, [], (False, True, 15, 15)),
        # A client_max_window_bits value in the offer caps us with or without an answer.
        ({"client_max_window_bits": 11}, [], (False, False, 15, 11)),
        (
            {"client_max_window_bits": 11},
            [("client_max_window_bits", "10")],
            (False, False, 15, 10),
        ),
    ],
)
def test_client_accepts_response(
    kwargs: dict[str, object],
    response: ExtensionParams,
    expected: tuple[bool, bool, int, int],
) -> None:
    factory = ClientPerMessageDeflateFactory(**kwargs)  # type: ignore[arg-type]
    codec = factory.process_response_params(response, [])
    assert (
        codec.remote_no_context_takeover,
        codec.local_no_context_takeover,
        codec.remote_max_window_bits,
        codec.local_max_window_bits,
    ) == expected


@pytest.mark.parametrize(
    ("kwargs", "response", "message"),
    [
        ({}, [("server_no_context_takeover", None)] * 2, "duplicate"),
        ({}, [("server_max_window_bits", "10"), ("server_max_window_bits", "10")], "duplicate"),
        ({}, [("mystery", None)], "unknown"),
        ({}, [("Server_No_Context_Takeover", None)], "unknown"),
        ({}, [("server_no_context_takeover", "1")], "no value"),
        ({}, [("client_no_context_takeover", "")], "no value"),
        ({}, [("server_max_window_bits", None)], "needs a value"),
        ({}, [("client_max_window_bits", None)], "needs a value"),
        ({}, [("server_max_window_bits", "16")], "invalid"),
        ({}, [("server_max_window_bits", "7")], "invalid"),
        ({}, [("server_max_window_bits", "08")], "invalid"),
        ({}, [("client_max_window_bits", "ten")], "invalid"),
        ({"server_no_context_takeover": True}, [], "server_no_context_takeover"),
        ({"server_max_window_bits": 10}, [], "server_max_window_bits"),
        ({"server_max_window_bits": 10}, [("server_max_window_bits", "11")], "exceeds"),
        ({"client_max_window_bits": None}, [("client_max_window_bits", "10")], "not offered"),
        ({"client_max_window_bits": 10}, [("client_max_window_bits", "11")], "exceeds"),
    ],
)
def test_client_rejects_response(
    kwargs: dict[str, object], response: ExtensionParams, message: str
) -> None:
    factory = ClientPerMessageDeflateFactory(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(NegotiationError, match=message):
        factory.process_response_params(response, [])


def test_client_rejects_second_permessage_deflate() -> None:
    with pytest.raises(NegotiationError, match="already"):
        ClientPerMessageDeflateFactory().process_response_params([], [PerMessageDeflate()])


def test_client_passes_settings_to_codec() -> None:
    factory = ClientPerMessageDeflateFactory(compress_threshold=7, mem_level=3, level=2)
    codec = factory.process_response_params([], [])
    assert (codec.compress_threshold, codec.mem_level, codec.level) == (7, 3, 2)


# --- negotiation: server ---------------------------------------------------------------


# Expected codec: (remote_no_context_takeover, local_no_context_takeover,
# remote_max_window_bits, local_max_window_bits); remote is the client.
@pytest.mark.parametrize(
    ("kwargs", "offer", "response", "expected"),
    [
        # Defaults: the server announces its 12-bit window and caps the
        # client's when the client lets it.
        ({}, [], [("server_max_window_bits", "12")], (False, False, 15, 12)),
        (
            {},
            [("client_max_window_bits", None)],
            [("server_max_window_bits", "12"), ("client_max_window_bits", "12")],
            (False, False, 12, 12),
        ),
        # The client's own cap is below ours: nothing to answer.
        (
            {},
            [("client_max_window_bits", "10")],
            [("server_max_window_bits", "12")],
            (False, False, 10, 12),
        ),
        (
            {"client_max_window_bits": 9},
            [("client_max_window_bits", "10")],
            [("server_max_window_bits", "12"), ("client_max_window_bits", "9")],
            (False, False, 9, 12),
        ),
        # zlib defaults, nothing offered: nothing to say.
        (
            {"server_max_window_bits": None, "client_max_window_bits": None},
            [],
            [],
            (False, False, 15, 15),
        ),
        (
            {"server_max_window_bits": None, "client_max_window_bits": None},
            [("client_max_window_bits", None)],
            [],
            (False, False, 15, 15),
        ),
        # A requested server window is granted by echoing it, even at 8.
        (
            {"server_max_window_bits": None},
            [("server_max_window_bits", "15")],
            [("server_max_window_bits", "15")],
            (False, False, 15, 15),
        ),
        (
            {},
            [("server_max_window_bits", "8")],
            [("server_max_window_bits", "8")],
            (False, False, 15, 8),
        ),
        # No-context-takeover requests are echoed; a client's hint is made binding.
        (
            {"server_max_window_bits": None},
            [("server_no_context_takeover", None), ("client_no_context_takeover", None)],
            [("server_no_context_takeover", None), ("client_no_context_takeover", None)],
            (True, True, 15, 15),
        ),
        # The server imposes them unasked.
        (
            {
                "server_no_context_takeover": True,
                "client_no_context_takeover": True,
                "server_max_window_bits": None,
            },
            [],
            [("server_no_context_takeover", None), ("client_no_context_takeover", None)],
            (True, True, 15, 15),
        ),
        # Every parameter at once.
        (
            {},
            [
                ("server_no_context_takeover", None),
                ("client_no_context_takeover", None),
                ("server_max_window_bits", "10"),
                ("client_max_window_bits", "14"),
            ],
            [
                ("server_no_context_takeover", None),
                ("client_no_context_takeover", None),
                ("server_max_window_bits", "10"),
                ("client_max_window_bits", "12"),
            ],
            (True, True, 12, 10),
        ),
    ],
)
def test_server_accepts_offer(
    kwargs: dict[str, object],
    offer: ExtensionParams,
    response: ExtensionParams,
    expected: tuple[bool, bool, int, int],
) -> None:
    factory = ServerPerMessageDeflateFactory(**kwargs)  # type: ignore[arg-type]
    params, codec = factory.process_request_params(offer, [])
    assert params == response
    assert (
        codec.remote_no_context_takeover,
        codec.local_no_context_takeover,
        codec.remote_max_window_bits,
        codec.local_max_window_bits,
    ) == expected


@pytest.mark.parametrize(
    ("offer", "message"),
    [
        ([("client_max_window_bits", None), ("client_max_window_bits", "10")], "duplicate"),
        ([("client_no_context_takeover", None)] * 2, "duplicate"),
        ([("unknown_param", "1")], "unknown"),
        ([("server_no_context_takeover", "yes")], "no value"),
        ([("server_max_window_bits", None)], "needs a value"),
        ([("server_max_window_bits", "16")], "invalid"),
        ([("client_max_window_bits", "7")], "invalid"),
        ([("client_max_window_bits", "010")], "invalid"),
        ([("client_max_window_bits", "")], "invalid"),
    ],
)
def test_server_declines_invalid_offer(offer: ExtensionParams, message: str) -> None:
    with pytest.raises(NegotiationError, match=message):
        ServerPerMessageDeflateFactory().process_request_params(offer, [])


def test_server_require_client_max_window_bits() -> None:
    factory = ServerPerMessageDeflateFactory(require_client_max_window_bits=True)
    with pytest.raises(NegotiationError, match="client_max_window_bits"):
        factory.process_request_params([], [])
    # The same factory accepts the client's next offer if it has the parameter.
    _, codec = factory.process_request_params([("client_max_window_bits", None)], [])
    assert codec.remote_max_window_bits == 12


def test_server_declines_second_permessage_deflate() -> None:
    with pytest.raises(NegotiationError, match="already"):
        ServerPerMessageDeflateFactory().process_request_params([], [PerMessageDeflate()])


def test_server_defaults_are_memory_frugal() -> None:
    factory = ServerPerMessageDeflateFactory()
    assert (factory.server_max_window_bits, factory.client_max_window_bits) == (12, 12)
    assert (factory.mem_level, factory.compress_threshold) == (5, 128)
    _, codec = factory.process_request_params([], [])
    assert (codec.mem_level, codec.level, codec.compress_threshold) == (5, 6, 128)


# --- negotiation: end to end -----------------------------------------------------------


@pytest.mark.parametrize(
    ("client_kwargs", "server_kwargs"),
    [
        ({}, {}),
        ({"server_max_window_bits": 8, "client_max_window_bits": 8}, {}),
        ({"server_no_context_takeover": True}, {"client_no_context_takeover": True}),
        ({"client_max_window_bits": None}, {"server_max_window_bits": 9, "mem_level": 1}),
    ],
)
def test_negotiated_codecs_interoperate(
    client_kwargs: dict[str, object], server_kwargs: dict[str, object]
) -> None:
    client_factory = ClientPerMessageDeflateFactory(**client_kwargs)  # type: ignore[arg-type]
    server_factory = ServerPerMessageDeflateFactory(**server_kwargs)  # type: ignore[arg-type]
    response, server = server_factory.process_request_params(
        client_factory.get_request_params(), []
    )
    client = client_factory.process_response_params(response, [])
    assert client.local_max_window_bits == server.remote_max_window_bits
    assert client.remote_max_window_bits == server.local_max_window_bits
    assert client.local_no_context_takeover == server.remote_no_context_takeover
    assert client.remote_no_context_takeover == server.local_no_context_takeover
    for seed in range(3):
        data = text(40_000, seed=seed)
        assert receive(server, send(client, fragments(Opcode.TEXT, data, 3))) == data
        assert receive(client, send(server, fragments(Opcode.BINARY, data, 2))) == data
