"""The HTTP fallbacks of HubApp, mounted in Starlette and served by uvicorn.

The same requests as tests/hub/test_hub_fallbacks.py, relative to the mount:
SSE with resume, streaming emulation with commands by POST, long polling;
and a stream whose reader stops is cut with bounded memory (asgi_driver).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_driver import Driver
from starlette.applications import Starlette
from starlette.routing import Mount

import uvicorn
from tether.asgi import HubApp
from tether.hub import HubConfig, Limits, Node

GUARD = 10.0


def lines_of(response: httpx.Response) -> AsyncIterator[str]:
    return response.aiter_lines()


async def next_event(lines: AsyncIterator[str]) -> dict[str, str]:
    event: dict[str, str] = {}
    while True:
        line = await asyncio.wait_for(lines.__anext__(), GUARD)
        if line == "":
            if event:
                return event
            continue
        if line.startswith((":", "retry:")):
            continue
        name, _, value = line.partition(": ")
        event[name] = value


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, HubApp]]:
    hub = HubApp(Node(HubConfig(allow_anonymous=True)))
    app = Starlette(routes=[Mount("/realtime", app=hub)], lifespan=hub.lifespan)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/realtime", hub
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, GUARD)


async def test_sse_and_resume_through_uvicorn(served: tuple[str, HubApp]) -> None:
    base, hub = served
    async with httpx.AsyncClient(base_url=base, timeout=GUARD) as client:
        async with client.stream("GET", "/connection/sse?channel=news") as response:
            assert response.headers["content-type"] == "text/event-stream"
            lines = lines_of(response)
            assert (await next_event(lines))["event"] == "connected"
            await hub.node.publish("news", 1)
            first = await next_event(lines)
            assert first["data"] == "1"
        await hub.node.publish("news", 2)
        headers = {"Last-Event-ID": first["id"]}
        async with client.stream(
            "GET", "/connection/sse?channel=news", headers=headers
        ) as response:
            lines = lines_of(response)
            assert json.loads((await next_event(lines))["data"])["channels"]["news"]["recovered"]
            assert (await next_event(lines))["data"] == "2"


async def test_stream_and_poll_emulation_through_uvicorn(served: tuple[str, HubApp]) -> None:
    base, _ = served
    connect = {"id": 1, "method": "connect", "params": {}}
    async with httpx.AsyncClient(base_url=base, timeout=GUARD) as client:
        async with client.stream("POST", "/connection/stream", json=connect) as response:
            lines = lines_of(response)
            key = json.loads(await lines.__anext__())["session"]
            assert "result" in json.loads(await lines.__anext__())
            ping = {"id": 2, "method": "ping", "params": {}}
            sent = await client.post("/connection/send", json={"session": key, "commands": [ping]})
            assert sent.status_code == 200
            assert json.loads(await asyncio.wait_for(lines.__anext__(), GUARD)) == {
                "id": 2,
                "result": {},
            }
        first = (await client.post("/connection/poll", json={"connect": connect})).json()
        assert first["seq"] == 1 and first["messages"][0]["id"] == 1
        gone = await client.post("/connection/poll", json={"session": "x.y", "ack": 0})
        assert (gone.status_code, gone.json()["error"]["code"]) == (404, 125)


async def test_a_stalled_reader_is_cut() -> None:
    hub = HubApp(Node(HubConfig(allow_anonymous=True, limits=Limits(send_queue_size=16 * 1024))))
    hub.write_limit = 16 * 1024
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/connection/sse",
        "root_path": "",
        "query_string": b"channel=firehose",
        "headers": [(b"host", b"x")],
        "http_version": "1.1",
        "client": ("127.0.0.1", 1),
    }
    driver = Driver(hub, scope).start()
    assert (await driver.next("http.response.start"))["status"] == 200
    while not hub.node.sessions:
        await asyncio.sleep(0.01)
    (session,) = hub.node.sessions.values()
    driver.gate.clear()  # the client stops reading: every send blocks
    for _ in range(200):
        await hub.node.publish("firehose", "x" * 1000)
        if session.closed:
            break
        await asyncio.sleep(0)
    assert session.closed and session.close_code == 4010
    await driver.finished()  # the app returned: the server drops the connection
    await hub.shutdown()
