"""Host apps of the ASGI tests, each with the hub mounted at /realtime, and the real servers
that run them in-process (uvicorn, hypercorn) on a socket the test bound itself.

Every host app has the same routes besides the hub:

- ``GET /``: a page that imports ``/realtime/tether.js``, connects to the mounted
  WebSocket path, subscribes to the channel in its ``?channel=`` and records what arrives
  in ``window.received`` / ``window.subscribed`` / ``window.states``;
- ``POST /publish`` ``{"channel", "data"}``: the route handler calls
  ``await node.publish(...)`` and answers the position;
- ``POST /restart``: ``await node.shutdown(1012, ...)``, a server-side cut (every session
  told to reconnect).

(A module with its own name, so test modules can import it: every conftest.py is "conftest".)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from tether.asgi import HubApp
from tether.hub import HubConfig, Node

PREFIX = "/realtime"
API_KEY = "asgi-api-key"

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>tether under a mount</title>
<script type="module">
import { Client } from "/realtime/tether.js";
const channel = new URLSearchParams(location.search).get("channel");
window.received = [];
window.subscribed = [];
window.states = [];
const client = new Client("/realtime/connection/websocket", {
  minReconnectDelay: 50,
  maxReconnectDelay: 300,
});
client.on("state", (ctx) => window.states.push(ctx.state));
client.subscribe(channel, {
  onPublication: (p) => window.received.push({ data: p.data, offset: p.offset }),
  onSubscribed: (ctx) =>
    window.subscribed.push({ recovered: ctx.recovered, wasRecovering: ctx.wasRecovering }),
});
client.connect();
window.client = client;
</script>
"""


def hub_app() -> HubApp:
    """A hub for one test: anonymous clients, an API key, the default (memory) backplane."""
    return HubApp(Node(HubConfig(allow_anonymous=True, api_key=API_KEY)))


# ------------------------------------------------------------------- host apps


def fastapi_app(hub: HubApp, *, lifespan: bool = True) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    node = hub.node
    app = FastAPI(lifespan=hub.lifespan if lifespan else None)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    @app.post("/publish")
    async def publish(body: dict[str, Any]) -> dict[str, Any]:
        result = await node.publish(body["channel"], body["data"])
        return result.to_json()

    @app.post("/restart")
    async def restart() -> dict[str, Any]:
        sessions = len(node.sessions)
        await node.shutdown(1012, "server restarting")
        return {"sessions": sessions}

    app.mount(PREFIX, hub)
    return app


def starlette_app(hub: HubApp) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Mount, Route

    node = hub.node

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    async def publish(request: Request) -> JSONResponse:
        body = await request.json()
        result = await node.publish(body["channel"], body["data"])
        return JSONResponse(result.to_json())

    async def restart(request: Request) -> JSONResponse:
        sessions = len(node.sessions)
        await node.shutdown(1012, "server restarting")
        return JSONResponse({"sessions": sessions})

    routes = [
        Route("/", page),
        Route("/publish", publish, methods=["POST"]),
        Route("/restart", restart, methods=["POST"]),
        Mount(PREFIX, app=hub),
    ]
    return Starlette(routes=routes, lifespan=hub.lifespan)


def django_app() -> tuple[Any, HubApp]:
    """The Django project in asgi_django/ (its ASGI application and its hub)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asgi_django.settings")
    from asgi_django.asgi import application
    from asgi_django.realtime import hub

    return application, hub


# --------------------------------------------------------------------- servers


def listening_socket() -> socket.socket:
    """A loopback socket already listening: requests wait in its backlog until the
    server accepts, so nothing has to poll for the server to be up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextlib.asynccontextmanager
async def uvicorn_server(app: Any, **options: Any) -> AsyncIterator[str]:
    """``async with uvicorn_server(app) as url``: the real uvicorn, in this process."""
    import uvicorn

    sock = listening_socket()
    port = sock.getsockname()[1]
    # A connection still open at shutdown is cancelled after 5 s instead of
    # holding the teardown (seen once in three full runs, wsproto engine).
    options.setdefault("timeout_graceful_shutdown", 5)
    config = uvicorn.Config(app, log_level="warning", **options)
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        sock.close()


@contextlib.asynccontextmanager
async def hypercorn_server(app: Any) -> AsyncIterator[str]:
    """``async with hypercorn_server(app) as url``: the real hypercorn, in this process."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    sock = listening_socket()
    port = sock.getsockname()[1]
    config = Config()
    # Hypercorn takes over a duplicate of the descriptor (and closes it).
    config.bind = [f"fd://{os.dup(sock.fileno())}"]
    config.loglevel = "WARNING"
    config.graceful_timeout = 5
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(
        serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        sock.close()
