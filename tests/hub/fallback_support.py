"""Helpers of the HTTP fallback tests: an SSE reader, an NDJSON stream reader, raw requests.

Written against docs/wire-protocol.md ("HTTP fallbacks") with httpx and
asyncio streams, nothing of tether's own HTTP code.

(A module with its own name, so test modules can import it: every conftest.py is "conftest".)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from hub_support import GUARD


@dataclass
class SseEvent:
    name: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    """Events of a ``text/event-stream`` response, parsed per the WHATWG rules we use."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines
        self.comments: list[str] = []
        self.retry: int | None = None

    async def next(self, *, skip_comments: bool = True) -> SseEvent:
        return await asyncio.wait_for(self._next(), GUARD)

    async def _next(self) -> SseEvent:
        event = SseEvent()
        fields = False
        async for line in self._lines:
            if line == "":
                if fields:
                    return event
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event.name, fields = value, True
            elif name == "data":
                event.data = value if not event.data else event.data + "\n" + value
                fields = True
            elif name == "id":
                event.id, fields = value, True
            elif name == "retry":
                self.retry = int(value)
        raise EOFError("the stream ended")

    async def until(self, name: str) -> SseEvent:
        while True:
            event = await self.next()
            if event.name == name:
                return event


class NdjsonReader:
    """Frames of an ``application/x-ndjson`` stream (empty lines are heartbeats)."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines
        self.heartbeats = 0

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self._next(), GUARD)

    async def _next(self) -> dict[str, Any]:
        async for line in self._lines:
            if line == "":
                self.heartbeats += 1
                continue
            frame: dict[str, Any] = json.loads(line)
            return frame
        raise EOFError("the stream ended")

    async def reply(self, command_id: int) -> dict[str, Any]:
        while True:
            frame = await self.next()
            if frame.get("id") == command_id:
                return frame

    async def push(self, kind: str) -> dict[str, Any]:
        while True:
            frame = await self.next()
            if frame.get("push") == kind:
                return frame


def connect_command(**params: Any) -> dict[str, Any]:
    return {"id": 1, "method": "connect", "params": params}


async def post(
    client: httpx.AsyncClient, path: str, body: Any, **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    response = await client.post(path, json=body, timeout=GUARD, **kwargs)
    return response.status_code, response.json()
