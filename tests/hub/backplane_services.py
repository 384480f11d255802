"""Helpers of the backplane tests: Redis and NATS servers, ``tether serve`` processes.

Tests read ``TETHER_REDIS_URL`` / ``TETHER_NATS_URL`` (defaults: the local
servers) and skip, with the reason shown, when one is not reachable, unless
``TETHER_REQUIRE_SERVICES=1`` (then they fail). Every test uses its own key
prefix / subject prefix, so parallel and repeated runs do not collide.

(A module with its own name, so test modules can import it: every conftest.py is "conftest".)
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tether.hub import Client, ClientState
from tether.hub.client import PublicationEvent, StateEvent, SubscribedEvent
from tether_testing import require

REDIS_URL = os.environ.get("TETHER_REDIS_URL") or "redis://127.0.0.1:6379/0"
NATS_URL = os.environ.get("TETHER_NATS_URL") or "nats://127.0.0.1:4222"
ROOT = Path(__file__).resolve().parents[2]
# A guard for awaits that should finish quickly; never a way to wait for something.
GUARD = 10.0


def unique(label: str = "t") -> str:
    """A fresh prefix for one test's keys, channels and subjects."""
    return f"{label}{uuid.uuid4().hex[:12]}"


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def require_redis(url: str = REDIS_URL) -> str:
    require(
        importlib.util.find_spec("redis"), "redis-py is not installed (pip install 'tether[redis]')"
    )
    require(reachable(url, 6379), f"Redis is not reachable at {url} (set TETHER_REDIS_URL)")
    return url


def require_nats(url: str = NATS_URL) -> str:
    require(
        importlib.util.find_spec("nats"), "nats-py is not installed (pip install 'tether[nats]')"
    )
    require(reachable(url, 4222), f"NATS is not reachable at {url} (set TETHER_NATS_URL)")
    return url


def require_redis_server() -> str:
    """The ``redis-server`` binary, for private instances that tests kill."""
    require_redis()
    binary = shutil.which("redis-server")
    require(binary, "redis-server is not installed (apt-get install redis-server)")
    assert binary is not None
    return binary


async def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key that starts with ``prefix`` (the test's own)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
    finally:
        await client.aclose()


async def count_prefix(url: str, prefix: str) -> int:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        return len([key async for key in client.scan_iter(match=prefix + "*", count=1000)])
    finally:
        await client.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[bool]], *, timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``check`` until true, failing after ``timeout`` seconds.

    Only for conditions nothing can be awaited for (a TTL running out, a
    server accepting connections again).
    """
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(interval)


# -------------------------------------------------------------- private Redis


@dataclass
class PrivateRedis:
    """A ``redis-server`` of our own on a free port, to kill and restart."""

    binary: str
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def up() -> bool:
            return await asyncio.to_thread(reachable, self.url, self.port)

        await eventually(up, timeout=GUARD, what=f"redis-server on port {self.port}")

    async def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()

    async def restart(self) -> None:
        await self.kill()
        await self.start()


# --------------------------------------------------------------- private NATS


def require_nats_server() -> str:
    """The ``nats-server`` binary, for private JetStream servers that tests restart."""
    require_nats()
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    require(binary, "nats-server is not installed (apt-get install nats-server)")
    assert binary is not None
    return binary


@dataclass
class PrivateNats:
    """A ``nats-server`` of our own on a free port (JetStream storing in ``store``)."""

    binary: str
    store: Path
    jetstream: bool = True
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        args = ["-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store)]
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def up() -> bool:
            return await asyncio.to_thread(reachable, self.url, self.port)

        await eventually(up, timeout=GUARD, what=f"nats-server on port {self.port}")

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()  # lets JetStream close its store files
            try:
                await asyncio.wait_for(process.wait(), GUARD)
            except asyncio.TimeoutError:  # built-in TimeoutError from 3.11
                process.kill()
                await process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


# ---------------------------------------------------------- tether serve


@dataclass
class HubProcess:
    """A ``python -m tether serve`` subprocess."""

    process: asyncio.subprocess.Process
    port: int
    output: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def log(self) -> str:
        return "".join(self.output[-100:])

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, no presence cleanup."""
        if self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), GUARD)
            except asyncio.TimeoutError:  # built-in TimeoutError from 3.11
                self.process.kill()
        await self.process.wait()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reader, GUARD)


async def start_hub_process(
    *args: str,
    config: Path | None = None,
    port: int | None = None,
    python: list[str] | None = None,
    **popen: Any,
) -> HubProcess:
    """Start ``tether serve`` on ``port`` (a free one by default) with ``args``; return once it
    listens. ``python``: the interpreter's command (``sys.executable`` by default); ``popen``:
    more arguments for the subprocess."""
    port = free_port() if port is None else port
    interpreter = python or [sys.executable]
    command = [*interpreter, "-m", "tether", "serve", "--port", str(port), *args]
    if config is not None:
        command += ["--config", str(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name in ("TETHER_BROKER", "TETHER_HISTORY", "TETHER_PRESENCE"):
        env.pop(name, None)
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env=env,
        **popen,
    )
    hub = HubProcess(process, port)
    listening: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace")
            hub.output.append(line)
            if "listening on" in line and not listening.done():
                listening.set_result(None)
        if not listening.done():
            listening.set_exception(RuntimeError("tether serve exited:\n" + hub.log()))

    hub.reader = asyncio.get_running_loop().create_task(read())
    await asyncio.wait_for(listening, 20)
    return hub


# ------------------------------------------------------------ clusters, peers

API_KEY = "test-api-key"
CHANNEL = "chat:room"


def write_config(path: Path, prefix: str, **extra: Any) -> Path:
    lines = [
        f'backplane_prefix = "{prefix}"',
        f"presence_ttl = {extra.pop('presence_ttl', 3.0)}",
        "[limits]",
        "publish_rate = 10000.0",
        "publish_burst = 10000",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_cluster(n: int, args: list[str], config: Path) -> list[HubProcess]:
    common = ["--allow-anonymous", "--api-key", API_KEY]
    return list(
        await asyncio.gather(*(start_hub_process(*args, *common, config=config) for _ in range(n)))
    )


class Peer:
    """A hub client and what it saw (awaitable, never slept for)."""

    def __init__(self, url: str, name: str) -> None:
        self.client = Client(url, name=name, min_backoff=0.02, max_backoff=0.2)
        self.pubs: asyncio.Queue[PublicationEvent] = asyncio.Queue()
        self.subscribed: asyncio.Queue[SubscribedEvent] = asyncio.Queue()
        self.states: asyncio.Queue[StateEvent] = asyncio.Queue()
        self.unsubscribed: list[Any] = []
        self.client.on_state(self.states.put_nowait)

    async def start(self, channel: str = CHANNEL) -> Peer:
        await asyncio.wait_for(self.client.connect(), GUARD)
        await asyncio.wait_for(
            self.client.subscribe(
                channel,
                on_publication=self.pubs.put_nowait,
                on_subscribed=self.subscribed.put_nowait,
            ),
            GUARD,
        )
        await self.next_subscribed()
        return self

    async def next_pub(self) -> PublicationEvent:
        return await asyncio.wait_for(self.pubs.get(), GUARD)

    async def next_subscribed(self) -> SubscribedEvent:
        return await asyncio.wait_for(self.subscribed.get(), GUARD)

    async def state(self, state: ClientState) -> StateEvent:
        while True:
            event = await asyncio.wait_for(self.states.get(), GUARD)
            if event.state is state:
                return event

    @property
    def id(self) -> str:
        assert self.client.client_id is not None
        return self.client.client_id
