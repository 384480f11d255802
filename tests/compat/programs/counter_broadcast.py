"""A shared counter: every change is broadcast to every connected user as JSON."""

import asyncio
import json

from websockets.asyncio.client import connect
from websockets.asyncio.server import broadcast, serve

USERS = set()
VALUE = 0


def users_event():
    return json.dumps({"type": "users", "count": len(USERS)})


async def counter(websocket):
    global VALUE
    USERS.add(websocket)
    try:
        broadcast(USERS, users_event())
        await websocket.send(json.dumps({"type": "value", "value": VALUE}))
        async for message in websocket:
            event = json.loads(message)
            VALUE += 1 if event["action"] == "plus" else -1
            broadcast(USERS, json.dumps({"type": "value", "value": VALUE}))
    finally:
        USERS.remove(websocket)
        broadcast(USERS, users_event())


async def main():
    async with serve(counter, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with connect(url) as first:
            print("first:", await first.recv(), await first.recv())
            async with connect(url) as second:
                print("first:", await first.recv())
                print("second:", await second.recv(), await second.recv())
                await second.send(json.dumps({"action": "plus"}))
                print("first:", await first.recv())
                print("second:", await second.recv())
            print("first:", await first.recv())


asyncio.run(main())
