"""The I/O contract: what an I/O layer may ask the core and set on it (docs/protocol.md)."""

from __future__ import annotations

import pytest
from proto_helpers import (
    frame,
    open_server,
    received_request,
    request_bytes,
    sent_frames,
    state_of,
    to_server,
)

from tether.protocol import (
    ClientProtocol,
    Connection,
    InvalidState,
    Ping,
    ProtocolError,
    ServerProtocol,
    Side,
    State,
)
from tether.protocol.client import parse_uri
from tether.protocol.frames import Opcode


def test_construction_options() -> None:
    seen: list[object] = []

    def observe(*args: object) -> None:
        seen.append(args[:2])

    server = ServerProtocol(defer_failure=True, frame_observer=observe)
    client = ClientProtocol(parse_uri("ws://h/"), defer_failure=True, frame_observer=observe)
    bare = Connection(Side.SERVER, defer_failure=True, frame_observer=observe)
    assert server.defer_failure and client.defer_failure and bare.defer_failure
    bare.receive_data(to_server(Opcode.TEXT, b"hi"))
    assert seen == [("<", Opcode.TEXT)]
    assert not ServerProtocol().defer_failure
    assert ServerProtocol().frame_observer is None


def test_defer_failure_from_construction_keeps_messages_before_an_error() -> None:
    conn = Connection(Side.SERVER, defer_failure=True)
    conn.receive_data(to_server(Opcode.TEXT, b"ok") + frame(0x3, masked=True))
    assert conn.events_received() == ["ok"]
    assert isinstance(conn.pending_failure, ProtocolError)
    assert conn.discarding_input and conn.state is State.OPEN
    conn.fail_pending()
    assert state_of(conn) is State.CLOSING


def test_send_ready_follows_state_and_fragmented_sends() -> None:
    server = ServerProtocol()
    assert not server.send_ready  # CONNECTING
    server.receive_data(request_bytes())
    server.send_response(server.accept(received_request(server)))
    assert server.send_ready
    server.send_text("a", fin=False)
    assert not server.send_ready  # a whole message would interleave
    server.send_continuation(b"b", fin=True)
    assert server.send_ready
    server.send_close()
    assert not server.send_ready


def test_between_frames_and_buffered_input() -> None:
    conn = Connection(Side.SERVER)
    assert conn.between_frames and conn.buffered_input == 0
    whole = to_server(Opcode.BINARY, b"x" * 10)
    conn.receive_data(whole[:5])
    assert not conn.between_frames and conn.buffered_input == 5
    conn.receive_data(whole[5:])
    assert conn.between_frames and conn.buffered_input == 0
    conn.receive_data(to_server(Opcode.TEXT, b"a", fin=False))
    assert not conn.between_frames  # a fragmented message is half received
    assert conn.buffered_input == 0


def test_read_budget_pauses_and_resumes() -> None:
    server = open_server(extensions=[])
    server.extensions = [_Identity()]
    server.set_read_budget(max_messages=1, inflate_budget=None)
    server.receive_data(to_server(Opcode.TEXT, b"a") + to_server(Opcode.TEXT, b"b"))
    assert server.events_received() == ["a"] and server.parse_paused
    server.set_read_budget(max_messages=None, inflate_budget=None)
    server.receive_data(b"")
    assert server.events_received() == ["b"] and not server.parse_paused


def test_take_inflate_deferred_clears_it() -> None:
    conn = Connection(Side.SERVER)
    assert conn.take_inflate_deferred() is False
    conn.inflate_deferred = True  # as the parser sets it
    assert conn.take_inflate_deferred() is True
    assert conn.take_inflate_deferred() is False


def test_pause_and_resume_pongs_answers_only_the_latest_ping() -> None:
    conn = Connection(Side.SERVER)
    conn.pause_pongs()
    conn.receive_data(to_server(Opcode.PING, b"1") + to_server(Opcode.PING, b"2"))
    assert conn.events_received() == [Ping(b"1"), Ping(b"2")]
    assert conn.data_to_send() == []
    conn.resume_pongs()
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [(Opcode.PONG, b"2")]
    conn.receive_data(to_server(Opcode.PING, b"3"))
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [(Opcode.PONG, b"3")]


def test_body_after_the_head_is_taken_once() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes([("Content-Length", "5")]) + b"hel")
    received_request(server)
    assert server.body_received == 3
    server.receive_data(b"lo!")
    assert server.body_received == 6
    assert server.take_body(5) == b"hello"
    assert server.body_received == 1
    server.send_response(server.accept(server.request))  # type: ignore[arg-type]
    with pytest.raises(InvalidState):
        server.take_body(1)


class _Identity:
    """An extension that changes nothing: makes messages count against max_messages."""

    name = "identity"
    shareable_key = None

    def decode(self, frame: object, **kwargs: object) -> object:
        return frame

    def encode(self, frame: object, **kwargs: object) -> object:
        return frame
