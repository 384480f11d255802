"""The native hot path and its pure-Python twins must agree, case by case.

Every test runs against both implementations: ``tether._speedups`` (skipped,
with the reason shown, when the C extension is not built) and the twins
``tether._mask`` / ``tether._utf8``.
"""

from __future__ import annotations

import array
import functools
import itertools
import random
import threading
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from tether import _mask, _utf8
from tether_testing import load_native, needs_native, require_native

native = load_native()


class Validator(Protocol):
    def feed(self, data: Any, final: bool = False) -> bool: ...
    def reset(self) -> None: ...


def pure_apply_mask_inplace(
    buf: Any, mask: bytes, offset: int = 0, length: int = -1, mask_offset: int = 0
) -> None:
    """Reference for ``apply_mask_inplace``, built on the pure ``apply_mask``."""
    try:
        view = memoryview(buf).cast("B")
    except TypeError as exc:  # e.g. a strided memoryview
        raise TypeError(str(exc)) from None
    if view.readonly:
        raise TypeError("buf must be a writable buffer")
    if len(mask) != 4:
        raise ValueError("mask must be exactly 4 bytes")
    if offset < 0 or offset > len(view):
        raise ValueError("offset out of range")
    if length == -1:
        length = len(view) - offset
    elif length < 0 or length > len(view) - offset:
        raise ValueError("length out of range")
    phase = mask_offset % 4
    rotated = mask[phase:] + mask[:phase]
    view[offset : offset + length] = _mask.apply_mask(view[offset : offset + length], rotated)


class Impl:
    """One implementation under test."""

    def __init__(
        self,
        name: str,
        apply_mask: Callable[[Any, Any], bytes],
        apply_mask_inplace: Callable[..., None],
        utf8_valid: Callable[[Any], bool],
        validator: Callable[[], Validator],
    ) -> None:
        self.name = name
        self.apply_mask = apply_mask
        self.apply_mask_inplace = apply_mask_inplace
        self.utf8_valid = utf8_valid
        self.validator = validator


PURE = Impl(
    "pure",
    _mask.apply_mask,
    pure_apply_mask_inplace,
    _utf8.utf8_valid,
    _utf8.Utf8Validator,
)
NATIVE = (
    Impl(
        "native",
        native.apply_mask,
        native.apply_mask_inplace,
        native.utf8_valid,
        native.Utf8Validator,
    )
    if native is not None
    else None
)


@pytest.fixture(
    params=[
        "native",
        "pure",
    ]
)
def impl(request: pytest.FixtureRequest) -> Impl:
    if request.param == "native":
        require_native()
        assert NATIVE is not None
        return NATIVE
    return PURE


def reference_mask(data: bytes, mask: bytes, phase: int = 0) -> bytes:
    return bytes(b ^ mask[(i + phase) % 4] for i, b in enumerate(data))


def pattern(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


MASK = b"\x37\xfa\x21\x3d"


# --------------------------------------------------------------------------
# apply_mask
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(81))
def test_mask_small_lengths(impl: Impl, n: int) -> None:
    data = pattern(n, n)
    out = impl.apply_mask(data, MASK)
    assert type(out) is bytes
    assert out == reference_mask(data, MASK)
    assert impl.apply_mask(out, MASK) == data


def test_mask_rfc6455_example(impl: Impl) -> None:
    # RFC 6455 section 5.7: a masked "Hello".
    masked = bytes.fromhex("7f9f4d5158")
    assert impl.apply_mask(masked, bytes.fromhex("37fa213d")) == b"Hello"


def test_mask_zero_key_is_identity(impl: Impl) -> None:
    data = pattern(1000)
    assert impl.apply_mask(data, b"\0\0\0\0") == data


