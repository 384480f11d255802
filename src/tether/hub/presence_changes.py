"""Joins and leaves, stored and announced in batches per channel.

A thousand clients subscribing to one channel at once used to make a
thousand presence writes and a thousand broker messages, each pushed to
every member: about half a million pushes, one system call each. Here the
joins and leaves of a channel that arrive while its previous batch is being
stored wait, and go together as the next batch: one presence write for the
lot (the last change of each client wins), and one
:class:`~tether.hub.envelope.PresenceChanges` envelope listing every change
in order, which each node writes to each member in one system call. An idle
channel's join is stored and announced at once (no timer).

Leaves must not be lost when many clients go at once (a node restarting, a
network partition): a batch that fails is tried again with backoff, and only
after :data:`LEAVE_ATTEMPTS` failures is its leave reported to the caller
(the entry then expires with the presence TTL). A join that fails is
reported to its subscriber at once (the client may try again).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from tether.hub.brokers.base import Broker
from tether.hub.envelope import Join, Leave, PresenceChange, PresenceChanges
from tether.hub.model import ClientInfo
from tether.hub.presence.base import Presence

logger = logging.getLogger("tether.hub")

LEAVE_ATTEMPTS = 4
# Seconds before each new attempt of a failed batch's leaves (then the last).
LEAVE_BACKOFF = (0.05, 0.25, 1.0)
# Changes per batch at most: bounds one presence write and one envelope.
MAX_BATCH = 1000


@dataclass(eq=False, slots=True)
class _Change:
    change: PresenceChange
    announce: bool
    done: asyncio.Future[None]
    attempts: int = 0


@dataclass(eq=False, slots=True)
class _Channel:
    pending: list[_Change] = field(default_factory=list)
    sender: asyncio.Task[None] | None = None


class PresenceChangesBatcher:
    """Per channel: one batch of joins and leaves in flight, the next one filling."""

    def __init__(self, presence: Presence, broker: Broker, *, ttl: float) -> None:
        self.presence = presence
        self.broker = broker
        self.ttl = ttl
        self._channels: dict[str, _Channel] = {}
        self.batches = 0
        """Batches written so far (joins and leaves per batch = changes / batches)."""
        self.changes = 0

    async def join(self, channel: str, info: ClientInfo, *, announce: bool = True) -> None:
        """Store ``info`` in ``channel``'s presence and (``announce``) push a join."""
        await self._submit(channel, Join(info), announce)

    async def leave(self, channel: str, info: ClientInfo, *, announce: bool = True) -> None:
        """Remove ``info`` from ``channel``'s presence and (``announce``) push a leave."""
        await self._submit(channel, Leave(info), announce)

    async def _submit(self, channel: str, change: PresenceChange, announce: bool) -> None:
        loop = asyncio.get_running_loop()
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        item = _Change(change, announce, loop.create_future())
        state.pending.append(item)
        if state.sender is None:
            state.sender = loop.create_task(self._send(channel, state))
        # Shielded: a caller that gives up (its session closed) does not take
        # the others' batch down; its change is made anyway.
        await asyncio.shield(item.done)

    async def _send(self, channel: str, state: _Channel) -> None:
        try:
            while state.pending:
                batch, state.pending = state.pending[:MAX_BATCH], state.pending[MAX_BATCH:]
                retry = await self._write(channel, batch)
                if retry:
                    state.pending[:0] = retry  # before what came since: order is kept
                    await asyncio.sleep(LEAVE_BACKOFF[min(retry[0].attempts, 3) - 1])
        finally:
            state.sender = None
            if not state.pending and self._channels.get(channel) is state:
                del self._channels[channel]

    async def _write(self, channel: str, batch: list[_Change]) -> list[_Change]:
        """Store and announce ``batch``; return the leaves to try again."""
        self.batches += 1
        self.changes += len(batch)
        latest: dict[str, PresenceChange] = {}
        for item in batch:
            latest[item.change.info.client] = item.change
        joined = [c.info for c in latest.values() if type(c) is Join]
        left = [c.info.client for c in latest.values() if type(c) is Leave]
        announced = tuple(item.change for item in batch if item.announce)
        try:
            if left:
                await self.presence.remove_many(channel, left)
            if joined:
                await self.presence.add_many(channel, joined, ttl=self.ttl)
            if announced:
                await self.broker.publish(channel, PresenceChanges(announced))
        except Exception as exc:
            return self._failed(channel, batch, exc)
        for item in batch:
            if not item.done.done():
                item.done.set_result(None)
        return []

    def _failed(self, channel: str, batch: list[_Change], exc: Exception) -> list[_Change]:
        retry = []
        for item in batch:
            item.attempts += 1
            if type(item.change) is Leave and item.attempts < LEAVE_ATTEMPTS:
                retry.append(item)
            elif not item.done.done():
                item.done.set_exception(exc)
                item.done.exception()  # its caller reports it; never "never retrieved"
        if retry:
            logger.info(
                "presence of %s: %d leave(s) not written (%s): trying again",
                channel,
                len(retry),
                exc,
            )
        return retry
