"""The hub mounted at /realtime in real host apps under real servers, driven by the Python
client and plain HTTP: FastAPI under uvicorn (its default WebSocket engine and wsproto),
Starlette under hypercorn, Django (through ``tether.asgi.PathRouter``) under uvicorn.

For each: publications made by the host's route handler (``await node.publish``) reach a
subscribed ``tether.hub.Client``; after its connection is cut by the network (a TCP proxy
aborting it) and by the server (``node.shutdown(1012)``), the client resubscribes from its
last offset and gets exactly what it missed, once. Plus the HTTP API, /healthz, /tether.js
and 404s through the mount, and the lifespan.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import pytest_asyncio
from asgi_hosts import (
    API_KEY,
    PREFIX,
    django_app,
    fastapi_app,
    hub_app,
    hypercorn_server,
    starlette_app,
    uvicorn_server,
)
from e2e_support import DropProxy

from tether.asgi import HubApp
from tether.hub import Client, ClientState
from tether_testing import Recorder, require

GUARD = 15.0

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install -e '.[test]')")


def missing(*modules: str) -> str | None:
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            return f"{name} is not installed (pip install -e '.[test]')"
    return None


class Host:
    """A running host app: its base URL, its hub, and a proxy in front that can cut."""

    def __init__(self, url: str, hub: HubApp, proxy: DropProxy) -> None:
        self.url = url
        self.hub = hub
        self.proxy = proxy
        self.http = httpx.AsyncClient(base_url=url, timeout=GUARD)

    @property
    def ws_url(self) -> str:
        return "ws" + self.proxy.url[4:] + PREFIX + "/connection/websocket"

    async def publish(self, channel: str, data: Any) -> dict[str, Any]:
        """Publish through the host app's own route handler."""
        response = await self.http.post("/publish", json={"channel": channel, "data": data})
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


def _fastapi() -> tuple[Any, HubApp, Callable[..., AbstractAsyncContextManager[str]]]:
    hub = hub_app()
    return fastapi_app(hub), hub, uvicorn_server


def _fastapi_wsproto() -> tuple[Any, HubApp, Callable[..., AbstractAsyncContextManager[str]]]:
    # uvicorn's wsproto engine gives the offered subprotocols only in scope["subprotocols"].
    hub = hub_app()
    return fastapi_app(hub), hub, functools.partial(uvicorn_server, ws="wsproto")


def _starlette() -> tuple[Any, HubApp, Callable[..., AbstractAsyncContextManager[str]]]:
    hub = hub_app()
    return starlette_app(hub), hub, hypercorn_server


def _django() -> tuple[Any, HubApp, Callable[..., AbstractAsyncContextManager[str]]]:
    app, hub = django_app()
    return app, hub, uvicorn_server


HOSTS = {
    "fastapi-uvicorn": (_fastapi, ("fastapi", "uvicorn")),
    "fastapi-uvicorn-wsproto": (_fastapi_wsproto, ("fastapi", "uvicorn", "wsproto")),
    "starlette-hypercorn": (_starlette, ("starlette", "hypercorn")),
    "django-uvicorn": (_django, ("django", "uvicorn")),
}


@pytest_asyncio.fixture(params=list(HOSTS))
async def host(request: pytest.FixtureRequest) -> AsyncIterator[Host]:
    make, modules = HOSTS[request.param]
    reason = missing(*modules)
    require(reason is None, str(reason))
    app, hub, server = make()
    async with server(app) as url:
        proxy = await DropProxy("127.0.0.1", int(url.rsplit(":", 1)[1])).start()
        running = Host(url, hub, proxy)
        try:
            yield running
        finally:
            await running.http.aclose()
            await proxy.close()


async def recovered(rec: Recorder) -> None:
    """The next subscribe was a resubscribe that recovered what was missed."""
    event = await asyncio.wait_for(rec.subscribed.get(), GUARD)
    assert event.resubscribed and event.recovered, event


async def test_client_recovers_what_was_published_while_cut_off(host: Host) -> None:
    channel = f"news:{uuid.uuid4().hex[:8]}"
    rec = Recorder()
    client = Client(host.ws_url, min_backoff=0.01, max_backoff=0.1, on_state=rec.states.put_nowait)
    await asyncio.wait_for(client.connect(), GUARD)
    try:
        await client.subscribe(
            channel, on_publication=rec.pubs.put, on_subscribed=rec.subscribed.put
        )
        first = await asyncio.wait_for(rec.subscribed.get(), GUARD)
        assert not first.resubscribed
        offsets = [(await host.publish(channel, i))["offset"] for i in range(3)]
        assert offsets == [1, 2, 3]
        assert await rec.data(3) == [0, 1, 2]

        # The network fails: no close frame either way.
        host.proxy.cut()
        await rec.state(ClientState.DISCONNECTED)
        for i in range(3, 6):
            await host.publish(channel, i)  # while the client is away
        host.proxy.restore()
        await recovered(rec)
        await host.publish(channel, 6)
        assert await rec.data(4) == [3, 4, 5, 6]

        # The server cuts: every session told to reconnect (1012).
        restarted = await host.http.post("/restart")
        assert restarted.json()["sessions"] == 1
        # (Failed attempts while the proxy was down queued DISCONNECTED events too.)
        while (await rec.state(ClientState.DISCONNECTED)).code != 1012:
            pass
        await host.publish(channel, 7)
        await recovered(rec)
        await host.publish(channel, 8)
        assert await rec.data(2) == [7, 8]
        assert rec.pubs.empty(), "a publication arrived twice"
    finally:
        await client.close()


