"""The History interface: per-channel streams of recent publications.

Each channel's stream has an ``epoch`` (a random string chosen when the stream
is created) and a top ``offset`` that grows by one per publication. A stream
that is lost or expires entirely comes back with a new epoch, so a client that
remembers an old epoch knows it cannot recover. The stream's metadata (epoch
and top offset) lives longer than its publications, so a client that missed
nothing still recovers after the publications expired.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from tether.hub.model import Publication, StreamPosition


@dataclass(frozen=True, slots=True)
class AddResult:
    position: StreamPosition
    """The new publication's offset and epoch (or the original's, for a duplicate)."""
    duplicate: bool = False
    """The idempotency key was seen before: nothing was added."""


@dataclass(frozen=True, slots=True)
class Recovery:
    publications: list[Publication]
    """Publications after the client's offset, oldest first (empty unless recovered)."""
    recovered: bool
    position: StreamPosition
    """The stream's current position."""


class History(abc.ABC):
    """Recent publications per channel. Implementations: memory, SQLite, Redis, JetStream."""

    adds_in_call_order = False
    """Concurrent :meth:`add` calls get their offsets in the order they were made
    (a pipelining backend), so a broker may make a channel's adds together."""

    @abc.abstractmethod
    async def add(
        self,
        channel: str,
        publication: Publication,
        *,
        size: int,
        ttl: float,
        idempotency_key: str | None = None,
    ) -> AddResult:
        """Append ``publication`` (keeping the last ``size`` for ``ttl`` seconds).

        With an ``idempotency_key`` seen in the last ``ttl`` seconds, add
        nothing and return the original position with ``duplicate=True``.
        """

    @abc.abstractmethod
    async def since(self, channel: str, position: StreamPosition, *, limit: int) -> Recovery:
        """Publications after ``position``, if the epoch matches and none is missing.

        ``recovered`` is false when the epoch differs, publications after the
        offset are gone, or more than ``limit`` of them would be needed.
        """

    @abc.abstractmethod
    async def read(
        self, channel: str, *, limit: int, since: int | None = None, reverse: bool = False
    ) -> tuple[list[Publication], StreamPosition]:
        """Up to ``limit`` publications and the current position.

        Forward (oldest first) from the start or from after offset ``since``;
        with ``reverse``, newest first from the top or from before ``since``.
        """

    @abc.abstractmethod
    async def position(self, channel: str) -> StreamPosition:
        """The current position, creating an empty stream (and its epoch) if none."""

    async def peek(self, channel: str) -> StreamPosition | None:
        """The current position, or ``None`` if the channel has no stream: creates nothing.

        Reads that are not subscriptions (``history``) use it, so reading
        never-published channels costs no state. This default creates the
        stream (:meth:`position`); every bundled backend overrides it.
        """
        return await self.position(channel)

    @abc.abstractmethod
    async def remove(self, channel: str) -> None:
        """Forget the channel's stream; the next position has a new epoch."""

    async def start(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Connect and check the store when the node starts, so a problem stops it there.

        Raises :class:`~tether.hub.history.errors.HistoryUnavailable` (or
        :class:`~tether.hub.brokers.base.BrokerUnavailable`) with a sentence
        naming what is wrong. Backends that connect lazily need not override.
        """

    async def expire(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Drop what has expired; backends with their own TTLs need not override."""

    async def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections."""
