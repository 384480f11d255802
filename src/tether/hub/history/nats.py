"""History in NATS JetStream, shared by every node of a hub.

Per hub prefix, one stream and two KeyValue buckets (``<name>`` is the prefix
with characters outside ``[A-Za-z0-9_-]`` replaced by ``_``):

``<name>_history`` (stream)
    Subjects ``<prefix>.h.<channel>``, the channel escaped as for the NATS
    broker. Each message is one publication as JSON, with its offset and
    epoch in the ``Tether-Offset`` / ``Tether-Epoch`` headers and
    ``Nats-Msg-Id: <epoch>:<offset>`` (a retried publish is stored once).
    After each add the channel's subject is purged down to its ``size``.
``<name>_history_meta`` (KV, entries live ``meta_ttl``)
    Per channel: ``{"e": epoch, "t": top offset, "x": expiry ms, "f": first
    offset of the current publications, "s": size}``. Offsets are allocated
    with compare-and-set on this entry's revision, so they are contiguous
    across nodes. A missing entry (lost, expired, removed) is created with
    a new epoch, and the channel's old messages are purged.
``<name>_history_idem`` (KV, entries live ``meta_ttl``)
    Per (channel, idempotency key): ``"<epoch> <offset> <expiry ms>"``.

Expiry of publications and idempotency keys is checked against the clock
passed in (``time.time`` by default), as for Redis; the stream's own
``max_age`` (``meta_ttl``) only collects garbage. Reads fetch the channel's
messages one by one (``STREAM.MSG.GET`` next-by-subject), filtered by the
entry's epoch and offsets, so stale messages never leak into a reply.

Unlike Redis, allocating an offset and storing the publication are two
steps: if a node dies between them, that offset is missing and clients
that need it get ``recovered: false`` (they resync), never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.brokers.nats import DEFAULT_PREFIX, DEFAULT_URL, escape_token, import_nats
from tether.hub.history.base import AddResult, History, Recovery
from tether.hub.model import ClientInfo, Publication, StreamPosition
from tether.hub.wire import dumps, loads

_OFFSET = "Tether-Offset"
_EPOCH = "Tether-Epoch"
# Compare-and-set attempts before giving up on a very contended channel.
_ATTEMPTS = 100


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


def names(prefix: str) -> tuple[str, str, str]:
    """The stream and the two KV buckets of ``prefix``: (stream, meta, idem)."""
    base = re.sub(r"[^A-Za-z0-9_-]", "_", prefix) or "tether"
    return f"{base}_history", f"{base}_history_meta", f"{base}_history_idem"


@dataclass(slots=True)
class _Meta:
    epoch: str
    top: int = 0
    expires: int = 0
    first: int = 1
    size: int = 0

    def encode(self) -> bytes:
        return json.dumps(
            {"e": self.epoch, "t": self.top, "x": self.expires, "f": self.first, "s": self.size}
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> _Meta:
        d = json.loads(raw)
        return cls(str(d["e"]), int(d["t"]), int(d["x"]), int(d["f"]), int(d["s"]))


class NatsHistory(History):
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        meta_ttl: float = 86400.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import_nats()
        self.url = url
        self.prefix = prefix
        self.meta_ttl = meta_ttl
        self.timeout = timeout
        self.clock = clock
        self.stream, self.meta_bucket, self.idem_bucket = names(prefix)
        self._nc: Any = None
        self._js: Any = None
        self._meta: Any = None
        self._idem: Any = None
        self._lock = asyncio.Lock()

    def subject(self, channel: str) -> str:
        return f"{self.prefix}.h.{escape_token(channel)}"

    def _now(self) -> int:
        return int(self.clock() * 1000)

    # --------------------------------------------------------- connection

    async def _ready(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            return
        async with self._lock:
            if self._nc is not None and not self._nc.is_closed:
                return
            nats = import_nats()
            from nats.js.api import StorageType, StreamConfig
            from nats.js.errors import BadRequestError

            nc = await nats.connect(
                servers=[self.url],
                connect_timeout=max(1, round(self.timeout)),
                max_reconnect_attempts=-1,
                name="tether-hub-history",
            )
            try:
                js = nc.jetstream(timeout=self.timeout)
                config = StreamConfig(
                    name=self.stream,
                    subjects=[f"{self.prefix}.h.>"],
                    storage=StorageType.FILE,
                    max_age=self.meta_ttl,
                )
                try:
                    await js.add_stream(config)
                except BadRequestError:
                    await js.update_stream(config)
                meta = await js.create_key_value(
                    bucket=self.meta_bucket, history=1, ttl=self.meta_ttl
                )
                idem = await js.create_key_value(
                    bucket=self.idem_bucket, history=1, ttl=self.meta_ttl
                )
            except BaseException:
                await nc.close()
                raise
            self._nc, self._js, self._meta, self._idem = nc, js, meta, idem

    @asynccontextmanager
    async def _unavailable_on_error(self) -> AsyncIterator[None]:
        """Turn a lost connection, a timeout or JetStream down into :class:`BrokerUnavailable`."""
        nats = import_nats()
        from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

        try:
            await self._ready()
            yield
        except (
            OSError,
            TimeoutError,
            asyncio.TimeoutError,  # not yet the built-in TimeoutError on Python 3.10
            nats.errors.Error,
            ServiceUnavailableError,
            NoStreamResponseError,
        ) as exc:
            from nats.js.errors import APIError

            if isinstance(exc, APIError) and not isinstance(exc, ServiceUnavailableError):
                raise
            raise BrokerUnavailable(f"nats history unavailable: {exc!r}") from exc

    # ---------------------------------------------------------- metadata

    @staticmethod
    def _key(channel: str) -> str:
        return "c" + channel.encode().hex()

    async def _entry(self, channel: str) -> tuple[_Meta, int]:
        """The channel's metadata and its KV revision, creating a new epoch if there is none."""
        from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

        key = self._key(channel)
        for _ in range(_ATTEMPTS):
            try:
                entry = await self._meta.get(key)
            except NotFoundError:
                meta = _Meta(new_epoch())
                try:
                    revision = await self._meta.create(key, meta.encode())
                except KeyWrongLastSequenceError:
                    continue
                await self._purge(channel)
                return meta, int(revision)
            if entry.value:
                return _Meta.decode(entry.value), int(entry.revision)
            # An empty value is a delete marker seen by some servers: recreate.
            meta = _Meta(new_epoch())
            try:
                revision = await self._meta.update(key, meta.encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            await self._purge(channel)
            return meta, int(revision)
        raise BrokerUnavailable(f"nats history: channel {channel!r} too contended")

    async def _purge(self, channel: str, keep: int | None = None) -> None:
        await self._js.purge_stream(self.stream, subject=self.subject(channel), keep=keep)

    # --------------------------------------------------------------- add

    async def add(
        self,
        channel: str,
        publication: Publication,
        *,
        size: int,
        ttl: float,
        idempotency_key: str | None = None,
    ) -> AddResult:
        from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

        size = max(1, size)
        ttl_ms = max(1, int(ttl * 1000))
        idem_key = None
        if idempotency_key is not None:
            idem_key = f"{self._key(channel)}.k{idempotency_key.encode().hex()}"
        async with self._unavailable_on_error():
            for _ in range(_ATTEMPTS):
                meta, revision = await self._entry(channel)
                now = self._now()
                if idem_key is not None:
                    try:
                        seen = (await self._idem.get(idem_key)).value
                    except NotFoundError:
                        seen = None
                    if seen:
                        epoch, offset, expires = seen.decode().split(" ")
                        if epoch == meta.epoch and int(expires) > now:
                            return AddResult(StreamPosition(int(offset), epoch), duplicate=True)
                expired = meta.expires <= now
                top = meta.top + 1
                new = _Meta(meta.epoch, top, now + ttl_ms, top if expired else meta.first, size)
                try:
                    await self._meta.update(self._key(channel), new.encode(), last=revision)
                except KeyWrongLastSequenceError:
                    continue
                break
            else:
                raise BrokerUnavailable(f"nats history: channel {channel!r} too contended")
            if expired:
                await self._purge(channel)
            stored: dict[str, Any] = {"data": publication.data}
            if publication.info is not None:
                stored["info"] = publication.info.to_json()
            await self._js.publish(
                self.subject(channel),
                dumps(stored).encode(),
                stream=self.stream,
                headers={
                    _OFFSET: str(top),
                    _EPOCH: meta.epoch,
                    "Nats-Msg-Id": f"{meta.epoch}:{top}",
                },
            )
            await self._purge(channel, keep=size)
            if idem_key is not None:
                await self._idem.put(idem_key, f"{meta.epoch} {top} {now + ttl_ms}".encode())
        return AddResult(StreamPosition(top, meta.epoch))

    # -------------------------------------------------------------- read

    async def _publications(self, channel: str, meta: _Meta) -> list[Publication]:
        """The channel's live publications of ``meta``'s epoch, oldest first."""
        from nats.js.errors import NotFoundError

        if meta.top == 0 or meta.expires <= self._now():
            return []
        low = max(meta.first, meta.top - meta.size + 1)
        subject = self.subject(channel)
        found: dict[int, Publication] = {}
        seq = 1
        while True:
            try:
                msg = await self._js.get_msg(self.stream, seq=seq, subject=subject, next=True)
            except NotFoundError:
                break
            seq = int(msg.seq) + 1
            headers = msg.headers or {}
            if headers.get(_EPOCH) != meta.epoch:
                continue
            offset = int(headers.get(_OFFSET, "0"))
            if low <= offset <= meta.top:
                found[offset] = _publication(msg.data or b"{}", offset)
        return [found[o] for o in sorted(found)]

    async def since(self, channel: str, position: StreamPosition, *, limit: int) -> Recovery:
        async with self._unavailable_on_error():
            meta, _ = await self._entry(channel)
            current = StreamPosition(meta.top, meta.epoch)
            if position.epoch != meta.epoch or position.offset > meta.top:
                return Recovery([], False, current)
            missed = meta.top - position.offset
            if missed == 0:
                return Recovery([], True, current)
            if missed > limit:
                return Recovery([], False, current)
            pubs = [
                p for p in await self._publications(channel, meta) if p.offset > position.offset
            ]
        if len(pubs) != missed or pubs[0].offset != position.offset + 1:
            return Recovery([], False, current)
        return Recovery(pubs, True, current)

    async def read(
        self, channel: str, *, limit: int, since: int | None = None, reverse: bool = False
    ) -> tuple[list[Publication], StreamPosition]:
        async with self._unavailable_on_error():
            meta, _ = await self._entry(channel)
            current = StreamPosition(meta.top, meta.epoch)
            if limit <= 0:
                return [], current
            pubs = await self._publications(channel, meta)
        if reverse:
            pubs.reverse()
            if since is not None:
                pubs = [p for p in pubs if p.offset < since]
        elif since is not None:
            pubs = [p for p in pubs if p.offset > since]
        return pubs[:limit], current

    async def position(self, channel: str) -> StreamPosition:
        async with self._unavailable_on_error():
            meta, _ = await self._entry(channel)
        return StreamPosition(meta.top, meta.epoch)

    async def peek(self, channel: str) -> StreamPosition | None:
        from nats.js.errors import NotFoundError

        async with self._unavailable_on_error():
            try:
                entry = await self._meta.get(self._key(channel))
            except NotFoundError:
                return None
        if not entry.value:
            return None
        meta = _Meta.decode(entry.value)
        return StreamPosition(meta.top, meta.epoch)

    async def remove(self, channel: str) -> None:
        async with self._unavailable_on_error():
            await self._meta.purge(self._key(channel))
            await self._purge(channel)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def destroy(self) -> None:
        """Delete this prefix's stream and buckets (tests; a hub being decommissioned)."""
        async with self._unavailable_on_error():
            for bucket in (self.meta_bucket, self.idem_bucket):
                with contextlib.suppress(Exception):  # already gone
                    await self._js.delete_key_value(bucket)
            with contextlib.suppress(Exception):
                await self._js.delete_stream(self.stream)


def _publication(raw: bytes, offset: int) -> Publication:
    stored = loads(raw)
    info = stored.get("info")
    return Publication(
        stored.get("data"),
        ClientInfo.from_json(info) if isinstance(info, dict) else None,
        offset,
    )
