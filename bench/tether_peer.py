"""tether as a peer of the shared comparison harness (../shared/bench/run.py).

usage: python bench/tether_peer.py MODE PORT   (MODE: echo or fanout)
Uses only tether's public API: ``serve``, ``async for``, ``send``, ``broadcast``.
Runs on uvloop when it is installed (``pip install tether[speed]``).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import tether

MODE, PORT = sys.argv[1], int(sys.argv[2])
CLIENTS: set[tether.ServerConnection] = set()


async def echo(ws: tether.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def fanout(ws: tether.ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        async for message in ws:
            tether.broadcast(CLIENTS, message)
    finally:
        CLIENTS.discard(ws)


async def serve_until_killed(handler: Any) -> None:
    """Serve ``handler`` with the harness's settings; print "ready" once listening."""
    async with tether.serve(
        handler,
        "127.0.0.1",
        PORT,
        max_size=None,
        compression=None,
        ping_interval=None,
        write_limit=2**20,
    ):
        print("ready", flush=True)
        await asyncio.Future()


def run(handler: Any) -> None:
    """Run on uvloop when it is installed (``tether[speed]``), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve_until_killed(handler))
    else:
        uvloop.run(serve_until_killed(handler))


if __name__ == "__main__":
    run(echo if MODE == "echo" else fanout)
