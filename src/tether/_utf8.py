"""Pure-Python UTF-8 validation, the twin of the native ``_speedups`` validator.

Both follow the strict UTF-8 codec: overlong forms, surrogates (U+D800..U+DFFF)
and code points above U+10FFFF are invalid.

CPython's incremental UTF-8 decoder nearly fails fast on its own: a truncated
sequence at the end of a chunk is rejected as soon as its first bytes cannot
start a valid character (``b"\\xe0\\x80"``, ``b"\\xf4\\x90"``).  The one
exception is a truncated surrogate, ``b"\\xed"`` followed by ``0xa0..0xbf``,
which it holds back as incomplete (so that ``errors="surrogatepass"`` can
see it whole); :meth:`Utf8Validator.feed` checks for that case itself.
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
        if not final:
            # Held back: at most 3 bytes of an incomplete character.
            pending = self._decoder.getstate()[0]
            if len(pending) > 1 and pending[0] == 0xED and pending[1] >= 0xA0:
                self._failed = True
                return False
        return True

    def reset(self) -> None:
        """Forget everything fed so far and start a new stream."""
        self._decoder.reset()
        self._failed = False
