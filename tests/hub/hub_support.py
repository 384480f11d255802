"""Helpers of the hub tests: start a hub in-process, mint tokens, speak the wire protocol.

(A module with its own name, so test modules can import it: every conftest.py is "conftest".)
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import jwt

import tether
from tether.hub import HubConfig, Node
from tether.hub.wire import SUBPROTOCOL
from tether_testing import Recorder as Recorder  # shared with tests/e2e; imported from here

# A guard for awaits that should finish quickly; never a way to wait for something.
GUARD = 10.0
SECRET = "test-secret-0123456789abcdef0123456789"
API_KEY = "test-api-key"


def config(**overrides: Any) -> HubConfig:
    """A test hub's configuration: HS256 tokens, anonymous allowed, an API key."""
    base: dict[str, Any] = {"jwt_secret": SECRET, "allow_anonymous": True, "api_key": API_KEY}
    base.update(overrides)
    return HubConfig(**base)


def token(
    sub: str = "alice",
    *,
    ttl: float | None = 3600,
    secret: str = SECRET,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    payload: dict[str, Any] = {"sub": sub, **claims}
    if ttl is not None:
        payload["exp"] = int(time.time() + ttl)
    return jwt.encode(payload, secret, algorithm=algorithm)


class WireError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error['code']} {error['message']}")
        self.code = int(error["code"])
        self.message = str(error["message"])
        self.temporary = bool(error["temporary"])


class WireClient:
    """A client written against docs/wire-protocol.md with tether.connect, nothing else."""

    def __init__(self, ws: tether.ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.pushes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.messages: list[str] = []
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.client_id = ""
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        subprotocols: list[str] | None = None,
        connect: bool = True,
        **connect_params: Any,
    ) -> WireClient:
        ws = await tether.connect(
            url, subprotocols=subprotocols or [SUBPROTOCOL], **connect_params.pop("ws", {})
        )
        client = cls(ws)
        if connect:
            await client.connect(**connect_params)
        return client

    async def connect(self, **params: Any) -> dict[str, Any]:
        result = await self.call("connect", params)
        self.client_id = result["client"]
        return result

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                assert isinstance(raw, str), "the hub sends text only"
                self.messages.append(raw)
                message = json.loads(raw)
                if "id" in message:
                    future = self._replies.pop(message["id"])
                    future.set_result(message)
                else:
                    self.pushes.put_nowait(message)
        except tether.ConnectionClosed:
            pass
        code = self.ws.close_code if self.ws.close_code is not None else 1006
        self.closed.set_result((code, self.ws.close_reason or ""))

    def send(self, method: str, params: dict[str, Any] | None = None) -> asyncio.Future[Any]:
        cid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[cid] = future
        message = {"id": cid, "method": method, "params": params or {}}
        asyncio.get_running_loop().create_task(self.ws.send(json.dumps(message)))
        return future

    async def reply(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await asyncio.wait_for(self.send(method, params), GUARD)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        message = await self.reply(method, params)
        if "error" in message:
            raise WireError(message["error"])
        result: dict[str, Any] = message["result"]
        return result

    async def push(self, kind: str | None = None) -> dict[str, Any]:
        """The next push (of ``kind``, skipping others)."""
        while True:
            message = await asyncio.wait_for(self.pushes.get(), GUARD)
            if kind is None or message["push"] == kind:
                return message

    async def close_code(self) -> tuple[int, str]:
        return await asyncio.wait_for(asyncio.shield(self.closed), GUARD)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._reader, GUARD)


async def http(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw_body: bytes | None = None,
    timeout: float = GUARD,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a fresh connection: (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = raw_body if raw_body is not None else b""
    if body is not None:
        data = json.dumps(body).encode()
    head = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    if data or method == "POST":
        head.setdefault("Content-Length", str(len(data)))
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    try:
        response = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head_bytes, _, payload = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, payload


def api_headers(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"apikey {key}", "Content-Type": "application/json"}


def kill_sockets(node: Node) -> None:
    """Drop every client connection server-side, as a crashed link would (no close frame)."""
    for session in list(node.sessions.values()):
        transport = session.transport.ws.transport  # type: ignore[attr-defined]
        transport.abort()
