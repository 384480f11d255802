"""A broker over Redis pub/sub (redis-py's asyncio client).

Each node keeps one subscription connection and subscribes it only to the
channels that have local subscribers (plus the node-to-node control
channel), so a node receives only the traffic it serves. Redis channel names
are ``prefix + channel``. Publishes go through a separate command client.

When the history is a :class:`~tether.hub.history.redis.RedisHistory` on the
same Redis server, a publication is stored and published by one Lua script
(``XADD`` + ``PUBLISH``): offsets reach every node in order, and a
publication is either stored and sent or neither. Publishes (and those
scripts) are pipelined: what many sessions publish at once takes one round
trip (:mod:`tether.hub.redis_pipeline`).

Liveness: the subscription connection is pinged every ``ping_interval``; a
missing pong or a read error counts as a lost connection. See
:mod:`tether.hub.brokers.backplane` for reconnects and what follows them.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

from tether.hub._redis import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    is_connection_error,
    make_client,
    server_of,
    unavailable_on_error,
)
from tether.hub.brokers.backplane import BackplaneBroker
from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.envelope import PubDraft
from tether.hub.history.base import AddResult, History
from tether.hub.history.redis import RedisHistory
from tether.hub.model import Publication
from tether.hub.redis_pipeline import CommandPipeline

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.asyncio.connection import AbstractConnection

# Channels per SUBSCRIBE command when (re)subscribing many at once.
_BATCH = 1000


class RedisBroker(BackplaneBroker):
    kind = "redis"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        ping_interval: float = 5.0,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        super().__init__(
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            ping_interval=ping_interval,
            timeout=timeout,
        )
        self.url = url
        self.prefix = prefix
        self.client: aioredis.Redis = make_client(url, timeout=timeout)
        # No retries on this client: a resent batch could publish twice.
        self.pipeline = CommandPipeline(self.client)
        self._conn: AbstractConnection | None = None
        # Redis channel name -> hub channel, for the channels subscribed on _conn.
        self._raw: dict[bytes, str] = {}
        self._confirm: dict[bytes, list[asyncio.Future[None]]] = {}
        self._pongs: collections.deque[asyncio.Future[None]] = collections.deque()
        self._stash: list[tuple[bytes, bytes]] = []
        # Whether a history lives on this broker's server (one script for both).
        self._atomic: tuple[History, bool] | None = None

    def _name(self, channel: str) -> bytes:
        return (self.prefix + channel).encode()

    # --------------------------------------------------------- connection

    async def _open(self) -> None:
        pool = self.client.connection_pool
        # Maintenance notifications (redis-py 8) need RESP3 and a pool handler:
        # not for a connection of our own.
        kwargs: dict[str, Any] = {
            k: v
            for k, v in pool.connection_kwargs.items()
            if not k.startswith(("maint_notifications", "orig_"))
        }
        # Reads block until a message arrives; liveness comes from our pings.
        # No health checks: they would read from the socket our reader owns.
        # RESP2: messages are plain replies (with RESP3 they are pushes, which
        # redis-py hands to a push handler instead of returning them).
        kwargs.update(socket_timeout=None, health_check_interval=0, protocol=2)
        conn = pool.connection_class(**kwargs)
        await conn.connect()  # type: ignore[no-untyped-call]
        # Publishes fail fast and are not retried (a retry could publish twice):
        # drop the idle connections of the old server before anyone uses them.
        await pool.disconnect(inuse_connections=False)
        self._conn = conn
        self._raw = {self._name(channel): channel for channel in self._channels}
        names = list(self._raw)
        for i in range(0, len(names), _BATCH):
            await conn.send_command("SUBSCRIBE", *names[i : i + _BATCH])
        waiting = set(names)
        while waiting:
            response = await conn.read_response()
            if isinstance(response, list) and response[0] == b"subscribe":
                waiting.discard(response[1])
            elif isinstance(response, list) and response[0] == b"message":
                self._stash.append((response[1], response[2]))

    async def _serve(self) -> str:
        conn = self._conn
        assert conn is not None
        stash, self._stash = self._stash, []
        for name, payload in stash:
            channel = self._raw.get(name)
            if channel is not None:
                self._deliver(channel, payload)
        loop = asyncio.get_running_loop()
        reader = loop.create_task(self._read(conn))
        pinger = loop.create_task(self._keepalive())
        try:
            done, _ = await asyncio.wait({reader, pinger}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, pinger):
                task.cancel()
            await asyncio.gather(reader, pinger, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None:
                return f"{type(exc).__name__}: {exc}"
        return "connection closed"

    async def _read(self, conn: AbstractConnection) -> None:
        raw, deliver = self._raw, self._deliver
        while True:
            response = await conn.read_response()
            if type(response) is list:
                kind = response[0]
                if kind == b"message":
                    channel = raw.get(response[1])
                    if channel is not None:
                        deliver(channel, response[2])
                elif kind == b"subscribe":
                    for future in self._confirm.pop(response[1], ()):
                        if not future.done():
                            future.set_result(None)
                elif kind == b"pong":
                    self._pong()
            elif response in (b"PONG", "PONG"):
                self._pong()

    def _pong(self) -> None:
        if self._pongs:
            future = self._pongs.popleft()
            if not future.done():
                future.set_result(None)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)  # the ping period itself
            await self._ping()

    async def _ping(self) -> None:
        conn = self._conn
        if conn is None:
            raise BrokerUnavailable("redis backplane down")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(future)
        async with unavailable_on_error("broker"):
            await conn.send_command("PING")
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:  # not yet the built-in TimeoutError on Python 3.10
            raise BrokerUnavailable("redis backplane: no pong") from None

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        error = BrokerUnavailable("redis backplane connection lost")
        for futures in self._confirm.values():
            for future in futures:
                if not future.done():
                    future.set_exception(error)
                    future.exception()
        self._confirm.clear()
        while self._pongs:
            future = self._pongs.popleft()
            if not future.done():
                future.set_exception(error)
                future.exception()
        self._stash.clear()
        if conn is not None:
            try:
                await conn.disconnect()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise

    # ---------------------------------------------------------- pub/sub

    async def sync(self) -> None:
        if self._up and self._conn is not None:
            await self._ping()

    async def _subscribe(self, channel: str) -> None:
        conn = self._conn
        if conn is None:
            return
        name = self._name(channel)
        if name in self._raw and name not in self._confirm:
            return  # subscribed and confirmed already
        self._raw[name] = channel
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._confirm.setdefault(name, [])
        waiters.append(future)
        if len(waiters) == 1:
            async with unavailable_on_error("broker"):
                await conn.send_command("SUBSCRIBE", name)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except asyncio.TimeoutError:  # not yet the built-in TimeoutError on Python 3.10
            if future in waiters:
                waiters.remove(future)
            if not waiters and self._confirm.get(name) is waiters:
                del self._confirm[name]  # the next subscribe sends SUBSCRIBE again
            raise BrokerUnavailable("redis backplane: subscribe not confirmed") from None

    async def _unsubscribe(self, channel: str) -> None:
        name = self._name(channel)
        self._raw.pop(name, None)
        conn = self._conn
        if conn is not None:
            await conn.send_command("UNSUBSCRIBE", name)

    async def _publish(self, channel: str, data: bytes) -> None:
        async with unavailable_on_error("broker"):
            await self.pipeline.call("PUBLISH", self._name(channel), data)

    def sequencing_needed(self, history: History) -> bool:
        return not self._atomic_with(history)

    def _atomic_with(self, history: History) -> bool:
        known = self._atomic
        if known is None or known[0] is not history:
            same = isinstance(history, RedisHistory) and server_of(history.client) == server_of(
                self.client
            )
            known = self._atomic = (history, same)
        return known[1]

    async def publish_with_history(
        self,
        history: History,
        channel: str,
        publication: Publication,
        draft: PubDraft,
        *,
        size: int,
        ttl: float,
        idempotency_key: str | None = None,
    ) -> AddResult:
        """One ``XADD`` + ``PUBLISH`` script when the history lives on the same Redis."""
        if isinstance(history, RedisHistory) and self._atomic_with(history):
            if self._handler is None:
                raise BrokerUnavailable("broker not started")
            if not self._up:
                raise BrokerUnavailable("redis backplane down: reconnecting")
            return await history.add_and_publish(
                channel,
                publication,
                size=size,
                ttl=ttl,
                idempotency_key=idempotency_key,
                publish_to=self._name(channel).decode(),
                template=draft.template(),
                data_json=draft.data_json,
            )
        return await super().publish_with_history(
            history,
            channel,
            publication,
            draft,
            size=size,
            ttl=ttl,
            idempotency_key=idempotency_key,
        )

    async def close(self) -> None:
        await super().close()
        await self.pipeline.close()
        await self.client.aclose()
