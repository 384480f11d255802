"""tether.uvicorn.scope: the ASGI scope built from a parsed upgrade request."""

from __future__ import annotations

import asyncio
from typing import Any

from tether.protocol import Headers, Request
from tether.uvicorn.scope import build_scope, log_target


class FakeTransport(asyncio.Transport):
    def __init__(self, extra: dict[str, Any]) -> None:
        super().__init__()
        self.extra = extra

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)


def request(path: str, *headers: tuple[str, str]) -> Request:
    return Request(path, Headers([("Host", "example.com"), *headers]))


def test_ipv6_addresses_keep_host_and_port() -> None:
    transport = FakeTransport({"peername": ("::1", 50000, 0, 0), "sockname": ("::1", 8000, 0, 0)})
    scope = build_scope(
        request("/"), transport=transport, root_path="", asgi_version="3.0", app_state={}
    )
    assert scope["client"] == ("::1", 50000)
    assert scope["server"] == ("::1", 8000)
    assert scope["scheme"] == "ws"


def test_unix_socket_has_no_addresses_and_tls_is_wss() -> None:
    transport = FakeTransport({"peername": "", "sockname": "/tmp/sock", "sslcontext": object()})
    scope = build_scope(
        request("/a%20b?x=%41"),
        transport=transport,
        root_path="/mount",
        asgi_version="3.0",
        app_state={"k": 1},
    )
    assert scope["client"] is None and scope["server"] is None
    assert scope["scheme"] == "wss"
    assert scope["path"] == "/mount/a b"
    assert scope["raw_path"] == b"/mount/a%20b"
    assert scope["query_string"] == b"x=%41"
    assert scope["state"] == {"k": 1}


def test_headers_lowercased_and_subprotocols_split() -> None:
    state: dict[str, Any] = {"shared": []}
    scope = build_scope(
        request("/", ("Sec-WebSocket-Protocol", "a, b"), ("Sec-WebSocket-Protocol", "c")),
        transport=FakeTransport({}),
        root_path="",
        asgi_version="3.0",
        app_state=state,
    )
    assert scope["subprotocols"] == ["a", "b", "c"]
    assert (b"sec-websocket-protocol", b"a, b") in scope["headers"]
    assert (b"host", b"example.com") in scope["headers"]
    # A copy per connection: an app writing to it does not change the lifespan state.
    scope["state"]["new"] = 1
    assert "new" not in state


def test_log_target_quotes_the_path_and_adds_the_query() -> None:
    scope = {"client": ("10.0.0.1", 1234), "path": "/café", "query_string": b"a=1"}
    assert log_target(scope) == ("10.0.0.1:1234", "/caf%C3%A9?a=1")
    assert log_target({"client": None, "path": "/", "query_string": b""}) == ("", "/")
