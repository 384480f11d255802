"""The Broker interface: moves pushes between the nodes that serve a channel.

A node subscribes the broker to a channel while at least one of its sessions
is subscribed, and unsubscribes when the last one leaves. ``publish`` hands an
:mod:`envelope <tether.hub.envelope>` (a publication with its push built once,
presence changes, a control message) to every node subscribed to the channel,
this one included, through the handler given to :meth:`Broker.start`. A broker
must keep the order of envelopes published to one channel by one node.
Networked brokers encode envelopes on publish and decode them once on arrival;
no other module knows their bytes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from tether.hub.envelope import Envelope, PubDraft
from tether.hub.history.base import AddResult, History
from tether.hub.model import Publication

# Called with (channel, envelope) for every envelope published to a channel
# this node is subscribed to. It runs synchronously so delivery order is kept.
BrokerHandler = Callable[[str, Envelope], None]


class BrokerUnavailable(Exception):
    """The broker cannot accept a publish now (error 112 to clients, 503 to the API)."""


class Broker(abc.ABC):
    """Publish/subscribe between nodes. Implementations: memory (one process)."""

    malformed = 0
    """Messages dropped on arrival because they were not envelopes (networked brokers)."""

    @abc.abstractmethod
    async def start(self, handler: BrokerHandler) -> None:
        """Connect, and deliver every payload for this node's channels to ``handler``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; no more calls to the handler."""

    @abc.abstractmethod
    async def publish(self, channel: str, envelope: Envelope) -> None:
        """Deliver ``envelope`` to every node subscribed to ``channel``.

        Raises :class:`BrokerUnavailable` when it cannot.
        """

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Start receiving ``channel``'s payloads on this node (idempotent)."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel``'s payloads on this node (idempotent)."""

    @property
    def up(self) -> bool:
        """Connected to the backplane (``/healthz`` answers 503 while not)."""
        return True

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
        """Add ``publication`` to ``history``, then publish ``draft`` at its position.

        A duplicate (a repeated idempotency key) is not published again.
        Networked brokers keep offsets in order between the two steps, or do
        both at once when the history lives on the same server.
        """
        added = await history.add(
            channel, publication, size=size, ttl=ttl, idempotency_key=idempotency_key
        )
        if not added.duplicate:
            await self.publish(channel, draft.at(added.position))
        return added
