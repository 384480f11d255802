"""websockets (the reference asyncio library) as a peer of bench/compare.py.

usage: python bench/websockets_peer.py MODE PORT   (MODE: echo or fanout)
The same server settings as bench/tether_peer.py: no compression, no size
limit, no keepalive pings, on uvloop when it is installed. ``echo`` sends every
message back; ``fanout`` sends every message to every connected client.
Prints "ready" once listening (the protocol of the bench/ harnesses).
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve

MODE, PORT = sys.argv[1], int(sys.argv[2])
CLIENTS: set[ServerConnection] = set()


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def fanout(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        async for message in ws:
            broadcast(CLIENTS, message)
    finally:
        CLIENTS.discard(ws)


async def main() -> None:
    handler = echo if MODE == "echo" else fanout
    async with serve(
        handler, "127.0.0.1", PORT, compression=None, max_size=None, ping_interval=None
    ):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
