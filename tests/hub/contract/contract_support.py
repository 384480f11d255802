"""The backends the contract suite runs against.

The ``backend`` fixture runs each contract test once per implementation in
``BACKENDS``: memory, SQLite (memory broker and presence, history in a
file of a temporary directory), Redis (broker, history and presence), NATS
(broker; history and presence in memory) and JetStream (NATS only: broker,
JetStream history and KeyValue presence). A networked backend's factory
skips, through ``require``, when its server is not running.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from backplane_services import delete_prefix, require_nats, require_redis, unique

from tether.hub import (
    Broker,
    History,
    MemoryBroker,
    MemoryBus,
    MemoryHistory,
    MemoryPresence,
    Presence,
)
from tether.hub.brokers.backplane import BackplaneBroker
from tether.hub.brokers.base import BrokerHandler


class FakeClock:
    """Time that passes only when a test says so (TTLs without sleeping)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    name: str
    make_brokers: Callable[[int], list[Broker]]
    """``n`` brokers connected to one another, as ``n`` nodes' brokers would be."""
    history: History
    presence: Presence
    advance: Callable[[float], Awaitable[None]]
    """Let ``seconds`` pass for the backend's TTLs (a fake clock, or a real sleep)."""
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def memory_backend() -> Backend:
    clock = FakeClock()
    bus = MemoryBus()
    return Backend(
        "memory",
        lambda n: [MemoryBroker(bus) for _ in range(n)],
        MemoryHistory(clock=clock),
        MemoryPresence(clock=clock),
        clock.advance,
    )


def sqlite_backend() -> Backend:
    """Durable history in a SQLite file (``--data``); broker and presence in memory."""
    from tether.hub.history.sqlite import SqliteHistory

    clock = FakeClock()
    bus = MemoryBus()
    directory = tempfile.mkdtemp(prefix="tether-contract-")

    async def remove_directory() -> None:
        shutil.rmtree(directory, ignore_errors=True)

    return Backend(
        "sqlite",
        lambda n: [MemoryBroker(bus) for _ in range(n)],
        SqliteHistory(directory, clock=clock),
        MemoryPresence(clock=clock),
        clock.advance,
        [remove_directory],
    )


class SyncedBroker(Broker):
    """A networked broker whose ``publish`` returns once every node of its group has it.

    The contract states what arrives; over a network it arrives a little
    later. After each publish this waits for every started broker of the
    group to have handed over everything published so far (``sync``: a
    round trip on its subscription connection), so the tests can look.
    """

    def __init__(self, inner: BackplaneBroker, group: list[BackplaneBroker]) -> None:
        self.inner = inner
        self.group = group

    async def start(self, handler: BrokerHandler) -> None:
        await self.inner.start(handler)

    async def close(self) -> None:
        await self.inner.close()

    async def publish(self, channel: str, payload: bytes) -> None:
        await self.inner.publish(channel, payload)
        for broker in self.group:
            await broker.sync()

    async def subscribe(self, channel: str) -> None:
        await self.inner.subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        await self.inner.unsubscribe(channel)


def synced(brokers: list[BackplaneBroker]) -> list[Broker]:
    return [SyncedBroker(broker, brokers) for broker in brokers]


def redis_backend() -> Backend:
    """Redis broker, history and presence, under a prefix of this test's own."""
    url = require_redis()
    from tether.hub.brokers.redis import RedisBroker
    from tether.hub.history.redis import RedisHistory
    from tether.hub.presence.redis import RedisPresence

    clock = FakeClock()
    prefix = unique("contract") + ":"
    return Backend(
        "redis",
        lambda n: synced([RedisBroker(url, prefix=prefix) for _ in range(n)]),
        RedisHistory(url, prefix=prefix, clock=clock),
        RedisPresence(url, prefix=prefix, clock=clock),
        clock.advance,
        [lambda: delete_prefix(url, prefix)],
    )


def nats_backend() -> Backend:
    """NATS brokers (subjects under a prefix of this test's own); NATS keeps no history here."""
    url = require_nats()
    from tether.hub.brokers.nats import NatsBroker

    clock = FakeClock()
    prefix = unique("contract")
    return Backend(
        "nats",
        lambda n: synced([NatsBroker(url, prefix=prefix) for _ in range(n)]),
        MemoryHistory(clock=clock),
        MemoryPresence(clock=clock),
        clock.advance,
    )


def jetstream_backend() -> Backend:
    """NATS only: broker, JetStream history and KeyValue presence (of this test's own)."""
    url = require_nats()
    from tether.hub.brokers.nats import NatsBroker
    from tether.hub.history.nats import NatsHistory
    from tether.hub.presence.nats import NatsPresence

    clock = FakeClock()
    prefix = unique("contract")
    history = NatsHistory(url, prefix=prefix, clock=clock)
    presence = NatsPresence(url, prefix=prefix, clock=clock)

    async def drop() -> None:
        history_cleaner = NatsHistory(url, prefix=prefix)
        presence_cleaner = NatsPresence(url, prefix=prefix)
        try:
            await history_cleaner.destroy()
            await presence_cleaner.destroy()
        finally:
            await history_cleaner.close()
            await presence_cleaner.close()

    return Backend(
        "jetstream",
        lambda n: synced([NatsBroker(url, prefix=prefix) for _ in range(n)]),
        history,
        presence,
        clock.advance,
        [drop],
    )


# name -> factory.
BACKENDS: dict[str, Callable[[], Backend]] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
    "redis": redis_backend,
    "nats": nats_backend,
    "jetstream": jetstream_backend,
}
