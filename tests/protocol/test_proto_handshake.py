"""Opening-handshake building blocks: keys, responses and the bounded head parser."""

from __future__ import annotations

import base64

import pytest
from proto_helpers import RFC_ACCEPT, RFC_KEY

from tether.protocol import Headers, Response
from tether.protocol.handshake import (
    MAX_HEADERS,
    MAX_LINE,
    HeadError,
    HeadParser,
    accept_key,
    generate_key,
    make_response,
)

REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"\r\n"
)


def test_accept_key_rfc_example() -> None:
    # RFC 6455 §1.3.
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_generate_key_is_16_random_bytes() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16


# -------------------------------------------------------------- responses


def test_response_serialize() -> None:
    response = Response(101, "Switching Protocols", Headers([("Upgrade", "websocket")]))
    assert response.serialize() == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    )


def test_make_response_with_text() -> None:
    response = make_response(403, "origin not allowed", Headers([("X-A", "1")]))
    assert response.status_code == 403
    assert response.reason_phrase == "Forbidden"
    assert response.body == b"origin not allowed\n"
    assert response.headers.get_all("X-A") == ["1"]
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Length"] == str(len(response.body))
    assert response.headers["Connection"] == "close"
    raw = response.serialize()
    assert raw.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert raw.endswith(b"\r\n\r\norigin not allowed\n")


def test_make_response_without_text_or_close() -> None:
    response = make_response(400, close=False)
    assert response.body == b""
    assert "Content-Type" not in response.headers
    assert response.headers["Content-Length"] == "0"
    assert "Connection" not in response.headers


def test_make_response_unknown_status() -> None:
    assert make_response(599).reason_phrase == "Error"


def test_make_response_does_not_mutate_given_headers() -> None:
    given = Headers([("X", "1")])
    make_response(400, "x", given)
    assert list(given.raw_items()) == [("X", "1")]


# ------------------------------------------------------------- head parser


def test_head_parser_whole_request() -> None:
    parser = HeadParser()
    rest = parser.feed(REQUEST + b"\x81\x00extra")
    assert parser.complete
    assert parser.start_line == "GET /chat HTTP/1.1"
    assert list(parser.headers.raw_items()) == [
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
    ]
    assert rest == b"\x81\x00extra"
    assert parser.buffer == b""


def test_head_parser_byte_by_byte() -> None:
    parser = HeadParser()
    tail = b"\x81\x05hello"
    outputs = [parser.feed(REQUEST[i : i + 1]) for i in range(len(REQUEST))]
    assert all(out == b"" for out in outputs)
    assert parser.complete
    assert parser.headers["host"] == "server.example.com"
    # Once complete, further bytes come straight back.
    assert parser.feed(tail) == tail


def test_head_parser_crlf_split_across_feeds() -> None:
    parser = HeadParser()
    assert parser.feed(b"GET / HTTP/1.1\r") == b""
    assert parser.start_line is None
    assert parser.feed(b"\nHost: a\r") == b""
    assert parser.start_line == "GET / HTTP/1.1"
    assert parser.feed(b"\n\r") == b""
    assert not parser.complete
    assert parser.feed(b"\nrest") == b"rest"
    assert parser.complete


def test_head_parser_value_whitespace_trimmed_and_empty_values() -> None:
    parser = HeadParser()
    parser.feed(b"GET / HTTP/1.1\r\nA: \t spaced out \t\r\nB:\r\nC:x\r\n\r\n")
    assert list(parser.headers.raw_items()) == [("A", "spaced out"), ("B", ""), ("C", "x")]


def test_head_parser_latin1_values() -> None:
    parser = HeadParser()
    parser.feed(b"GET / HTTP/1.1\r\nX: caf\xe9\r\n\r\n")
    assert parser.headers["X"] == "caf\xe9"


