"""Everyday idioms: pings, text/binary control, close codes, headers, subprotocols, origins."""

import asyncio
import logging
import re
import uuid

import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedError, InvalidStatus, InvalidURI
from websockets.frames import CloseCode


def select_subprotocol(connection, subprotocols):
    return "chat" if "chat" in subprotocols else None


async def handler(websocket):
    print("server id is a UUID:", isinstance(websocket.id, uuid.UUID))
    websocket.logger.info("connected")
    print("server subprotocol:", websocket.subprotocol)
    print("request headers:", sorted(k for k in dict(websocket.request.headers) if k == "x-demo"))
    pong_waiter = await websocket.ping()
    latency = await pong_waiter
    print("server latency measured:", latency >= 0)
    message = await websocket.recv(decode=False)
    print("raw text:", message)
    await websocket.send(b"caf\xc3\xa9", text=True)
    await websocket.send("binary", text=False)
    await websocket.close(CloseCode.POLICY_VIOLATION, "enough")


async def main():
    logging.basicConfig(level=logging.CRITICAL)
    origins = [re.compile(r"https://(www\.)?example\.com")]
    async with serve(
        handler,
        "127.0.0.1",
        0,
        origins=origins,
        select_subprotocol=select_subprotocol,
        max_size=(2**20, 2**16),
        logger=logging.getLogger("demo"),
    ) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        try:
            await connect(url, origin="https://evil.example")
        except InvalidStatus as exc:
            print("bad origin:", exc.response.status_code)
        async with connect(
            url,
            origin="https://www.example.com",
            subprotocols=["superchat", "chat"],
            additional_headers={"X-Demo": "1"},
        ) as websocket:
            print("client subprotocol:", websocket.subprotocol)
            print("response has Upgrade:", "upgrade" in dict(websocket.response.headers))
            await websocket.send("hello")
            print("text:", await websocket.recv())
            print("binary:", await websocket.recv())
            try:
                await websocket.recv()
            except ConnectionClosedError as exc:
                print("closed:", exc.rcvd.code, exc.rcvd.reason, exc.rcvd_then_sent)
                print("long name:", exc.rcvd.code == CloseCode.POLICY_VIOLATION)
    try:
        await websockets.connect("http://not-a-websocket/")
    except InvalidURI as exc:
        print("invalid uri:", exc.uri)
    print("base class:", issubclass(InvalidURI, websockets.WebSocketException))


asyncio.run(main())
