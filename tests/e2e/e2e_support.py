"""Helpers of the end-to-end tests: start ``tether serve``, a TCP proxy that cuts connections.

(A module with its own name, so test modules can import it: every conftest.py is "conftest".)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import selectors
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("TETHER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
BANNER_TIMEOUT = 20.0
# The first http://HOST:PORT (or ws://) the hub prints says where it listens.
BANNER = re.compile(r"(?:https?|wss?)://(?P<host>[\w.\-\[\]:]+?):(?P<port>\d+)")


# ------------------------------------------------------------------------- hub


@dataclass
class Hub:
    """A running ``tether serve`` subprocess."""

    process: subprocess.Popen[str]
    host: str
    port: int
    api_key: str
    output: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return "".join(self.output[-200:])


def _drain(stream: Any, sink: list[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line)


def start_hub(*extra: str, env: dict[str, str] | None = None) -> Hub:
    """Start ``python -m tether serve`` on a free port and wait for its banner line."""
    api_key = "e2e-api-key"
    command = [
        sys.executable,
        "-m",
        "tether",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--api-key",
        api_key,
        *extra,
    ]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + BANNER_TIMEOUT
    match = None
    try:
        while match is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise RuntimeError(f"no banner from {command} in time:\n{''.join(output)}")
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"{command} exited ({process.wait()}):\n{''.join(output)}")
            output.append(line)
            match = BANNER.search(line)
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        selector.close()
    threading.Thread(target=_drain, args=(process.stdout, output), daemon=True).start()
    host = match.group("host").strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return Hub(process, host, int(match.group("port")), api_key, output)


def stop_hub(hub: Hub) -> None:
    if hub.process.poll() is None:
        hub.process.terminate()
        try:
            hub.process.wait(10)
        except subprocess.TimeoutExpired:
            hub.process.kill()
            hub.process.wait()


# --------------------------------------------------------------------- browser


@dataclass
class ChatPage:
    """A page of the demo chat and the JavaScript errors it raised.

    ``console`` collects what a user's console would show as errors: console errors
    and HTTP responses of 400 or more (a missing favicon is one). Tests that cut the
    network expect some (Chromium logs each refused WebSocket), so only tests that
    mean it assert it is empty.
    """

    page: Any
    errors: list[str]
    console: list[str] = field(default_factory=list)


# ------------------------------------------------------------- page helpers

EXPECT_TIMEOUT = 15_000  # ms; a guard for expectations, never a wait by itself


def playwright_expect() -> Any:
    """Playwright's ``expect`` with the tests' guard timeout (imported late: optional)."""
    from playwright.async_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT)
    return expect


def new_room() -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}"


async def say(chat: ChatPage, text: str) -> None:
    """Type ``text`` into the demo's message field and send it."""
    await chat.page.fill("#input", text)
    await chat.page.click("#send")


async def expect_connected(chat: ChatPage) -> None:
    expect = playwright_expect()
    status = chat.page.locator("#status")
    await expect(status).to_have_attribute("data-state", "connected")
    await expect(status).to_have_text("connected")


async def api(hub: Hub, method: str, body: dict[str, Any]) -> Any:
    """``POST /api/<method>`` with the hub's API key; the decoded JSON answer."""

    def call() -> Any:
        request = urllib.request.Request(
            f"{hub.url}/api/{method}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"apikey {hub.api_key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    return await asyncio.to_thread(call)


# ----------------------------------------------------------------------- proxy


class DropProxy:
    """A TCP proxy in front of the hub whose connections can be cut, like a network failure.

    ``cut()`` aborts every proxied connection (both sides get a reset, no WebSocket close
    frame) and refuses new ones until ``restore()``.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.up = True
        self.accepted = 0
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> DropProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if not writer.transport.is_closing() and writer.can_write_eof():
                writer.write_eof()

    def cut(self) -> None:
        self.up = False
        for pair in list(self._pairs):
            for w in pair:
                w.transport.abort()

    def restore(self) -> None:
        self.up = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
