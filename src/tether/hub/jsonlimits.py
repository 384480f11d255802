"""The hub's one JSON decoder: strict, UTF-8 only, and bounded in nesting.

``json.loads`` recurses once per ``[`` or ``{``: 100 KB of ``[`` (well under
every size limit) raises RecursionError deep inside the decoder, which the
WebSocket layer turns into 1011 and the HTTP API into a 500 with a traceback.
Every inbound JSON text of the hub (WebSocket commands, HTTP API bodies) goes
through :func:`loads` here, which measures the nesting *before* decoding, in
time linear in the text, and refuses more than :data:`MAX_DEPTH` levels with
:class:`JSONTooDeep` (a ``ValueError``, like every other malformed input).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import NoReturn

from tether.hub.model import JSON

MAX_DEPTH = 64
"""Arrays and objects nested deeper than this are refused (documented in docs/hub.md)."""

# A JSON string, escapes included (the "unrolled loop" form: linear, no backtracking).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}


class JSONTooDeep(ValueError):
    """The text nests arrays and objects deeper than :data:`MAX_DEPTH`."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (exact for valid JSON).

    Brackets inside strings do not count: strings are cut out first. For
    invalid JSON the answer may be anything, but the decoder refuses it anyway.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # cannot be too deep: skip the scan for ordinary messages
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_DELTA.__getitem__, brackets)), default=0)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes) -> JSON:
    """Strict JSON (no NaN/Infinity), UTF-8 only, at most :data:`MAX_DEPTH` levels deep.

    Raises ValueError (:class:`JSONTooDeep`, ``json.JSONDecodeError`` or
    ``UnicodeDecodeError``) for anything else. Bytes must be UTF-8 (RFC 8259
    section 8.1): ``json.loads`` would also accept UTF-16/32 and encoded
    surrogates, which no other peer of the hub can read back.
    """
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise JSONTooDeep(f"nested {depth} levels deep (at most {MAX_DEPTH})")
    try:
        value: JSON = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:  # pragma: no cover - the depth scan refuses these first
        raise JSONTooDeep(f"nested too deeply (at most {MAX_DEPTH})") from None
    return value
