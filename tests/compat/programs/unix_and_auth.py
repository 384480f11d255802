"""A server on a Unix socket behind HTTP Basic auth, and the route() router."""

import asyncio
import base64
import os
import tempfile

from websockets.asyncio.client import connect, unix_connect
from websockets.asyncio.router import route
from websockets.asyncio.server import basic_auth, unix_serve
from websockets.exceptions import InvalidStatus
from werkzeug.routing import Map, Rule


async def whoami(websocket):
    await websocket.send(f"you are {websocket.username}")


async def room(websocket, name):
    await websocket.send(f"welcome to {name}")


async def main():
    path = os.path.join(tempfile.mkdtemp(), "app.sock")
    auth = basic_auth(realm="demo", credentials=[("alice", "wonderland")])
    async with unix_serve(whoami, path, process_request=auth):
        token = base64.b64encode(b"alice:wonderland").decode()
        headers = {"Authorization": f"Basic {token}"}
        async with unix_connect(path, additional_headers=headers) as websocket:
            print(await websocket.recv())
        try:
            await unix_connect(path)
        except InvalidStatus as exc:
            response = exc.response
            print(
                response.status_code,
                response.headers["WWW-Authenticate"],
                repr(bytes(response.body)),
            )
    url_map = Map([Rule("/rooms/<name>", endpoint=room)])
    async with route(url_map, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/rooms/lobby") as websocket:
            print(await websocket.recv())
        try:
            await connect(f"ws://127.0.0.1:{port}/elsewhere")
        except InvalidStatus as exc:
            print("not found:", exc.response.status_code)


asyncio.run(main())
