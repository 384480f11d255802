"""route_path: the request path relative to the mount, whichever way the host says it."""

from __future__ import annotations

import pytest

from tether.asgi.scope import route_path, scope_request


@pytest.mark.parametrize(
    ("path", "root_path", "expected"),
    [
        ("/healthz", "", "/healthz"),
        # Starlette's Mount and uvicorn's --root-path: path still holds the prefix.
        ("/realtime/healthz", "/realtime", "/healthz"),
        ("/realtime", "/realtime", "/"),
        ("/realtime/", "/realtime", "/"),
        ("/a/b/connection/websocket", "/a/b", "/connection/websocket"),
        # Routers that strip the prefix themselves.
        ("/healthz", "/realtime", "/healthz"),
        # A longer name is not under the prefix.
        ("/realtimex/healthz", "/realtime", "/realtimex/healthz"),
        ("", "", "/"),
    ],
)
def test_route_path(path: str, root_path: str, expected: str) -> None:
    assert route_path({"type": "http", "path": path, "root_path": root_path}) == expected


def test_scope_request_keeps_query_and_headers() -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/realtime/api/publish",
        "root_path": "/realtime",
        "query_string": b"x=1",
        "headers": [(b"authorization", b"apikey k"), (b"x-many", b"1"), (b"x-many", b"2")],
    }
    request = scope_request(scope)
    assert request.path == "/api/publish?x=1"
    assert request.method == "POST"
    assert request.headers["Authorization"] == "apikey k"
    assert request.headers.get_all("X-Many") == ["1", "2"]


def test_websocket_subprotocols_from_the_scope_when_the_header_is_gone() -> None:
    scope = {
        "type": "websocket",
        "path": "/connection/websocket",
        "headers": [(b"host", b"h")],
        "subprotocols": ["tether.v1", "tether.auth.TOKEN"],
    }
    request = scope_request(scope)
    assert request.headers["Sec-WebSocket-Protocol"] == "tether.v1, tether.auth.TOKEN"
    with_header = {**scope, "headers": [(b"sec-websocket-protocol", b"tether.v1")]}
    assert scope_request(with_header).headers.get_all("Sec-WebSocket-Protocol") == ["tether.v1"]
