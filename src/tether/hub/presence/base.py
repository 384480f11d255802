"""The Presence interface: who is subscribed to a channel, across every node.

Entries carry a TTL so that a node that dies without cleaning up does not
leave ghosts: each node refreshes its live sessions' entries well within the
TTL (see :class:`~tether.hub.node.Node`).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from tether.hub.model import ClientInfo


@dataclass(frozen=True, slots=True)
class PresenceStats:
    num_clients: int
    num_users: int


class Presence(abc.ABC):
    """Channel membership. Implementations: memory, Redis, NATS KeyValue."""

    @abc.abstractmethod
    async def add(self, channel: str, info: ClientInfo, *, ttl: float) -> None:
        """Add or refresh ``info.client`` in ``channel`` for ``ttl`` seconds."""

    async def add_many(self, channel: str, infos: Sequence[ClientInfo], *, ttl: float) -> None:
        """:meth:`add` each of ``infos`` (the node's periodic refresh of a channel).

        This default makes one :meth:`add` per entry; networked backends
        override it to make one round trip.
        """
        for info in infos:
            await self.add(channel, info, ttl=ttl)

    @abc.abstractmethod
    async def remove(self, channel: str, client_id: str) -> None:
        """Remove a client from a channel (no error if absent)."""

    async def remove_many(self, channel: str, client_ids: Sequence[str]) -> None:
        """:meth:`remove` each of ``client_ids`` (many clients leaving at once).

        This default makes one :meth:`remove` per entry; networked backends
        override it to make one round trip.
        """
        for client_id in client_ids:
            await self.remove(channel, client_id)

    @abc.abstractmethod
    async def get(self, channel: str) -> dict[str, ClientInfo]:
        """Every live client in ``channel``, by client id."""

    @abc.abstractmethod
    async def stats(self, channel: str) -> PresenceStats:
        """How many clients and distinct users are in ``channel``."""

    async def start(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Connect and check the store when the node starts, so a problem stops it there."""

    async def expire(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Drop expired entries; backends with their own TTLs need not override."""

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections."""
