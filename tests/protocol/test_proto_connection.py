"""The sans-I/O Connection: messages, fragmentation, framing errors, limits, UTF-8.

Frames are built by hand (``proto_helpers.raw_frame``) so that every malformed
variant can be produced; a client-side Connection receives unmasked frames and
a server-side one masked frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from proto_helpers import (
    KEY,
    Reverse,
    decode_frames,
    frame,
    pair,
    raw_frame,
    sent,
    sent_frames,
    to_client,
    to_server,
    transfer,
)

import tether.protocol.connection as connection_module
import tether.protocol.frames as frames_module
from tether import _mask
from tether.protocol import (
    Connection,
    Fragment,
    Opcode,
    Ping,
    Pong,
    ProtocolError,
    Side,
    State,
)
from tether.protocol.connection import _MaskPool
from tether_testing import require_native

MaskFn = Callable[[bytes | bytearray | memoryview, bytes], bytes]


@pytest.fixture(params=["native", "python"])
def mask_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with the C masking and again with the pure-Python twin."""
    if request.param == "native":
        fn: MaskFn = require_native().apply_mask
    else:
        fn = _mask.apply_mask
    monkeypatch.setattr(connection_module, "apply_mask", fn)
    monkeypatch.setattr(frames_module, "apply_mask", fn)
    yield request.param


def server_conn(**kwargs: object) -> Connection:
    return Connection(Side.SERVER, **kwargs)  # type: ignore[arg-type]


def client_conn(**kwargs: object) -> Connection:
    return Connection(Side.CLIENT, **kwargs)  # type: ignore[arg-type]


def incoming(conn: Connection, opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """A well-formed frame as ``conn``'s peer would send it."""
    return frame(opcode, payload, fin=fin, masked=conn.side is Side.SERVER)


def mask_for(conn: Connection) -> bytes | None:
    return KEY if conn.side is Side.SERVER else None


def assert_failed(conn: Connection, code: int) -> None:
    """The connection failed with ``code``: Close frame sent, transport to close."""
    assert conn.failure is not None, "connection did not fail"
    assert conn.failure.code == code, conn.failure
    assert conn.state is State.CLOSING
    assert conn.close_transport
    closes = [f for f in sent_frames(conn) if f.opcode == Opcode.CLOSE]
    assert len(closes) == 1
    assert int.from_bytes(closes[0].payload[:2], "big") == code
    assert conn.close_sent is not None
    assert conn.close_sent[0] == code
    # Anything after the failure is ignored.
    conn.receive_data(incoming(conn, Opcode.TEXT, b"ignored"))
    assert "ignored" not in conn.events_received()
    assert conn.data_to_send() == []


SIDES = [Side.SERVER, Side.CLIENT]


@pytest.fixture(params=SIDES, ids=["server", "client"])
def side(request: pytest.FixtureRequest) -> Side:
    return request.param  # type: ignore[no-any-return]


# ----------------------------------------------------------------- messages


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 2**20])
def test_roundtrip_both_ways(n: int, mask_impl: str) -> None:
    client, server = pair()
    text = ("x€" * n)[: n // 3]
    data = bytes(range(256)) * (n // 256) + bytes(n % 256)
    client.send_text(text)
    client.send_binary(data)
    transfer(client, server)
    assert server.events_received() == [text, data]
    server.send_text(text)
    server.send_binary(data)
    transfer(server, client)
    assert client.events_received() == [text, data]
    assert client.failure is None
    assert server.failure is None


def test_client_frames_are_masked_with_fresh_keys() -> None:
    client = client_conn()
    for _ in range(5):
        client.send_binary(b"\x00" * 8)
    frames = sent_frames(client)
    masks = {f.mask for f in frames}
    assert None not in masks
    assert len(masks) == 5
    assert all(f.payload == b"\x00" * 8 for f in frames)


def test_server_frames_are_unmasked() -> None:
    server = server_conn()
    server.send_text("hi")
    server.send_binary(b"x" * 5000)  # large payloads are written without copying
    chunks = server.data_to_send()
    assert len(chunks) == 3
    frames = decode_frames(b"".join(chunks))
    assert [f.mask for f in frames] == [None, None]
    assert frames[1].payload == b"x" * 5000


def test_mask_pool_refills() -> None:
    pool = _MaskPool()
    keys = [pool.next() for _ in range(2050)]
    assert all(len(k) == 4 for k in keys)
    assert len(set(keys)) > 2000


def test_send_text_accepts_utf8_bytes() -> None:
    client, server = pair()
    client.send_text("é".encode())
    transfer(client, server)
    assert server.events_received() == ["é"]


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64])
def test_message_fed_in_chunks(side: Side, chunk: int, mask_impl: str) -> None:
    conn = Connection(side)
    text = "héllo wörld €😀 " * 20
    data = incoming(conn, Opcode.TEXT, text.encode()) + incoming(conn, Opcode.BINARY, b"\xff" * 300)
    for i in range(0, len(data), chunk):
        conn.receive_data(data[i : i + chunk])
    assert conn.events_received() == [text, b"\xff" * 300]
    assert conn.failure is None


