"""An echo server run forever and a client that says hello (websockets' first programs)."""

import asyncio

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main():
    server = await serve(echo, "127.0.0.1", 0)
    forever = asyncio.create_task(server.serve_forever())
    port = server.sockets[0].getsockname()[1]
    async with connect(f"ws://127.0.0.1:{port}") as websocket:
        await websocket.send("Hello world!")
        print(await websocket.recv())
        await websocket.send(b"\x00\x01")
        print(await websocket.recv())
    forever.cancel()
    server.close()
    await server.wait_closed()
    print("serving:", server.is_serving())


asyncio.run(main())
