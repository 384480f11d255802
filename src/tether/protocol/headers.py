"""HTTP header containers and the WebSocket-specific header grammars.

RFC 6455 §9.1 and RFC 7230 §3.2.6 define Sec-WebSocket-Extensions as a list of
``token *( ";" token [ "=" (token / quoted-string) ] )``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping

from tether.protocol.exceptions import InvalidHeader

ExtensionParams = list[tuple[str, str | None]]
ExtensionHeader = list[tuple[str, ExtensionParams]]


class MultipleValuesError(LookupError):
    """``headers[name]`` found more than one value; use ``get_all(name)``."""

    def __str__(self) -> str:
        return repr(self.args[0]) if len(self.args) == 1 else super().__str__()


class Headers(MutableMapping[str, str]):
    """Case-insensitive, ordered, multi-valued HTTP headers; a ``MutableMapping``.

    As in websockets: ``headers[name]`` returns the only value (``KeyError``
    if none, :class:`MultipleValuesError` if several); ``headers[name] =
    value`` *adds* a value; ``del headers[name]`` removes every value;
    iterating yields each name once, lower-cased, so ``dict(headers)`` works;
    :meth:`get_all` and :meth:`raw_items` see every value with its name as it
    came. tether's :meth:`get` returns the first of several values instead of
    raising.
    """

    __slots__ = ("_dict", "_list")

    def __init__(self, *args: HeadersLike, **kwargs: str) -> None:
        self._dict: dict[str, list[str]] = {}
        self._list: list[tuple[str, str]] = []
        self.update(*args, **kwargs)

    def __str__(self) -> str:
        return "".join(f"{k}: {v}\r\n" for k, v in self._list) + "\r\n"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._list!r})"

    def copy(self) -> Headers:
        other = type(self)()
        other._dict = {k: list(v) for k, v in self._dict.items()}
        other._list = list(self._list)
        return other

    def serialize(self) -> bytes:
        """The header lines and the blank line that ends them, as ISO-8859-1 bytes."""
        for name, value in self._list:
            # A CR or LF would end the header early and let a value inject
            # headers of its own (response splitting).
            if any(c in name or c in value for c in "\r\n\x00"):
                raise ValueError(f"invalid character in header {name!r}")
        return str(self).encode("latin-1")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._dict

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict)

    def __len__(self) -> int:
        return len(self._dict)

    def __getitem__(self, key: str) -> str:
        values = self._dict[key.lower()]
        if len(values) == 1:
            return values[0]
        raise MultipleValuesError(key)

    def __setitem__(self, key: str, value: str) -> None:
        self._dict.setdefault(key.lower(), []).append(value)
        self._list.append((key, value))

    def __delitem__(self, key: str) -> None:
        lname = key.lower()
        del self._dict[lname]
        self._list = [(k, v) for k, v in self._list if k.lower() != lname]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._dict == other._dict

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def clear(self) -> None:
        self._dict = {}
        self._list = []

    def update(self, *args: HeadersLike, **kwargs: str) -> None:  # type: ignore[override]
        """Add every header of each argument (Headers, mapping or pairs) and of ``kwargs``."""
        for arg in args:
            if isinstance(arg, Headers):
                pairs: Iterable[tuple[str, str]] = arg._list
            elif isinstance(arg, Mapping) or hasattr(arg, "keys"):
                pairs = [(k, arg[k]) for k in arg.keys()]  # type: ignore[index]  # noqa: SIM118
            else:
                pairs = arg
            for name, value in pairs:
                self[str(name)] = str(value)
        for name, value in kwargs.items():
            self[name] = value

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """The first value of ``key``, or ``default``."""
        values = self._dict.get(key.lower())
        return values[0] if values else default

    def get_all(self, key: str) -> list[str]:
        """Every value of ``key``, in order (an empty list if none)."""
        return list(self._dict.get(key.lower(), ()))

    def raw_items(self) -> Iterator[tuple[str, str]]:
        """Every ``(name, value)``, names as they were given, in order."""
        return iter(self._list)

    def set_insecure(self, key: str, value: str) -> None:
        """Add a header without validating it (websockets' name; tether checks on serialize)."""
        self[key] = value

    @property
    def line_count(self) -> int:
        """How many header lines (``len()`` counts distinct names)."""
        return len(self._list)


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
