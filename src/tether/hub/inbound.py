"""Where an inbound string becomes something the hub can store and send.

JSON lets a client write a lone UTF-16 surrogate as an escape (``"\\ud800"``).
Python decodes it into a ``str`` that cannot be encoded as UTF-8, so it fails
later, wherever the hub first encodes it: in a token check, in a history
store after the publication was stored, in every reply that echoes it. The
hub refuses such strings here, once, when a command or an API body arrives:
a token that holds one is not a valid token (101), any other parameter is a
bad request (118, ``invalid string``).

Text that arrives as UTF-8 (WebSocket text frames are validated, API bodies
are decoded strictly) holds no surrogates; only ``\\uD800``-``\\uDFFF``
escapes can make them, so the value is walked only when the raw text holds
such an escape.
"""

from __future__ import annotations

import re

from tether.hub.errors import ErrorCode, HubError
from tether.hub.model import JSON

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Parameters that carry credentials: a bad one is an authentication failure.
_CREDENTIALS = frozenset({"token"})


def may_hold_surrogates(text: str) -> bool:
    """Whether decoding ``text`` can produce a lone surrogate (a cheap pre-check)."""
    return _SURROGATE_ESCAPE.search(text) is not None


def is_valid_text(value: str) -> bool:
    """``value`` encodes as UTF-8 (it holds no surrogate code point)."""
    return _SURROGATE.search(value) is None


def find_invalid_string(value: JSON, path: str = "") -> str | None:
    """The path (``data.list[2]``) of the first string or key that is not valid Unicode."""
    if isinstance(value, str):
        return None if is_valid_text(value) else path or "value"
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = find_invalid_string(item, f"{path}[{i}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if not is_valid_text(key):
                return f"{path}.<key>" if path else "<key>"
            found = find_invalid_string(item, where)
            if found is not None:
                return found
    return None


def check_params(text: str, params: dict[str, JSON]) -> HubError | None:
    """The error for ``params`` decoded from ``text`` if a string in them is not Unicode."""
    if not may_hold_surrogates(text):
        return None
    path = find_invalid_string(params)
    if path is None:
        return None
    # repr() of the path: it is not valid Unicode either, and it goes in a reply.
    where = ascii(path)
    if path.partition(".")[0].partition("[")[0] in _CREDENTIALS:
        return HubError(ErrorCode.UNAUTHORIZED, f"{where} is not valid Unicode")
    return HubError(
        ErrorCode.INVALID_STRING, f"{where} holds a lone surrogate: strings must be valid Unicode"
    )
