"""ASGI applications that uvicorn serves in the tests of tether.uvicorn (``--app-dir`` here).

``app`` is a raw ASGI 3 application routed by path, one route per feature
of the ASGI WebSocket spec; what it saw (disconnect events, errors of
``send``) it prints on stdout as ``REPORT <route> <json>`` lines, which the
tests read from uvicorn's output. ``starlette_app`` is a Starlette
application with WebSocket endpoints.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

Scope = dict[str, Any]


def report(route: str, what: object) -> None:
    print(f"REPORT {route} {json.dumps(what)}", flush=True)


async def lifespan(receive: Any, send: Any, state: dict[str, Any]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            state["greeting"] = "hello from lifespan"
            await send({"type": "lifespan.startup.complete"})
        else:
            await send({"type": "lifespan.shutdown.complete"})
            return


async def echo_until_disconnect(route: str, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            report(route, message)
            return
        if message.get("text") == "close-please":
            await send({"type": "websocket.close", "code": 4001, "reason": "asked to close"})
            report(route, await receive())
            return
        text, data = message.get("text"), message.get("bytes")
        await send({"type": "websocket.send", "text": text, "bytes": data})


def jsonable_scope(scope: Scope) -> dict[str, Any]:
    out = {}
    for key, value in scope.items():
        if key == "headers":
            out[key] = [[name.decode("latin-1"), val.decode("latin-1")] for name, val in value]
        elif isinstance(value, bytes):
            out[key] = value.decode("latin-1")
        elif isinstance(value, tuple):
            out[key] = list(value)
        else:
            out[key] = value
    return out


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send, scope["state"])
        return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    route = scope["path"].rsplit("/", 1)[-1]
    query = parse_qs(scope["query_string"].decode())
    # Reports carry the connection's ?tag= (the route by default): tests share a server.
    tag = query.get("tag", [route])[0]
    connect = await receive()
    assert connect == {"type": "websocket.connect"}, connect
    if route == "echo":
        await send({"type": "websocket.accept"})
        await echo_until_disconnect(tag, receive, send)
    elif route == "scope":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(jsonable_scope(scope))})
        await echo_until_disconnect(tag, receive, send)
    elif route == "subprotocol":
        # The app picks the last subprotocol the client offers, and adds headers.
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": scope["subprotocols"][-1],
                "headers": [(b"x-tether-test", b"yes"), (b"set-cookie", b"a=b")],
            }
        )
        await echo_until_disconnect(tag, receive, send)
    elif route == "close-before-accept":
        await send({"type": "websocket.close", "code": 1000})
        report(tag, await receive())
    elif route == "deny":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": int(query.get("status", ["401"])[0]),
                "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")],
            }
        )
        body = "websocket.http.response.body"
        await send({"type": body, "body": b"no token, ", "more_body": True})
        await send({"type": body, "body": b"no entry"})
        report(tag, await receive())
    elif route == "hold":
        # Neither accepts nor refuses: waits for the connection to end.
        report(tag, {"waiting": True})
        report(tag, await receive())
    elif route == "raise-before-accept":
        raise RuntimeError("boom before accept")
    elif route == "return-before-accept":
        return
    elif route == "raise-after-accept":
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("boom after accept")
    elif route == "return-after-accept":
        await send({"type": "websocket.accept"})
        await receive()
    elif route == "send-after-disconnect":
        await send({"type": "websocket.accept"})
        report(tag, await receive())
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            report(tag, {"error": type(exc).__name__, "is_oserror": True})
        else:
            report(tag, {"error": None})
    elif route == "big":
        await send({"type": "websocket.accept"})
        size = int(query["size"][0])
        count = int(query.get("count", ["1"])[0])
        for _ in range(count):
            await send({"type": "websocket.send", "bytes": b"x" * size})
        await echo_until_disconnect(tag, receive, send)
    else:
        await send({"type": "websocket.close", "code": 1008})
        report(tag, await receive())


async def starlette_echo(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol=(websocket.scope["subprotocols"] or [None])[0])
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message["code"], message.get("reason"))
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])
    except WebSocketDisconnect as exc:
        report("starlette-echo", {"code": exc.code, "reason": exc.reason})


async def starlette_json(websocket: WebSocket) -> None:
    await websocket.accept()
    data = await websocket.receive_json()
    await websocket.send_json({"got": data, "path": websocket.url.path})
    await websocket.close(code=4002, reason="json done")


async def starlette_deny(websocket: WebSocket) -> None:
    from starlette.responses import PlainTextResponse

    await websocket.send_denial_response(PlainTextResponse("go away", status_code=418))


starlette_app = Starlette(
    routes=[
        WebSocketRoute("/ws", starlette_echo),
        WebSocketRoute("/json", starlette_json),
        WebSocketRoute("/deny", starlette_deny),
    ]
)

if __name__ == "__main__":  # pragma: no cover
    sys.exit("served by uvicorn, see tests/uvicorn/test_uvicorn_engine.py")
