"""A wss:// server and client with a certificate from a local test CA."""

import asyncio
import ssl

import trustme
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve


async def hello(websocket):
    name = await websocket.recv()
    await websocket.send(f"Hello {name}!")


async def main():
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_context)
    async with serve(hello, "localhost", 0, ssl=server_context) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"wss://localhost:{port}", ssl=client_context) as websocket:
            await websocket.send("TLS")
            print(await websocket.recv())


asyncio.run(main())