@pytest.mark.parametrize("n", [64 * 1024 - 1, 64 * 1024, 1024 * 1024 + 3])
def test_mask_big(impl: Impl, n: int) -> None:
    data = pattern(n, 7)
    out = impl.apply_mask(data, MASK)
    assert len(out) == n
    # Spot-check against the obvious definition, and round-trip the rest.
    for i in (0, 1, 2, 3, 4, 31, 32, 33, n // 2, n - 33, n - 5, n - 4, n - 3, n - 2, n - 1):
        assert out[i] == data[i] ^ MASK[i % 4], i
    assert impl.apply_mask(out, MASK) == data
    whole_mask = (MASK * (n // 4 + 1))[:n]
    expected = int.from_bytes(data, "big") ^ int.from_bytes(whole_mask, "big")
    assert out == expected.to_bytes(n, "big")


@pytest.mark.parametrize("offset", range(16))
def test_mask_every_alignment(impl: Impl, offset: int) -> None:
    buf = pattern(16 + 300, offset)
    for n in (0, 1, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 300):
        view = memoryview(buf)[offset : offset + n]
        assert impl.apply_mask(view, MASK) == reference_mask(bytes(view), MASK), n


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "array"])
def test_mask_input_types(impl: Impl, kind: str) -> None:
    raw = pattern(133)
    data: Any
    if kind == "bytes":
        data = raw
    elif kind == "bytearray":
        data = bytearray(raw)
    elif kind == "memoryview":
        data = memoryview(bytearray(raw))
    else:
        data = array.array("B", raw)
    assert impl.apply_mask(data, MASK) == reference_mask(raw, MASK)
    assert impl.apply_mask(raw, bytearray(MASK)) == reference_mask(raw, MASK)


def test_mask_strided_memoryview(impl: Impl) -> None:
    raw = pattern(101)
    view = memoryview(raw)[::3]
    assert impl.apply_mask(view, MASK) == reference_mask(raw[::3], MASK)


def test_mask_does_not_modify_input(impl: Impl) -> None:
    data = bytearray(pattern(100))
    before = bytes(data)
    impl.apply_mask(data, MASK)
    assert data == before


@pytest.mark.parametrize("mask", [b"", b"\x01", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"])
def test_mask_bad_mask_length(impl: Impl, mask: bytes) -> None:
    with pytest.raises(ValueError):
        impl.apply_mask(b"abcdefgh", mask)


def test_mask_rejects_non_buffers(impl: Impl) -> None:
    with pytest.raises(TypeError):
        impl.apply_mask("text", MASK)


def test_mask_threads(impl: Impl) -> None:
    # Large inputs release the GIL in the native code; results must stay right.
    data = [pattern(1 << 18, seed) for seed in range(4)]
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = impl.apply_mask(data[i], MASK)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert impl.apply_mask(results[i], MASK) == data[i]


# --------------------------------------------------------------------------
# apply_mask_inplace
# --------------------------------------------------------------------------


def test_inplace_whole_buffer(impl: Impl) -> None:
    for n in range(81):
        raw = pattern(n, n)
        buf = bytearray(raw)
        assert impl.apply_mask_inplace(buf, MASK) is None
        assert buf == reference_mask(raw, MASK)


@pytest.mark.parametrize("mask_offset", [0, 1, 2, 3, 4, 5, 7, 1001, -1])
def test_inplace_region_and_phase(impl: Impl, mask_offset: int) -> None:
    raw = pattern(300, mask_offset & 0xFF)
    for offset in (0, 1, 2, 3, 5, 16, 17, 100):
        for length in (0, 1, 3, 4, 9, 64, 130, 200):
            buf = bytearray(raw)
            impl.apply_mask_inplace(buf, MASK, offset, length, mask_offset)
            expected = (
                raw[:offset]
                + reference_mask(raw[offset : offset + length], MASK, mask_offset % 4)
                + raw[offset + length :]
            )
            assert buf == expected, (offset, length)


def test_inplace_keywords_and_defaults(impl: Impl) -> None:
    raw = pattern(50)
    buf = bytearray(raw)
    impl.apply_mask_inplace(buf, MASK, offset=10)
    assert buf == raw[:10] + reference_mask(raw[10:], MASK)
    buf = bytearray(raw)
    impl.apply_mask_inplace(buf, mask=MASK, length=20, mask_offset=2)
    assert buf == reference_mask(raw[:20], MASK, 2) + raw[20:]
    buf = bytearray(raw)
    impl.apply_mask_inplace(buf, MASK, offset=50, length=-1)
    assert buf == raw


def test_inplace_chunked_equals_whole(impl: Impl) -> None:
    # A payload unmasked piece by piece, as an in-place parser would do it.
    raw = pattern(1000)
    whole = bytearray(raw)
    impl.apply_mask_inplace(whole, MASK)
    pieces = bytearray(raw)
    rng = random.Random(3)
    pos = 0
    while pos < len(pieces):
        step = rng.randint(0, 37)
        impl.apply_mask_inplace(pieces, MASK, pos, min(step, len(pieces) - pos), pos)
        pos += step
    assert pieces == whole


def test_inplace_big_and_memoryview(impl: Impl) -> None:
    raw = pattern(1 << 20, 9)
    buf = bytearray(raw)
    impl.apply_mask_inplace(memoryview(buf)[3:], MASK, mask_offset=1)
    assert buf[:3] == raw[:3]
    assert bytes(buf[3:]) == impl.apply_mask(raw[3:], MASK[1:] + MASK[:1])


@pytest.mark.parametrize(
    ("offset", "length"), [(-1, -1), (11, -1), (0, 11), (5, 6), (10, 1), (0, -2)]
)
def test_inplace_bad_range(impl: Impl, offset: int, length: int) -> None:
    buf = bytearray(10)
    with pytest.raises(ValueError):
        impl.apply_mask_inplace(buf, MASK, offset, length)
    assert buf == bytearray(10)


def test_inplace_bad_mask(impl: Impl) -> None:
    with pytest.raises(ValueError):
        impl.apply_mask_inplace(bytearray(10), b"abc")


@pytest.mark.parametrize("buf", [b"abcdefgh", memoryview(b"abcdefgh"), "abcdefgh"])
def test_inplace_rejects_read_only(impl: Impl, buf: Any) -> None:
    with pytest.raises(TypeError):
        impl.apply_mask_inplace(buf, MASK)


# --------------------------------------------------------------------------
# UTF-8 validation
# --------------------------------------------------------------------------

VALID = [
    b"",
    b"a",
    b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",  # κόσμε
    b"\x00",
    b"\x7f",
    b"\xc2\x80",  # U+0080, first 2-byte
    b"\xdf\xbf",  # U+07FF, last 2-byte
    b"\xe0\xa0\x80",  # U+0800, first 3-byte
    b"\xed\x9f\xbf",  # U+D7FF, just below the surrogates
    b"\xee\x80\x80",  # U+E000, just above the surrogates
    b"\xef\xbf\xbd",  # U+FFFD
    b"\xef\xbf\xbf",  # U+FFFF
    b"\xf0\x90\x80\x80",  # U+10000, first 4-byte
    b"\xf4\x8f\xbf\xbf",  # U+10FFFF, the last code point
    b"\xf0\x9f\x98\x80" * 10,  # emoji
    "\u00e9t\u00e9 \u4e2d\u6587 \U0001f600 ascii".encode() * 20,
]

INVALID = [
    b"\x80",  # lone continuation
    b"\xbf",
    b"\x80\xbf\x80",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",  # overlong
    b"\xe0\x80\x80",  # overlong
    b"\xe0\x9f\xbf",  # overlong U+07FF
    b"\xf0\x80\x80\x80",  # overlong
    b"\xf0\x8f\xbf\xbf",  # overlong U+FFFF
    b"\xf8\x88\x80\x80\x80",  # 5-byte form
    b"\xfc\x84\x80\x80\x80\x80",  # 6-byte form
    b"\xfe",
    b"\xff",
    b"\xfe\xfe\xff\xff",
    b"\xed\xa0\x80",  # U+D800
    b"\xed\xad\xbf",  # U+DB7F
    b"\xed\xb0\x80",  # U+DC00
    b"\xed\xbf\xbf",  # U+DFFF
    b"\xed\xa0\x80\xed\xb0\x80",  # surrogate pair
    b"\xf4\x90\x80\x80",  # U+110000
    b"\xf5\x80\x80\x80",
    b"\xf7\xbf\xbf\xbf",
    b"\xc2",  # truncated
    b"\xe0\xa0",
    b"\xe1",
    b"\xf0\x90\x80",
    b"\xf4\x8f\xbf",
    b"\xc2\x41",  # missing continuation
    b"\xe1\x80\x41",
    b"\xf1\x80\x80\x41",
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    b"a" * 100 + b"\xff" + b"a" * 100,
    b"a" * 1000 + b"\xc3",
]


@pytest.mark.parametrize("data", VALID)
def test_utf8_valid_corpus(impl: Impl, data: bytes) -> None:
    assert impl.utf8_valid(data) is True
    validator = impl.validator()
    assert validator.feed(data, final=True) is True


@pytest.mark.parametrize("data", INVALID)
def test_utf8_invalid_corpus(impl: Impl, data: bytes) -> None:
    assert impl.utf8_valid(data) is False
    validator = impl.validator()
    assert validator.feed(data, final=True) is False


@pytest.mark.parametrize(
    "data",
    [
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80",
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0",  # U+D800 prefix
        b"\xe0\x80",  # overlong prefix
        b"\xe0\x9f",
        b"\xf0\x80",
        b"\xf0\x8f",
        b"\xf4\x90",  # > U+10FFFF prefix
        b"\xf5",
        b"\xc0",
        b"\xc1",
        b"\xff",
        b"\x80",
        b"abc\xc2a",
    ],
)
def test_utf8_fail_fast(impl: Impl, data: bytes) -> None:
    validator = impl.validator()
    assert validator.feed(data, final=False) is False
    # Once failed, the validator stays failed, even on valid input.
    assert validator.feed(b"ok", final=False) is False
    assert validator.feed(b"ok", final=True) is False
    validator.reset()
    assert validator.feed(b"ok", final=True) is True


@pytest.mark.parametrize(
    "data", [b"\xc2", b"\xe0\xa0", b"\xed\x9f", b"\xf0\x90\x80", b"\xf4\x8f\xbf", b"ab\xe2\x82"]
)
def test_utf8_incomplete_is_ok_until_final(impl: Impl, data: bytes) -> None:
    validator = impl.validator()
    assert validator.feed(data, final=False) is True
    assert validator.feed(b"", final=False) is True
    assert validator.feed(b"", final=True) is False
    assert validator.feed(b"a", final=True) is False  # stays failed


def test_utf8_validator_reusable_after_final(impl: Impl) -> None:
    validator = impl.validator()
    assert validator.feed(b"\xe2\x82", final=False) is True
    assert validator.feed(b"\xac", final=True) is True  # U+20AC
    assert validator.feed(b"\xe2\x82\xac", final=True) is True
    validator.reset()
    assert validator.feed(b"\xe2", final=False) is True
    validator.reset()
    assert validator.feed(b"a", final=True) is True


def test_utf8_validator_keyword_and_default(impl: Impl) -> None:
    validator = impl.validator()
    assert validator.feed(b"\xc3") is True
    assert validator.feed(data=b"\xa9", final=True) is True


@pytest.mark.parametrize("data", VALID + INVALID)
def test_utf8_split_at_every_position(impl: Impl, data: bytes) -> None:
    expected = impl.utf8_valid(data)
    for cut in range(len(data) + 1):
        validator = impl.validator()
        ok = validator.feed(data[:cut], final=False)
        ok = validator.feed(data[cut:], final=True) and ok
        assert ok is expected, cut
    # Byte by byte: the first False must come exactly at the first bad byte.
    validator = impl.validator()
    results = [validator.feed(data[i : i + 1]) for i in range(len(data))]
    results.append(validator.feed(b"", final=True))
    assert results[-1] is expected
    if False in results:
        first_bad = results.index(False)
        assert all(results[:first_bad])
        assert not any(results[first_bad:])
        if first_bad < len(data):
            # Everything before the failing byte is a valid prefix...
            assert impl.validator().feed(data[:first_bad]) is True
            # ...and the codec's first error is at that byte: an invalid
            # start byte at `start`, or a bad continuation byte at `end`.
            with pytest.raises(UnicodeDecodeError) as info:
                data.decode()
            assert first_bad in (info.value.start, info.value.end)


@pytest.mark.parametrize("kind", ["bytearray", "memoryview", "strided", "offset"])
def test_utf8_input_types(impl: Impl, kind: str) -> None:
    text = "h\u00e9llo w\u00f6rld \u4e2d\u6587 \U0001f600".encode() * 5
    samples: list[tuple[Any, bool]]
    if kind == "bytearray":
        samples = [(bytearray(text), True), (bytearray(b"\xff"), False)]
    elif kind == "memoryview":
        samples = [(memoryview(text), True), (memoryview(text)[:-1], False)]
    elif kind == "strided":
        samples = [(memoryview(b"a\xffb\xffc")[::2], True), (memoryview(b"\xff")[::1], False)]
    else:
        padded = b"\x00" * 16 + text
        samples = [(memoryview(padded)[i:], True) for i in range(17)]
    for data, expected in samples:
        assert impl.utf8_valid(data) is expected
        assert impl.validator().feed(data, final=True) is expected


def test_utf8_rejects_non_buffers(impl: Impl) -> None:
    with pytest.raises(TypeError):
        impl.utf8_valid("text")
    with pytest.raises(TypeError):
        impl.validator().feed("text")


def test_utf8_big(impl: Impl) -> None:
    text = ("ascii only " * 10000).encode() + "\u00e9\u4e2d\U0001f600".encode() * 30000
    assert len(text) > 256 * 1024
    assert impl.utf8_valid(text) is True
    assert impl.utf8_valid(text + b"\xed\xa0\x80") is False
    assert impl.utf8_valid(text[:-1]) is False
    validator = impl.validator()
    assert validator.feed(text[: len(text) // 2 + 1]) is True
    assert validator.feed(text[len(text) // 2 + 1 :], final=True) is True


def test_utf8_all_two_byte_sequences(impl: Impl) -> None:
    for first in range(256):
        for second in range(256):
            data = bytes((first, second))
            try:
                data.decode()
                expected = True
            except UnicodeDecodeError:
                expected = False
            assert impl.utf8_valid(data) is expected, data


def test_utf8_three_and_four_byte_boundaries(impl: Impl) -> None:
    interesting = [
        0x00,
        0x41,
        0x7F,
        0x80,
        0x8F,
        0x90,
        0x9F,
        0xA0,
        0xBF,
        0xC0,
        0xC2,
        0xE0,
        0xF0,
        0xFF,
    ]
    for lead in range(0xC0, 0x100):
        tails = (b"", b"\x80", b"\x41") if lead >= 0xF0 else (b"",)
        for second in [0x00, 0x41, 0x7F, *range(0x80, 0x100)]:
            for third in interesting:
                for tail in tails:
                    data = bytes((lead, second, third)) + tail
                    try:
                        data.decode()
                        expected = True
                    except UnicodeDecodeError:
                        expected = False
                    assert impl.utf8_valid(data) is expected, data


def _decodes(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


# 0x80, 0x90 and 0xA0 hit every restricted range of a first continuation byte
# (80..8F after F4, 80..9F after ED, 90..BF after F0, A0..BF after E0).
_COMPLETIONS = [bytes(t) for n in range(4) for t in itertools.product((0x80, 0x90, 0xA0), repeat=n)]


def _is_valid_prefix(data: bytes) -> bool:
    """Oracle: ``data`` can be extended into valid UTF-8."""
    return any(_decodes(data + tail) for tail in _COMPLETIONS)


@functools.cache
def _prefix_cases() -> list[tuple[bytes, bool]]:
    cases = [bytes((a, b)) for a in range(0xC0, 0x100) for b in range(256)]
    cases += [bytes((a, b)) for a in range(0x80, 0xC0) for b in (0x41, 0x80, 0xC2)]
    cases += [
        bytes((a, b, c))
        for a in range(0xE0, 0xF8)
        for b in range(0x80, 0xC0)
        for c in (0x00, 0x7F, 0x80, 0x8F, 0x90, 0xBF, 0xC0, 0xFF)
    ]
    return [(data, _is_valid_prefix(data)) for data in cases]


def test_utf8_fail_fast_exhaustive(impl: Impl) -> None:
    validator = impl.validator()
    for data, expected in _prefix_cases():
        validator.reset()
        assert validator.feed(data, final=False) is expected, data
        # The same answer when the prefix arrives after valid text.
        validator.reset()
        validator.feed(b"ok \xc3\xa9 ")
        assert validator.feed(data) is expected, data


def _random_utf8_ish(rng: random.Random) -> bytes:
    """Mostly-valid text with random corruption, so both outcomes are common."""
    pieces: list[bytes] = []
    for _ in range(rng.randint(0, 40)):
        roll = rng.random()
        if roll < 0.35:
            pieces.append(bytes(rng.randint(0x20, 0x7E) for _ in range(rng.randint(1, 20))))
        elif roll < 0.85:
            cp = rng.choice(
                [
                    rng.randint(0x80, 0x7FF),
                    rng.randint(0x800, 0xD7FF),
                    rng.randint(0xE000, 0xFFFF),
                    rng.randint(0x10000, 0x10FFFF),
                ]
            )
            pieces.append(chr(cp).encode())
        else:
            pieces.append(bytes(rng.randint(0x80, 0xFF) for _ in range(rng.randint(1, 3))))
    data = b"".join(pieces)
    if data and rng.random() < 0.2:
        data = data[: rng.randint(0, len(data))]  # truncate anywhere
    return data


def test_utf8_random_cross_check(impl: Impl) -> None:
    rng = random.Random(6455)
    counts = {True: 0, False: 0}
    for i in range(4000):
        # One in four is pure noise, the rest is corrupted text.
        data = rng.randbytes(rng.randint(0, 12)) if i % 4 == 0 else _random_utf8_ish(rng)
        expected = _decodes(data)
        counts[expected] += 1
        assert impl.utf8_valid(data) is expected, data
        cut = rng.randint(0, len(data))
        validator = impl.validator()
        ok = validator.feed(data[:cut])
        ok = validator.feed(data[cut:], final=True) and ok
        assert ok is expected, (data, cut)
    assert counts[True] > 500
    assert counts[False] > 500


# --------------------------------------------------------------------------
# Native-only details
# --------------------------------------------------------------------------


@needs_native
def test_native_module_surface() -> None:
    assert native is not None
    assert native.KERNEL in {"avx2", "sse2", "neon", "portable"}
    with pytest.raises(TypeError):
        native.Utf8Validator(1)
    with pytest.raises(TypeError):
        native.apply_mask(b"abcd")
    with pytest.raises(TypeError):
        native.apply_mask(b"abcd", MASK, b"extra")
    with pytest.raises(TypeError):
        native.apply_mask(b"abcd", MASK, bogus=1)
    with pytest.raises(TypeError):
        native.apply_mask(b"abcd", MASK, mask=MASK)
    assert native.apply_mask(data=b"abcd", mask=b"\0\0\0\1") == b"abce"
    with pytest.raises(TypeError):
        native.apply_mask_inplace(bytearray(4), MASK, "1")
    with pytest.raises(OverflowError):
        native.apply_mask_inplace(bytearray(4), MASK, 0, -1, 1 << 80)


@needs_native
def test_native_is_what_tether_uses() -> None:
    import os

    from tether import _native

    if os.environ.get("TETHER_NO_SPEEDUPS"):
        assert _native.USING_SPEEDUPS is False
    else:
        assert _native.USING_SPEEDUPS is True
        assert native is not None
        assert _native.apply_mask is native.apply_mask
