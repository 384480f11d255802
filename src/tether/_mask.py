"""Pure-Python masking (RFC 6455 §5.3), the twin of the native ``_speedups.apply_mask``.

XOR-ing whole integers keeps the work inside CPython's big-int code instead
of a per-byte Python loop, which is what makes the fallback usable at all.
"""

from __future__ import annotations

# _XOR_TABLES[k][b] == b ^ k
_XOR_TABLES = [bytes(b ^ k for b in range(256)) for k in range(256)]


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """Return ``data`` XOR-ed with the repeating 4-byte ``mask``."""
    if len(mask) != 4:
        raise ValueError("mask must be 4 bytes")
    n = memoryview(data).nbytes  # bytes, not items, for any buffer
    if n == 0:
        return b""
    if n >= 1024:
        # Large: translate each of the four interleaved byte lanes through the
        # XOR table of its key byte; strided slices and translate run in C.
        out = bytearray(memoryview(data).cast("B"))
        for lane in range(4):
            out[lane::4] = out[lane::4].translate(_XOR_TABLES[mask[lane]])
        return bytes(out)
    repeated = mask * (n // 4 + 1)
    raw = memoryview(data).cast("B") if n != len(data) else data
    value = int.from_bytes(raw, "little") ^ int.from_bytes(repeated[:n], "little")
    return value.to_bytes(n, "little")
