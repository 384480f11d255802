"""Client side of the opening handshake (RFC 6455 §4.1): parse_uri and ClientProtocol."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import pytest
from proto_helpers import (
    Reverse,
    received_request,
    sent,
    sent_frames,
    to_client,
)

from tether.protocol import (
    ClientProtocol,
    Headers,
    InvalidHandshake,
    InvalidHeader,
    InvalidState,
    InvalidStatus,
    NegotiationError,
    Opcode,
    ResponseReceived,
    ServerProtocol,
    State,
    WebSocketURI,
    parse_uri,
)
from tether.protocol.client import MAX_REFUSAL_BODY
from tether.protocol.extensions.base import ClientExtensionFactory, Extension
from tether.protocol.handshake import accept_key
from tether.protocol.headers import ExtensionParams

# ------------------------------------------------------------------ parse_uri


@pytest.mark.parametrize(
    ("uri", "expected", "host_header"),
    [
        ("ws://example.com", WebSocketURI(False, "example.com", 80, "/"), "example.com"),
        ("wss://example.com", WebSocketURI(True, "example.com", 443, "/"), "example.com"),
        ("ws://example.com:80/", WebSocketURI(False, "example.com", 80, "/"), "example.com"),
        ("wss://example.com:443/x", WebSocketURI(True, "example.com", 443, "/x"), "example.com"),
        ("ws://example.com:443/", WebSocketURI(False, "example.com", 443, "/"), "example.com:443"),
        ("wss://example.com:80/", WebSocketURI(True, "example.com", 80, "/"), "example.com:80"),
        (
            "ws://example.com:8080/chat?room=1&x=y",
            WebSocketURI(False, "example.com", 8080, "/chat?room=1&x=y"),
            "example.com:8080",
        ),
        ("ws://example.com?q", WebSocketURI(False, "example.com", 80, "/?q"), "example.com"),
        ("ws://[::1]/", WebSocketURI(False, "::1", 80, "/"), "[::1]"),
        ("wss://[::1]:9443/p", WebSocketURI(True, "::1", 9443, "/p"), "[::1]:9443"),
        (
            "ws://[2001:db8::7]:8000",
            WebSocketURI(False, "2001:db8::7", 8000, "/"),
            "[2001:db8::7]:8000",
        ),
        ("ws://127.0.0.1:9000", WebSocketURI(False, "127.0.0.1", 9000, "/"), "127.0.0.1:9000"),
        ("WS://EXAMPLE.com/Path", WebSocketURI(False, "example.com", 80, "/Path"), "example.com"),
        (
            "ws://user:pw@example.com/",
            WebSocketURI(False, "example.com", 80, "/", "user", "pw"),
            "example.com",
        ),
    ],
)
def test_parse_uri(uri: str, expected: WebSocketURI, host_header: str) -> None:
    parsed = parse_uri(uri)
    assert parsed == expected
    assert parsed.host_header == host_header


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://example.com/", "not a ws"),
        ("https://example.com/", "not a ws"),
        ("example.com", "not a ws"),
        ("", "not a ws"),
        ("ws://example.com/#frag", "fragment"),
        ("ws:///path", "no host"),
        ("ws://:80/", "no host"),
        ("ws://example.com:99999/", "Port"),
        ("ws://example.com:port/", "Port"),
    ],
)
def test_parse_uri_errors(uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_uri(uri)


# -------------------------------------------------------------- the request


def make_client(uri: str = "ws://example.com/chat", **kwargs: Any) -> ClientProtocol:
    return ClientProtocol(parse_uri(uri), **kwargs)


def test_request_headers() -> None:
    client = make_client("ws://example.com:8080/chat?x=1")
    assert client.state is State.CONNECTING
    request = client.connect()
    assert request.method == "GET"
    assert request.path == "/chat?x=1"
    headers = request.headers
    assert headers["Host"] == "example.com:8080"
    assert headers["Upgrade"] == "websocket"
    assert headers["Connection"] == "Upgrade"
    assert headers["Sec-WebSocket-Version"] == "13"
    assert headers["Sec-WebSocket-Key"] == client.key
    assert len(base64.b64decode(client.key, validate=True)) == 16
    assert headers["User-Agent"] == "tether"
    for absent in ("Origin", "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions"):
        assert absent not in headers

    client.send_request(request)
    assert client.request is request
    raw = sent(client)
    assert raw.startswith(b"GET /chat?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n")
    assert raw.endswith(b"\r\n\r\n")
    assert raw.count(b"\r\n\r\n") == 1


def test_request_optional_headers() -> None:
    client = make_client(
        origin="https://app.example",
        subprotocols=["chat", "superchat"],
        extensions=[ClientReverseFactory()],
        additional_headers={"Authorization": "Bearer t", "User-Agent": "custom"},
    )
    headers = client.connect().headers
    assert headers["Origin"] == "https://app.example"
    assert headers["Sec-WebSocket-Protocol"] == "chat, superchat"
    assert headers["Sec-WebSocket-Extensions"] == "x-reverse; level=1"
    assert headers["Authorization"] == "Bearer t"
    assert headers.get_all("User-Agent") == ["custom"]


def test_request_without_user_agent() -> None:
    headers = make_client(user_agent=None).connect().headers
    assert "User-Agent" not in headers


def test_request_additional_headers_as_pairs() -> None:
    headers = make_client(additional_headers=[("X-A", "1"), ("X-A", "2")]).connect().headers
    assert headers.get_all("x-a") == ["1", "2"]


def test_keys_are_fresh() -> None:
    assert make_client().key != make_client().key


# ---------------------------------------------------------- the response


class ClientReverseFactory(ClientExtensionFactory):
    name = "x-reverse"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[tuple[ExtensionParams, list[Extension]]] = []

    def get_request_params(self) -> ExtensionParams:
        return [("level", "1")]

    def process_response_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> Extension:
        self.seen.append((list(params), list(accepted)))
        if self.fail:
            raise NegotiationError("bad params")
        return Reverse()


def response_for(
    client: ClientProtocol,
    headers: Sequence[tuple[str, str]] = (),
    *,
    status: str = "101 Switching Protocols",
    accept: str | None = None,
    drop: Sequence[str] = (),
) -> bytes:
    base = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept if accept is not None else accept_key(client.key)),
    ]
    lowered = {d.lower() for d in drop}
    items = [(k, v) for k, v in base if k.lower() not in lowered] + list(headers)
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in items]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def started_client(**kwargs: Any) -> ClientProtocol:
    client = make_client(**kwargs)
    client.send_request(client.connect())
    client.data_to_send()
    return client


def test_valid_response_opens() -> None:
    client = started_client()
    client.receive_data(response_for(client))
    assert client.state is State.OPEN
    assert client.handshake_exc is None
    (event,) = client.events_received()
    assert isinstance(event, ResponseReceived)
    assert event.response is client.response
    assert event.response.status_code == 101
    assert client.subprotocol is None
    assert client.extensions == []
    assert not client.close_transport


def test_response_byte_by_byte_then_frames_in_same_chunk() -> None:
    client = started_client()
    data = (
        response_for(client) + to_client(Opcode.TEXT, b"hello") + to_client(Opcode.BINARY, b"\x00")
    )
    split = data.index(b"\r\n\r\n") + 4 - 1
    for i in range(split):
        client.receive_data(data[i : i + 1])
    assert client.events_received() == []
    client.receive_data(data[split:])
    events = client.events_received()
    assert isinstance(events[0], ResponseReceived)
    assert events[1:] == ["hello", b"\x00"]


def assert_failed(client: ClientProtocol, exc_type: type[Exception], match: str = "") -> None:
    assert isinstance(client.handshake_exc, exc_type), client.handshake_exc
    assert match in str(client.handshake_exc)
    assert client.state is State.CLOSED
    assert client.close_transport
    # Frames after a failed handshake are ignored.
    client.receive_data(to_client(Opcode.TEXT, b"late"))
    assert not [e for e in client.events_received() if e == "late"]
    with pytest.raises(InvalidState):
        client.send_text("x")


@pytest.mark.parametrize("status", ["200 OK", "403 Forbidden", "426 Upgrade Required", "302 Found"])
def test_non_101_is_invalid_status(status: str) -> None:
    client = started_client()
    client.receive_data(response_for(client, [("Content-Length", "0")], status=status))
    assert isinstance(client.handshake_exc, InvalidStatus)
    assert client.handshake_exc.response.status_code == int(status[:3])
    (event,) = client.events_received()
    assert isinstance(event, ResponseReceived)
    assert_failed(client, InvalidStatus, status[:3])


def refusal(body: bytes, length: int | None = None) -> bytes:
    headers = b"" if length is None else b"Content-Length: %d\r\n" % length
    return b"HTTP/1.1 401 Unauthorized\r\n" + headers + b"\r\n" + body


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_refusal_body_is_kept_in_pieces(chunk: int) -> None:
    client = started_client()
    data = refusal(b"token expired\n", 14) + b"ignored after the body"
    for i in range(0, len(data), chunk):
        client.receive_data(data[i : i + chunk])
    assert isinstance(client.handshake_exc, InvalidStatus)
    assert client.handshake_exc.response.body == b"token expired\n"
    assert [type(e) for e in client.events_received()] == [ResponseReceived]
    assert_failed(client, InvalidStatus, "401")


def test_refusal_body_cut_by_eof_keeps_what_came() -> None:
    client = started_client()
    client.receive_data(refusal(b"tok", 14))
    assert client.handshake_exc is None  # still reading the body
    client.receive_eof()
    assert isinstance(client.handshake_exc, InvalidStatus)
    assert client.handshake_exc.response.body == b"tok"
    assert client.state is State.CLOSED


def test_refusal_without_length_or_with_a_huge_one() -> None:
    client = started_client()
    client.receive_data(refusal(b"no length: not waited for"))
    assert isinstance(client.handshake_exc, InvalidStatus)
    assert client.handshake_exc.response.body == b""
    client = started_client()
    big = MAX_REFUSAL_BODY + 10
    client.receive_data(refusal(b"x" * big, big))
    assert isinstance(client.handshake_exc, InvalidStatus)
    assert client.handshake_exc.response.body == b"x" * MAX_REFUSAL_BODY  # bounded


def test_wrong_accept() -> None:
    client = started_client()
    client.receive_data(response_for(client, accept=accept_key("AAAAAAAAAAAAAAAAAAAAAA==")))
    assert_failed(client, InvalidHeader, "Sec-WebSocket-Accept")


def test_missing_or_repeated_accept() -> None:
    client = started_client()
    client.receive_data(response_for(client, drop=["Sec-WebSocket-Accept"]))
    assert_failed(client, InvalidHeader, "Sec-WebSocket-Accept")
    client = started_client()
    client.receive_data(response_for(client, [("Sec-WebSocket-Accept", accept_key(client.key))]))
    assert_failed(client, InvalidHeader, "Sec-WebSocket-Accept")


@pytest.mark.parametrize(
    ("headers", "drop", "name"),
    [
        ([], ["Upgrade"], "Upgrade"),
        ([("Upgrade", "h2c")], ["Upgrade"], "Upgrade"),
        ([("Upgrade", "websocket, h2c")], ["Upgrade"], "Upgrade"),
        ([], ["Connection"], "Connection"),
        ([("Connection", "keep-alive")], ["Connection"], "Connection"),
        ([("Connection", "bad token")], ["Connection"], "Connection"),
    ],
)
def test_bad_upgrade_or_connection(
    headers: list[tuple[str, str]], drop: list[str], name: str
) -> None:
    client = started_client()
    client.receive_data(response_for(client, headers, drop=drop))
    assert_failed(client, InvalidHeader, name)


def test_upgrade_tokens_case_insensitive() -> None:
    client = started_client()
    client.receive_data(
        response_for(
            client,
            [("Upgrade", "WebSocket"), ("Connection", "keep-alive, upgrade")],
            drop=["Upgrade", "Connection"],
        )
    )
    assert client.state is State.OPEN


def test_subprotocol_accepted() -> None:
    client = started_client(subprotocols=["chat", "superchat"])
    client.receive_data(response_for(client, [("Sec-WebSocket-Protocol", "superchat")]))
    assert client.state is State.OPEN
    assert client.subprotocol == "superchat"


def test_unrequested_subprotocol() -> None:
    client = started_client(subprotocols=["chat"])
    client.receive_data(response_for(client, [("Sec-WebSocket-Protocol", "other")]))
    assert_failed(client, NegotiationError, "other")
    assert client.subprotocol is None


def test_subprotocol_when_none_requested() -> None:
    client = started_client()
    client.receive_data(response_for(client, [("Sec-WebSocket-Protocol", "chat")]))
    assert_failed(client, NegotiationError)


def test_several_subprotocols_in_response() -> None:
    client = started_client(subprotocols=["a", "b"])
    client.receive_data(response_for(client, [("Sec-WebSocket-Protocol", "a, b")]))
    assert_failed(client, InvalidHeader, "more than one")


def test_extension_accepted() -> None:
    factory = ClientReverseFactory()
    client = started_client(extensions=[factory])
    client.receive_data(response_for(client, [("Sec-WebSocket-Extensions", "x-reverse; ok")]))
    assert client.state is State.OPEN
    assert factory.seen == [([("ok", None)], [])]
    assert len(client.extensions) == 1
    assert isinstance(client.extensions[0], Reverse)
    # RSV1 is legal now.
    client.receive_data(bytes((0xC2, 3)) + b"cba")
    assert client.events_received()[-1] == b"abc"


def test_unrequested_extension() -> None:
    client = started_client()
    client.receive_data(response_for(client, [("Sec-WebSocket-Extensions", "x-reverse")]))
    assert_failed(client, NegotiationError, "x-reverse")
    client = started_client(extensions=[ClientReverseFactory()])
    client.receive_data(response_for(client, [("Sec-WebSocket-Extensions", "x-other")]))
    assert_failed(client, NegotiationError, "x-other")


def test_extension_params_rejected_by_factory() -> None:
    client = started_client(extensions=[ClientReverseFactory(fail=True)])
    client.receive_data(response_for(client, [("Sec-WebSocket-Extensions", "x-reverse; weird")]))
    assert_failed(client, NegotiationError)


def test_malformed_extension_header_in_response() -> None:
    client = started_client(extensions=[ClientReverseFactory()])
    client.receive_data(response_for(client, [("Sec-WebSocket-Extensions", "x-reverse;")]))
    assert_failed(client, InvalidHeader, "Sec-WebSocket-Extensions")


@pytest.mark.parametrize(
    "status_line",
    [b"HTTP/2 101 Switching", b"SPDY/1.1 101 x", b"HTTP/1.1 abc Nope", b"HTTP/1.1", b"garbage"],
)
def test_malformed_status_line(status_line: bytes) -> None:
    client = started_client()
    client.receive_data(status_line + b"\r\n\r\n")
    assert_failed(client, InvalidHandshake, "malformed status line")
    assert client.events_received() == []


def test_unparsable_response_head() -> None:
    client = started_client()
    client.receive_data(b"HTTP/1.1 101 OK\r\nbad header line\r\n\r\n")
    assert_failed(client, InvalidHandshake, "invalid HTTP response")
    client = started_client()
    client.receive_data(b"HTTP/1.1 101 OK\r\n" + b"X: " + b"a" * 9000)
    assert_failed(client, InvalidHandshake, "longer than")


def test_end_to_end_with_server_protocol() -> None:
    client = make_client(subprotocols=["v2", "v1"], origin="https://app")
    server = ServerProtocol(subprotocols=["v1", "v2"], origins=["https://app"])
    client.send_request(client.connect())
    for chunk in client.data_to_send():
        server.receive_data(chunk)
    response = server.accept(received_request(server))
    server.send_response(response)
    server.send_text("welcome")
    for chunk in server.data_to_send():
        client.receive_data(chunk)
    events = client.events_received()
    assert isinstance(events[0], ResponseReceived)
    assert events[1:] == ["welcome"]
    assert client.subprotocol == server.subprotocol == "v2"
    client.send_binary(b"\x01\x02")
    (f,) = sent_frames(client)
    assert f.mask is not None
    assert f.payload == b"\x01\x02"


def test_headers_type_is_reused() -> None:
    client = started_client()
    client.receive_data(response_for(client, [("X-A", "1")]))
    assert client.response is not None
    assert isinstance(client.response.headers, Headers)
    assert client.response.headers["x-a"] == "1"