async def test_http_api_healthz_and_static_through_the_mount(host: Host) -> None:
    http = host.http
    auth = {"Authorization": f"apikey {API_KEY}"}
    channel = f"api:{uuid.uuid4().hex[:8]}"
    published = await http.post(
        f"{PREFIX}/api/publish", json={"channel": channel, "data": {"n": 1}}, headers=auth
    )
    assert published.status_code == 200, published.text
    assert published.json()["offset"] == 1
    query = {"channel": channel, "limit": 10}
    history = await http.post(f"{PREFIX}/api/history", json=query, headers=auth)
    assert [p["data"] for p in history.json()["publications"]] == [{"n": 1}]
    refused = await http.post(f"{PREFIX}/api/publish", json={"channel": channel, "data": 1})
    assert refused.status_code == 401
    assert "error" in refused.json()

    health = await http.get(f"{PREFIX}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    script = await http.get(f"{PREFIX}/tether.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "export class Client" in script.text
    metrics = await http.get(f"{PREFIX}/metrics")
    assert "tether_" in metrics.text

    # Outside the hub's routes, inside the mount: the hub's 404 (demo page off by default).
    for path in ("/nothing-here", "/", "/index.html"):
        missing_route = await http.get(PREFIX + path)
        assert missing_route.status_code == 404, path
        assert "error" in missing_route.json()
    # Outside the mount, the host app answers: /healthz is not the hub's there.
    assert (await http.get("/healthz")).status_code == 404
    # The WebSocket path asked without an upgrade.
    plain = await http.get(
        f"{PREFIX}/connection/websocket", headers={"Sec-WebSocket-Protocol": "tether.v1"}
    )
    assert plain.status_code == 426


async def test_websocket_refusals_through_the_mount(host: Host) -> None:
    import tether
    from tether.protocol.exceptions import InvalidStatus

    base = "ws" + host.url[4:] + PREFIX
    # No tether.v1 subprotocol: refused with the hub's reason (400), not upgraded.
    with pytest.raises(InvalidStatus) as refused:
        await tether.connect(base + "/connection/websocket")
    assert refused.value.response.status_code == 400
    # A page of another origin: 403.
    with pytest.raises(InvalidStatus) as foreign:
        await tether.connect(
            base + "/connection/websocket",
            subprotocols=["tether.v1"],
            origin="http://evil.example",
        )
    assert foreign.value.response.status_code == 403
    # A WebSocket to a path the hub does not serve.
    with pytest.raises(InvalidStatus) as elsewhere:
        await tether.connect(base + "/elsewhere", subprotocols=["tether.v1"])
    assert elsewhere.value.response.status_code == 404


async def test_lifespan_starts_and_stops_the_node() -> None:
    require(missing("fastapi", "uvicorn") is None, str(missing("fastapi", "uvicorn")))
    hub = hub_app()
    assert not hub.node.started
    async with (
        uvicorn_server(fastapi_app(hub), lifespan="on") as url,
        httpx.AsyncClient(base_url=url, timeout=GUARD) as http,
    ):
        # uvicorn answers only after the lifespan started; the page is not the hub's.
        assert (await http.get("/")).status_code == 200
        assert hub.node.started
        assert (await http.get(f"{PREFIX}/healthz")).status_code == 200
    assert not hub.node.started  # stopped by the lifespan's shutdown


async def test_publish_before_any_request_without_lifespan() -> None:
    require(missing("fastapi", "uvicorn") is None, str(missing("fastapi", "uvicorn")))
    hub = hub_app()
    async with (
        uvicorn_server(fastapi_app(hub, lifespan=False), lifespan="off") as url,
        httpx.AsyncClient(base_url=url, timeout=GUARD) as http,
    ):
        assert (await http.get("/")).status_code == 200
        assert not hub.node.started
        # The hub's first use: the app's route handler publishing.
        published = await http.post("/publish", json={"channel": "early", "data": "first"})
        assert published.status_code == 200, published.text
        assert published.json()["offset"] == 1
        assert hub.node.started
        history = await http.post(
            f"{PREFIX}/api/history",
            json={"channel": "early", "limit": 10},
            headers={"Authorization": f"apikey {API_KEY}"},
        )
        assert [p["data"] for p in history.json()["publications"]] == ["first"]
    await hub.shutdown()
