"""Presence in Redis, shared by every node: one view of who is in a channel.

Per channel (``prefix{channel}:…``, one hash slot):

``presence``
    A hash: client id -> ``ClientInfo`` as JSON.
``presence:exp``
    A sorted set: client id -> when its entry expires (ms).

Each node refreshes its live sessions' entries a few times per
``presence_ttl`` (the node's housekeeping task is the heartbeat); a node
that dies stops refreshing, and its clients drop out of every read within
the TTL, because reads remove expired entries first (one Lua script). Both
keys also carry a Redis TTL as long as their longest entry, so channels
nobody refreshes disappear entirely.

Commands go through a :class:`~tether.hub.redis_pipeline.CommandPipeline`:
the presence writes of many channels and sessions at once (a node's
refresh, a thousand clients leaving together) share round trips and never
queue for the pool's connections.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from tether.hub._redis import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    channel_key,
    make_client,
    unavailable_on_error,
)
from tether.hub.model import ClientInfo
from tether.hub.presence.base import Presence, PresenceStats
from tether.hub.redis_pipeline import CommandPipeline
from tether.hub.wire import dumps, loads

if TYPE_CHECKING:
    import redis.asyncio as aioredis

# KEYS: hash, zset. ARGV: client, info JSON, expiry ms, ttl ms.
_ADD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local ttl = tonumber(ARGV[4])
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 1
"""

# KEYS: hash, zset. ARGV: expiry ms, ttl ms, then client, info JSON for each entry.
_ADD_MANY = """
local expires = ARGV[1]
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], expires, ARGV[i])
end
local ttl = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 1
"""

# KEYS: hash, zset. ARGV: now ms. Drops expired entries, returns the rest.
_GET = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for i = 1, #expired, 1000 do
  redis.call('HDEL', KEYS[1], unpack(expired, i, math.min(i + 999, #expired)))
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
"""


class RedisPresence(Presence):
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.clock = clock
        # Every operation is idempotent: retried once on a dead pooled connection.
        self.client: aioredis.Redis = make_client(url, timeout=timeout, retries=1)
        self._add = self.client.register_script(_ADD)
        self._add_many = self.client.register_script(_ADD_MANY)
        self._get = self.client.register_script(_GET)
        self.pipeline = CommandPipeline(self.client, retries=1)

    def _keys(self, channel: str) -> list[str]:
        return [
            channel_key(self.prefix, channel, "presence"),
            channel_key(self.prefix, channel, "presence:exp"),
        ]

    async def add(self, channel: str, info: ClientInfo, *, ttl: float) -> None:
        ttl_ms = max(1, int(ttl * 1000))
        expires = int(self.clock() * 1000) + ttl_ms
        args: list[str | int] = [info.client, dumps(info.to_json()), expires, ttl_ms]
        async with unavailable_on_error("presence"):
            await self.pipeline.script(self._add, self._keys(channel), args)

    async def add_many(self, channel: str, infos: Sequence[ClientInfo], *, ttl: float) -> None:
        """One script call (one round trip) for every entry of the channel."""
        if not infos:
            return
        ttl_ms = max(1, int(ttl * 1000))
        expires = int(self.clock() * 1000) + ttl_ms
        args: list[str | int] = [expires, ttl_ms]
        for info in infos:
            args += [info.client, dumps(info.to_json())]
        async with unavailable_on_error("presence"):
            await self.pipeline.script(self._add_many, self._keys(channel), args)

    async def remove(self, channel: str, client_id: str) -> None:
        await self.remove_many(channel, [client_id])

    async def remove_many(self, channel: str, client_ids: Sequence[str]) -> None:
        """Two commands (one round trip, shared with other callers) for every entry."""
        if not client_ids:
            return
        hash_key, zset_key = self._keys(channel)
        async with unavailable_on_error("presence"):
            await asyncio.gather(
                self.pipeline.call("HDEL", hash_key, *client_ids),
                self.pipeline.call("ZREM", zset_key, *client_ids),
            )

    async def get(self, channel: str) -> dict[str, ClientInfo]:
        async with unavailable_on_error("presence"):
            now = int(self.clock() * 1000)
            flat = await self.pipeline.script(self._get, self._keys(channel), [now])
        clients: dict[str, ClientInfo] = {}
        for raw in flat[1::2]:
            info = ClientInfo.from_json(loads(raw))
            clients[info.client] = info
        return clients

    async def stats(self, channel: str) -> PresenceStats:
        clients = await self.get(channel)
        return PresenceStats(len(clients), len({info.user for info in clients.values()}))

    async def close(self) -> None:
        await self.pipeline.close()
        await self.client.aclose()
