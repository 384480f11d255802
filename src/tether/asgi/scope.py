"""ASGI types and what the hub needs from a scope: its path under the mount, its request head.

ASGI 3 passes plain dicts, so the types here are aliases (no dependency on
``asgiref``). A host that mounts the hub under a prefix says so in
``root_path``; Starlette keeps the full path in ``path`` while older servers
and routers strip the prefix, and :func:`route_path` accepts both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tether.protocol.handshake import Request
from tether.protocol.headers import Headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_path(scope: Scope) -> str:
    """The request path relative to where the app is mounted (``/`` at least).

    ASGI: ``root_path`` is where the app is mounted. When ``path`` still starts
    with it (Starlette's ``Mount``, uvicorn's ``--root-path``), it is cut off.
    """
    path: str = scope.get("path") or "/"
    root: str = scope.get("root_path") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :]
    return path or "/"


def scope_headers(scope: Scope) -> Headers:
    """The request headers; ASGI gives them as latin-1 byte pairs, names lowercased."""
    return Headers(
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, value in scope.get("headers") or ()
    )


def scope_request(scope: Scope) -> Request:
    """The request head as tether's :class:`Request`, path relative to the mount."""
    path = route_path(scope)
    query = scope.get("query_string") or b""
    if query:
        path += "?" + query.decode("latin-1")
    headers = scope_headers(scope)
    if scope["type"] == "websocket":
        # ASGI gives the offered subprotocols in their own key; some servers
        # (uvicorn's wsproto engine) leave the header out of ``headers``.
        offered = scope.get("subprotocols") or ()
        if offered and "Sec-WebSocket-Protocol" not in headers:
            headers["Sec-WebSocket-Protocol"] = ", ".join(offered)
        return Request(path, headers)
    return Request(path, headers, scope.get("method", "GET"))
