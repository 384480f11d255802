"""Pure-Python twin of the native ``_speedups.frame_unmasked``.

A server's whole unmasked frame (FIN set, no RSV bit), header and payload in
one bytes object: one ``transport.write`` per message, no separate header.
"""

from __future__ import annotations

import struct

_PACK_16 = struct.Struct("!BBH").pack
_PACK_64 = struct.Struct("!BBQ").pack


def frame_unmasked(opcode: int, data: bytes) -> bytes:
    """Return header + ``data`` for a whole frame with ``opcode``; ``data`` must be bytes."""
    if type(data) is not bytes:
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    if not 0 <= opcode <= 15:
        raise ValueError("opcode must be 0..15")
    n = len(data)
    # RFC 6455 §5.2: 7-bit length, or 126 + 16 bits, or 127 + 64 bits.
    if n < 126:
        return bytes((0x80 | opcode, n)) + data
    if n < 65536:
        return _PACK_16(0x80 | opcode, 126, n) + data
    return _PACK_64(0x80 | opcode, 127, n) + data
