"""Reading a frame header's payload length (RFC 6455 §5.2).

Shared by the sans-I/O core's parser and the pure-Python Receiver; no
imports, so the core stays free of I/O modules.
"""

from __future__ import annotations


def payload_length(buf: bytes | bytearray | memoryview, pos: int, n: int) -> tuple[int, int] | None:
    """The payload length of the frame whose header starts at ``buf[pos]``, and the
    header's size before any masking key; None while ``buf[:n]`` cuts the length.

    RFC 6455 §5.2: 7 bits, or 126 then 16 bits, or 127 then 64 bits. The
    caller has checked that two header bytes are there.
    """
    length = buf[pos + 1] & 0x7F
    if length == 126:
        if n - pos < 4:
            return None
        return (buf[pos + 2] << 8) | buf[pos + 3], 4
    if length == 127:
        if n - pos < 10:
            return None
        return int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
    return length, 2
