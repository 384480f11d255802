"""An ASGI server written for the tests: drives an app's scopes through queues.

It lets a test play the server's part exactly (which events arrive when, a ``send``
that blocks like a client that reads nothing) where a real server cannot be steered.

(A module with its own name, so test modules can import it: every conftest.py is "conftest".)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tether.asgi.scope import ASGIApp, Message

GUARD = 10.0


class Driver:
    """One scope of ``app``: ``inbox`` feeds its ``receive``, ``sent`` collects its ``send``.

    ``gate`` open lets ``send`` return at once; cleared, every ``send`` blocks until it
    opens again (an ASGI server whose client stopped reading).
    """

    def __init__(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        self.app = app
        self.scope = scope
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: asyncio.Queue[Message] = asyncio.Queue()
        self.gate = asyncio.Event()
        self.gate.set()
        self.task: asyncio.Task[None] | None = None

    async def receive(self) -> Message:
        return await self.inbox.get()

    async def send(self, message: Message) -> None:
        await self.gate.wait()
        self.sent.put_nowait(message)

    def start(self) -> Driver:
        self.task = asyncio.get_running_loop().create_task(
            self.app(self.scope, self.receive, self.send)
        )
        return self

    async def next(self, kind: str | None = None) -> Message:
        """The next message the app sent (of type ``kind``, skipping others)."""
        while True:
            message = await asyncio.wait_for(self.sent.get(), GUARD)
            if kind is None or message["type"] == kind:
                return message

    async def finished(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, GUARD)


def websocket_scope(
    path: str = "/connection/websocket",
    *,
    root_path: str = "",
    subprotocols: tuple[str, ...] = ("tether.v1",),
    headers: list[tuple[str, str]] | None = None,
    response_extension: bool = True,
) -> dict[str, Any]:
    raw = [("host", "127.0.0.1:8000"), *(headers or [])]
    if subprotocols:
        raw.append(("sec-websocket-protocol", ", ".join(subprotocols)))
    extensions = {"websocket.http.response": {}} if response_extension else {}
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": root_path + path,
        "root_path": root_path,
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in raw],
        "subprotocols": list(subprotocols),
        "extensions": extensions,
    }


def http_scope(
    path: str,
    *,
    method: str = "GET",
    root_path: str = "",
    headers: list[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    raw = [("host", "127.0.0.1:8000"), *(headers or [])]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": root_path + path,
        "root_path": root_path,
        "query_string": b"",
        "headers": [(k.encode(), v.encode()) for k, v in raw],
    }


async def http_request(
    app: ASGIApp, scope: dict[str, Any], body: bytes = b"", chunks: int = 1
) -> tuple[int, dict[str, str], bytes]:
    """One request through ``app``: (status, headers, body)."""
    driver = Driver(app, scope)
    size = max(1, -(-len(body) // chunks)) if body else 1
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    for i, piece in enumerate(pieces):
        driver.inbox.put_nowait(
            {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        )
    driver.start()
    start = await driver.next("http.response.start")
    response = await driver.next("http.response.body")
    await driver.finished()
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, response["body"]


def wire(message: Message) -> dict[str, Any]:
    """A hub message the app sent as ``websocket.send`` text."""
    assert message["type"] == "websocket.send", message
    parsed: dict[str, Any] = json.loads(message["text"])
    return parsed


async def next_push(driver: Driver, kind: str) -> dict[str, Any]:
    """The next hub push of ``kind`` the app sent (join/leave pushes skipped)."""
    while True:
        message = wire(await driver.next())
        if message.get("push") == kind:
            return message
