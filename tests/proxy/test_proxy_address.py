"""tether.proxy without I/O: proxy URLs, the environment's choice, CONNECT and its answer."""

from __future__ import annotations

import base64
import sys

import pytest

from tether._extras import MissingDependency
from tether.protocol.client import parse_uri
from tether.protocol.exceptions import InvalidProxy, InvalidProxyMessage, InvalidProxyStatus
from tether.proxy import Proxy, get_proxy, open_tunnel_sync, parse_proxy
from tether.proxy.http_connect import ConnectResponseReader, connect_request


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://proxy", Proxy("http", "proxy", 80)),
        ("https://proxy", Proxy("https", "proxy", 443)),
        ("http://PROXY.example:3128/", Proxy("http", "proxy.example", 3128)),
        ("socks5h://p:1081", Proxy("socks5h", "p", 1081)),
        ("socks5://p", Proxy("socks5", "p", 1080)),
        ("socks4a://p", Proxy("socks4a", "p", 1080)),
        ("socks4://[::1]:9050", Proxy("socks4", "::1", 9050)),
        ("http://us%40er:p%3Ass@p:8080", Proxy("http", "p", 8080, "us@er", "p:ss")),
        ("http://bücher.example", Proxy("http", "xn--bcher-kva.example", 80)),
    ],
)
def test_parse_proxy(url: str, expected: Proxy) -> None:
    assert parse_proxy(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://p", "not supported"),
        ("p:3128", "not supported"),
        ("http://", "no host"),
        ("http://p/path", "no path"),
        ("http://p/?q=1", "no path"),
        ("http://user@p", "without a password"),
        ("http://p:99999", "Port"),
        ("http://u:%ff@p", "UTF-8"),
    ],
)
def test_parse_proxy_errors(url: str, message: str) -> None:
    with pytest.raises(InvalidProxy, match=message) as caught:
        parse_proxy(url)
    assert caught.value.proxy == url


def test_proxy_repr_hides_the_password() -> None:
    text = repr(parse_proxy("http://alice:topsecret@p:1"))
    assert "topsecret" not in text
    assert "alice" in text


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Set proxy variables on a clean slate (conftest removed the machine's)."""

    def set_(**variables: str) -> None:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    return set_


@pytest.mark.parametrize(
    ("variables", "ws", "wss"),
    [
        ({}, None, None),
        ({"http_proxy": "http://h:1"}, "http://h:1", None),
        ({"https_proxy": "http://s:1", "http_proxy": "http://h:1"}, "http://s:1", "http://s:1"),
        ({"all_proxy": "socks5://a:1"}, "socks5://a:1", "socks5://a:1"),
        ({"socks_proxy": "k:1080", "https_proxy": "http://s:1"}, "socks5h://k:1080", "socks5h://k:1080"),
        ({"socks_proxy": "http://k:1080"}, "socks5h://k:1080", "socks5h://k:1080"),
        ({"ws_proxy": "http://w:1", "wss_proxy": "http://x:1", "https_proxy": "http://s:1"},
         "http://w:1", "http://x:1"),
        ({"HTTPS_PROXY": "http://upper:1"}, "http://upper:1", "http://upper:1"),
    ],
)  # fmt: skip
def test_get_proxy_order(environment, variables, ws, wss) -> None:  # type: ignore[no-untyped-def]
    environment(**variables)
    assert get_proxy(parse_uri("ws://server.example/")) == ws
    assert get_proxy(parse_uri("wss://server.example/")) == wss


@pytest.mark.parametrize(
    ("no_proxy", "bypassed"),
    [
        ("*", True),
        ("server.example", True),
        (".example", True),
        ("example", True),  # a suffix of the domain
        ("other.example,server.example", True),
        ("server.example:8000", True),
        ("server.example:9000", False),
        ("other.example", False),
        ("", False),
    ],
)
def test_get_proxy_no_proxy(environment, no_proxy: str, bypassed: bool) -> None:  # type: ignore[no-untyped-def]
    environment(https_proxy="http://s:1", NO_PROXY=no_proxy)
    chosen = get_proxy(parse_uri("ws://server.example:8000/"))
    assert chosen == (None if bypassed else "http://s:1")


def test_connect_request() -> None:
    request = connect_request(parse_proxy("http://a%20b:c@p"), "server.example", 443, "tether")
    assert request == (
        b"CONNECT server.example:443 HTTP/1.1\r\n"
        b"Host: server.example:443\r\n"
        b"User-Agent: tether\r\n"
        b"Proxy-Authorization: Basic " + base64.b64encode(b"a b:c") + b"\r\n\r\n"
    )
    ipv6 = connect_request(parse_proxy("http://p"), "::1", 80, None)
    assert ipv6 == b"CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"
    with pytest.raises(ValueError, match="invalid character"):
        connect_request(parse_proxy("http://p"), "h", 80, "agent\r\nX-Injected: 1")


def test_reader_accepts_a_2xx_fed_byte_by_byte() -> None:
    reader = ConnectResponseReader()
    answer = b"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\n\r\n"
    results = [reader.feed(answer[i : i + 1]) for i in range(len(answer))]
    assert results == [False] * (len(answer) - 1) + [True]
    assert reader.response is not None and reader.response.status_code == 200
    reader.feed_eof()  # after the answer, EOF is the server's business, not an error


def test_reader_refusals_and_garbage() -> None:
    with pytest.raises(InvalidProxyStatus) as refused:
        ConnectResponseReader().feed(b"HTTP/1.0 407 Auth\r\nProxy-Authenticate: Basic\r\n\r\n")
    assert refused.value.response.status_code == 407
    for garbage in (b"HTTP/2 200\r\n\r\n", b"ICY 200 OK\r\n\r\n", b"HTTP/1.1 20 OK\r\n\r\n"):
        with pytest.raises(InvalidProxyMessage, match="status line"):
            ConnectResponseReader().feed(garbage)
    cut = ConnectResponseReader()
    assert cut.feed(b"HTTP/1.1 200 OK\r\n") is False
    with pytest.raises(InvalidProxyMessage, match="closed"):
        cut.feed_eof()


def test_socks_without_python_socks_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "python_socks", None)  # as if not installed
    with pytest.raises(MissingDependency, match=r"tether\[socks\]"):
        open_tunnel_sync("socks5h://127.0.0.1:1080", "h", 80, timeout=1)


def test_a_bare_address_in_the_environment_is_http(environment) -> None:  # type: ignore[no-untyped-def]
    environment(https_proxy="proxy.corp:3128")
    assert get_proxy(parse_uri("wss://server.example/")) == "http://proxy.corp:3128"
