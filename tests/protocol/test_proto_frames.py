"""Frame serialization (RFC 6455 §5.2) and Close payloads (§5.5.1, §7.4)."""

from __future__ import annotations

import pytest
from proto_helpers import KEY, decode_frames, xor

from tether.protocol import CloseCode, Connection, Frame, Opcode, Side
from tether.protocol.frames import (
    CONTROL_OPCODES,
    DATA_OPCODES,
    KNOWN_OPCODES,
    MAX_CONTROL_PAYLOAD,
    frame_header,
    is_valid_close_code,
    parse_close_payload,
    serialize_close_payload,
    serialize_frame,
)

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 2**20]


def _payload(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


def _expected_header_len(n: int, masked: bool) -> int:
    base = 2 if n < 126 else 4 if n < 65536 else 10
    return base + (4 if masked else 0)


def test_opcode_sets() -> None:
    assert {int(op) for op in DATA_OPCODES} == {0, 1, 2}
    assert {int(op) for op in CONTROL_OPCODES} == {8, 9, 10}
    assert {0, 1, 2, 8, 9, 10} == KNOWN_OPCODES
    assert MAX_CONTROL_PAYLOAD == 125


@pytest.mark.parametrize("n", LENGTHS)
def test_header_length_encoding_unmasked(n: int) -> None:
    head = frame_header(Opcode.BINARY, n)
    assert head[0] == 0x82
    if n < 126:
        assert head == bytes((0x82, n))
    elif n < 65536:
        assert head == bytes((0x82, 126)) + n.to_bytes(2, "big")
    else:
        assert head == bytes((0x82, 127)) + n.to_bytes(8, "big")


@pytest.mark.parametrize("n", LENGTHS)
def test_header_length_encoding_masked(n: int) -> None:
    head = frame_header(Opcode.TEXT, n, mask=KEY)
    assert len(head) == _expected_header_len(n, masked=True)
    assert head[1] & 0x80
    assert head[-4:] == KEY


def test_header_bits() -> None:
    assert frame_header(Opcode.TEXT, 0, fin=False) == b"\x01\x00"
    assert frame_header(Opcode.CONT, 0, fin=True) == b"\x80\x00"
    assert frame_header(Opcode.TEXT, 0, rsv1=True) == b"\xc1\x00"
    assert frame_header(Opcode.PING, 3) == b"\x89\x03"


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("n", LENGTHS)
def test_serialize_roundtrip_reference_decoder(n: int, masked: bool) -> None:
    data = _payload(n)
    wire = serialize_frame(Opcode.BINARY, data, mask=KEY if masked else None)
    assert len(wire) == _expected_header_len(n, masked) + n
    (decoded,) = decode_frames(wire)
    assert decoded.opcode == Opcode.BINARY
    assert decoded.fin
    assert decoded.payload == data
    assert decoded.mask == (KEY if masked else None)
    if masked and n:
        # The payload on the wire really is masked, byte for byte.
        assert wire[decoded.header_len :] == xor(data, KEY)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("n", LENGTHS)
def test_serialize_parsed_back_by_connection(n: int, masked: bool) -> None:
    data = _payload(n)
    # Masked frames go client -> server, unmasked server -> client.
    receiver = Connection(Side.SERVER if masked else Side.CLIENT, max_size=None)
    receiver.receive_data(serialize_frame(Opcode.BINARY, data, mask=KEY if masked else None))
    assert receiver.failure is None
    assert receiver.events_received() == [data]


@pytest.mark.parametrize("n", [0, 5, 125, 126, 70000])
def test_serialize_text_through_connection_in_chunks(n: int) -> None:
    text = ("aé€😀" * n)[:n]
    receiver = Connection(Side.SERVER, max_size=None)
    wire = serialize_frame(Opcode.TEXT, text.encode(), mask=KEY)
    for i in range(0, len(wire), 997):
        receiver.receive_data(wire[i : i + 997])
    assert receiver.failure is None
    assert receiver.events_received() == [text]


def test_serialize_accepts_buffers() -> None:
    data = b"hello"
    for buf in (bytearray(data), memoryview(data)):
        assert serialize_frame(Opcode.BINARY, buf) == b"\x82\x05hello"
        assert decode_frames(serialize_frame(Opcode.BINARY, buf, mask=KEY))[0].payload == data


def test_serialize_fragment_bits() -> None:
    (f,) = decode_frames(serialize_frame(Opcode.TEXT, b"a", fin=False, rsv1=True))
    assert (f.fin, f.rsv1, f.opcode) == (False, True, Opcode.TEXT)


def test_frame_dataclass() -> None:
    f = Frame(Opcode.TEXT, b"x")
    assert (f.fin, f.rsv1, f.rsv2, f.rsv3) == (True, False, False, False)
    with pytest.raises(AttributeError):
        f.data = b"y"  # type: ignore[misc]


# ------------------------------------------------------------- close payloads

VALID_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_codes(code: int) -> None:
    assert is_valid_close_code(code)
    payload = serialize_close_payload(code, "bye")
    assert payload == code.to_bytes(2, "big") + b"bye"
    assert parse_close_payload(payload) == (code, "bye")


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_codes(code: int) -> None:
    assert not is_valid_close_code(code)
    with pytest.raises(ValueError, match="invalid close code"):
        parse_close_payload(code.to_bytes(2, "big"))
    if code != CloseCode.NO_STATUS:
        with pytest.raises(ValueError, match="may not be sent"):
            serialize_close_payload(code)


def test_close_payload_empty_means_no_status() -> None:
    assert parse_close_payload(b"") == (CloseCode.NO_STATUS, "")
    assert serialize_close_payload(CloseCode.NO_STATUS) == b""
    with pytest.raises(ValueError, match="needs a close code"):
        serialize_close_payload(CloseCode.NO_STATUS, "reason")


def test_close_payload_one_byte() -> None:
    with pytest.raises(ValueError, match="1 byte"):
        parse_close_payload(b"\x03")


def test_close_payload_bad_utf8_reason() -> None:
    with pytest.raises(UnicodeDecodeError):
        parse_close_payload(b"\x03\xe8\xff")
    # A reason truncated in the middle of a character is invalid too.
    with pytest.raises(UnicodeDecodeError):
        parse_close_payload(b"\x03\xe8" + "é".encode()[:1])


def test_close_payload_unicode_reason() -> None:
    payload = serialize_close_payload(1001, "au revoir, été")
    assert parse_close_payload(payload) == (1001, "au revoir, été")


def test_close_reason_length_limit() -> None:
    assert len(serialize_close_payload(1000, "x" * 123)) == 125
    with pytest.raises(ValueError, match="longer than 123"):
        serialize_close_payload(1000, "x" * 124)
    # The limit is in bytes, not characters.
    with pytest.raises(ValueError, match="longer than 123"):
        serialize_close_payload(1000, "é" * 62)
    assert len(serialize_close_payload(1000, "é" * 61)) == 124


def test_close_code_enum() -> None:
    assert int(CloseCode.NORMAL) == 1000
    assert int(CloseCode.MESSAGE_TOO_BIG) == 1009
    for code in (CloseCode.NO_STATUS, CloseCode.ABNORMAL, CloseCode.TLS_HANDSHAKE):
        assert not is_valid_close_code(code)
