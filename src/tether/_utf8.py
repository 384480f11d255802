"""Pure-Python UTF-8 validation, the twin of the native ``_speedups`` validator.

Both rely on the strict UTF-8 codec semantics: overlong forms, surrogates
(U+D800..U+DFFF) and code points above U+10FFFF are invalid.  CPython's
incremental UTF-8 decoder already fails fast: it rejects a truncated
sequence at the end of a chunk as soon as its first bytes cannot start a
valid character (``b"\\xed\\xa0"``), and only holds back ones that still can.
"""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["Utf8Validator", "utf8_valid"]

_decode = codecs.utf_8_decode
_Decoder = codecs.getincrementaldecoder("utf-8")


def _contiguous(data: ReadableBuffer) -> ReadableBuffer:
    # The codec wants a contiguous buffer; the native code copies strided ones.
    if isinstance(data, memoryview) and not data.c_contiguous:
        return data.tobytes()
    return data


def utf8_valid(data: ReadableBuffer) -> bool:
    """Return True if ``data`` is strictly valid UTF-8."""
    try:
        _decode(_contiguous(data), "strict", True)
    except UnicodeDecodeError:
        return False
    return True


@final
class Utf8Validator:
    """Incremental, fail-fast, strict UTF-8 validator."""

    __slots__ = ("_decoder", "_failed")

    def __init__(self) -> None:
        self._decoder = _Decoder()
        self._failed = False

    def feed(self, data: ReadableBuffer, final: bool = False) -> bool:
        """Validate the next chunk of a UTF-8 stream.

        Return False as soon as the bytes fed so far cannot be the beginning of
        valid UTF-8, and from then on until :meth:`reset`.  A character split
        across chunks is fine, except at ``final=True``, where the stream must
        end on a character boundary.  After a successful final chunk the
        validator is ready for a new stream.
        """
        if self._failed:
            return False
        try:
            self._decoder.decode(_contiguous(data), final)
        except UnicodeDecodeError:
            self._failed = True
            return False
        return True

    def reset(self) -> None:
        """Forget everything fed so far and start a new stream."""
        self._decoder.reset()
        self._failed = False
