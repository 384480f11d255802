"""The echo app every engine serves in bench/uvicorn_engines.py: raw ASGI 3, nothing else.

A raw app keeps the framework's cost out of the comparison, so the numbers
show the engines. ``starlette_app`` is the same echo as a Starlette endpoint
(``--app starlette``), to see what a framework adds on top.
"""

from __future__ import annotations

from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


def _starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_bytes(await websocket.receive_bytes())
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[WebSocketRoute("/", echo)])


def __getattr__(name: str) -> Any:
    # Built on first use: the raw app must not need Starlette installed.
    if name == "starlette_app":
        return _starlette_app()
    raise AttributeError(name)
