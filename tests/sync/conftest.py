"""Fixtures for the sync API's tests: servers on 127.0.0.1:0, each stopped on teardown.

``sync_server(handler, **serve_kwargs)``      a ``tether.sync`` server in a thread
``asyncio_server(kind, handler, **kwargs)``   a tether or websockets asyncio server,
                                              on an event loop in a thread of its own
``raw_server(script)``                        a socket server whose one connection is
                                              handed to ``script(sock)`` in a thread
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sync_testing import GUARD

from tether.sync.server import Server, ServerConnection, serve


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """connect() follows the *_proxy variables by default (proxy=True): not in these tests."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy", "socks_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def sync_echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


class SyncServer:
    def __init__(self, server: Server, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread
        self.port: int = server.socket.getsockname()[1]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(GUARD)
        assert not self.thread.is_alive(), "serve_forever did not return after shutdown()"


@pytest.fixture
def sync_server() -> Iterator[Callable[..., SyncServer]]:
    started: list[SyncServer] = []

    def start(handler: Callable[[ServerConnection], None] = sync_echo, **kwargs: Any) -> SyncServer:
        kwargs.setdefault("ping_interval", None)
        server = serve(handler, "127.0.0.1", 0, **kwargs)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        running = SyncServer(server, thread)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


class LoopThread:
    """An asyncio event loop running in a thread; ``run(coro)`` from the test's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(GUARD)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(GUARD)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    yield runner
    runner.stop()


@pytest.fixture
def asyncio_server(loop_thread: LoopThread) -> Iterator[Callable[..., str]]:
    """``url = asyncio_server("tether" | "websockets", handler=None, **kwargs)``.

    The handler is an echo by default.
    """
    servers: list[Any] = []

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    def start(kind: str, handler: Any = None, **kwargs: Any) -> str:
        kwargs.setdefault("ping_interval", None)
        if kind == "tether":
            import tether

            serve_fn: Any = tether.serve
        else:
            from websockets.asyncio.server import serve as serve_fn

        async def open_server() -> Any:
            return await serve_fn(handler or echo, "127.0.0.1", 0, **kwargs)

        server = loop_thread.run(open_server())
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    yield start

    async def close_all() -> None:
        for server in servers:
            server.close()
            await server.wait_closed()

    loop_thread.run(close_all())


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], int]]:
    """``port = raw_server(script)``: ``script(sock)`` runs on the first accepted connection."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(script: Callable[[socket.socket], None]) -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def run() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                script(conn)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return int(listener.getsockname()[1])

    yield start
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(GUARD)
