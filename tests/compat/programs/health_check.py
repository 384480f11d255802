"""process_request answering a health check over plain HTTP, and refusing a bad path."""

import asyncio
import http

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidStatus


def health_check(connection, request):
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    if request.path.startswith("/private"):
        return connection.respond(http.HTTPStatus.FORBIDDEN, "Forbidden\n")
    return None


async def echo(websocket):
    async for message in websocket:
        await websocket.send(message)


async def main():
    async with serve(echo, "127.0.0.1", 0, process_request=health_check) as server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, _, body = (await reader.read()).partition(b"\r\n\r\n")
        writer.close()
        print(head.split(b"\r\n")[0].decode(), repr(body))
        try:
            await connect(f"ws://127.0.0.1:{port}/private")
        except InvalidStatus as exc:
            print("refused:", exc.response.status_code, repr(bytes(exc.response.body)))
        async with connect(f"ws://127.0.0.1:{port}/") as websocket:
            await websocket.send("still echoing")
            print(await websocket.recv())


asyncio.run(main())
