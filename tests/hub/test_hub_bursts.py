"""Bursts of 1,000 simultaneous operations per backend (memory, Redis, NATS).

Each burst either fully succeeds or gets the documented overload answer
(503 with code 116 for the HTTP API), and ``/healthz`` stays truthful: 200
while the backplane is up. ``TETHER_BURST_N`` changes the size (default 1000).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from backplane_services import unique
from hostile_support import BACKENDS, backend_config, cleanup
from hub_support import WireClient, api_headers, http

from tether.hub import HubConfig, HubServer
from tether.hub.config import ChannelOptions, Limits

StartHub = Callable[..., Awaitable[HubServer]]
N = int(os.environ.get("TETHER_BURST_N", "1000"))
# A burst is slow on a loaded 2-core machine (both ends of 1,000 handshakes
# share this test's one event loop: the default 10 s open timeouts are too
# short for that, not for a hub), but it must end.
BURST_GUARD = 180.0
ROOMS = 100


@pytest.fixture(params=BACKENDS)
async def burst_config(request: pytest.FixtureRequest) -> AsyncIterator[HubConfig]:
    prefix = unique("burst")
    yield backend_config(
        request.param,
        prefix,
        # Many clients from one address: no per-client limit should be the story here.
        limits=Limits(connect_timeout=BURST_GUARD),
        namespaces={"quiet": ChannelOptions(presence=False)},
    )
    await cleanup(request.param, prefix)


async def healthz(port: int) -> int:
    status, _, _ = await http(port, "GET", "/healthz")
    return status


async def test_burst_of_api_publishes(start_hub: StartHub, burst_config: HubConfig) -> None:
    hub = await start_hub(config=burst_config, open_timeout=BURST_GUARD)
    assert hub.port is not None
    port = hub.port

    async def publish(i: int) -> tuple[int, Any]:
        body = {"channel": f"burst{i % ROOMS}", "data": {"i": i}}
        status, _, payload = await http(
            port, "POST", "/api/publish", body, headers=api_headers(), timeout=BURST_GUARD
        )
        return status, json.loads(payload)

    answers = await asyncio.wait_for(asyncio.gather(*(publish(i) for i in range(N))), BURST_GUARD)
    refused = [a for a in answers if a[0] != 200]
    assert all((s, b["error"]["code"]) == (503, 116) for s, b in refused), refused[:5]
    assert await healthz(port) == 200
    # Nothing acknowledged was lost: every 200 is in its channel's history.
    stored = 0
    for room in range(ROOMS):
        status, _, payload = await http(
            port, "POST", "/api/history", {"channel": f"burst{room}"}, headers=api_headers()
        )
        assert status == 200
        stored += len(json.loads(payload)["publications"])
    assert stored == N - len(refused)
    print(f"{N} API publishes: {N - len(refused)} stored, {len(refused)} x 503/116")


def assert_succeeded_or_overloaded(replies: list[dict[str, Any]], what: str) -> int:
    """Every reply is a result or the documented overload error (116); how many succeeded."""
    refused = [r["error"] for r in replies if "error" in r]
    assert all(e["code"] == 116 and e["temporary"] for e in refused), refused[:5]
    print(f"{len(replies)} {what}: {len(replies) - len(refused)} ok, {len(refused)} x 116")
    return len(replies) - len(refused)


async def open_clients(url: str, n: int) -> list[WireClient]:
    return list(
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    WireClient.open(url, connect=False, ws={"open_timeout": BURST_GUARD})
                    for _ in range(n)
                )
            ),
            BURST_GUARD,
        )
    )


async def commands(clients: list[WireClient], method: str, params: Any) -> list[dict[str, Any]]:
    """Send one command from every client at once; their replies."""
    futures = [
        c.send(method, params(i) if callable(params) else params) for i, c in enumerate(clients)
    ]
    return list(await asyncio.wait_for(asyncio.gather(*futures), BURST_GUARD))


async def close_all(clients: list[WireClient]) -> None:
    for client in clients:
        if client.ws.transport is not None:
            client.ws.transport.abort()


async def test_burst_of_connects_and_subscribes(
    start_hub: StartHub, burst_config: HubConfig
) -> None:
    hub = await start_hub(config=burst_config, open_timeout=BURST_GUARD)
    assert hub.port is not None
    clients = await open_clients(hub.websocket_url, N)
    try:
        connected = await commands(clients, "connect", {})
        assert [r for r in connected if "error" in r] == []
        subscribed = await commands(clients, "subscribe", lambda i: {"channel": f"quiet:{i % 10}"})
        assert_succeeded_or_overloaded(subscribed, "subscribes")
        assert len(hub.node.sessions) == N
        assert await healthz(hub.port) == 200
        # Every subscriber is served: one publication reaches all of a channel's subscribers.
        status, _, _ = await http(
            hub.port,
            "POST",
            "/api/publish",
            {"channel": "quiet:3", "data": "x"},
            headers=api_headers(),
        )
        assert status == 200
        receivers = [c for i, c in enumerate(clients) if i % 10 == 3 and "result" in subscribed[i]]
        pushes = await asyncio.wait_for(
            asyncio.gather(*(c.push("pub") for c in receivers)), BURST_GUARD
        )
        assert {p["data"] for p in pushes} == {"x"} and len(pushes) == len(receivers)
    finally:
        await close_all(clients)


async def test_burst_of_disconnects_sends_every_presence_leave(
    start_hub: StartHub, burst_config: HubConfig
) -> None:
    hub = await start_hub(config=burst_config, open_timeout=BURST_GUARD)
    assert hub.port is not None
    watcher = await WireClient.open(hub.websocket_url)
    rooms = [f"room{r}" for r in range(ROOMS)]
    for room in rooms:
        await watcher.call("subscribe", {"channel": room})
        await watcher.push("join")  # its own
    clients = await open_clients(hub.websocket_url, N)
    try:
        await commands(clients, "connect", {})
        # Ten per room: joins fan out to ten, not to a thousand.
        subscribed = await commands(clients, "subscribe", lambda i: {"channel": rooms[i % ROOMS]})
        n = assert_succeeded_or_overloaded(subscribed, "presence subscribes")
        joined = {
            (await asyncio.wait_for(watcher.push("join"), BURST_GUARD))["info"]["client"]
            for _ in range(n)
        }
        assert len(joined) == n
    finally:
        await close_all(clients)  # all vanish at once
    left = {
        (await asyncio.wait_for(watcher.push("leave"), BURST_GUARD))["info"]["client"]
        for _ in range(n)
    }
    assert left == joined
    for room in rooms[:5]:
        stats = await watcher.call("presence_stats", {"channel": room})
        assert stats["num_clients"] == 1  # the watcher
    assert await healthz(hub.port) == 200
    await watcher.close()
