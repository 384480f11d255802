"""Hand a new connection to the protocol its first request line asks for.

One listening socket serves WebSocket upgrades and plain HTTP. The router
reads only the request line (``GET /connection/websocket HTTP/1.1``), then
gives the socket and the bytes read so far to the protocol ``choose`` picks:
the WebSocket server's own connection for the upgrade path, so upgrades cost
one line search more than before, and :class:`~tether.http.HttpConnection`
(keep-alive, streaming) for the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

Chooser = Callable[[bytes], asyncio.BaseProtocol]
"""The request line (without CRLF; truncated when too long) -> the protocol to serve it."""


class FirstLineRouter(asyncio.Protocol):
    def __init__(
        self,
        choose: Chooser,
        *,
        max_line: int = 8192,
        timeout: float = 10.0,
        finished: Callable[[FirstLineRouter], None] | None = None,
    ) -> None:
        """``finished``: called once the socket is handed over or lost (for bookkeeping)."""
        self.choose = choose
        self.finished = finished
        self.max_line = max_line
        self.timeout = timeout
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._paused_writing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: trust the loop.
        self._transport = cast(asyncio.Transport, transport)
        self._timer = asyncio.get_running_loop().call_later(self.timeout, self._transport.abort)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n")
        if end < 0 and len(self._buffer) < self.max_line:
            return
        line = bytes(self._buffer[: end if end >= 0 else self.max_line])
        self._hand_over(self.choose(line))

    def _hand_over(self, protocol: asyncio.BaseProtocol) -> None:
        transport = self._transport
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._finish()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused_writing:
            protocol.pause_writing()
        data, self._buffer = bytes(self._buffer), bytearray()
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(data)
            while view:
                buffer = memoryview(protocol.get_buffer(len(view))).cast("B")
                size = min(len(buffer), len(view))
                buffer[:size] = view[:size]
                protocol.buffer_updated(size)
                view = view[size:]
        elif isinstance(protocol, asyncio.Protocol):
            protocol.data_received(data)

    def eof_received(self) -> bool | None:
        return None  # closed before a request line: nothing to serve

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._finish()

    def _finish(self) -> None:
        finished, self.finished = self.finished, None
        if finished is not None:
            finished(self)

    def close(self) -> None:
        """Drop a connection that has not sent its request line yet (the server stops)."""
        if self._transport is not None and self.finished is not None:
            self._transport.abort()


def request_path(line: bytes) -> tuple[bytes, bytes]:
    """The method and the path (without query) of a request line; empty when malformed."""
    parts = line.split(b" ")
    if len(parts) != 3:
        return b"", b""
    method, target = parts[0], parts[1]
    return method, target.split(b"?", 1)[0]
