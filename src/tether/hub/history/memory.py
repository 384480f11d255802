"""History kept in this process's memory (lost on restart: clients then see a new epoch)."""

from __future__ import annotations

import collections
import secrets
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import cast

from tether.hub.history.base import AddResult, History, Recovery
from tether.hub.model import Publication, StreamPosition


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


# Streams of channels that were subscribed to but never published in (a
# position for each subscriber) share these until their first publication:
# an empty deque and OrderedDict cost about 1 KiB per channel.
_NO_PUBLICATIONS = cast("collections.deque[Publication]", ())
_NO_KEYS = cast(
    "collections.OrderedDict[str, tuple[StreamPosition, float]]", types.MappingProxyType({})
)


@dataclass(slots=True)
class _Stream:
    epoch: str
    meta_expires: float
    top: int = 0
    publications: collections.deque[Publication] = _NO_PUBLICATIONS
    pubs_expire: float = 0.0
    # Idempotency key -> (position, expiry), oldest first.
    keys: collections.OrderedDict[str, tuple[StreamPosition, float]] = field(
        default_factory=lambda: _NO_KEYS
    )


class MemoryHistory(History):
    def __init__(
        self, *, meta_ttl: float = 86400.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.meta_ttl = meta_ttl
        self.clock = clock
        self._streams: dict[str, _Stream] = {}

    def _stream(self, channel: str) -> _Stream:
        """The live stream of ``channel`` (a new epoch if it expired or never existed)."""
        now = self.clock()
        stream = self._streams.get(channel)
        if stream is None or stream.meta_expires <= now:
            stream = _Stream(new_epoch(), now + self.meta_ttl)
            self._streams[channel] = stream
        elif stream.publications and stream.pubs_expire <= now:
            stream.publications.clear()
        return stream

    async def add(
        self,
        channel: str,
        publication: Publication,
        *,
        size: int,
        ttl: float,
        idempotency_key: str | None = None,
    ) -> AddResult:
        stream = self._stream(channel)
        now = self.clock()
        if stream.publications is _NO_PUBLICATIONS:
            stream.publications = collections.deque()
        if idempotency_key is not None and stream.keys is _NO_KEYS:
            stream.keys = collections.OrderedDict()
        keys = stream.keys
        while keys and next(iter(keys.values()))[1] <= now:
            keys.popitem(last=False)
        if idempotency_key is not None:
            seen = keys.get(idempotency_key)
            if seen is not None:
                return AddResult(seen[0], duplicate=True)
        stream.top += 1
        position = StreamPosition(stream.top, stream.epoch)
        pubs = stream.publications
        pubs.append(replace(publication, offset=stream.top))
        while len(pubs) > size:
            pubs.popleft()
        stream.pubs_expire = now + ttl
        stream.meta_expires = max(stream.meta_expires, now + self.meta_ttl)
        if idempotency_key is not None:
            keys[idempotency_key] = (position, now + ttl)
        return AddResult(position)

    async def since(self, channel: str, position: StreamPosition, *, limit: int) -> Recovery:
        stream = self._stream(channel)
        current = StreamPosition(stream.top, stream.epoch)
        if position.epoch != stream.epoch or position.offset > stream.top:
            return Recovery([], False, current)
        missed = stream.top - position.offset
        if missed == 0:
            return Recovery([], True, current)
        pubs = stream.publications
        if missed > limit or missed > len(pubs):
            return Recovery([], False, current)
        return Recovery(list(pubs)[len(pubs) - missed :], True, current)

    async def read(
        self, channel: str, *, limit: int, since: int | None = None, reverse: bool = False
    ) -> tuple[list[Publication], StreamPosition]:
        stream = self._stream(channel)
        current = StreamPosition(stream.top, stream.epoch)
        if limit <= 0:
            return [], current
        pubs = list(stream.publications)
        if reverse:
            pubs.reverse()
            if since is not None:
                pubs = [p for p in pubs if p.offset < since]
        elif since is not None:
            pubs = [p for p in pubs if p.offset > since]
        return pubs[:limit], current

    async def position(self, channel: str) -> StreamPosition:
        stream = self._stream(channel)
        return StreamPosition(stream.top, stream.epoch)

    async def peek(self, channel: str) -> StreamPosition | None:
        stream = self._streams.get(channel)
        if stream is None or stream.meta_expires <= self.clock():
            return None
        return StreamPosition(stream.top, stream.epoch)

    async def remove(self, channel: str) -> None:
        self._streams.pop(channel, None)

    async def expire(self) -> None:
        now = self.clock()
        for channel, stream in list(self._streams.items()):
            if stream.meta_expires <= now:
                del self._streams[channel]
            elif stream.publications and stream.pubs_expire <= now:
                stream.publications.clear()
