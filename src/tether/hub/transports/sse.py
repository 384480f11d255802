"""Plain server-sent events for ``EventSource`` and ``curl -N`` (``GET /connection/sse``).

One-way: the hub runs the session's ``connect`` (with the channels as
``subs``, recovering from ``Last-Event-ID``) on the client's behalf, and
this transport turns what the session sends into events
(docs/wire-protocol.md, "Unidirectional SSE"):

- a ``pub`` push becomes an unnamed event whose ``data`` is the publication's
  data and whose ``id`` is the resume token (every channel's position);
- the ``connect`` reply becomes the ``connected`` event, followed by the
  recovered publications and a ``recovery-failed`` event for each channel
  whose position could not be recovered, in the order the session wrote
  them, so nothing live overtakes what was missed;
- ``join``/``leave`` (when asked for), ``unsubscribe`` and ``disconnect``
  pushes become named events.

Until the HTTP response starts (the hub answers refusals with a status
first), events wait in a list; the session's own limits bound it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Sequence

from tether.http.messages import BodyStream, chunk
from tether.hub.metrics import Metrics
from tether.hub.model import JSON
from tether.hub.transport import PingPolicy, Transport, TransportKind
from tether.hub.wire import dumps, loads

RESUME_PREFIX = "v1."
RETRY_MS = 2000


def encode_resume(positions: dict[str, tuple[int, str]]) -> str:
    """The opaque ``id:``: ``v1.`` + base64url(JSON ``{channel: [offset, epoch]}``)."""
    data = dumps({ch: [offset, epoch] for ch, (offset, epoch) in positions.items()})
    return RESUME_PREFIX + base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def decode_resume(token: str | None) -> dict[str, tuple[int, str]]:
    """The positions in a resume token; empty for anything malformed (a fresh start)."""
    if not token or not token.startswith(RESUME_PREFIX) or len(token) > 16384:
        return {}
    text = token[len(RESUME_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = loads(raw.decode())
    except (ValueError, binascii.Error):
        return {}
    if not isinstance(data, dict):
        return {}
    positions: dict[str, tuple[int, str]] = {}
    for channel, value in data.items():
        if (
            isinstance(value, list)
            and len(value) == 2
            and isinstance(value[0], int)
            and not isinstance(value[0], bool)
            and 0 <= value[0] < 2**53
            and isinstance(value[1], str)
        ):
            positions[channel] = (value[0], value[1])
    return positions


def event(data: str, *, name: str | None = None, id: str | None = None) -> bytes:
    """One server-sent event (``data`` must hold no newline: compact JSON)."""
    head = ""
    if name is not None:
        head += f"event: {name}\n"
    if id is not None:
        head += f"id: {id}\n"
    return f"{head}data: {data}\n\n".encode()


class _SseKind(TransportKind):
    def write_many(self, transports: Sequence[Transport], text: str) -> None:
        # Parsed once; a publication's data line (and, for the usual stream of
        # one channel, its id) serialized once for every stream.
        message = json.loads(text)  # the hub's own JSON: no need for the bounded parser
        shared: dict[object, bytes] = {}
        for transport in transports:
            assert isinstance(transport, SseTransport)
            transport.write_message(message, shared)


SSE = _SseKind("sse", unidirectional=True, ping=PingPolicy.HEARTBEAT)


class SseTransport:
    """Implements :class:`~tether.hub.transport.Transport` as plain server-sent events."""

    kind = SSE

    def __init__(
        self,
        *,
        presence: bool,
        envelope: bool,
        resume_from: dict[str, tuple[int, str]],
        ping_interval: float,
        metrics: Metrics,
    ) -> None:
        self.presence = presence
        self.envelope = envelope
        self.resume_from = resume_from
        self.positions: dict[str, tuple[int, str]] = {}
        self.metrics = metrics
        self.ping_interval = ping_interval
        self.stream: BodyStream | None = None
        self.connect_reply: dict[str, JSON] | None = None
        """The session's answer to the ``connect`` the hub sent for the client."""
        self._early: list[bytes] = []
        self._beat: asyncio.TimerHandle | None = None

    def start(self, stream: BodyStream) -> None:
        """The response head is out: write the events so far, then go live."""
        self.stream = stream
        stream.write(f"retry: {RETRY_MS}\n\n".encode())
        for data in self._early:
            self._write(data)
        self._early.clear()
        if self.ping_interval > 0:
            self._beat = asyncio.get_running_loop().call_later(self.ping_interval, self._heartbeat)

    def _heartbeat(self) -> None:
        self._beat = None
        stream = self.stream
        if stream is None or not stream.open:
            return
        if stream.ready():
            stream.write(b": ping\n\n")
        self._beat = asyncio.get_running_loop().call_later(self.ping_interval, self._heartbeat)

    def _write(self, data: bytes) -> None:
        stream = self.stream
        if stream is None:
            self._early.append(data)
            return
        framed = chunk(data) if stream.chunked else data
        stream.write_framed(framed)
        self.metrics.transport_bytes[SSE.name] += len(framed)

    # ------------------------------------------------------------ Transport

    def ready(self) -> bool:
        return self.stream is None or self.stream.ready()

    def write_now(self, text: str) -> None:
        self.write_message(loads(text))

    async def write(self, text: str) -> None:
        self.write_now(text)
        if self.stream is not None:
            await self.stream.drain()

    async def close(self, code: int, reason: str) -> None:
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None
        if self.stream is not None:
            self.stream.end()

    # ---------------------------------------------------------- messages

    def write_message(self, message: JSON, shared: dict[object, bytes] | None = None) -> None:
        """Turn one hub message into events; ``shared`` caches encodings across streams."""
        if not isinstance(message, dict):
            return
        if "id" in message:
            self._on_connect_reply(message)
            return
        push = message.get("push")
        channel = message.get("channel")
        if push == "pub" and isinstance(channel, str):
            self._publication(channel, message, shared)
        elif push in ("join", "leave") and self.presence:
            self._write(event(dumps({"channel": channel, "info": message.get("info")}), name=push))
        elif push == "unsubscribe":
            body = {
                "channel": channel,
                "code": message.get("code"),
                "reason": message.get("reason"),
            }
            self._write(event(dumps(body), name="unsubscribe"))
        elif push == "subscribe" and isinstance(channel, str):
            self._positioned(channel, message)  # a server-side subscription
        elif push == "disconnect":
            body = {k: message.get(k) for k in ("code", "reason", "reconnect")}
            self._write(event(dumps(body), name="disconnect"))

    def _publication(
        self, channel: str, message: dict[str, JSON], shared: dict[object, bytes] | None = None
    ) -> None:
        offset, epoch = message.get("offset"), message.get("epoch")
        if isinstance(offset, int) and isinstance(epoch, str):
            self.positions[channel] = (offset, epoch)
        # Streams of the same channels at the same positions send the same bytes
        # (framed for the wire once, too).
        stream = self.stream
        key: object = None
        if shared is not None and stream is not None and len(self.positions) < 2:
            key = (self.envelope, stream.chunked, *self.positions.items())
            framed = shared.get(key)
            if framed is not None:
                stream.write_framed(framed)
                self.metrics.transport_bytes[SSE.name] += len(framed)
                return
        data = message.get("data")
        if self.envelope:
            data = {"channel": channel, "data": data}
            if isinstance(offset, int):
                data["offset"], data["epoch"] = offset, epoch
        encoded = event(dumps(data), id=encode_resume(self.positions))
        if key is not None and shared is not None and stream is not None:
            shared[key] = chunk(encoded) if stream.chunked else encoded
        self._write(encoded)

    def _positioned(self, channel: str, result: dict[str, JSON]) -> None:
        offset, epoch = result.get("offset"), result.get("epoch")
        if isinstance(offset, int) and isinstance(epoch, str):
            self.positions[channel] = (offset, epoch)

    def _on_connect_reply(self, message: dict[str, JSON]) -> None:
        result = message.get("result")
        if self.connect_reply is not None or not isinstance(result, dict):
            self.connect_reply = self.connect_reply or message
            return
        self.connect_reply = message
        subs = result.get("subs")
        subs = subs if isinstance(subs, dict) else {}
        channels: dict[str, JSON] = {}
        recovered: list[tuple[str, dict[str, JSON]]] = []
        for channel, sub in subs.items():
            if not isinstance(sub, dict) or "error" in sub:
                continue
            self._positioned(channel, sub)
            channels[channel] = {
                k: sub[k] for k in ("offset", "epoch", "recoverable", "recovered") if k in sub
            }
            recovered.append((channel, sub))
        # The connected event names the positions the stream starts from.
        start = dict(self.positions)
        for channel, sub in recovered:
            if channel in self.resume_from and sub.get("recoverable") and not sub.get("recovered"):
                continue
            pubs = sub.get("publications")
            if channel in self.resume_from and isinstance(pubs, list) and pubs:
                first = pubs[0]
                if isinstance(first, dict) and isinstance(first.get("offset"), int):
                    start[channel] = (int(first["offset"]) - 1, str(sub.get("epoch")))
        info = {"client": result.get("client"), "user": result.get("user"), "channels": channels}
        self.positions = start
        self._write(event(dumps(info), name="connected", id=encode_resume(start)))
        for channel, sub in recovered:
            epoch = sub.get("epoch")
            if channel in self.resume_from and sub.get("recoverable") and not sub.get("recovered"):
                failed = {"channel": channel, "offset": sub.get("offset"), "epoch": epoch}
                self._write(event(dumps(failed), name="recovery-failed"))
                continue
            for pub in sub.get("publications") or []:
                if isinstance(pub, dict):
                    self._publication(channel, {**pub, "epoch": epoch})
        # Positions after recovery (a channel with nothing missed keeps its top).
        for channel, sub in recovered:
            self._positioned(channel, sub)
