"""Hub fixtures: ``start_hub`` (an in-process hub on a free port), ``wire`` clients, and
``backplane`` (config overrides for nodes sharing Redis or NATS)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from backplane_services import delete_prefix, require_nats, require_redis, unique
from hub_support import GUARD, WireClient, config

from tether.hub import HubServer, Node, serve_hub


@pytest.fixture
async def start_hub() -> AsyncIterator[Callable[..., Awaitable[HubServer]]]:
    """``hub = await start_hub(config=..., node=..., **serve_kwargs)``; closed on teardown."""
    hubs: list[HubServer] = []

    async def start(node: Node | None = None, **kwargs: Any) -> HubServer:
        cfg = kwargs.pop("config", None)
        if node is None:
            node = Node(cfg if cfg is not None else config())
        hub = serve_hub(node, "127.0.0.1", 0, **kwargs)
        await hub.start()
        hubs.append(hub)
        return hub

    yield start
    for hub in hubs:
        await asyncio.wait_for(hub.close(), GUARD)


@pytest.fixture
async def wire() -> AsyncIterator[Callable[..., Awaitable[WireClient]]]:
    """``client = await wire(url, token=..., ...)``: a connected WireClient, closed on teardown."""
    clients: list[WireClient] = []

    async def open_client(url: str, *, connect: bool = True, **kwargs: Any) -> WireClient:
        ws_options = {k: kwargs.pop(k) for k in ("subprotocols", "ws") if k in kwargs}
        client = await WireClient.open(url, connect=False, **ws_options)
        clients.append(client)
        if connect:
            await client.connect(**kwargs)
        return client

    yield open_client
    for client in clients:
        if client.ws.transport is not None:
            client.ws.transport.abort()
    await asyncio.sleep(0)  # let the transports run connection_lost before the loop closes


@pytest.fixture(params=["redis", "nats"])
async def backplane(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, str]]:
    """Config overrides for nodes sharing a backplane (NATS: Redis history and presence)."""
    redis_url = require_redis()
    prefix = unique("bp")
    overrides = {"broker": redis_url, "backplane_prefix": prefix}
    if request.param == "nats":
        overrides["broker"] = require_nats()
        overrides["history"] = overrides["presence"] = redis_url
    yield overrides
    await delete_prefix(redis_url, prefix + ":")
