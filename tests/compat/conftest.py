"""Fixtures for the websockets-compatibility tests: the real websockets library as the peer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from compat_support import GUARD, ws_echo
from websockets.asyncio.server import serve as ws_serve


@pytest.fixture
async def websockets_server() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """``url = await websockets_server(handler, **serve_kwargs)``: websockets on 127.0.0.1:0."""
    servers: list[Any] = []

    async def start(handler: Any = ws_echo, **kwargs: Any) -> str:
        kwargs.setdefault("ping_interval", None)
        server = await ws_serve(handler, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"

    yield start
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), GUARD)
