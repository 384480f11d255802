"""WebSocket frames (RFC 6455 §5.2): opcodes, close codes, serialization.

Parsing lives in :mod:`tether.protocol.connection`, which reads frame headers
in place from its receive buffer; this module holds the shared vocabulary and
the serializer.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import NamedTuple

from tether._native import apply_mask


class Opcode(enum.IntEnum):
    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONT, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})
KNOWN_OPCODES = frozenset(int(op) for op in Opcode)

# RFC 6455 §5.5: "All control frames MUST have a payload length of 125 bytes or less".
MAX_CONTROL_PAYLOAD = 125


class CloseCode(enum.IntEnum):
    """Close codes (RFC 6455 §7.4.1 and the IANA registry).

    The long names are websockets'; tether's shorter names (``NORMAL``,
    ``NO_STATUS``, ``ABNORMAL``) are aliases of the same members.
    """

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005  # never sent on the wire
    ABNORMAL_CLOSURE = 1006  # never sent on the wire
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015  # never sent on the wire
    # tether's shorter names: aliases, so ``CloseCode.NORMAL is CloseCode.NORMAL_CLOSURE``.
    NORMAL = 1000
    NO_STATUS = 1005
    ABNORMAL = 1006


# What each code means, as a close frame's description prints it.
CLOSE_CODE_EXPLANATIONS: dict[int, str] = {
    1000: "OK",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status received [internal]",
    1006: "abnormal closure [internal]",
    1007: "invalid frame payload data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failure [internal]",
}


class Close(NamedTuple):
    """The code and reason of a Close frame.

    A named tuple: ``close.code`` and ``close.reason`` as in websockets, and
    ``code, reason = close`` as tether's earlier ``(code, reason)`` tuples.
    """

    code: int
    reason: str

    def __str__(self) -> str:
        if 3000 <= self.code < 4000:
            explanation = "registered"
        elif 4000 <= self.code < 5000:
            explanation = "private use"
        else:
            explanation = CLOSE_CODE_EXPLANATIONS.get(self.code, "unknown")
        text = f"{self.code} ({explanation})"
        return f"{text} {self.reason}" if self.reason else text

    @classmethod
    def parse(cls, data: bytes) -> Close:
        """Decode a Close payload; ``ValueError`` if it is invalid (see parse_close_payload)."""
        return cls(*parse_close_payload(data))

    def serialize(self) -> bytes:
        """Encode as a Close payload; ``ValueError`` if it cannot be sent."""
        return serialize_close_payload(self.code, self.reason)

    def check(self) -> None:
        """Raise ``ValueError`` unless the code may appear in a Close frame."""
        if not is_valid_close_code(self.code):
            raise ValueError(f"invalid close code {self.code}")


# RFC 6455 §7.4.1 and the IANA registry: codes an endpoint may put in a Close
# frame. 1004, 1005, 1006 and 1015 are reserved and "MUST NOT be set as a
# status code in a Close control frame by an endpoint".
_SENDABLE_DEFINED = frozenset(
    {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
)


def is_valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a Close frame on the wire."""
    # 3000-3999: registered with IANA for libraries and frameworks;
    # 4000-4999: private use. Everything else below 3000 is reserved.
    return code in _SENDABLE_DEFINED or 3000 <= code <= 4999


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame, payload already unmasked."""

    opcode: int
    data: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False


_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack


def frame_header(
    opcode: int, length: int, *, fin: bool = True, rsv1: bool = False, mask: bytes | None = None
) -> bytes:
    """Serialize just the header of a frame (RFC 6455 §5.2)."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        head = bytes((b0, mask_bit | length))
    elif length < 65536:
        head = _PACK_16(b0, mask_bit | 126, length)
    else:
        head = _PACK_64(b0, mask_bit | 127, length)
    return head + mask if mask is not None else head


def serialize_frame(
    opcode: int,
    data: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = None,
) -> bytes:
    """Serialize one frame; ``mask`` is the 4-byte masking key (clients only)."""
    head = frame_header(opcode, len(data), fin=fin, rsv1=rsv1, mask=mask)
    if mask is not None:
        return head + apply_mask(data, mask)
    return head + bytes(data) if not isinstance(data, bytes) else head + data


def parse_close_payload(data: bytes) -> tuple[int, str]:
    """Decode a Close payload into (code, reason); raise ValueError if invalid.

    RFC 6455 §5.5.1: the body, if any, starts with a 2-byte code followed by a
    UTF-8 reason. A 1-byte body cannot hold a code, so it is a protocol error.
    """
    if not data:
        return CloseCode.NO_STATUS, ""
    if len(data) == 1:
        raise ValueError("close frame payload of 1 byte")
    code = int.from_bytes(data[:2], "big")
    if not is_valid_close_code(code):
        raise ValueError(f"invalid close code {code}")
    reason = data[2:].decode("utf-8")  # UnicodeDecodeError is a ValueError
    return code, reason


def serialize_close_payload(code: int, reason: str = "") -> bytes:
    """Encode a Close payload; raise ValueError for codes or reasons that cannot be sent."""
    if code == CloseCode.NO_STATUS:
        if reason:
            raise ValueError("a reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    payload = code.to_bytes(2, "big") + reason.encode("utf-8")
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError("close reason longer than 123 bytes")
    return payload
