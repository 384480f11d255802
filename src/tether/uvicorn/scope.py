"""The ASGI ``websocket`` scope for an upgrade request, and the strings uvicorn logs about it.

Kept apart from the protocol class: turning a parsed request into the
scope is pure data work (no transport, no loop), easy to test on its own.
See https://asgi.readthedocs.io/en/latest/specs/www.html#websocket-connection-scope.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, unquote

from tether.protocol import Request
from tether.protocol.headers import parse_token_list

# The ASGI HTTP & WebSocket spec version this engine implements: 2.4 has the
# `reason` of `websocket.close` and `websocket.disconnect`, and the denial
# response (`websocket.http.response.*`) extension.
SPEC_VERSION = "2.4"

Address = tuple[str, int]


def peer_address(transport: asyncio.BaseTransport) -> Address | None:
    """The client's (host, port), or None (a Unix socket has no port)."""
    return _address(transport.get_extra_info("peername"))


def local_address(transport: asyncio.BaseTransport) -> Address | None:
    """The server's (host, port), or None."""
    return _address(transport.get_extra_info("sockname"))


def _address(info: object) -> Address | None:
    # IPv6 sockets give (host, port, flowinfo, scope_id): ASGI wants the first two.
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


def is_tls(transport: asyncio.BaseTransport) -> bool:
    return transport.get_extra_info("sslcontext") is not None


def offered_subprotocols(request: Request) -> list[str]:
    """The client's Sec-WebSocket-Protocol tokens, in order (RFC 6455 §4.1 item 10)."""
    values = request.headers.get_all("Sec-WebSocket-Protocol")
    if not values:
        return []
    return parse_token_list(values, "Sec-WebSocket-Protocol")


def build_scope(
    request: Request,
    *,
    transport: asyncio.BaseTransport,
    root_path: str,
    asgi_version: str,
    app_state: dict[str, Any],
) -> dict[str, Any]:
    """The ASGI scope of one WebSocket connection.

    ``path`` and ``raw_path`` include ``root_path``, as uvicorn's HTTP
    protocols and its own WebSocket engines give them (ASGI: "root_path ...
    path ... the full path").
    """
    raw_path, _, query = request.path.partition("?")
    return {
        "type": "websocket",
        "asgi": {"version": asgi_version, "spec_version": SPEC_VERSION},
        "http_version": "1.1",
        "scheme": "wss" if is_tls(transport) else "ws",
        "server": local_address(transport),
        "client": peer_address(transport),
        "root_path": root_path,
        "path": root_path + unquote(raw_path),
        "raw_path": (root_path + raw_path).encode("latin-1"),
        "query_string": query.encode("latin-1"),
        # ASGI: header names lowercased, values as the bytes that came in.
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers.raw_items()
        ],
        "subprotocols": offered_subprotocols(request),
        "state": app_state.copy(),
        "extensions": {"websocket.http.response": {}},
    }


def log_target(scope: dict[str, Any]) -> tuple[str, str]:
    """``(client, path?query)`` as uvicorn's engines put them in their access lines."""
    client = scope.get("client")
    who = f"{client[0]}:{client[1]}" if client else ""
    path = quote(scope["path"])
    if scope["query_string"]:
        path = f"{path}?{scope['query_string'].decode('latin-1')}"
    return who, path
