"""Type stubs for the optional C extension ``tether._speedups``.

Pure-Python twins: :mod:`tether._mask` (masking), :mod:`tether._utf8`
(UTF-8 validation) and :mod:`tether._frame_out` (server frames). The asyncio
layer's read path is a module of its own: :mod:`tether.asyncio._speedups`.
"""

from typing import Final, final

from _typeshed import ReadableBuffer, WriteableBuffer

KERNEL: Final[str]
"""Masking kernel in use: ``"avx2"``, ``"sse2"``, ``"neon"`` or ``"portable"``."""

def apply_mask(data: ReadableBuffer, mask: ReadableBuffer) -> bytes:
    """Return ``data`` XOR-ed with the repeating 4-byte ``mask``.

    Raises ValueError if ``mask`` is not exactly 4 bytes.
    """

def apply_mask_inplace(
    buf: WriteableBuffer,
    mask: ReadableBuffer,
    offset: int = 0,
    length: int = -1,
    mask_offset: int = 0,
) -> None:
    """XOR ``buf[offset:offset + length]`` in place; the key phase starts at
    ``mask_offset % 4``.  ``length=-1`` means to the end of ``buf``."""

def utf8_valid(data: ReadableBuffer) -> bool:
    """Return True if ``data`` is strictly valid UTF-8."""

@final
class Utf8Validator:
    """Incremental, fail-fast, strict UTF-8 validator."""

    def __init__(self) -> None: ...
    def feed(self, data: ReadableBuffer, final: bool = False) -> bool:
        """Return False as soon as the stream so far cannot be valid UTF-8."""
    def reset(self) -> None:
        """Start a new stream."""

def parse_simple_frames(
    buf: ReadableBuffer, pos: int, expect_mask: bool, limit: int, events: list[object], /
) -> int:
    """Append the messages of the whole simple frames at ``buf[pos:]``; return the new pos."""

def frame_unmasked(opcode: int, data: bytes, /) -> bytes:
    """One whole unmasked frame (FIN, no RSV), header and payload in one bytes object."""
