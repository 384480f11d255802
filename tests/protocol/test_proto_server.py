"""Server side of the opening handshake (RFC 6455 §4.2): ServerProtocol."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from proto_helpers import (
    RFC_ACCEPT,
    RFC_KEY,
    Reverse,
    ReverseFactory,
    decode_frames,
    received_request,
    request_bytes,
    response_headers,
    sent,
    sent_frames,
    state_of,
    to_server,
)

from tether.protocol import (
    InvalidHandshake,
    InvalidState,
    NegotiationError,
    Opcode,
    RequestReceived,
    ServerProtocol,
    State,
)
from tether.protocol.extensions.base import Extension
from tether.protocol.handshake import MAX_HEADERS, MAX_LINE
from tether.protocol.headers import ExtensionParams


def handshake(server: ServerProtocol, data: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    """Feed a request, accept it, send the response; return what went on the wire."""
    server.receive_data(data)
    response = server.accept(received_request(server))
    server.send_response(response)
    status, headers, body = response_headers(sent(server))
    assert status == response.status_code
    return status, {k.lower(): headers.get_all(k) for k in headers}, body


def test_valid_upgrade() -> None:
    server = ServerProtocol()
    assert server.state is State.CONNECTING
    server.receive_data(request_bytes())
    (event,) = server.events_received()
    assert isinstance(event, RequestReceived)
    request = event.request
    assert request.method == "GET"
    assert request.path == "/chat"
    assert request.headers["sec-websocket-key"] == RFC_KEY
    assert server.request is request
    assert server.data_to_send() == []  # nothing sent before the application decides

    response = server.accept(request)
    assert response.status_code == 101
    assert response.reason_phrase == "Switching Protocols"
    assert response.headers["Upgrade"] == "websocket"
    assert response.headers["Connection"] == "Upgrade"
    assert response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT
    assert "Sec-WebSocket-Protocol" not in response.headers
    assert "Sec-WebSocket-Extensions" not in response.headers
    assert server.state is State.CONNECTING

    server.send_response(response)
    assert state_of(server) is State.OPEN
    assert server.response is response
    assert server.handshake_exc is None
    assert not server.close_transport
    raw = sent(server)
    assert raw.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert raw.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n" in raw


def test_request_fed_byte_by_byte() -> None:
    server = ServerProtocol()
    data = request_bytes()
    for i in range(len(data) - 1):
        server.receive_data(data[i : i + 1])
        assert server.events_received() == []
    server.receive_data(data[-1:])
    request = received_request(server)
    assert server.accept(request).status_code == 101


def test_case_insensitive_tokens_and_connection_list() -> None:
    server = ServerProtocol()
    status, _, _ = handshake(
        server,
        request_bytes(
            [("Upgrade", "WebSocket"), ("Connection", "keep-alive, UPGRADE")],
            drop=["Upgrade", "Connection"],
        ),
    )
    assert status == 101


def test_cannot_send_before_handshake() -> None:
    server = ServerProtocol()
    with pytest.raises(InvalidState):
        server.send_text("x")
    with pytest.raises(InvalidState):
        server.send_close()


def test_send_response_twice() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes())
    response = server.accept(received_request(server))
    server.send_response(response)
    with pytest.raises(RuntimeError):
        server.send_response(response)


def assert_rejected(
    server: ServerProtocol, status: int, body_part: str = ""
) -> dict[str, list[str]]:
    """Run the handshake already fed to ``server`` and check it was rejected."""
    response = server.accept(received_request(server))
    assert response.status_code == status
    assert isinstance(server.handshake_exc, InvalidHandshake)
    server.send_response(response)
    assert server.state is State.CLOSED
    assert server.close_transport
    got, headers, body = response_headers(sent(server))
    assert got == status
    assert body_part.encode() in body
    assert headers["Content-Length"] == str(len(body))
    # Nothing after a rejection is parsed.
    server.receive_data(to_server(Opcode.TEXT, b"late"))
    assert server.events_received() == []
    return {k.lower(): headers.get_all(k) for k in headers}


@pytest.mark.parametrize(
    ("headers", "drop", "status", "text"),
    [
        ([], ["Sec-WebSocket-Key"], 400, "Sec-WebSocket-Key"),
        ([("Sec-WebSocket-Key", RFC_KEY)], [], 400, "Sec-WebSocket-Key"),  # repeated
        ([("Sec-WebSocket-Key", "abcd")], ["Sec-WebSocket-Key"], 400, "16 bytes"),
        # 15 bytes, valid base64.
        ([("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA")], ["Sec-WebSocket-Key"], 400, "16"),
        # 17 bytes.
        ([("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA=")], ["Sec-WebSocket-Key"], 400, "16"),
        # Not base64 at all, and non-ASCII.
        ([("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!==")], ["Sec-WebSocket-Key"], 400, "16"),
        ([("Sec-WebSocket-Key", "\xe9" * 24)], ["Sec-WebSocket-Key"], 400, "16"),
        ([], ["Sec-WebSocket-Version"], 400, "missing Sec-WebSocket-Version"),
        ([], ["Host"], 400, "Host"),
        ([("Host", "other.example.com")], [], 400, "Host"),
        ([("Connection", "keep-alive")], ["Connection"], 400, "Connection"),
        ([], ["Connection"], 400, "Connection"),
        ([("Connection", "keep alive")], ["Connection"], 400, "Connection"),
        ([("Upgrade", "h2c")], ["Upgrade"], 400, "Upgrade"),
    ],
)
def test_rejections(
    headers: list[tuple[str, str]], drop: list[str], status: int, text: str
) -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes(headers, drop=drop))
    assert_rejected(server, status, text)
    assert server.subprotocol is None


def test_missing_upgrade_is_426_with_upgrade_header() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes(drop=["Upgrade"]))
    headers = assert_rejected(server, 426, "Upgrade")
    assert headers["upgrade"] == ["websocket"]


def test_version_8_is_426_with_version_13() -> None:
    server = ServerProtocol()
    server.receive_data(
        request_bytes([("Sec-WebSocket-Version", "8")], drop=["Sec-WebSocket-Version"])
    )
    headers = assert_rejected(server, 426, "13")
    assert headers["sec-websocket-version"] == ["13"]


def test_missing_version_advertises_13() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes(drop=["Sec-WebSocket-Version"]))
    headers = assert_rejected(server, 400)
    assert headers["sec-websocket-version"] == ["13"]


def test_post_is_405() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes(method="POST"))
    headers = assert_rejected(server, 405, "POST")
    assert headers["allow"] == ["GET"]


def test_http_10_is_505_immediately() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes(version="HTTP/1.0"))
    # Rejected by the parser: no RequestReceived event, the answer is already queued.
    assert server.events_received() == []
    assert server.state is State.CLOSED
    assert server.close_transport
    assert isinstance(server.handshake_exc, InvalidHandshake)
    status, _, _ = response_headers(sent(server))
    assert status == 505


@pytest.mark.parametrize(
    "line",
    [b"GET /chat", b"GET / HTTP/1.1 extra", b"GET  / HTTP/1.1", b"GET / FTP/1.1", b"GET"],
)
def test_malformed_request_line_is_400(line: bytes) -> None:
    server = ServerProtocol()
    server.receive_data(line + b"\r\nHost: x\r\n\r\n")
    assert server.events_received() == []
    status, _, body = response_headers(sent(server))
    assert status == 400
    assert b"request line" in body
    assert server.state is State.CLOSED


def test_non_ascii_request_line_is_400() -> None:
    server = ServerProtocol()
    server.receive_data("GET /é HTTP/1.1\r\n".encode())
    assert server.state is State.CLOSED
    assert response_headers(sent(server))[0] == 400


def test_header_line_too_long_is_400() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes([("X-Big", "a" * (MAX_LINE + 1))]))
    assert server.events_received() == []
    assert response_headers(sent(server))[0] == 400
    assert server.close_transport


def test_too_many_headers_is_431() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes([(f"X-{i}", "v") for i in range(2000)]))
    assert server.events_received() == []
    assert response_headers(sent(server))[0] == 431
    assert server.state is State.CLOSED


def test_configurable_head_limits() -> None:
    server = ServerProtocol(max_headers=3)
    server.receive_data(request_bytes())  # 5 headers
    assert response_headers(sent(server))[0] == 431
    server = ServerProtocol(max_header_line=40)
    server.receive_data(request_bytes([("X-Long", "a" * 40)]))
    assert response_headers(sent(server))[0] == 400
    assert MAX_HEADERS == 128


def test_input_after_parser_rejection_is_ignored() -> None:
    server = ServerProtocol()
    server.receive_data(b"\xff\xfe\r\n")
    first = sent(server)
    server.receive_data(request_bytes())
    assert server.events_received() == []
    assert server.data_to_send() == []
    assert response_headers(first)[0] == 400


def test_application_reject() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes())
    received_request(server)
    response = server.reject(401, "who are you?")
    server.send_response(response)
    assert server.state is State.CLOSED
    assert isinstance(server.handshake_exc, InvalidHandshake)
    assert "401" in str(server.handshake_exc)
    status, _, body = response_headers(sent(server))
    assert (status, body) == (401, b"who are you?\n")


# ------------------------------------------------------------------ origins


@pytest.mark.parametrize(
    ("origins", "origin", "status"),
    [
        (["https://good.example"], "https://good.example", 101),
        (["https://good.example"], "https://evil.example", 403),
        (["https://good.example"], None, 403),
        (["https://good.example", None], None, 101),
        ([], "https://good.example", 403),
        (None, "https://anything.example", 101),
    ],
)
def test_origin_allow_list(
    origins: Sequence[str | None] | None, origin: str | None, status: int
) -> None:
    server = ServerProtocol(origins=origins)
    extra = [("Origin", origin)] if origin is not None else []
    server.receive_data(request_bytes(extra))
    response = server.accept(received_request(server))
    assert response.status_code == status
    server.send_response(response)
    raw = sent(server)
    if status == 403:
        assert not raw.startswith(b"HTTP/1.1 101")
        assert response_headers(raw)[0] == 403
        assert server.state is State.CLOSED
    else:
        assert server.state is State.OPEN


# ------------------------------------------------------------- subprotocols


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        ("chat, superchat", ["superchat", "chat"], "chat"),  # client order wins
        ("superchat, chat", ["chat", "superchat"], "superchat"),
        ("v1, v2", ["v3"], None),
        ("v1", [], None),
        (None, ["chat"], None),
    ],
)
def test_subprotocol_negotiation(
    offered: str | None, supported: list[str], chosen: str | None
) -> None:
    server = ServerProtocol(subprotocols=supported)
    extra = [("Sec-WebSocket-Protocol", offered)] if offered is not None else []
    status, headers, _ = handshake(server, request_bytes(extra))
    assert status == 101
    assert server.subprotocol == chosen
    assert headers.get("sec-websocket-protocol") == ([chosen] if chosen else None)


def test_subprotocol_offers_across_several_headers() -> None:
    server = ServerProtocol(subprotocols=["b"])
    extra = [("Sec-WebSocket-Protocol", "a"), ("Sec-WebSocket-Protocol", "b")]
    handshake(server, request_bytes(extra))
    assert server.subprotocol == "b"


def test_subprotocol_malformed_offer_is_400() -> None:
    server = ServerProtocol(subprotocols=["chat"])
    server.receive_data(request_bytes([("Sec-WebSocket-Protocol", "chat, bad chat")]))
    assert_rejected(server, 400)


def test_select_subprotocol_hook() -> None:
    seen: list[tuple[list[str], list[str]]] = []

    def select(offered: Sequence[str], supported: Sequence[str]) -> str | None:
        seen.append((list(offered), list(supported)))
        return offered[-1]

    server = ServerProtocol(subprotocols=["x"], select_subprotocol=select)
    _, headers, _ = handshake(server, request_bytes([("Sec-WebSocket-Protocol", "a, b")]))
    assert seen == [(["a", "b"], ["x"])]
    assert server.subprotocol == "b"
    assert headers["sec-websocket-protocol"] == ["b"]


def test_select_subprotocol_hook_declines() -> None:
    server = ServerProtocol(subprotocols=["a"], select_subprotocol=lambda offered, supported: None)
    _, headers, _ = handshake(server, request_bytes([("Sec-WebSocket-Protocol", "a")]))
    assert server.subprotocol is None
    assert "sec-websocket-protocol" not in headers


def test_select_subprotocol_hook_must_pick_an_offer() -> None:
    server = ServerProtocol(select_subprotocol=lambda offered, supported: "unoffered")
    server.receive_data(request_bytes([("Sec-WebSocket-Protocol", "a")]))
    assert_rejected(server, 500)
    assert server.subprotocol is None


# --------------------------------------------------------------- extensions


def test_extension_accepted() -> None:
    factory = ReverseFactory()
    server = ServerProtocol(extensions=[factory])
    _, headers, _ = handshake(
        server, request_bytes([("Sec-WebSocket-Extensions", "x-reverse; level=3; other")])
    )
    assert headers["sec-websocket-extensions"] == ["x-reverse; ok; level=3"]
    assert factory.calls == [([("level", "3"), ("other", None)], [])]
    assert len(server.extensions) == 1
    assert isinstance(server.extensions[0], Reverse)


def test_extension_declined_falls_back_to_next_offer() -> None:
    factory = ReverseFactory()
    server = ServerProtocol(extensions=[factory])
    offers = "x-reverse; decline, x-unknown, x-reverse; level=1, x-reverse"
    _, headers, _ = handshake(server, request_bytes([("Sec-WebSocket-Extensions", offers)]))
    assert headers["sec-websocket-extensions"] == ["x-reverse; ok; level=1"]
    # The third x-reverse offer sees the accepted one and declines itself.
    assert len(factory.calls) == 3
    assert isinstance(factory.calls[2][1][0], Reverse)
    assert len(server.extensions) == 1


def test_extension_all_declined() -> None:
    server = ServerProtocol(extensions=[ReverseFactory()])
    status, headers, _ = handshake(
        server, request_bytes([("Sec-WebSocket-Extensions", "x-reverse; decline")])
    )
    assert status == 101
    assert "sec-websocket-extensions" not in headers
    assert server.extensions == []


def test_extension_second_factory_with_same_name_tried() -> None:
    declining, accepting = DecliningFactory(), ReverseFactory()
    server = ServerProtocol(extensions=[declining, accepting])
    _, headers, _ = handshake(server, request_bytes([("Sec-WebSocket-Extensions", "x-reverse")]))
    assert headers["sec-websocket-extensions"] == ["x-reverse; ok"]
    assert len(accepting.calls) == 1


class DecliningFactory(ReverseFactory):
    def process_request_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> tuple[ExtensionParams, Extension]:
        raise NegotiationError("no")


@pytest.mark.parametrize("value", ["x-reverse; =", "x-reverse x", 'x-reverse; a="b c"', ";"])
def test_extension_malformed_header_declined_not_rejected(value: str) -> None:
    factory = ReverseFactory()
    server = ServerProtocol(extensions=[factory])
    status, headers, _ = handshake(server, request_bytes([("Sec-WebSocket-Extensions", value)]))
    assert status == 101
    assert "sec-websocket-extensions" not in headers
    assert factory.calls == []
    assert server.extensions == []


def test_extension_offer_ignored_without_factories() -> None:
    server = ServerProtocol()
    _, headers, _ = handshake(server, request_bytes([("Sec-WebSocket-Extensions", "x-reverse")]))
    assert "sec-websocket-extensions" not in headers


def test_extensions_not_active_when_rejected() -> None:
    server = ServerProtocol(extensions=[ReverseFactory()], origins=["https://ok"])
    server.receive_data(request_bytes([("Sec-WebSocket-Extensions", "x-reverse")]))
    assert_rejected(server, 403)
    assert server.extensions == []


def test_extension_used_after_handshake() -> None:
    server = ServerProtocol(extensions=[ReverseFactory()])
    handshake(server, request_bytes([("Sec-WebSocket-Extensions", "x-reverse")]))
    # RSV1 is now legal on data frames: the toy extension reverses the payload.
    server.receive_data(bytes((0xC1, 0x80 | 3)) + b"\x00\x00\x00\x00" + b"cba")
    assert server.events_received() == ["abc"]
    server.send_text("abc", compress=True)
    (f,) = sent_frames(server)
    assert (f.rsv1, f.payload) == (True, b"cba")


# ---------------------------------------------------------------- pipelining


def test_frames_pipelined_with_request_wait_for_send_response() -> None:
    server = ServerProtocol()
    frames = to_server(Opcode.TEXT, b"first") + to_server(Opcode.BINARY, b"second")
    server.receive_data(request_bytes() + frames[:5])
    request = received_request(server)
    server.receive_data(frames[5:])
    assert server.events_received() == []
    server.send_response(server.accept(request))
    assert server.events_received() == ["first", b"second"]
    assert server.state is State.OPEN


def test_pipelined_frames_dropped_when_rejected() -> None:
    server = ServerProtocol(origins=[])
    server.receive_data(request_bytes() + to_server(Opcode.TEXT, b"hi"))
    server.send_response(server.accept(received_request(server)))
    assert server.events_received() == []
    assert server.state is State.CLOSED


def test_pipelined_protocol_error_fails_after_open() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes() + b"\x81\x02hi")  # unmasked: illegal from a client
    server.send_response(server.accept(received_request(server)))
    assert server.failure is not None
    assert server.failure.code == 1002
    frames = sent(server).split(b"\r\n\r\n", 1)[1]
    (close,) = [f for f in decode_frames(frames) if f.opcode == Opcode.CLOSE]
    assert close.payload[:2] == (1002).to_bytes(2, "big")


def test_full_handshake_then_echo() -> None:
    server = ServerProtocol()
    handshake(server, request_bytes())
    server.receive_data(to_server(Opcode.TEXT, "héllo".encode()))
    assert server.events_received() == ["héllo"]
    server.send_text("héllo")
    (f,) = sent_frames(server)
    assert (f.opcode, f.mask, f.payload) == (Opcode.TEXT, None, "héllo".encode())


def test_eof_during_handshake() -> None:
    server = ServerProtocol()
    server.receive_data(request_bytes()[:20])
    server.receive_eof()
    assert server.state is State.CLOSED
    assert server.close_transport
    server.receive_data(request_bytes()[20:])
    assert server.events_received() == []
    assert server.data_to_send() == []