def test_many_frames_in_one_chunk(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(b"".join(incoming(conn, Opcode.TEXT, str(i).encode()) for i in range(100)))
    assert conn.events_received() == [str(i) for i in range(100)]


def test_empty_receive_is_a_no_op(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(b"")
    assert conn.events_received() == []
    assert conn.data_to_send() == []


# ------------------------------------------------------------ fragmentation


def test_fragmentation_with_interleaved_ping(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"hel", fin=False))
    conn.receive_data(incoming(conn, Opcode.PING, b"p1"))
    conn.receive_data(incoming(conn, Opcode.CONT, b"lo ", fin=False))
    conn.receive_data(incoming(conn, Opcode.PONG, b"p2"))
    conn.receive_data(incoming(conn, Opcode.CONT, b"world", fin=True))
    assert conn.events_received() == [Ping(b"p1"), Pong(b"p2"), "hello world"]
    (pong,) = sent_frames(conn)
    assert (pong.opcode, pong.payload) == (Opcode.PONG, b"p1")


def test_binary_fragmentation(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.BINARY, b"\x00", fin=False))
    conn.receive_data(incoming(conn, Opcode.CONT, b"", fin=False))
    conn.receive_data(incoming(conn, Opcode.CONT, b"\xff", fin=True))
    conn.receive_data(incoming(conn, Opcode.BINARY, b"next"))
    assert conn.events_received() == [b"\x00\xff", b"next"]


def test_sending_fragments_roundtrip() -> None:
    client, server = pair()
    client.send_text("hé", fin=False)
    client.send_ping(b"mid")
    client.send_continuation(b"llo", fin=False)
    client.send_continuation(b"", fin=True)
    client.send_binary(b"a", fin=False)
    client.send_continuation(b"b", fin=True)
    transfer(client, server)
    assert server.events_received() == [Ping(b"mid"), "héllo", b"ab"]
    frames = sent_frames(server)
    assert [f.opcode for f in frames] == [Opcode.PONG]


def test_continuation_without_start(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.CONT, b"x"))
    assert_failed(conn, 1002)


def test_new_message_during_fragmented_one(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"a", fin=False))
    conn.receive_data(incoming(conn, Opcode.BINARY, b"b"))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


def test_fragments_multibyte_split_across_frames(side: Side) -> None:
    conn = Connection(side)
    raw = "€😀é".encode()  # 3 + 4 + 2 bytes, split at every byte
    for i, byte in enumerate(raw):
        opcode = Opcode.TEXT if i == 0 else Opcode.CONT
        conn.receive_data(incoming(conn, opcode, bytes((byte,)), fin=i == len(raw) - 1))
    assert conn.failure is None
    assert conn.events_received() == ["€😀é"]


def test_stream_fragments(side: Side) -> None:
    conn = Connection(side, stream_fragments=True)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"whole"))
    conn.receive_data(incoming(conn, Opcode.TEXT, b"ab\xe2\x82", fin=False))
    conn.receive_data(incoming(conn, Opcode.CONT, b"\xac!", fin=True))
    conn.receive_data(incoming(conn, Opcode.BINARY, b"\x01", fin=False))
    conn.receive_data(incoming(conn, Opcode.CONT, b"\x02", fin=True))
    assert conn.events_received() == [
        Fragment("whole", True),
        Fragment("ab", False),
        Fragment("€!", True),
        Fragment(b"\x01", False),
        Fragment(b"\x02", True),
    ]


def test_stream_fragments_bad_utf8(side: Side) -> None:
    conn = Connection(side, stream_fragments=True)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"\xff"))
    assert conn.events_received() == []
    assert_failed(conn, 1007)


def test_stream_fragments_truncated_character_at_end(side: Side) -> None:
    conn = Connection(side, stream_fragments=True)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"a\xe2\x82", fin=False))
    conn.receive_data(incoming(conn, Opcode.CONT, b"", fin=True))
    assert conn.events_received() == [Fragment("a", False)]
    assert_failed(conn, 1007)


