"""Graceful shutdown: SIGTERM closes the server; clients see 1001 (going away)."""

import asyncio
import os
import signal

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedOK
from websockets.frames import CloseCode


async def handler(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main():
    server = await serve(handler, "127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, server.close)
    port = server.sockets[0].getsockname()[1]
    async with connect(f"ws://127.0.0.1:{port}") as websocket:
        await websocket.send("before")
        print(await websocket.recv())
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            await websocket.recv()
        except ConnectionClosedOK as exc:
            print("closed:", exc.rcvd.code == CloseCode.GOING_AWAY, exc.rcvd_then_sent)
    await server.wait_closed()
    print("server closed")


asyncio.run(main())
