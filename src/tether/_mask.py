"""Pure-Python masking (RFC 6455 §5.3), the twin of the native ``_speedups.apply_mask``.

XOR-ing whole integers keeps the work inside CPython's big-int code instead
of a per-byte Python loop, which is what makes the fallback usable at all.
"""

from __future__ import annotations


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """Return ``data`` XOR-ed with the repeating 4-byte ``mask``."""
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    n = memoryview(data).nbytes  # bytes, not items, for any buffer
    if n == 0:
        return b""
    repeated = mask * (n // 4 + 1)
    raw = memoryview(data).cast("B") if n != len(data) else data
    value = int.from_bytes(raw, "little") ^ int.from_bytes(repeated[:n], "little")
    return value.to_bytes(n, "little")