def test_head_parser_line_limit_exact_boundary_in_one_chunk() -> None:
    line = b"X: " + b"a" * (MAX_LINE - 3)
    assert len(line) == MAX_LINE
    parser = HeadParser()
    parser.feed(b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n")
    assert parser.complete


def test_head_parser_line_limit_exact_boundary_byte_by_byte() -> None:
    # A line of exactly max_line bytes is accepted however it is chunked.
    line = b"X: " + b"a" * (MAX_LINE - 3)
    data = b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n"
    parser = HeadParser()
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
    assert parser.complete
    assert parser.headers["X"] == "a" * (MAX_LINE - 3)


@pytest.mark.parametrize("chunk", [1, 7, 4096, 100_000])
def test_head_parser_header_line_too_long(chunk: int) -> None:
    data = b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_LINE + b"\r\n\r\n"
    parser = HeadParser()
    with pytest.raises(HeadError) as info:
        for i in range(0, len(data), chunk):
            parser.feed(data[i : i + chunk])
    assert info.value.status == 400
    assert "longer than 8192" in info.value.reason


def test_head_parser_request_line_too_long_without_crlf() -> None:
    parser = HeadParser()
    with pytest.raises(HeadError) as info:
        parser.feed(b"G" * (MAX_LINE + 2))
    assert info.value.status == 400
    assert "request line" in str(info.value)


def test_head_parser_header_line_too_long_without_crlf() -> None:
    parser = HeadParser()
    parser.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(HeadError) as info:
        parser.feed(b"X" * (MAX_LINE + 2))
    assert "header line" in info.value.reason


def test_head_parser_custom_line_limit() -> None:
    parser = HeadParser(max_line=20)
    with pytest.raises(HeadError):
        parser.feed(b"GET /" + b"a" * 30 + b" HTTP/1.1\r\n")


@pytest.mark.parametrize("chunk", [1, 13, 65536])
def test_head_parser_too_many_headers(chunk: int) -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(2000)) + b"\r\n"
    parser = HeadParser()
    with pytest.raises(HeadError) as info:
        for i in range(0, len(data), chunk):
            parser.feed(data[i : i + chunk])
    assert info.value.status == 431
    assert len(parser.headers) == MAX_HEADERS


def test_head_parser_exactly_max_headers() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS))
    parser = HeadParser()
    parser.feed(data + b"\r\n")
    assert parser.complete
    assert len(parser.headers) == MAX_HEADERS


def test_head_parser_slowloris_memory_is_bounded() -> None:
    """A peer dribbling an endless header costs at most max_line bytes of buffer."""
    parser = HeadParser()
    parser.feed(b"GET / HTTP/1.1\r\nX-Slow: ")
    largest = 0
    with pytest.raises(HeadError) as info:
        for _ in range(3 * MAX_LINE):
            parser.feed(b"a")
            largest = max(largest, len(parser.buffer))
    assert info.value.status == 400
    assert largest <= MAX_LINE


def test_head_parser_slowloris_many_short_headers_bounded() -> None:
    parser = HeadParser()
    parser.feed(b"GET / HTTP/1.1\r\n")
    largest = 0
    with pytest.raises(HeadError) as info:
        for i in range(10_000):
            for byte in b"X-%d: 1\r\n" % i:
                parser.feed(bytes((byte,)))
                largest = max(largest, len(parser.buffer))
    assert info.value.status == 431
    assert largest < 20
    assert len(parser.headers) == MAX_HEADERS


class _CountingBuffer(bytearray):
    """A bytearray that counts how many bytes its ``find`` calls had to examine."""

    examined = 0

    def find(self, sub: object, start: int = 0, *args: int) -> int:  # type: ignore[override]
        _CountingBuffer.examined += len(self) - start
        return super().find(sub, start, *args)  # type: ignore[arg-type]


def test_head_parser_byte_by_byte_is_linear() -> None:
    """Dribbling a long line byte by byte must not rescan the whole buffer each time."""
    data = b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_LINE - 3) + b"\r\nY: b\r\n\r\n"
    _CountingBuffer.examined = 0
    parser = HeadParser(buffer=_CountingBuffer())
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
    assert parser.complete
    assert parser.headers["Y"] == "b"
    assert _CountingBuffer.examined < 3 * len(data)


def test_head_parser_bare_cr_then_crlf_byte_by_byte() -> None:
    parser = HeadParser()
    with pytest.raises(HeadError):
        for byte in b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n":
            parser.feed(bytes((byte,)))


def test_head_parser_non_ascii_request_line() -> None:
    parser = HeadParser()
    with pytest.raises(HeadError) as info:
        parser.feed("GET /café HTTP/1.1\r\n".encode())
    assert info.value.status == 400
    assert "ASCII" in info.value.reason


def test_head_parser_empty_start_line() -> None:
    with pytest.raises(HeadError) as info:
        HeadParser().feed(b"\r\n")
    assert info.value.status == 400


@pytest.mark.parametrize(
    "line",
    [
        b"no colon here",
        b": empty name",
        b"Bad Name: x",
        b"Bad\tName: x",
        b"Name : x",
        b" Folded: x",
        b"\tFolded: x",
        b"X: a\x00b",
        b"X: a\rb",
    ],
)
def test_head_parser_malformed_header_lines(line: bytes) -> None:
    parser = HeadParser()
    with pytest.raises(HeadError) as info:
        parser.feed(b"GET / HTTP/1.1\r\n" + line + b"\r\n\r\n")
    assert info.value.status == 400


def test_head_error_attributes() -> None:
    exc = HeadError(431, "too many")
    assert (exc.status, exc.reason, str(exc)) == (431, "too many", "too many")
