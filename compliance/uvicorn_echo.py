"""A Starlette WebSocket echo endpoint, served by uvicorn with tether's engine for Autobahn.

``ab_harness.uvicorn_echo_server`` runs::

    uvicorn uvicorn_echo:app --app-dir compliance --ws tether.uvicorn:WebSocketProtocol \\
        --ws-max-size 16777216 --ws-ping-interval 0

Text comes back as text and binary as binary, whatever the size (up to
uvicorn's --ws-max-size). The keepalive Pings are off (``--ws-ping-interval
0``) for the reason echo_server.py gives: Autobahn cases do not expect them.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is not None:
                await websocket.send_text(text)
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect:
        # Messages that came just before the client's Close (or a protocol
        # error) cannot be answered any more: the connection is closing.
        pass


app = Starlette(routes=[WebSocketRoute("/", echo), WebSocketRoute("/{path:path}", echo)])