# ------------------------------------------------------------ framing errors


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcodes(side: Side, opcode: int) -> None:
    conn = Connection(side)
    conn.receive_data(raw_frame(0x80 | opcode, b"", mask=mask_for(conn)))
    assert conn.events_received() == []
    assert_failed(conn, 1002)
    assert f"{opcode:#x}" in str(conn.failure)


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PING])
def test_reserved_bits_without_extension(side: Side, rsv: int, opcode: int) -> None:
    conn = Connection(side)
    conn.receive_data(raw_frame(0x80 | rsv | opcode, b"x", mask=mask_for(conn)))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


@pytest.mark.parametrize("rsv", [0x20, 0x10])
def test_rsv2_rsv3_rejected_even_with_extension(side: Side, rsv: int) -> None:
    conn = Connection(side, extensions=[Reverse()])
    conn.receive_data(raw_frame(0x80 | rsv | Opcode.TEXT, b"x", mask=mask_for(conn)))
    assert_failed(conn, 1002)


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_rsv1_on_control_frame_rejected_with_extension(side: Side, opcode: int) -> None:
    conn = Connection(side, extensions=[Reverse()])
    conn.receive_data(raw_frame(0xC0 | opcode, b"", mask=mask_for(conn)))
    assert_failed(conn, 1002)


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frame_too_long(side: Side, opcode: int) -> None:
    conn = Connection(side)
    payload = b"\x03\xe8" + b"x" * 124  # 126 bytes
    conn.receive_data(raw_frame(0x80 | opcode, payload, mask=mask_for(conn)))
    assert_failed(conn, 1002)


def test_control_frame_too_long_detected_from_header(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(raw_frame(0x89, length=126, mask=mask_for(conn))[:4])
    assert_failed(conn, 1002)


def test_control_frame_of_125_bytes_is_fine(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.PING, b"p" * 125))
    assert conn.events_received() == [Ping(b"p" * 125)]


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_fragmented_control_frame(side: Side, opcode: int) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, opcode, b"", fin=False))
    assert conn.events_received() == []
    assert_failed(conn, 1002)


def test_unmasked_frame_at_server() -> None:
    conn = server_conn()
    conn.receive_data(to_client(Opcode.TEXT, b"hi"))
    assert conn.events_received() == []
    assert_failed(conn, 1002)
    assert "unmasked" in str(conn.failure)


def test_masked_frame_at_client() -> None:
    conn = client_conn()
    conn.receive_data(to_server(Opcode.TEXT, b"hi"))
    assert conn.events_received() == []
    assert_failed(conn, 1002)
    assert "masked frame from server" in str(conn.failure)


@pytest.mark.parametrize("masked_control", [Opcode.PING, Opcode.CLOSE])
def test_masking_rule_applies_to_control_frames(masked_control: int) -> None:
    conn = client_conn()
    conn.receive_data(to_server(masked_control, b""))
    assert_failed(conn, 1002)


@pytest.mark.parametrize("max_size", [None, 2**20])
def test_length_with_msb_set_fails_from_header_alone(side: Side, max_size: int | None) -> None:
    conn = Connection(side, max_size=max_size)
    header = raw_frame(0x82, length=2**63, length_bytes=8, mask=mask_for(conn))
    conn.receive_data(header[:10])  # no masking key, no payload
    assert_failed(conn, 1002)
    assert "most significant bit" in str(conn.failure)


def test_huge_length_without_limit_just_waits(side: Side) -> None:
    conn = Connection(side, max_size=None)
    conn.receive_data(raw_frame(0x82, length=2**62, mask=mask_for(conn))[:14] + b"abc")
    assert conn.failure is None
    assert conn.events_received() == []


def test_header_split_across_reads(side: Side) -> None:
    conn = Connection(side, max_size=None)
    data = incoming(conn, Opcode.BINARY, b"z" * 70000)
    for piece in (data[:1], data[1:3], data[3:9], data[9:12], data[12:]):
        conn.receive_data(piece)
    assert conn.events_received() == [b"z" * 70000]


# -------------------------------------------------------------------- limits


def test_max_size_exceeded_from_header_alone(side: Side) -> None:
    conn = Connection(side, max_size=1000)
    conn.receive_data(raw_frame(0x82, length=1001, mask=mask_for(conn))[:4])
    assert_failed(conn, 1009)


