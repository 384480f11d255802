"""tether.js in headless Chromium against the hub mounted at /realtime in a host app:
FastAPI under uvicorn and Starlette under hypercorn (the real packages, in-process).

The page (served by the host app) imports ``/realtime/tether.js``, subscribes through
``/realtime/connection/websocket``, and receives what the host's route handler publishes
with ``await node.publish(...)``. Its connection is then cut by the network (a TCP proxy
aborting it, no close frame) while more is published, and later by the server
(``node.shutdown(1012)``): each time the page resubscribes from its last offset and shows
every publication exactly once, in order.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from asgi_hosts import fastapi_app, hub_app, hypercorn_server, starlette_app, uvicorn_server
from e2e_support import DropProxy

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMEOUT = 15_000  # ms; a guard for the page's state, never a wait by itself

Server = Callable[[Any], AbstractAsyncContextManager[str]]

HOSTS: dict[str, tuple[Callable[[Any], Any], Server, tuple[str, ...]]] = {
    "fastapi-uvicorn": (fastapi_app, uvicorn_server, ("fastapi", "uvicorn")),
    "starlette-hypercorn": (starlette_app, hypercorn_server, ("starlette", "hypercorn")),
}


async def until(page: Any, condition: str) -> None:
    """Wait until the JavaScript ``condition`` holds in the page."""
    await page.wait_for_function(condition, timeout=TIMEOUT)


@pytest.mark.parametrize("name", list(HOSTS))
async def test_page_recovers_publications_of_the_route_handler(
    name: str, browser: Any, require: Callable[..., None]
) -> None:
    import importlib.util

    from e2e_support import CHROMIUM

    make_app, server, modules = HOSTS[name]
    for module in modules:
        require(importlib.util.find_spec(module) is not None, f"{module} is not installed")
    require(browser is not None, f"Chromium ({CHROMIUM}) or playwright is missing")
    import httpx

    hub = hub_app()
    channel = f"news:{uuid.uuid4().hex[:8]}"
    async with server(make_app(hub)) as url, httpx.AsyncClient(base_url=url) as http:
        proxy = await DropProxy("127.0.0.1", int(url.rsplit(":", 1)[1])).start()
        context = await browser.new_context()
        errors: list[str] = []
        try:
            page = await context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            async def publish(n: int) -> None:
                response = await http.post("/publish", json={"channel": channel, "data": n})
                assert response.status_code == 200, response.text

            await page.goto(f"{proxy.url}/?channel={channel}")
            await until(page, "window.subscribed?.length === 1")
            for n in range(3):
                await publish(n)
            await until(page, "window.received.length === 3")

            # The network fails: the page notices, and misses what is published meanwhile.
            proxy.cut()
            await until(page, "window.client.state === 'connecting'")
            for n in range(3, 6):
                await publish(n)
            proxy.restore()
            await until(page, "window.subscribed.length === 2")
            await publish(6)
            await until(page, "window.received.length >= 7")

            # The server cuts (1012, "reconnect"): the page comes back again.
            restarted = await http.post("/restart")
            assert restarted.json()["sessions"] == 1
            await publish(7)
            await until(page, "window.subscribed.length === 3")
            await publish(8)  # the last one: anything doubled would arrive before it
            await until(page, "window.received.some((p) => p.data === 8)")

            received = await page.evaluate("window.received")
            assert [p["data"] for p in received] == list(range(9))
            assert [p["offset"] for p in received] == list(range(1, 10))
            subscribed = await page.evaluate("window.subscribed")
            assert [s["recovered"] for s in subscribed] == [False, True, True]
            assert proxy.accepted >= 2  # the page (and its socket) came through the proxy
        finally:
            await context.close()
            await proxy.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


async def test_demo_page_under_the_mount(browser: Any, require: Callable[..., None]) -> None:
    """``HubApp(node, demo=True)`` mounted at /realtime: the demo chat connects from there."""
    import importlib.util

    from e2e_support import CHROMIUM
    from playwright.async_api import expect

    from tether.asgi import HubApp
    from tether.hub import HubConfig, Node

    for module in ("fastapi", "uvicorn"):
        require(importlib.util.find_spec(module) is not None, f"{module} is not installed")
    require(browser is not None, f"Chromium ({CHROMIUM}) or playwright is missing")
    hub = HubApp(Node(HubConfig(allow_anonymous=True)), demo=True)
    async with uvicorn_server(fastapi_app(hub)) as url:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(f"{url}/realtime/?room=lobby&name=ada")
            status = page.locator("#status")
            await expect(status).to_have_attribute("data-state", "connected", timeout=TIMEOUT)
            assert len(hub.node.sessions) == 1
        finally:
            await context.close()
