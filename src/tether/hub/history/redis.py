"""History in Redis Streams, shared by every node of a hub.

Per channel, three kinds of keys (``prefix{channel}:…``, one hash slot):

``meta``
    A hash: ``epoch`` (made when the stream is created), ``top`` (the last
    offset) and ``expires`` (when the publications expire, in ms). It lives
    ``meta_ttl`` (a day) after the last publish, so the position outlives the
    publications. If it is lost (Redis restarted without persistence,
    evicted, expired) the next call creates a new epoch and clients see it.
``stream``
    A Redis Stream whose entry ids *are* the offsets (``<offset>-0``), each
    holding the publication as JSON. Trimmed to the channel's size with
    ``MAXLEN`` on every add; the key's TTL is the channel's history TTL,
    refreshed on publish.
``idem:<hex key>``
    One per idempotency key: ``"<epoch> <offset> <expiry ms>"``, set with
    ``PX`` = the history TTL. A resent publish (through any node) returns the
    original offset and epoch.

Every operation is one Lua script, so offsets are assigned atomically with
the ``XADD`` and reads see a consistent stream. Scripts go through a
:class:`~tether.hub.redis_pipeline.CommandPipeline`: the adds of many
publications made at once take one round trip, in the order they were made. Expiry is also checked
against the clock passed in (``time.time`` by default: nodes' clocks should
agree within a fraction of a TTL), which lets tests control time.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tether.hub._redis import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    channel_key,
    make_client,
    unavailable_on_error,
)
from tether.hub.envelope import PubTemplate
from tether.hub.history.base import AddResult, History, Recovery
from tether.hub.model import ClientInfo, Publication, StreamPosition
from tether.hub.redis_pipeline import CommandPipeline
from tether.hub.wire import dumps, loads

if TYPE_CHECKING:
    import redis.asyncio as aioredis


# How long the key of an add without an idempotency key is kept: long enough
# for the client's immediate retry after a lost reply, short to save memory.
_AUTO_KEY_TTL = 10.0


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


class _UniqueNames:
    """Names never made twice: a random part per process, then a counter.

    Every add passes a candidate epoch (used only when the channel has no
    stream) and, without an idempotency key, a key of its own: drawing 14
    random bytes for each was a tenth of a publish's cost on a busy node.
    """

    def __init__(self) -> None:
        self._base = secrets.token_urlsafe(6)
        self._counter = itertools.count()

    def __call__(self) -> str:
        return f"{self._base}{next(self._counter):x}"


# KEYS: meta, stream, idem. ARGV: now ms, ttl ms, size, meta ttl ms, new epoch,
# publication JSON, idempotency key ttl ms, publish channel ('' for none),
# then the encoded pub envelope cut around its offset and epoch (five parts,
# tether.hub.envelope.PubTemplate): completed here, so it is published with
# the offset it was stored under.
_ADD = """
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local meta_ttl = math.max(tonumber(ARGV[4]), ttl)
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0, 'expires', 0)
end
local seen = redis.call('GET', KEYS[3])
if seen then
  local e, o, x = string.match(seen, '^(%S+) (%d+) (%d+)$')
  if e == epoch and tonumber(x) > now then
    return {1, tonumber(o), epoch}
  end
end
if tonumber(redis.call('HGET', KEYS[1], 'expires')) <= now then
  redis.call('DEL', KEYS[2])
end
local top = redis.call('HINCRBY', KEYS[1], 'top', 1)
local expires = string.format('%d', now + ttl)
redis.call('XADD', KEYS[2], 'MAXLEN', tonumber(ARGV[3]), string.format('%d-0', top), 'p', ARGV[6])
redis.call('HSET', KEYS[1], 'expires', expires)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[1], meta_ttl)
local idem_ttl = tonumber(ARGV[7])
local idem_expires = string.format('%d', now + idem_ttl)
redis.call('SET', KEYS[3], epoch .. ' ' .. top .. ' ' .. idem_expires, 'PX', idem_ttl)
if ARGV[8] ~= '' then
  -- '%d': a Lua number would print as 1e+14 from that size on.
  local offset = string.format('%d', top)
  redis.call('PUBLISH', ARGV[8],
    ARGV[9] .. offset .. ARGV[10] .. epoch .. ARGV[11] .. offset .. ARGV[12] .. epoch .. ARGV[13])
end
return {0, top, epoch}
"""

# KEYS: meta, stream. ARGV: now ms, meta ttl ms, new epoch, mode (pos, fwd,
# rev, recover; peek: like pos, but a missing stream stays missing, epoch ''),
# since (-1 for none), limit, expected epoch (recover).
# Returns {epoch, top, entries}.
_READ = """
local now = tonumber(ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch and ARGV[4] == 'peek' then
  return {'', 0, {}}
end
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'top', 0, 'expires', 0)
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return {epoch, 0, {}}
end
local top = tonumber(redis.call('HGET', KEYS[1], 'top'))
if tonumber(redis.call('HGET', KEYS[1], 'expires')) <= now then
  redis.call('DEL', KEYS[2])
  return {epoch, top, {}}
end
local mode, since, limit = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
-- Stream ids are built from the argument text: a Lua number prints as 1e+14.
local since_id = '(' .. ARGV[5] .. '-0'
if mode == 'pos' or mode == 'peek' or limit <= 0 then
  return {epoch, top, {}}
end
if mode == 'recover' then
  if epoch ~= ARGV[7] or since >= top or top - since > limit then
    return {epoch, top, {}}
  end
  local missed = redis.call('XRANGE', KEYS[2], since_id, '+', 'COUNT', limit)
  return {epoch, top, missed}
