"""The opening handshake's HTTP/1.1 messages (RFC 6455 §4) with bounded parsing.

The parser is incremental and never holds more than ``MAX_LINE`` bytes of an
unfinished line or more than ``MAX_HEADERS`` header lines, so a client that
sends headers forever costs bounded memory (and the asyncio layer's open
timeout bounds the time).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from http import HTTPStatus

from tether.protocol.headers import Headers

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_LINE = 8192
MAX_HEADERS = 128


def generate_key() -> str:
    """A fresh Sec-WebSocket-Key: 16 random bytes, base64 (RFC 6455 §4.1)."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a key (RFC 6455 §4.2.2 step 5.4)."""
    digest = hashlib.sha1(key.encode("ascii") + GUID).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(slots=True)
class Request:
    path: str
    headers: Headers
    method: str = "GET"


@dataclass(slots=True)
class Response:
    status_code: int
    reason_phrase: str
    headers: Headers
    body: bytes = b""

    def serialize(self) -> bytes:
        head = f"HTTP/1.1 {self.status_code} {self.reason_phrase}\r\n".encode("latin-1")
        return head + self.headers.serialize() + self.body


def make_response(
    status: int,
    text: str = "",
    headers: Headers | None = None,
    *,
    close: bool = True,
    end_line: bool = True,
) -> Response:
    """A plain-text HTTP response, e.g. to reject an upgrade with a clear reason.

    ``end_line`` ends a non-empty ``text`` with a newline; without it the body
    is ``text`` exactly (websockets' ``respond(200, "OK\\n")`` sends ``OK\\n``).
    """
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = (text + "\n" if end_line else text).encode("utf-8") if text else b""
    out = Headers(headers) if headers is not None else Headers()
    if body:
        out["Content-Type"] = "text/plain; charset=utf-8"
    out["Content-Length"] = str(len(body))
    if close:
        out["Connection"] = "close"
    return Response(status, phrase, out, body)


class HeadError(Exception):
    """The HTTP head cannot be parsed; ``status`` is what a server answers."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(slots=True)
class HeadParser:
    """Incrementally split an HTTP/1.1 head into its start line and headers."""

    max_line: int = MAX_LINE
    max_headers: int = MAX_HEADERS
    buffer: bytearray = field(default_factory=bytearray)
    start_line: str | None = None
    headers: Headers = field(default_factory=Headers)
    complete: bool = False
    # How much of ``buffer`` is known to hold no CRLF (but maybe a final "\r").
    scanned: int = 0

    def feed(self, data: bytes) -> bytes:
        """Consume bytes; return what follows the head once it is complete.

        Raises :class:`HeadError` on malformed or oversized input.
        """
        self.buffer += data
        while not self.complete:
            # Resume where the last search stopped, one byte early for a CRLF
            # split across feeds: input dribbled byte by byte stays linear.
            end = self.buffer.find(b"\r\n", max(self.scanned - 1, 0))
            if end < 0:
                self.scanned = len(self.buffer)
                # A trailing "\r" may be the first half of the line's CRLF: a
                # line of exactly max_line bytes must pass however it is chunked.
                pending = len(self.buffer) - (1 if self.buffer.endswith(b"\r") else 0)
                if pending > self.max_line:
                    kind = "request line" if self.start_line is None else "header line"
                    raise HeadError(400, f"{kind} longer than {self.max_line} bytes")
                return b""
            if end > self.max_line:
                raise HeadError(400, f"line longer than {self.max_line} bytes")
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            self.scanned = 0
            self._line(line)
        rest = bytes(self.buffer)
        self.buffer.clear()
        return rest

    def _line(self, line: bytes) -> None:
        if self.start_line is None:
            try:
                self.start_line = line.decode("ascii")
            except UnicodeDecodeError:
                raise HeadError(400, "start line is not ASCII") from None
            if not self.start_line:
                raise HeadError(400, "empty start line")
            return
        if not line:
            self.complete = True
            return
        if self.headers.line_count >= self.max_headers:
            raise HeadError(431, f"more than {self.max_headers} headers")
        name, sep, value = line.partition(b":")
        # RFC 7230 §3.2.4: no whitespace between the field name and the colon.
        if not sep or not name or name != name.strip() or b" " in name or b"\t" in name:
            raise HeadError(400, f"malformed header line {line[:60]!r}")
        value = value.strip(b" \t")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            raise HeadError(400, "invalid character in header value")
        self.headers[name.decode("latin-1")] = value.decode("latin-1")
