"""Hardening: limits and inputs that must not be abused."""

from __future__ import annotations

import pytest

from tether.protocol import Connection, Headers, ServerProtocol, Side, State
from tether.protocol.frames import parse_close_payload
from tether.protocol.server import MAX_PENDING

REQUEST = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: x=1", "a\nb", "a\x00"])
def test_header_values_cannot_inject_headers(value: str) -> None:
    with pytest.raises(ValueError, match="invalid character"):
        Headers([("X-Test", value)]).serialize()


def test_fail_with_unsendable_code_sends_1011() -> None:
    conn = Connection(Side.SERVER)
    conn.fail(1006, "abnormal")
    (frame,) = conn.data_to_send()
    assert frame[0] == 0x88
    assert parse_close_payload(frame[2:])[0] == 1011
    assert conn.close_transport


def test_bytes_after_request_are_bounded_while_answer_is_pending() -> None:
    proto = ServerProtocol()
    proto.receive_data(REQUEST)
    assert proto.events_received()
    chunk = b"\x00" * 65536
    for _ in range(MAX_PENDING // len(chunk) + 2):
        proto.receive_data(chunk)
    assert proto.state is State.CLOSED
    assert proto.close_transport
    assert proto.response is not None and proto.response.status_code == 413
    assert len(proto._pending) <= MAX_PENDING + len(chunk)


def test_parse_budget_holds_back_messages_until_resumed() -> None:
    from tether.protocol.extensions.permessage_deflate import PerMessageDeflate
    from tether.protocol.frames import Opcode, serialize_frame

    # The budget applies where an extension may inflate messages.
    conn = Connection(Side.SERVER, extensions=[PerMessageDeflate()])
    conn.max_messages = 2
    frames = b"".join(
        serialize_frame(Opcode.TEXT, f"m{i}".encode(), mask=b"abcd") for i in range(5)
    )
    conn.receive_data(frames)
    assert conn.events_received() == ["m0", "m1"]
    assert conn.parse_paused
    conn.receive_data(b"")
    assert conn.events_received() == ["m2", "m3"]
    conn.max_messages = None
    conn.receive_data(b"")
    assert conn.events_received() == ["m4"]
    assert not conn.parse_paused


def test_deferred_failure_lets_earlier_messages_through_first() -> None:
    from tether.protocol.frames import Opcode, serialize_frame

    conn = Connection(Side.SERVER)
    conn.defer_failure = True
    good = serialize_frame(Opcode.TEXT, b"hello", mask=b"abcd")
    bad = serialize_frame(Opcode.TEXT, b"\xff", mask=b"abcd")
    conn.receive_data(good + bad)
    # The message before the bad frame is delivered and can still be answered.
    assert conn.events_received() == ["hello"]
    assert conn.pending_failure is not None and conn.pending_failure.code == 1007
    assert conn.state is State.OPEN
    conn.send_text("hello")
    conn.fail_pending()
    assert conn.failure is not None and conn.failure.code == 1007
    assert conn.close_transport
    frames = b"".join(conn.data_to_send())
    assert frames.startswith(b"\x81\x05hello\x88")


def test_deferred_failure_without_messages_fails_at_once() -> None:
    from tether.protocol.frames import Opcode, serialize_frame

    conn = Connection(Side.SERVER)
    conn.defer_failure = True
    conn.receive_data(serialize_frame(Opcode.TEXT, b"\xff", mask=b"abcd"))
    assert conn.pending_failure is None
    assert conn.failure is not None and conn.failure.code == 1007


def test_cut_off_surrogate_at_a_fragment_end_fails_at_once() -> None:
    from tether.protocol.frames import Opcode, serialize_frame

    conn = Connection(Side.SERVER)
    conn.receive_data(serialize_frame(Opcode.TEXT, b"ok\xed\xa0", fin=False, mask=b"abcd"))
    assert conn.failure is not None and conn.failure.code == 1007
    # A valid three-byte character cut at the same place is fine.
    conn = Connection(Side.SERVER)
    conn.receive_data(serialize_frame(Opcode.TEXT, b"ok\xed\x9f", fin=False, mask=b"abcd"))
    conn.receive_data(serialize_frame(Opcode.CONT, b"\xbf", mask=b"abcd"))
    assert conn.failure is None
    assert conn.events_received() == ["ok\ud7ff"]
