"""Pure-Python masking (RFC 6455 §5.3), the twin of the native ``_speedups.apply_mask``.

XOR-ing whole integers keeps the work inside CPython's big-int code instead
of a per-byte Python loop, which is what makes the fallback usable at all.
"""

from __future__ import annotations


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """Return ``data`` XOR-ed with the repeating 4-byte ``mask``."""
    n = len(data)
    if n == 0:
        return b""
    repeated = mask * (n // 4 + 1)
    value = int.from_bytes(data, "little") ^ int.from_bytes(repeated[:n], "little")
    return value.to_bytes(n, "little")
