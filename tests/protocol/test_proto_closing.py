"""Closing handshake (RFC 6455 §5.5.1, §7), states, pings, fail() and send_* errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from proto_helpers import decode_frames, frame, pair, sent, sent_frames, state_of, transfer

from tether.protocol import (
    CloseReceived,
    Connection,
    InvalidState,
    Opcode,
    Ping,
    Pong,
    ProtocolError,
    Side,
    State,
)


@pytest.fixture(params=[Side.SERVER, Side.CLIENT], ids=["server", "client"])
def side(request: pytest.FixtureRequest) -> Side:
    return request.param  # type: ignore[no-any-return]


def incoming(conn: Connection, opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    return frame(opcode, payload, fin=fin, masked=conn.side is Side.SERVER)


def close_frames(conn: Connection) -> list[bytes]:
    return [f.payload for f in sent_frames(conn) if f.opcode == Opcode.CLOSE]


# -------------------------------------------------------------- close handshake


def test_server_initiated_close() -> None:
    client, server = pair()
    server.send_close(1000, "bye")
    assert server.state is State.CLOSING
    assert server.close_sent == (1000, "bye")
    assert not server.close_transport
    with pytest.raises(InvalidState):
        server.send_text("late")

    transfer(server, client)
    assert client.events_received() == [CloseReceived(1000, "bye")]
    assert client.close_rcvd == (1000, "bye")
    assert client.close_code == 1000
    assert client.close_reason == "bye"
    assert client.close_sent == (1000, "bye")  # echoes the code and the reason, as websockets
    assert client.close_rcvd_then_sent is True
    assert client.state is State.CLOSING
    # RFC 6455 §7.1.1: the client waits for the server to drop TCP.
    assert not client.close_transport

    transfer(client, server)
    assert server.events_received() == [CloseReceived(1000, "bye")]
    assert server.close_rcvd_then_sent is False
    assert server.close_transport  # the server closes TCP first
    assert server.data_to_send() == []  # no second Close

    server.receive_eof()
    client.receive_eof()
    assert server.state is State.CLOSED
    assert client.state is State.CLOSED
    assert client.close_transport


def test_client_initiated_close() -> None:
    client, server = pair()
    client.send_close(4000, "custom")
    assert client.state is State.CLOSING
    transfer(client, server)
    assert server.events_received() == [CloseReceived(4000, "custom")]
    assert server.state is State.CLOSING
    assert server.close_transport
    wire = sent(server)
    (echo,) = decode_frames(wire)
    # The server echoes the code and the reason (as websockets does).
    assert echo.payload == (4000).to_bytes(2, "big") + b"custom"

    client.receive_data(wire)
    assert client.events_received() == [CloseReceived(4000, "custom")]
    assert client.close_rcvd_then_sent is False
    assert client.data_to_send() == []
    assert not client.close_transport
    assert client.state is State.CLOSING
    client.receive_eof()
    assert state_of(client) is State.CLOSED
    assert client.close_transport
    server.receive_eof()
    assert server.state is State.CLOSED


def test_close_without_payload_is_1005_and_echoed_empty(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.CLOSE))
    assert conn.events_received() == [CloseReceived(1005, "")]
    assert conn.close_code == 1005
    assert close_frames(conn) == [b""]
    assert conn.close_sent == (1005, "")


def test_send_close_without_code() -> None:
    client, server = pair()
    client.send_close(1005)
    transfer(client, server)
    assert server.events_received() == [CloseReceived(1005, "")]
    assert close_frames(server) == [b""]


def test_close_code_defaults_before_close(side: Side) -> None:
    conn = Connection(side)
    assert conn.close_code == 1006
    assert conn.close_reason == ""
    assert conn.close_rcvd is None
    assert conn.close_sent is None
    assert conn.close_rcvd_then_sent is None


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_invalid_close_code_received(side: Side, code: int) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.CLOSE, code.to_bytes(2, "big")))
    assert conn.events_received() == []
    assert conn.failure is not None
    assert conn.failure.code == 1002
    assert close_frames(conn) == [(1002).to_bytes(2, "big") + b"invalid close code %d" % code]
    assert conn.close_transport


def test_close_reason_bad_utf8(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.CLOSE, b"\x03\xe8\xff\xfe"))
    assert conn.events_received() == []
    assert conn.failure is not None
    assert conn.failure.code == 1007
    (payload,) = close_frames(conn)
    assert payload[:2] == (1007).to_bytes(2, "big")


def test_one_byte_close_payload(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.CLOSE, b"\x03"))
    assert conn.failure is not None
    assert conn.failure.code == 1002
    assert close_frames(conn)[0][:2] == (1002).to_bytes(2, "big")


def test_close_reason_utf8(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.CLOSE, (1001).to_bytes(2, "big") + "à+".encode()))
    assert conn.events_received() == [CloseReceived(1001, "à+")]


def test_input_after_close_is_ignored(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(
        incoming(conn, Opcode.CLOSE, b"\x03\xe8") + incoming(conn, Opcode.TEXT, b"after")
    )
    assert conn.events_received() == [CloseReceived(1000, "")]
    conn.receive_data(incoming(conn, Opcode.PING, b"x"))
    assert conn.events_received() == []
    assert len(sent_frames(conn)) == 1


def test_data_still_received_while_closing(side: Side) -> None:
    """After sending Close, frames already in flight from the peer are delivered."""
    conn = Connection(side)
    conn.send_close()
    conn.data_to_send()
    conn.receive_data(incoming(conn, Opcode.TEXT, b"in flight"))
    conn.receive_data(incoming(conn, Opcode.PING, b"p"))
    assert conn.events_received() == ["in flight", Ping(b"p")]
    # No Pong once our Close is out (RFC 6455 §5.5.1: no data after Close).
    assert conn.data_to_send() == []
    conn.receive_data(incoming(conn, Opcode.CLOSE, b"\x03\xe8"))
    assert conn.events_received() == [CloseReceived(1000, "")]
    assert conn.data_to_send() == []


def test_protocol_error_while_closing_sends_no_second_close(side: Side) -> None:
    conn = Connection(side)
    conn.send_close(1001)
    conn.data_to_send()
    conn.receive_data(incoming(conn, Opcode.CONT, b"x"))
    assert conn.failure is not None
    assert conn.failure.code == 1002
    assert conn.data_to_send() == []
    assert conn.close_sent == (1001, "")
    assert conn.state is State.CLOSING
    assert conn.close_transport


# ---------------------------------------------------------------- ping/pong


def test_ping_answered_with_same_payload(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.PING, b"\x00payload\xff"))
    assert conn.events_received() == [Ping(b"\x00payload\xff")]
    (pong,) = sent_frames(conn)
    assert pong.opcode == Opcode.PONG
    assert pong.payload == b"\x00payload\xff"
    assert (pong.mask is not None) == (side is Side.CLIENT)


def test_empty_ping(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.PING))
    assert conn.events_received() == [Ping(b"")]
    assert [f.payload for f in sent_frames(conn)] == [b""]


def test_pong_is_an_event_without_answer(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.PONG, b"x"))
    assert conn.events_received() == [Pong(b"x")]
    assert conn.data_to_send() == []


def test_send_ping_and_pong() -> None:
    client, server = pair()
    client.send_ping(b"1")
    client.send_pong(b"2")
    client.send_ping()
    transfer(client, server)
    assert server.events_received() == [Ping(b"1"), Pong(b"2"), Ping(b"")]
    assert [f.payload for f in sent_frames(server)] == [b"1", b""]


def test_control_payload_limits_on_send(side: Side) -> None:
    conn = Connection(side)
    conn.send_ping(b"x" * 125)
    conn.send_pong(b"x" * 125)
    with pytest.raises(ValueError):
        conn.send_ping(b"x" * 126)
    with pytest.raises(ValueError):
        conn.send_pong(b"x" * 126)
    assert len(sent_frames(conn)) == 2


# --------------------------------------------------------------------- fail()


def test_fail_sends_close_and_requests_transport_close(side: Side) -> None:
    conn = Connection(side)
    conn.fail(1011, "boom")
    assert conn.state is State.CLOSING
    assert conn.close_transport
    assert isinstance(conn.failure, ProtocolError)
    assert (conn.failure.code, conn.failure.reason) == (1011, "boom")
    assert close_frames(conn) == [(1011).to_bytes(2, "big") + b"boom"]
    # Idempotent: the first failure is kept, no second Close.
    conn.fail(1002, "again")
    assert conn.failure.code == 1011
    assert conn.data_to_send() == []


def test_fail_truncates_long_reason_on_a_character_boundary(side: Side) -> None:
    conn = Connection(side)
    conn.fail(1008, "é" * 100)
    (payload,) = close_frames(conn)
    assert len(payload) <= 125
    assert payload[2:].decode("utf-8") == "é" * 61


def test_fail_after_eof_keeps_closed(side: Side) -> None:
    conn = Connection(side)
    conn.receive_eof()
    conn.fail(1002, "late")
    assert conn.state is State.CLOSED
    assert conn.data_to_send() == []


def test_fail_keeps_given_exception(side: Side) -> None:
    conn = Connection(side)
    exc = ProtocolError("custom", 1003)
    conn.fail(1003, "custom", exc)
    assert conn.failure is exc


# ----------------------------------------------------------------------- eof


def test_receive_eof(side: Side) -> None:
    conn = Connection(side)
    conn.receive_eof()
    assert conn.eof_received
    assert conn.state is State.CLOSED
    assert conn.close_transport
    assert conn.close_code == 1006
    conn.receive_data(incoming(conn, Opcode.TEXT, b"x"))
    assert conn.events_received() == []
    conn.receive_eof()  # idempotent
    assert conn.state is State.CLOSED


def test_eof_mid_frame(side: Side) -> None:
    conn = Connection(side)
    conn.receive_data(incoming(conn, Opcode.TEXT, b"partial")[:4])
    conn.receive_eof()
    assert conn.state is State.CLOSED
    assert conn.events_received() == []
    assert conn.failure is None


# ---------------------------------------------------------------- send errors


def test_send_in_connecting_state(side: Side) -> None:
    conn = Connection(side, state=State.CONNECTING)
    calls: list[Callable[[], None]] = [
        lambda: conn.send_text("x"),
        lambda: conn.send_binary(b"x"),
        lambda: conn.send_ping(),
        lambda: conn.send_pong(),
        lambda: conn.send_close(),
    ]
    for call in calls:
        with pytest.raises(InvalidState, match="CONNECTING"):
            call()
    assert conn.data_to_send() == []


@pytest.mark.parametrize("how", ["send_close", "receive_close", "eof", "fail"])
def test_send_after_close(side: Side, how: str) -> None:
    conn = Connection(side)
    if how == "send_close":
        conn.send_close()
    elif how == "receive_close":
        conn.receive_data(incoming(conn, Opcode.CLOSE, b"\x03\xe8"))
    elif how == "eof":
        conn.receive_eof()
    else:
        conn.fail(1002, "x")
    conn.data_to_send()
    calls: list[Callable[[], None]] = [
        lambda: conn.send_text("x"),
        lambda: conn.send_binary(b"x"),
        lambda: conn.send_continuation(b"x", fin=True),
        lambda: conn.send_ping(),
        lambda: conn.send_pong(),
        lambda: conn.send_close(),
    ]
    for call in calls:
        with pytest.raises(InvalidState):
            call()
    assert conn.data_to_send() == []


def test_fragmented_send_state_errors(side: Side) -> None:
    conn = Connection(side)
    with pytest.raises(InvalidState, match="no fragmented message"):
        conn.send_continuation(b"x", fin=True)
    conn.send_text("a", fin=False)
    with pytest.raises(InvalidState, match="being sent"):
        conn.send_text("b")
    with pytest.raises(InvalidState, match="being sent"):
        conn.send_binary(b"b")
    conn.send_ping(b"ok")  # control frames may interleave
    conn.send_continuation(b"c", fin=True)
    conn.send_binary(b"d")  # a new message may start now
    frames = sent_frames(conn)
    assert [(f.opcode, f.fin) for f in frames] == [
        (Opcode.TEXT, False),
        (Opcode.PING, True),
        (Opcode.CONT, True),
        (Opcode.BINARY, True),
    ]


def test_send_close_with_bad_arguments(side: Side) -> None:
    conn = Connection(side)
    with pytest.raises(ValueError):
        conn.send_close(1006)
    with pytest.raises(ValueError):
        conn.send_close(1000, "x" * 124)
    with pytest.raises(ValueError):
        conn.send_close(1005, "reason without code")
    assert conn.state is State.OPEN
    assert conn.close_sent is None
    assert conn.data_to_send() == []


def test_send_close_frame_bytes(side: Side) -> None:
    conn = Connection(side)
    conn.send_close(1001, "going away")
    (f,) = decode_frames(sent(conn))
    assert f.opcode == Opcode.CLOSE
    assert f.payload == b"\x03\xe9going away"


def test_drain_methods_return_and_reset(side: Side) -> None:
    conn = Connection(side)
    assert conn.events_received() == []
    assert conn.data_to_send() == []
    conn.receive_data(incoming(conn, Opcode.TEXT, b"a"))
    assert conn.events_received() == ["a"]
    assert conn.events_received() == []


def test_deferred_pongs_keep_only_the_latest(side: Side) -> None:
    """While the I/O layer cannot write, only the most recent Ping is answered (§5.5.3)."""
    conn = Connection(side)
    conn.defer_pongs = True
    for payload in (b"1", b"2", b"3"):
        conn.receive_data(incoming(conn, Opcode.PING, payload))
    assert conn.events_received() == [Ping(b"1"), Ping(b"2"), Ping(b"3")]
    assert conn.data_to_send() == []
    conn.defer_pongs = False
    conn.send_pending_pong()
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [(Opcode.PONG, b"3")]
    conn.send_pending_pong()  # nothing left
    assert conn.data_to_send() == []


def test_deferred_pong_dropped_after_close(side: Side) -> None:
    conn = Connection(side)
    conn.defer_pongs = True
    conn.receive_data(incoming(conn, Opcode.PING, b"late"))
    conn.send_close()
    conn.data_to_send()
    conn.send_pending_pong()
    assert conn.data_to_send() == []