end
if mode == 'fwd' then
  local start = '-'
  if since >= 0 then start = since_id end
  return {epoch, top, redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', limit)}
end
if since == 0 then
  return {epoch, top, {}}
end
local stop = '+'
if since > 0 then stop = since_id end
return {epoch, top, redis.call('XREVRANGE', KEYS[2], stop, '-', 'COUNT', limit)}
"""


class RedisHistory(History):
    # One pipeline, one batch in flight: scripts run in the order they were called.
    adds_in_call_order = True

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        meta_ttl: float = 86400.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.meta_ttl = meta_ttl
        self.clock = clock
        # Retried once on a dead pooled connection: reads are idempotent, and an
        # add always carries an idempotency key (its own when the caller's is
        # None), so a retry of an add that did run returns the same offset.
        self.client: aioredis.Redis = make_client(url, timeout=timeout, retries=1)
        self._add = self.client.register_script(_ADD)
        self._read = self.client.register_script(_READ)
        self.pipeline = CommandPipeline(self.client, retries=1)
        self._unique = _UniqueNames()

    def _keys(self, channel: str) -> list[str]:
        return [
            channel_key(self.prefix, channel, "meta"),
            channel_key(self.prefix, channel, "stream"),
        ]

    def _now(self) -> int:
        return int(self.clock() * 1000)

    async def add(
        self,
        channel: str,
        publication: Publication,
        *,
        size: int,
        ttl: float,
        idempotency_key: str | None = None,
    ) -> AddResult:
        return await self.add_and_publish(
            channel, publication, size=size, ttl=ttl, idempotency_key=idempotency_key
        )

    async def add_and_publish(
        self,
        channel: str,
        publication: Publication,
        *,
        size: int,
        ttl: float,
        idempotency_key: str | None = None,
        publish_to: str = "",
        template: PubTemplate | None = None,
        data_json: str | None = None,
    ) -> AddResult:
        """Add, and (with ``publish_to``) ``PUBLISH`` the completed ``template`` atomically.

        ``data_json``: the publication's data, serialized already (not again here).
        """
        keys = self._keys(channel)
        if idempotency_key is not None:
            idem, idem_ttl = "idem:" + idempotency_key.encode().hex(), ttl
        else:
            idem, idem_ttl = "idem:auto:" + self._unique(), min(ttl, _AUTO_KEY_TTL)
        keys.append(channel_key(self.prefix, channel, idem))
        info = publication.info
        if data_json is None:
            data_json = dumps(publication.data)
        stored = '{"data":' + data_json
        stored += ',"info":' + dumps(info.to_json()) + "}" if info is not None else "}"
        parts = template.parts if template is not None else (b"",) * 5
        args: list[str | int | bytes] = [
            self._now(),
            max(1, int(ttl * 1000)),
            max(1, size),
            int(self.meta_ttl * 1000),
            self._unique(),
            stored,
            max(1, int(idem_ttl * 1000)),
            publish_to if template is not None else "",
            *parts,
        ]
        async with unavailable_on_error("history"):
            duplicate, top, epoch = await self.pipeline.script(self._add, keys, args)
        return AddResult(StreamPosition(int(top), _text(epoch)), duplicate=bool(duplicate))

    async def _call_read(
        self,
        channel: str,
        mode: str,
        *,
        since: int = -1,
        limit: int = 0,
        expected: str = "",
    ) -> tuple[StreamPosition, list[Publication]]:
        args: list[str | int] = [
            self._now(),
            int(self.meta_ttl * 1000),
            self._unique(),
            mode,
            since,
            limit,
            expected,
        ]
        async with unavailable_on_error("history"):
            epoch, top, entries = await self.pipeline.script(self._read, self._keys(channel), args)
        return StreamPosition(int(top), _text(epoch)), [_publication(e) for e in entries]

    async def since(self, channel: str, position: StreamPosition, *, limit: int) -> Recovery:
        current, pubs = await self._call_read(
            channel, "recover", since=position.offset, limit=limit, expected=position.epoch
        )
        if position.epoch != current.epoch or position.offset > current.offset:
            return Recovery([], False, current)
        missed = current.offset - position.offset
        if missed == 0:
            return Recovery([], True, current)
        if len(pubs) != missed or pubs[0].offset != position.offset + 1:
            return Recovery([], False, current)
        return Recovery(pubs, True, current)

    async def read(
        self, channel: str, *, limit: int, since: int | None = None, reverse: bool = False
    ) -> tuple[list[Publication], StreamPosition]:
        mode = "rev" if reverse else "fwd"
        current, pubs = await self._call_read(
            channel, mode, since=-1 if since is None else since, limit=max(0, limit)
        )
        return pubs, current

    async def position(self, channel: str) -> StreamPosition:
        current, _ = await self._call_read(channel, "pos")
        return current

    async def peek(self, channel: str) -> StreamPosition | None:
        current, _ = await self._call_read(channel, "peek")
        return current if current.epoch else None

    async def remove(self, channel: str) -> None:
        async with unavailable_on_error("history"):
            await self.client.delete(*self._keys(channel))

    async def close(self) -> None:
        await self.pipeline.close()
        await self.client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _publication(entry: Sequence[Any]) -> Publication:
    entry_id, fields = entry
    offset = int(_text(entry_id).partition("-")[0])
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    stored = loads(values[b"p"] if b"p" in values else values["p"])
    info = stored.get("info")
    return Publication(
        stored.get("data"),
        ClientInfo.from_json(info) if isinstance(info, dict) else None,
        offset,
    )