def test_max_size_exact_is_fine(side: Side) -> None:
    conn = Connection(side, max_size=1000)
    conn.receive_data(incoming(conn, Opcode.BINARY, b"a" * 1000))
    assert conn.events_received() == [b"a" * 1000]


def test_default_max_size_is_one_mebibyte(side: Side) -> None:
    conn = Connection(side)
    assert conn.max_size == 2**20
    conn.receive_data(raw_frame(0x81, length=2**20 + 1, mask=mask_for(conn))[:10])
    assert_failed(conn, 1009)


def test_max_frame_size(side: Side) -> None:
    conn = Connection(side, max_frame_size=100, max_size=None)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"a" * 100, fin=False))
    conn.receive_data(incoming(conn, Opcode.CONT, b"a" * 100, fin=True))
    assert conn.events_received() == ["a" * 200]
    conn.receive_data(raw_frame(0x82, length=101, mask=mask_for(conn))[:4])
    assert_failed(conn, 1009)


def test_endless_fragments_hit_max_size(side: Side) -> None:
    conn = Connection(side, max_size=1000)
    conn.receive_data(incoming(conn, Opcode.BINARY, b"x" * 10, fin=False))
    for _ in range(99):
        conn.receive_data(incoming(conn, Opcode.CONT, b"x" * 10, fin=False))
    assert conn.failure is None  # exactly 1000 bytes so far
    # The next header alone pushes the message over the limit.
    conn.receive_data(raw_frame(0x00, length=10, mask=mask_for(conn))[:2])
    assert conn.events_received() == []
    assert_failed(conn, 1009)


def test_endless_text_fragments_hit_max_size(side: Side) -> None:
    conn = Connection(side, max_size=50)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"", fin=False))
    fed = 0
    while conn.failure is None and fed < 1000:
        conn.receive_data(incoming(conn, Opcode.CONT, b"abc", fin=False))
        fed += 1
    assert fed == 17  # 17 * 3 = 51 > 50
    assert_failed(conn, 1009)


def test_max_size_counts_whole_message_not_frames(side: Side) -> None:
    conn = Connection(side, max_size=10)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"12345", fin=False))
    conn.receive_data(incoming(conn, Opcode.CONT, b"12345", fin=True))
    conn.receive_data(incoming(conn, Opcode.TEXT, b"1234567890"))
    assert conn.events_received() == ["1234512345", "1234567890"]
    assert conn.failure is None


def test_no_max_size(side: Side) -> None:
    conn = Connection(side, max_size=None)
    conn.receive_data(incoming(conn, Opcode.BINARY, b"b" * (2**20 + 5)))
    assert conn.events_received() == [b"b" * (2**20 + 5)]


def test_control_frames_do_not_count_towards_max_size(side: Side) -> None:
    conn = Connection(side, max_size=4)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"ab", fin=False))
    conn.receive_data(incoming(conn, Opcode.PING, b"x" * 100))
    conn.receive_data(incoming(conn, Opcode.CONT, b"cd", fin=True))
    assert conn.events_received() == [Ping(b"x" * 100), "abcd"]


# ---------------------------------------------------------------------- UTF-8


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff",
        b"\xc0\xaf",  # overlong "/"
        b"\xed\xa0\x80",  # surrogate
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b"abc\xe2\x82",  # truncated at the end
        "κόσμε".encode() + b"\xce",
    ],
)
def test_bad_utf8_single_frame(side: Side, payload: bytes) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.TEXT, payload))
    assert conn.events_received() == []
    assert_failed(conn, 1007)


def test_bad_utf8_in_binary_is_fine(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.BINARY, b"\xff\xfe"))
    assert conn.events_received() == [b"\xff\xfe"]


def test_bad_utf8_fails_as_soon_as_the_fragment_arrives(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"good", fin=False))
    assert conn.failure is None
    conn.receive_data(incoming(conn, Opcode.CONT, b"\xed\xa0\x80", fin=False))  # not final
    assert_failed(conn, 1007)


def test_bad_utf8_across_fragment_boundary(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"\xe2\x82", fin=False))
    assert conn.failure is None
    conn.receive_data(incoming(conn, Opcode.CONT, b"A", fin=False))
    assert_failed(conn, 1007)


def test_truncated_character_at_end_of_fragmented_message(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"a\xe2", fin=False))
    conn.receive_data(incoming(conn, Opcode.CONT, b"\x82", fin=True))
    assert_failed(conn, 1007)


