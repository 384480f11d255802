"""A node's side of backplane outages: which clients missed publications.

While a node's broker connection is down, publications made on other nodes
do not reach it. When the broker is back (every wanted channel subscribed
again), the :class:`BackplaneWatcher` checks each channel that has local
subscribers and keeps history:

- the last publication the node delivered before the outage (offset ``b``,
  epoch ``e``) is compared with the first one delivered after it
  (it must be ``b + 1`` in ``e``) or, if none came, with the channel's
  current history position (it must still be ``b`` in ``e``);
- a channel that passes lost nothing: its clients are left alone;
- every other channel's local clients are disconnected with close code
  **4013** (:attr:`HubCloseCode.BACKPLANE_RESET`, a "reconnect" code) and a
  ``disconnect`` push with ``reconnect: true``. Their client reconnects
  (any node), resubscribes with its last offset and epoch, and the
  subscribe reply says ``recovered: true`` with exactly the missed
  publications when they are still in history, or ``recovered: false``
  with the new epoch when the stream was lost (the app must resync).

Channels without history cannot be recovered and are left alone: their
publications are at-most-once across an outage. A channel for which a
publish was stored but could not be sent (see
:meth:`BackplaneBroker.publish_with_history`) is reset the same way on
every node (a :class:`ChannelsReset`) once the backplane is back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from tether.hub.brokers.backplane import (
    BackplaneBroker,
    BackplaneDown,
    BackplaneEvent,
    BackplaneUp,
    ChannelsReset,
)
from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.envelope import Pub
from tether.hub.errors import HubCloseCode
from tether.hub.model import RESERVED_PREFIX, StreamPosition

if TYPE_CHECKING:
    from tether.hub.node import Node

logger = logging.getLogger("tether.hub.backplane")

RESET_REASON = "backplane interrupted: reconnect and recover"
# Position reads in flight at once while checking channels after a reconnect.
_CONCURRENCY = 64


def pub_position(pub: Pub | None) -> StreamPosition | None:
    """The offset and epoch of a publication (``None`` without them)."""
    return pub.position if pub is not None else None


def missed_publications(
    before: StreamPosition | None, after: StreamPosition | None, now: StreamPosition
) -> bool:
    """Whether a channel may have lost publications across an outage (see the module doc)."""
    if before is None:
        return True
    if after is not None:
        return after.epoch != before.epoch or after.offset != before.offset + 1
    return now != before


class BackplaneWatcher:
    """Listens to the node's broker and resets the sessions that missed publications."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.resets = 0
        """Sessions disconnected with 4013 so far."""

    @classmethod
    def attach(cls, node: Node) -> BackplaneWatcher | None:
        broker = node.broker
        if not isinstance(broker, BackplaneBroker):
            return None
        watcher = cls(node)
        broker.add_listener(watcher)
        if broker.sequencing_needed(node.history_store):
            broker.position_source = watcher.position_of
        return watcher

    async def position_of(self, channel: str) -> StreamPosition | None:
        """The history position of a channel that keeps history, else ``None``."""
        if channel.startswith(RESERVED_PREFIX):
            return None
        options = self.node.config.channel_options(channel)
        if options is None or not options.has_history:
            return None
        return await self.node.history_store.position(channel)

    def detach(self) -> None:
        broker = self.node.broker
        if isinstance(broker, BackplaneBroker):
            broker.remove_listener(self)
            broker.position_source = None

    def __call__(self, event: BackplaneEvent) -> None:
        if isinstance(event, BackplaneDown):
            logger.warning("backplane down (%s): publishes fail with 112 meanwhile", event.reason)
        elif isinstance(event, BackplaneUp):
            self.node.metrics.backplane_reconnects += 1
            self.node.spawn(self.check(event))
        elif isinstance(event, ChannelsReset):
            self.reset(event.channels)

    async def check(self, event: BackplaneUp) -> None:
        """Reset the channels that lost publications during the outage ``event`` ends."""
        broker = self.node.broker
        assert isinstance(broker, BackplaneBroker)
        channels = [c for c in event.channels if self._keeps_history(c)]
        positions: dict[str, StreamPosition | None] = {}
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def read(channel: str) -> None:
            async with limit:
                try:
                    positions[channel] = await self.node.history_store.position(channel)
                except Exception as exc:
                    logger.warning("no history position for %s after reconnect: %s", channel, exc)
                    positions[channel] = None

        await asyncio.gather(*(read(c) for c in channels))
        try:
            await broker.sync()  # every publication up to those positions has arrived
            synced = True
        except BrokerUnavailable:
            synced = False
        if broker.outages != event.outage:
            return  # down again: the next BackplaneUp checks this outage again
        affected = []
        for channel in channels:
            now = positions[channel]
            before = pub_position(event.before.get(channel))
            after = pub_position(event.after.get(channel))
            if not synced or now is None or missed_publications(before, after, now):
                affected.append(channel)
        if affected:
            logger.warning(
                "backplane back: %d of %d channels missed publications; resetting their clients",
                len(affected),
                len(channels),
            )
        self.reset(affected)
        broker.check_done(event, set(affected))

    def _keeps_history(self, channel: str) -> bool:
        if not self.node.registry.sessions(channel):
            return False
        options = self.node.config.channel_options(channel)
        return options is not None and options.has_history

    def reset(self, channels: list[str]) -> None:
        """Disconnect the local sessions of ``channels`` with 4013 so they recover."""
        seen = set()
        broker = self.node.broker
        for channel in channels:
            if isinstance(broker, BackplaneBroker):
                broker.reset_sequence(channel)
            for session in list(self.node.registry.sessions(channel)):
                if session.id in seen or session.closed:
                    continue
                seen.add(session.id)
                session.disconnect(HubCloseCode.BACKPLANE_RESET, RESET_REASON, reconnect=True)
        self.resets += len(seen)
