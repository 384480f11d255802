"""An in-process broker: nodes that share a :class:`MemoryBus` see each other.

One node alone (the default) gets a private bus. Several nodes in one process
(tests, or a worker that embeds many hubs) pass the same bus to behave like
nodes sharing a Redis or NATS server. Envelopes are handed over as they are:
nothing is encoded inside one process.
"""

from __future__ import annotations

from tether.hub.brokers.base import Broker, BrokerHandler, BrokerUnavailable
from tether.hub.envelope import Envelope


class MemoryBus:
    """The shared medium: channel -> brokers subscribed to it."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[MemoryBroker]] = {}

    def deliver(self, channel: str, envelope: Envelope) -> None:
        # A copy, because a handler may unsubscribe while we iterate.
        for broker in list(self.subscribers.get(channel, ())):
            broker.deliver(channel, envelope)


class MemoryBroker(Broker):
    def __init__(self, bus: MemoryBus | None = None) -> None:
        self.bus = bus if bus is not None else MemoryBus()
        self._handler: BrokerHandler | None = None
        self._channels: set[str] = set()

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    async def close(self) -> None:
        for channel in list(self._channels):
            await self.unsubscribe(channel)
        self._handler = None

    async def publish(self, channel: str, envelope: Envelope) -> None:
        if self._handler is None:
            raise BrokerUnavailable("broker not started")
        self.bus.deliver(channel, envelope)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        self.bus.subscribers.setdefault(channel, set()).add(self)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        brokers = self.bus.subscribers.get(channel)
        if brokers is not None:
            brokers.discard(self)
            if not brokers:
                del self.bus.subscribers[channel]

    def deliver(self, channel: str, envelope: Envelope) -> None:
        if self._handler is not None:
            self._handler(channel, envelope)
