"""Shared values of the websockets-compatibility tests."""

from __future__ import annotations

from typing import Any

# The longest any single step of these tests may take (a guard, not a timing).
GUARD = 10.0


async def ws_echo(ws: Any) -> None:
    """An echo handler, for either library's server."""
    async for message in ws:
        await ws.send(message)
