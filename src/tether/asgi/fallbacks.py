"""The HTTP fallbacks inside an ASGI app: one request as a :class:`~tether.http.messages.Exchange`.

:class:`~tether.hub.fallbacks.Fallbacks` answers the same requests under
``tether serve`` and under any ASGI server; this module is the ASGI side. A
streamed response is ``http.response.body`` messages with ``more_body``,
sent by one writer task from a bounded buffer (ASGI does not tell how full
the server's socket is, as for :mod:`tether.asgi.transport`): past
``write_limit`` the stream is not ready, the session queues, and a client
that never reads is disconnected as a slow consumer. The ASGI server frames
the body (chunked or not), so chunks are written as they are.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from tether.asgi.http import BodyReader
from tether.asgi.scope import Receive, Scope, Send, route_path
from tether.http.messages import HttpRequest
from tether.protocol.headers import Headers

logger = logging.getLogger("tether.asgi")


def fallback_request(scope: Scope) -> HttpRequest:
    """The request of an ASGI ``http`` scope, its path relative to the mount."""
    query = scope.get("query_string", b"").decode("latin-1")
    target = route_path(scope) + ("?" + query if query else "")
    headers = Headers(
        (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
    )
    client = scope.get("client")
    return HttpRequest(
        method=scope["method"],
        target=target,
        headers=headers,
        http_version=str(scope.get("http_version", "1.1")),
        remote=str(client[0]) if client else "",
    )


def _headers(status: int, headers: Iterable[tuple[str, str]]) -> dict[str, Any]:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ],
    }


class AsgiBodyStream:
    """Implements :class:`~tether.http.messages.BodyStream` over ASGI ``send``."""

    chunked = False  # the ASGI server frames the body

    def __init__(
        self, send: Send, receive: Receive, start: dict[str, Any], write_limit: int
    ) -> None:
        self._send = send
        self._receive = receive
        self.write_limit = write_limit
        loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = loop.create_future()
        self._queue: collections.deque[bytes] = collections.deque([b""])
        self._start: dict[str, Any] | None = start
        self._buffered = 0
        self._ending = False
        self._work = asyncio.Event()
        self._work.set()
        self._room = asyncio.Event()
        self._room.set()
        self.writer = loop.create_task(self._write_loop())
        self._watcher = loop.create_task(self._watch_disconnect())

    @property
    def open(self) -> bool:
        return not self.done.done() and not self._ending

    def frame(self, payload: bytes) -> bytes:
        return payload

    def ready(self) -> bool:
        return self.open and self._buffered < self.write_limit

    def write(self, payload: bytes) -> None:
        self.write_framed(payload)

    def write_framed(self, data: bytes) -> None:
        if not self.open or not data:
            return
        self._queue.append(data)
        self._buffered += len(data)
        if self._buffered >= self.write_limit:
            self._room.clear()
        self._work.set()

    async def drain(self) -> None:
        while self.open and not self._room.is_set():
            waiter: asyncio.Future[Any] = asyncio.ensure_future(self._room.wait())
            either: set[asyncio.Future[Any]] = {waiter, self.done}
            try:
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    def end(self) -> None:
        if not self.open:
            return
        if not self.ready():
            self.abort()  # a reader that stopped reading: do not wait for it
            return
        self._ending = True
        self._work.set()

    def abort(self) -> None:
        self._queue.clear()
        self._buffered = 0
        self.writer.cancel()
        self._finish()

    def _finish(self) -> None:
        self._watcher.cancel()
        if not self.done.done():
            self.done.set_result(None)

    async def _write_loop(self) -> None:
        try:
            if self._start is not None:
                await self._send(self._start)
                self._start = None
            while True:
                await self._work.wait()
                self._work.clear()
                while self._queue:
                    data = self._queue.popleft()
                    await self._send(
                        {"type": "http.response.body", "body": data, "more_body": True}
                    )
                    self._buffered -= len(data)
                    if self._buffered < self.write_limit:
                        self._room.set()
                if self._ending:
                    await self._send({"type": "http.response.body", "body": b""})
                    return
        except Exception as exc:  # the client is gone (the server's send raised)
            logger.debug("fallback stream ended: %s", exc)
        finally:
            self._finish()

    async def _watch_disconnect(self) -> None:
        with contextlib.suppress(Exception):
            while (await self._receive())["type"] != "http.disconnect":
                pass
        self.abort()


class AsgiExchange:
    """Implements :class:`~tether.http.messages.Exchange` for one ASGI ``http`` scope."""

    def __init__(self, receive: Receive, send: Send, write_limit: int) -> None:
        self._receive = receive
        self._send = send
        self.write_limit = write_limit
        self._responded = False
        self.stream: AsgiBodyStream | None = None

    @property
    def responded(self) -> bool:
        return self._responded

    async def read_body(self, max_size: int) -> bytes:
        return await BodyReader(self._receive)(max_size)

    async def respond(
        self, status: int, headers: Iterable[tuple[str, str]], body: bytes = b""
    ) -> None:
        if self._responded:
            raise RuntimeError("already responded")
        self._responded = True
        pairs = [(k, v) for k, v in headers if k.lower() != "content-length"]
        pairs.append(("Content-Length", str(len(body))))
        await self._send(_headers(status, pairs))
        await self._send({"type": "http.response.body", "body": body})

    def start_stream(self, status: int, headers: Iterable[tuple[str, str]]) -> AsgiBodyStream:
        if self._responded:
            raise RuntimeError("already responded")
        self._responded = True
        self.stream = AsgiBodyStream(
            self._send, self._receive, _headers(status, headers), self.write_limit
        )
        return self.stream

    async def finish(self) -> None:
        """After the handler: end a stream it left open and wait for the last write."""
        stream = self.stream
        if stream is None:
            return
        stream.end()
        with contextlib.suppress(asyncio.CancelledError):
            await stream.writer
