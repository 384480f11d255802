"""Shared helpers for the tether.protocol tests: raw frame building and decoding.

The decoder here is deliberately independent of :mod:`tether.protocol.connection`
so that serializer output is checked against a second implementation.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from tether.protocol import (
    Connection,
    Headers,
    NegotiationError,
    Request,
    ServerProtocol,
    Side,
    State,
)
from tether.protocol.extensions.base import Extension, ServerExtensionFactory
from tether.protocol.frames import Frame
from tether.protocol.headers import ExtensionParams

KEY = b"\x37\xfa\x21\x3d"
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]


def xor(data: bytes, key: bytes) -> bytes:
    """Reference masking, independent of tether's: byte i is XOR-ed with key[i % 4].

    Each of the four interleaved byte lanes is translated through the table of
    its key byte, which is fast enough for megabyte payloads.
    """
    out = bytearray(data)
    for lane in range(4):
        out[lane::4] = data[lane::4].translate(_XOR_TABLES[key[lane]])
    return bytes(out)


def raw_frame(
    b0: int,
    payload: bytes = b"",
    *,
    mask: bytes | None = None,
    length: int | None = None,
    length_bytes: int | None = None,
) -> bytes:
    """Build a frame byte by byte; ``b0`` is FIN|RSV|opcode, ``length`` may lie."""
    n = len(payload) if length is None else length
    mask_bit = 0x80 if mask is not None else 0
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    if length_bytes == 0:
        head = bytes((b0, mask_bit | n))
    elif length_bytes == 2:
        head = bytes((b0, mask_bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mask_bit | 127)) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + xor(payload, mask)


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, masked: bool = False) -> bytes:
    """A well-formed frame; ``masked=True`` for client-to-server frames."""
    b0 = (0x80 if fin else 0) | opcode
    return raw_frame(b0, payload, mask=KEY if masked else None)


def to_server(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    return frame(opcode, payload, fin=fin, masked=True)


def to_client(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    return frame(opcode, payload, fin=fin, masked=False)


@dataclass(frozen=True)
class WireFrame:
    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    mask: bytes | None
    payload: bytes  # unmasked
    header_len: int


def decode_frames(data: bytes) -> list[WireFrame]:
    """Decode a byte string of complete frames; assert nothing is left over."""
    frames: list[WireFrame] = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        n = b1 & 0x7F
        head = 2
        if n == 126:
            (n,) = struct.unpack("!H", data[pos + 2 : pos + 4])
            assert n >= 126, "non-minimal 16-bit length"
            head = 4
        elif n == 127:
            (n,) = struct.unpack("!Q", data[pos + 2 : pos + 10])
            assert n >= 65536, "non-minimal 64-bit length"
            assert n < 2**63
            head = 10
        mask: bytes | None = None
        if b1 & 0x80:
            mask = data[pos + head : pos + head + 4]
            head += 4
        body = data[pos + head : pos + head + n]
        assert len(body) == n, "truncated frame"
        frames.append(
            WireFrame(
                fin=bool(b0 & 0x80),
                rsv1=bool(b0 & 0x40),
                rsv2=bool(b0 & 0x20),
                rsv3=bool(b0 & 0x10),
                opcode=b0 & 0x0F,
                mask=mask,
                payload=xor(body, mask) if mask is not None else body,
                header_len=head,
            )
        )
        pos += head + n
    return frames


def state_of(conn: Connection) -> State:
    """``conn.state``, read through a call so mypy does not keep an earlier narrowing."""
    return conn.state


def sent(conn: Connection) -> bytes:
    return b"".join(conn.data_to_send())


def sent_frames(conn: Connection) -> list[WireFrame]:
    return decode_frames(sent(conn))


def transfer(src: Connection, dst: Connection) -> None:
    """Move everything ``src`` wants to send into ``dst``."""
    for chunk in src.data_to_send():
        dst.receive_data(chunk)


def pair(**kwargs: object) -> tuple[Connection, Connection]:
    """An open (client, server) pair of bare connections."""
    client = Connection(Side.CLIENT, **kwargs)  # type: ignore[arg-type]
    server = Connection(Side.SERVER, **kwargs)  # type: ignore[arg-type]
    return client, server


def request_bytes(
    headers: Sequence[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    path: str = "/chat",
    version: str = "HTTP/1.1",
    drop: Sequence[str] = (),
) -> bytes:
    """An upgrade request; ``headers`` are appended, ``drop`` removes defaults by name."""
    base = [
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", RFC_KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
    lowered = {d.lower() for d in drop}
    items = [(k, v) for k, v in base if k.lower() not in lowered] + list(headers or [])
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in items]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def received_request(server: ServerProtocol) -> Request:
    events = server.events_received()
    assert len(events) == 1, events
    (event,) = events
    request = getattr(event, "request", None)
    assert isinstance(request, Request), event
    return request


def open_server(**kwargs: object) -> ServerProtocol:
    """A ServerProtocol that completed a plain handshake."""
    server = ServerProtocol(**kwargs)  # type: ignore[arg-type]
    server.receive_data(request_bytes())
    response = server.accept(received_request(server))
    assert response.status_code == 101
    server.send_response(response)
    server.data_to_send()
    return server


def response_headers(raw: bytes) -> tuple[int, Headers, bytes]:
    """Parse an HTTP response the server wrote: (status, headers, body)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    assert lines[0].startswith("HTTP/1.1 ")
    headers = Headers([tuple(line.split(": ", 1)) for line in lines[1:]])  # type: ignore[misc]
    return status, headers, body


class Reverse(Extension):
    """A toy extension: a message with RSV1 set has every frame's payload reversed.

    It keeps the per-message state the way permessage-deflate does, and records
    the ``max_size`` budget the connection hands to ``decode``.
    """

    name = "x-reverse"

    def __init__(self) -> None:
        self.decoding = False
        self.encoding = False
        self.budgets: list[int | None] = []

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        self.budgets.append(max_size)
        if frame.opcode:
            self.decoding = frame.rsv1
        if not self.decoding:
            return frame
        return Frame(frame.opcode, frame.data[::-1], frame.fin, False)

    def encode(self, frame: Frame, *, compress: bool | None = None) -> Frame:
        if frame.opcode:
            self.encoding = bool(compress)
        if not self.encoding:
            return frame
        return Frame(frame.opcode, frame.data[::-1], frame.fin, bool(frame.opcode))


class ReverseFactory(ServerExtensionFactory):
    """Accepts x-reverse unless an offer carries ``decline``; records its calls."""

    name = "x-reverse"

    def __init__(self) -> None:
        self.calls: list[tuple[ExtensionParams, list[Extension]]] = []

    def process_request_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> tuple[ExtensionParams, Extension]:
        self.calls.append((list(params), list(accepted)))
        if any(name == "decline" for name, _ in params):
            raise NegotiationError("declined")
        if any(isinstance(ext, Reverse) for ext in accepted):
            raise NegotiationError("already accepted")
        return [("ok", None), *[(k, v) for k, v in params if k == "level"]], Reverse()
