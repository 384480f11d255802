"""An example backend for tether's proxy: the app's side of the hooks, as a Starlette app.

Run it, then a hub that calls it (docs/proxy.md)::

    uvicorn proxy_backend:app --app-dir examples --port 9000
    tether serve --allow-anonymous \\
        --proxy-connect http://127.0.0.1:9000/tether/connect \\
        --proxy-subscribe http://127.0.0.1:9000/tether/subscribe \\
        --proxy-publish http://127.0.0.1:9000/tether/publish \\
        --proxy-rpc http://127.0.0.1:9000/tether/rpc

What it decides, standing in for a real app's session store and rules:

- connect: the ``session`` cookie (or the token) names a user in ``SESSIONS``;
  the user gets a server-side subscription to ``user:<id>``; others are refused
  with 101.
- subscribe: ``admin:*`` channels only for admins; others get ``{"joined": ...}``.
- publish: ``text`` is required (else 107) and "darn" is censored (a rewrite).
- rpc: ``add`` sums a list, ``whoami`` tells the caller who they are; others 1404.
- disconnect: remembered in ``DISCONNECTED`` (a real app would mark the user away).

With ``TETHER_PROXY_KEY`` set, calls without that key in ``X-Tether-Proxy-Key``
get 401 (the hub's ``--proxy-key``).

The tests (tests/hub/test_hub_proxy.py) run this very app under uvicorn.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# The hub sends its proxy key (tether serve --proxy-key, TETHER_PROXY_KEY) with every
# call: without the check, anyone who finds these URLs could call an RPC "as" any user.
PROXY_KEY = os.environ.get("TETHER_PROXY_KEY", "")

SESSIONS = {"s-alice": "alice", "s-root": "root"}
ADMINS = {"root"}
DISCONNECTED: list[dict[str, Any]] = []


def refuse(code: int, message: str) -> JSONResponse:
    """A refusal: the client gets ``code`` and ``message`` (docs/proxy.md)."""
    return JSONResponse({"error": {"code": code, "message": message}})


def accept(**result: Any) -> JSONResponse:
    return JSONResponse({"result": result})


async def connect(request: Request) -> JSONResponse:
    body = await request.json()
    # The browser's cookie reaches the backend twice: in the body and as a real Cookie
    # header, so request.cookies (and session middleware) work as usual.
    session = request.cookies.get("session") or body.get("token")
    user = SESSIONS.get(session or "")
    if user is None:
        return refuse(101, "log in first")
    name = body.get("name") or user
    return accept(
        user=user,
        info={"name": name, "admin": user in ADMINS},
        data={"tenant": body["headers"].get("X-Tenant", "default")},
        channels=[f"user:{user}"],
    )


async def subscribe(request: Request) -> JSONResponse:
    body = await request.json()
    if body["channel"].startswith("admin:") and body["user"] not in ADMINS:
        return refuse(103, "admins only")
    return accept(data={"joined": body["channel"]})


async def publish(request: Request) -> JSONResponse:
    body = await request.json()
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        return refuse(107, "a message needs text")
    if "darn" in data["text"]:
        return accept(data={**data, "text": data["text"].replace("darn", "****")})
    return JSONResponse({})  # no result: published as sent


async def rpc(request: Request) -> JSONResponse:
    body = await request.json()
    method, data = body["method"], body.get("data")
    if method == "add" and isinstance(data, list):
        return accept(data=sum(data))
    if method == "whoami":
        return accept(data={"user": body["user"], "session": body.get("session_data")})
    return refuse(1404, f"no method {method}")


async def disconnect(request: Request) -> JSONResponse:
    DISCONNECTED.append(await request.json())
    return JSONResponse({})


async def disconnected(request: Request) -> JSONResponse:
    """Not part of the contract: lets a demo (or test) see what disconnect delivered."""
    return JSONResponse(DISCONNECTED)


def from_hub(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Answer only calls that carry the hub's proxy key (when one is configured)."""

    async def checked(request: Request) -> Response:
        given = request.headers.get("X-Tether-Proxy-Key", "")
        if PROXY_KEY and not hmac.compare_digest(given.encode(), PROXY_KEY.encode()):
            return JSONResponse({"message": "not the hub"}, status_code=401)
        return await handler(request)

    return checked


routes = [
    Route("/tether/connect", from_hub(connect), methods=["POST"]),
    Route("/tether/subscribe", from_hub(subscribe), methods=["POST"]),
    Route("/tether/publish", from_hub(publish), methods=["POST"]),
    Route("/tether/rpc", from_hub(rpc), methods=["POST"]),
    Route("/tether/disconnect", from_hub(disconnect), methods=["POST"]),
    Route("/tether/disconnected", disconnected, methods=["GET"]),
]

app = Starlette(routes=routes)