# (bytes, how many of them must arrive before the failure). A truncated
# surrogate (b"\xed\xa0") fails on its second byte: the partial-frame check uses
# a fail-fast validator, not CPython's decoder, which would hold it back.
FAIL_FAST_CASES = [
    (b"\xff", 1),
    (b"\xc0", 1),
    (b"\xf4\x90", 2),
    (b"\xe2\x82A", 3),
    (b"\xed\xa0\x80", 2),
]


@pytest.mark.parametrize(("bad", "fails_after"), FAIL_FAST_CASES)
@pytest.mark.parametrize("bad_at", [0, 1, 5, 130])
def test_bad_utf8_fails_fast_in_partial_single_frame(
    side: Side, bad_at: int, bad: bytes, fails_after: int, mask_impl: str
) -> None:
    """The failure happens as soon as the offending byte arrives, not at the frame's end."""
    conn = Connection(side)
    payload = "é".encode() * (bad_at // 2) + b"a" * (bad_at % 2) + bad + b"b" * 10_000
    data = incoming(conn, Opcode.TEXT, payload)
    header = len(data) - len(payload)
    for i in range(header + bad_at + fails_after):
        assert conn.failure is None, i
        conn.receive_data(data[i : i + 1])
    assert_failed(conn, 1007)


def test_bad_utf8_fails_fast_in_partial_frame_large_chunk(side: Side) -> None:
    conn = Connection(side)
    payload = "é".encode() * 100 + b"\xc3\x28" + b"x" * 100_000
    data = incoming(conn, Opcode.TEXT, payload)
    conn.receive_data(data[:1000])
    assert_failed(conn, 1007)


def test_bad_utf8_fails_fast_in_partial_continuation(side: Side, mask_impl: str) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"ok\xf0\x9f", fin=False))
    data = incoming(conn, Opcode.CONT, b"\x98" + b"\x28" + b"z" * 5000, fin=True)
    conn.receive_data(data[: len(data) - 5000])
    assert_failed(conn, 1007)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 5, 9])
def test_valid_multibyte_text_fed_in_chunks_does_not_fail(
    side: Side, chunk: int, mask_impl: str
) -> None:
    conn = Connection(side)
    text = "aé€😀" * 50
    frames = incoming(conn, Opcode.TEXT, text[:77].encode()[:-1], fin=False)
    # The split character continues in the next fragment.
    frames += incoming(conn, Opcode.CONT, text.encode()[len(text[:77].encode()) - 1 :], fin=True)
    frames += incoming(conn, Opcode.TEXT, text.encode())
    for i in range(0, len(frames), chunk):
        conn.receive_data(frames[i : i + chunk])
        assert conn.failure is None, i
    assert conn.events_received() == [text, text]


def test_partial_binary_frame_is_not_utf8_checked(side: Side) -> None:
    conn = Connection(side)
    data = incoming(conn, Opcode.BINARY, b"\xff" * 1000)
    conn.receive_data(data[:500])
    conn.receive_data(data[500:])
    assert conn.events_received() == [b"\xff" * 1000]


def test_partial_continuation_of_binary_is_not_utf8_checked(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.BINARY, b"\xff", fin=False))
    data = incoming(conn, Opcode.CONT, b"\xff" * 1000, fin=True)
    conn.receive_data(data[:500])
    assert conn.failure is None
    conn.receive_data(data[500:])
    assert conn.events_received() == [b"\xff" * 1001]


# ------------------------------------------------------------------ extensions


def test_extension_roundtrip_with_rsv1() -> None:
    client, server = pair(extensions=[Reverse()])
    client.send_text("hello", compress=True)
    client.send_text("plain")
    client.send_binary(b"ab", fin=False, compress=True)
    client.send_continuation(b"cd", fin=True)
    wire = sent(client)
    frames = decode_frames(wire)
    assert [f.rsv1 for f in frames] == [True, False, True, False]
    assert frames[0].payload == b"olleh"
    server.receive_data(wire)
    assert server.events_received() == ["hello", "plain", b"abcd"]


def test_extension_partial_compressed_text_is_not_utf8_checked(side: Side) -> None:
    """RSV1 text is transformed data: it must not be validated before decoding."""
    conn = Connection(side, extensions=[Reverse()])
    payload = "é".encode()[::-1] * 600  # reversed UTF-8: invalid until decoded
    data = raw_frame(0xC1, payload, mask=mask_for(conn))
    conn.receive_data(data[:100])
    assert conn.failure is None
    conn.receive_data(data[100:])
    assert conn.events_received() == ["é" * 600]


