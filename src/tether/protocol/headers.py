"""HTTP header containers and the WebSocket-specific header grammars.

RFC 6455 §9.1 and RFC 7230 §3.2.6 define Sec-WebSocket-Extensions as a list of
``token *( ";" token [ "=" (token / quoted-string) ] )``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Mapping

from tether.protocol.exceptions import InvalidHeader

ExtensionParams = list[tuple[str, str | None]]
ExtensionHeader = list[tuple[str, ExtensionParams]]


class Headers:
    """Case-insensitive, ordered, multi-valued HTTP headers."""

    __slots__ = ("_items",)

    def __init__(
        self, items: Iterable[tuple[str, str]] | Mapping[str, str] | Headers | None = None
    ) -> None:
        self._items: list[tuple[str, str]] = []
        if items is None:
            return
        if isinstance(items, Headers):
            self._items = list(items._items)
        elif isinstance(items, Mapping):
            self._items = [(str(k), str(v)) for k, v in items.items()]
        else:
            self._items = [(str(k), str(v)) for k, v in items]

    def __getitem__(self, name: str) -> str:
        values = self.get_all(name)
        if not values:
            raise KeyError(name)
        if len(values) > 1:
            raise KeyError(f"multiple values for {name}")
        return values[0]

    def __setitem__(self, name: str, value: str) -> None:
        self._items.append((name, value))

    def __delitem__(self, name: str) -> None:
        lname = name.lower()
        self._items = [(k, v) for k, v in self._items if k.lower() != lname]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        lname = name.lower()
        return any(k.lower() == lname for k, _ in self._items)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.get_all(name)
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self._items if k.lower() == lname]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def update(self, other: Iterable[tuple[str, str]] | Mapping[str, str] | Headers) -> None:
        self._items.extend(Headers(other)._items)

    def serialize(self) -> bytes:
        for name, value in self._items:
            # A CR or LF would end the header early and let a value inject
            # headers of its own (response splitting).
            if any(c in name or c in value for c in "\r\n\x00"):
                raise ValueError(f"invalid character in header {name!r}")
        return "".join(f"{k}: {v}\r\n" for k, v in self._items).encode("latin-1")


HeadersLike = Headers | Mapping[str, str] | Iterable[tuple[str, str]]


def build_authorization_basic(username: str, password: str) -> str:
    """The value of an ``Authorization`` (or ``Proxy-Authorization``) header for Basic auth.

    RFC 7617 §2: base64 of ``user-id ":" password``, UTF-8 encoded (§2.1);
    a user-id with a colon cannot be represented.
    """
    if ":" in username:
        raise ValueError("a Basic auth username cannot contain a colon (RFC 7617 §2)")
    credentials = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(credentials).decode("ascii")


_TOKEN_RE = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_QUOTED_RE = re.compile(r'"(?:[\x09\x20-\x21\x23-\x5b\x5d-\x7e]|\\[\x09\x20-\x7e\x80-\xff])*"')
_OWS_RE = re.compile(r"[\t ]*")


def _skip_ows(text: str, pos: int) -> int:
    match = _OWS_RE.match(text, pos)
    assert match is not None
    return match.end()


def _token(text: str, pos: int, name: str) -> tuple[str, int]:
    match = _TOKEN_RE.match(text, pos)
    if match is None:
        raise InvalidHeader(name, f"expected token at {pos} in {text!r}")
    return match.group(), match.end()


def _token_or_quoted(text: str, pos: int, name: str) -> tuple[str, int]:
    if text.startswith('"', pos):
        match = _QUOTED_RE.match(text, pos)
        if match is None:
            raise InvalidHeader(name, f"bad quoted string at {pos} in {text!r}")
        value = re.sub(r"\\(.)", r"\1", match.group()[1:-1])
        # RFC 6455 §9.1: a quoted value must still conform to the token ABNF.
        if _TOKEN_RE.fullmatch(value) is None:
            raise InvalidHeader(name, f"quoted value is not a token: {value!r}")
        return value, match.end()
    return _token(text, pos, name)


def _comma_list(values: Iterable[str]) -> Iterator[str]:
    for value in values:
        for item in value.split(","):
            item = item.strip(" \t")
            if item:
                yield item


def parse_extension_header(values: Iterable[str]) -> ExtensionHeader:
    """Parse every Sec-WebSocket-Extensions header value into (name, params) offers."""
    name = "Sec-WebSocket-Extensions"
    result: ExtensionHeader = []
    joined = ",".join(values)
    pos = 0
    text = joined
    while pos < len(text):
        pos = _skip_ows(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos >= len(text):
            break
        ext_name, pos = _token(text, pos, name)
        params: ExtensionParams = []
        pos = _skip_ows(text, pos)
        while pos < len(text) and text[pos] == ";":
            pos = _skip_ows(text, pos + 1)
            param, pos = _token(text, pos, name)
            pos = _skip_ows(text, pos)
            value: str | None = None
            if pos < len(text) and text[pos] == "=":
                pos = _skip_ows(text, pos + 1)
                value, pos = _token_or_quoted(text, pos, name)
                pos = _skip_ows(text, pos)
            params.append((param, value))
        if pos < len(text) and text[pos] != ",":
            raise InvalidHeader(name, f"unexpected {text[pos]!r} at {pos} in {text!r}")
        result.append((ext_name, params))
    return result


def build_extension_header(extensions: ExtensionHeader) -> str:
    parts = []
    for ext_name, params in extensions:
        items = [ext_name] + [p if v is None else f"{p}={v}" for p, v in params]
        parts.append("; ".join(items))
    return ", ".join(parts)


def parse_token_list(values: Iterable[str], name: str) -> list[str]:
    """Parse comma-separated tokens (Connection, Upgrade, Sec-WebSocket-Protocol)."""
    tokens = []
    for item in _comma_list(values):
        if _TOKEN_RE.fullmatch(item) is None and name != "Upgrade":
            raise InvalidHeader(name, f"invalid token {item!r}")
        tokens.append(item)
    return tokens
