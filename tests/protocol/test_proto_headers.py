"""Headers container and the Sec-WebSocket-* header grammars."""

from __future__ import annotations

import pytest

from tether.protocol import Headers, InvalidHeader
from tether.protocol.headers import (
    MultipleValuesError,
    build_extension_header,
    parse_extension_header,
    parse_token_list,
)


def test_headers_case_insensitive_lookup() -> None:
    h = Headers([("Content-Type", "text/plain")])
    assert h["content-type"] == "text/plain"
    assert h["CONTENT-TYPE"] == "text/plain"
    assert h.get("cOnTeNt-TyPe") == "text/plain"
    assert "content-type" in h
    assert "Content-Length" not in h
    assert 42 not in h


def test_headers_multi_values_keep_order() -> None:
    h = Headers()
    h["Set-Cookie"] = "a=1"
    h["X-Other"] = "x"
    h["set-cookie"] = "b=2"
    assert h.get_all("SET-COOKIE") == ["a=1", "b=2"]
    assert h.get("Set-Cookie") == "a=1"
    # A mapping of distinct lower-cased names, as websockets' Headers.
    assert len(h) == 2
    assert list(h) == ["set-cookie", "x-other"]
    assert list(h.raw_items()) == [("Set-Cookie", "a=1"), ("X-Other", "x"), ("set-cookie", "b=2")]
    assert h.line_count == 3
    with pytest.raises(MultipleValuesError, match="Set-Cookie"):
        h["Set-Cookie"]
    assert issubclass(MultipleValuesError, LookupError)


def test_headers_missing() -> None:
    h = Headers()
    with pytest.raises(KeyError):
        h["Host"]
    assert h.get("Host") is None
    assert h.get("Host", "default") == "default"
    assert h.get_all("Host") == []


def test_headers_delete_all_values_case_insensitively() -> None:
    h = Headers([("A", "1"), ("b", "2"), ("a", "3")])
    del h["A"]
    assert list(h.raw_items()) == [("b", "2")]
    with pytest.raises(KeyError):
        del h["missing"]
    assert len(h) == 1


def test_headers_constructors_and_equality() -> None:
    from_pairs = Headers([("A", "1"), ("B", "2")])
    from_mapping = Headers({"A": "1", "B": "2"})
    copy = Headers(from_pairs)
    assert from_pairs == from_mapping == copy == Headers(A="1", B="2")
    # Equal as multi-dicts: names compare case-insensitively, order of names does not count.
    assert from_pairs == Headers([("b", "2"), ("a", "1")])
    assert from_pairs != Headers([("A", "2"), ("B", "1")])
    assert from_pairs != {"A": "1", "B": "2"}
    assert dict(from_pairs) == {"a": "1", "b": "2"}
    copy["C"] = "3"
    assert len(from_pairs) == 2  # the copy does not share its list
    assert "Headers(" in repr(from_pairs)


def test_headers_update_appends() -> None:
    h = Headers([("A", "1")])
    h.update({"a": "2"})
    h.update([("B", "3")])
    h.update(Headers([("C", "4")]))
    assert h.get_all("A") == ["1", "2"]
    assert list(h.raw_items()) == [("A", "1"), ("a", "2"), ("B", "3"), ("C", "4")]


def test_headers_get_all_is_a_copy() -> None:
    h = Headers([("A", "1")])
    values = h.get_all("a")
    values.append("2")
    assert h.get_all("A") == ["1"]
    copy = h.copy()
    copy["A"] = "3"
    assert h.get_all("A") == ["1"]
    h.clear()
    assert len(h) == 0
    assert copy.get_all("a") == ["1", "3"]


def test_headers_serialize() -> None:
    h = Headers([("Host", "example.com"), ("X-Latin", "caf\xe9")])
    assert h.serialize() == b"Host: example.com\r\nX-Latin: caf\xe9\r\n\r\n"
    assert str(h) == "Host: example.com\r\nX-Latin: caf\xe9\r\n\r\n"
    assert Headers().serialize() == b"\r\n"


# ---------------------------------------------------------------- extensions


def test_parse_extension_header_empty() -> None:
    assert parse_extension_header([]) == []
    assert parse_extension_header([""]) == []
    assert parse_extension_header([" , ,, "]) == []


def test_parse_extension_header_single() -> None:
    assert parse_extension_header(["permessage-deflate"]) == [("permessage-deflate", [])]


def test_parse_extension_header_multiple_offers_and_values() -> None:
    values = [
        "permessage-deflate; client_max_window_bits; server_max_window_bits=10",
        "permessage-deflate, x-webkit-deflate-frame",
    ]
    assert parse_extension_header(values) == [
        (
            "permessage-deflate",
            [("client_max_window_bits", None), ("server_max_window_bits", "10")],
        ),
        ("permessage-deflate", []),
        ("x-webkit-deflate-frame", []),
    ]


def test_parse_extension_header_whitespace_everywhere() -> None:
    text = '\t a \t;\tb \t= \t1 ; c ,\t d ; e = "2"\t'
    assert parse_extension_header([text]) == [
        ("a", [("b", "1"), ("c", None)]),
        ("d", [("e", "2")]),
    ]


def test_parse_extension_header_quoted_values() -> None:
    assert parse_extension_header(['x; a="15"; b="tok-en"']) == [
        ("x", [("a", "15"), ("b", "tok-en")])
    ]
    # A quoted-pair unescapes to the character it protects.
    assert parse_extension_header(['x; a="1\\5"']) == [("x", [("a", "15")])]


@pytest.mark.parametrize(
    "value",
    [
        ";",
        "a;",
        "a; =1",
        "a; b=",
        "a; b=;",
        "a b",
        "a; b c",
        "a; b=1 2",
        "a; b=@",
        'a; b="1',  # unterminated
        'a; b=""',  # empty: not a token
        'a; b="1 2"',  # space: not a token
        'a; b="x,y"',
        "a=1",
        "\u00e9",
        "(a)",
    ],
)
def test_parse_extension_header_malformed(value: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        parse_extension_header([value])
    assert info.value.name == "Sec-WebSocket-Extensions"


def test_build_extension_header_roundtrip() -> None:
    offers = [
        (
            "permessage-deflate",
            [("client_max_window_bits", None), ("server_max_window_bits", "10")],
        ),
        ("x-foo", []),
    ]
    text = build_extension_header(offers)
    assert text == ("permessage-deflate; client_max_window_bits; server_max_window_bits=10, x-foo")
    assert parse_extension_header([text]) == offers
    assert build_extension_header([]) == ""


# --------------------------------------------------------------- token lists


def test_parse_token_list() -> None:
    assert parse_token_list(["keep-alive, Upgrade"], "Connection") == ["keep-alive", "Upgrade"]
    assert parse_token_list(["a", "b ,c", " , ,d,"], "Connection") == ["a", "b", "c", "d"]
    assert parse_token_list([], "Connection") == []
    assert parse_token_list(["", " "], "Connection") == []


def test_parse_token_list_rejects_non_tokens() -> None:
    with pytest.raises(InvalidHeader) as info:
        parse_token_list(["chat, super chat"], "Sec-WebSocket-Protocol")
    assert info.value.name == "Sec-WebSocket-Protocol"
    with pytest.raises(InvalidHeader):
        parse_token_list(['"quoted"'], "Connection")


def test_parse_token_list_upgrade_allows_product_versions() -> None:
    # Upgrade carries protocol names such as "HTTP/2.0" (RFC 7230 §6.7).
    assert parse_token_list(["websocket, HTTP/2.0"], "Upgrade") == ["websocket", "HTTP/2.0"]