def test_extension_partial_continuation_of_compressed_message(side: Side) -> None:
    conn = Connection(side, extensions=[Reverse()])
    first = "é".encode() * 3
    rest = "é".encode() * 500
    conn.receive_data(raw_frame(0x41, first[::-1], mask=mask_for(conn)))
    data = raw_frame(0x80, rest[::-1], mask=mask_for(conn))
    conn.receive_data(data[:51])
    assert conn.failure is None
    conn.receive_data(data[51:])
    assert conn.events_received() == ["é" * 503]


def test_extension_max_size_checked_after_decoding(side: Side) -> None:
    ext = Reverse()
    conn = Connection(side, extensions=[ext], max_size=10)
    conn.receive_data(raw_frame(0x42, b"x" * 8, mask=mask_for(conn)))
    assert conn.failure is None
    conn.receive_data(raw_frame(0x80, b"y" * 3, mask=mask_for(conn)))
    # The extension was told how much the message may still grow.
    assert ext.budgets == [10, 2]
    assert_failed(conn, 1009)


def test_extension_compressed_frame_wire_size_is_bounded(side: Side) -> None:
    """A compressed frame far larger than max_size fails from its header alone."""
    conn = Connection(side, extensions=[Reverse()], max_size=1000)
    # Slightly over max_size is tolerated on the wire (deflate can expand a little).
    conn.receive_data(raw_frame(0x42, length=1000 + 50, mask=mask_for(conn))[:4])
    assert conn.failure is None
    conn = Connection(side, extensions=[Reverse()], max_size=1000)
    conn.receive_data(raw_frame(0x42, length=2**40, mask=mask_for(conn))[:10])
    assert_failed(conn, 1009)


def test_extension_compressed_continuation_wire_size_is_bounded(side: Side) -> None:
    conn = Connection(side, extensions=[Reverse()], max_size=1000)
    conn.receive_data(raw_frame(0x42, b"x" * 600, mask=mask_for(conn)))
    conn.receive_data(raw_frame(0x00, length=2000, mask=mask_for(conn))[:4])
    assert_failed(conn, 1009)


def test_extension_uncompressed_frames_still_checked_from_header(side: Side) -> None:
    conn = Connection(side, extensions=[Reverse()], max_size=10)
    conn.receive_data(raw_frame(0x82, length=11, mask=mask_for(conn))[:2])
    assert_failed(conn, 1009)


def test_extension_error_becomes_close_code(side: Side) -> None:
    class Broken(Reverse):
        def decode(self, frame: object, *, max_size: int | None = None) -> object:  # type: ignore[override]
            raise ProtocolError("bad compressed data", 1007)

    conn = Connection(side, extensions=[Broken()])
    conn.receive_data(raw_frame(0xC1, b"x", mask=mask_for(conn)))
    assert_failed(conn, 1007)


def test_unexpected_exception_fails_with_1011(side: Side, caplog: pytest.LogCaptureFixture) -> None:
    class Buggy(Reverse):
        def decode(self, frame: object, *, max_size: int | None = None) -> object:  # type: ignore[override]
            raise ZeroDivisionError("oops")

    conn = Connection(side, extensions=[Buggy()])
    with caplog.at_level("ERROR", logger="tether.protocol"):
        conn.receive_data(raw_frame(0xC1, b"x", mask=mask_for(conn)))
    assert "unexpected error" in caplog.text
    assert_failed(conn, 1011)


def test_bad_utf8_with_extension_but_no_rsv1(side: Side) -> None:
    conn = Connection(side, extensions=[Reverse()])
    conn.receive_data(raw_frame(0x81, b"\xff", mask=mask_for(conn)))
    assert_failed(conn, 1007)


def test_frame_observer_sees_both_directions(side: Side) -> None:
    seen: list[tuple[str, int, bool, int, int, bool, bytes]] = []
    conn = Connection(side)
    conn.frame_observer = lambda *args: seen.append(args)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"hi", fin=False))
    conn.receive_data(incoming(conn, Opcode.PING, b"p"))
    conn.send_binary(b"out")
    masked_in = side is Side.SERVER
    assert seen == [
        ("<", Opcode.TEXT, False, 0, 2, masked_in, b"hi"),
        ("<", Opcode.PING, True, 0, 1, masked_in, b"p"),
        (">", Opcode.PONG, True, 0, 1, not masked_in, b"p"),
        (">", Opcode.BINARY, True, 0, 3, not masked_in, b"out"),
    ]
