"""A hub session's downstream as one long HTTP response (bidirectional emulation).

Two kinds share this module, differing only in how a message is framed:

- ``http_stream`` (``POST /connection/stream``): NDJSON, one message per line;
  an empty line is the heartbeat.
- ``eventsource`` (``GET /connection/eventsource``): server-sent events, one
  unnamed event per message (``data: <json>``); ``: ping`` is the heartbeat.

The hub's messages are compact JSON (no raw newline), so each is one line
either way. A publication fanned out to many streams of a kind is framed and
chunked once, and the same bytes are written to each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from tether.http.messages import BodyStream, chunk
from tether.hub.metrics import Metrics
from tether.hub.transport import PingPolicy, Transport, TransportKind


class StreamKind(TransportKind):
    def __init__(
        self, name: str, encode: Callable[[str], bytes], heartbeat: bytes, content_type: str
    ) -> None:
        super().__init__(name, ping=PingPolicy.HEARTBEAT)
        self.encode = encode
        self.heartbeat = heartbeat
        self.content_type = content_type

    def write_many(self, transports: Sequence[Transport], text: str) -> None:
        payload = self.encode(text)
        chunked = chunk(payload)
        total = 0
        metrics: Metrics | None = None
        for transport in transports:
            assert isinstance(transport, StreamTransport)
            stream = transport.stream
            data = chunked if stream.chunked else payload
            stream.write_framed(data)
            total += len(data)
            metrics = transport.metrics
        if metrics is not None:  # one node's sessions: counted once per fan-out
            metrics.transport_bytes[self.name] += total


HTTP_STREAM = StreamKind(
    "http_stream", lambda text: text.encode() + b"\n", b"\n", "application/x-ndjson"
)
EVENTSOURCE = StreamKind(
    "eventsource",
    lambda text: b"data: " + text.encode() + b"\n\n",
    b": ping\n\n",
    "text/event-stream",
)


class StreamTransport:
    """Implements :class:`~tether.hub.transport.Transport` over a :class:`BodyStream`."""

    def __init__(
        self, kind: StreamKind, stream: BodyStream, *, ping_interval: float, metrics: Metrics
    ) -> None:
        self.kind = kind
        self.stream = stream
        self.metrics = metrics
        self.ping_interval = ping_interval
        self._beat: asyncio.TimerHandle | None = None
        if ping_interval > 0:
            self._beat = asyncio.get_running_loop().call_later(ping_interval, self._heartbeat)

    def _heartbeat(self) -> None:
        self._beat = None
        if not self.stream.open:
            return
        if self.stream.ready():  # a stalled reader gets no heartbeats piled up
            self.stream.write(self.kind.heartbeat)
        self._beat = asyncio.get_running_loop().call_later(self.ping_interval, self._heartbeat)

    def ready(self) -> bool:
        return self.stream.ready()

    def write_framed(self, data: bytes) -> None:
        self.stream.write_framed(data)
        self.metrics.transport_bytes[self.kind.name] += len(data)

    def write_now(self, text: str) -> None:
        self.write_framed(self.stream.frame(self.kind.encode(text)))

    async def write(self, text: str) -> None:
        self.write_now(text)
        await self.stream.drain()

    async def close(self, code: int, reason: str) -> None:
        # The disconnect push (if any) is already written: end the response.
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        self.stream.end()
