"""Fixtures of the permessage-deflate integration tests; helpers live in ``deflate_support``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from deflate_support import GUARD, DeflateRawClient


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[int], Awaitable[DeflateRawClient]]]:
    """``client = await raw(port)``: a :class:`DeflateRawClient`, aborted on teardown."""
    clients: list[DeflateRawClient] = []

    async def open_client(port: int) -> DeflateRawClient:
        client = await DeflateRawClient.open(port)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
    await asyncio.sleep(0)  # let the transports run connection_lost before the loop closes


@dataclass
class WebsocketsServer:
    server: Any
    url: str
    peers: list[Any] = field(default_factory=list)  # server-side connections, in order


async def _ws_echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.fixture
async def websockets_server(require) -> AsyncIterator[Callable[..., Awaitable[WebsocketsServer]]]:
    """``srv = await websockets_server(**serve_kwargs)``: a websockets echo server.

    ``srv.url`` is its address and ``srv.peers`` its server-side connections.
    """
    try:
        from websockets.asyncio.server import serve
    except ImportError:
        serve = None
    require(serve is not None, "websockets is not installed (pip install websockets==17.4)")
    servers: list[Any] = []

    async def start(handler: Any = None, **kwargs: Any) -> WebsocketsServer:
        kwargs.setdefault("ping_interval", None)
        peers: list[Any] = []

        async def track(ws: Any) -> None:
            peers.append(ws)
            await (handler or _ws_echo)(ws)

        server = await serve(track, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return WebsocketsServer(server, f"ws://127.0.0.1:{port}/", peers)

    yield start
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), GUARD)
