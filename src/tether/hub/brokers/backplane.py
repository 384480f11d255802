"""What the networked brokers (Redis, NATS) share: one connection, kept alive.

A :class:`BackplaneBroker` keeps one subscription connection to its server
and the set of channels this node wants. A supervisor task opens it,
subscribes every wanted channel, reads until the connection is lost, and
reconnects with jittered exponential backoff. While the connection is down,
:meth:`publish` raises :class:`BrokerUnavailable` at once (clients get error
112, the HTTP API 503): nothing is dropped silently. Local traffic goes on.

What a node may have missed while it was down is told to its listeners (the
node's :class:`~tether.hub.backplane.BackplaneWatcher`) through
:class:`BackplaneUp` events: the last ``pub`` push each channel saw before the
outage, and the first one after it. With the channel's history position the
watcher decides which channels have a gap, and has their clients recover.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from tether.hub.brokers.base import Broker, BrokerHandler, BrokerUnavailable
from tether.hub.history.base import AddResult, History
from tether.hub.model import Publication, StreamPosition

logger = logging.getLogger("tether.hub.backplane")

# The start of every ``pub`` push (wire.pub_push): the pushes whose offsets matter.
PUB_PREFIX = b'{"push":"pub"'
# A broker-to-broker marker on a channel: "publications of this channel may
# have been lost between nodes; every node's subscribers must recover". JSON
# pushes never start with a NUL byte, so markers cannot be confused with them.
RESYNC_MARKER = b"\x00tether:resync"


@dataclass(frozen=True, slots=True)
class BackplaneDown:
    """The connection to the backplane server was lost (or could not be made)."""

    reason: str


@dataclass(slots=True)
class BackplaneUp:
    """Connected, and every wanted channel is subscribed again.

    ``before`` holds each channel's last ``pub`` push before the outage
    (channels that had seen none are absent); ``after`` fills with each
    channel's first ``pub`` push after it while the check runs. Until the
    listener calls :meth:`BackplaneBroker.check_done`, payloads are held
    back, so no client sees a publication of a new epoch before being told.
    """

    reconnect: bool
    """False for the first connection of a broker that started connected."""
    outage: int
    """Which outage this ends (:attr:`BackplaneBroker.outages` at the time)."""
    channels: list[str]
    before: dict[str, bytes]
    after: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChannelsReset:
    """Another node (or this one) lost publications of ``channels`` on the way."""

    channels: list[str]


BackplaneEvent = BackplaneDown | BackplaneUp | ChannelsReset
BackplaneListener = Callable[[BackplaneEvent], None]


def backoff_delay(attempt: int, minimum: float, maximum: float) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(maximum, minimum * 2**attempt)]."""
    ceiling = min(maximum, minimum * 2 ** min(attempt, 30))
    return random.uniform(minimum / 2, max(minimum / 2, ceiling))


class BackplaneBroker(Broker):
    """Subscription connection, reconnects, gap bookkeeping; subclasses speak the protocol."""

    kind = "backplane"

    def __init__(
        self,
        *,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        ping_interval: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.ping_interval = ping_interval
        self.timeout = timeout
        self.reconnects = 0
        self.outages = 0
        """Connection losses so far (a check for an older outage is stale)."""
        self._handler: BrokerHandler | None = None
        self._channels: set[str] = set()
        self._up = False
        self._ever_up = False
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._listeners: list[BackplaneListener] = []
        self._last: dict[str, bytes] = {}
        # Set at the first outage not checked yet; cleared by check_done.
        self._before: dict[str, bytes] | None = None
        self._after: dict[str, bytes] | None = None
        # Payloads held back while a listener checks an outage.
        self._held: list[tuple[str, bytes]] | None = None
        self._gaps: set[str] = set()
        self._order: dict[str, tuple[asyncio.Lock, int]] = {}
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ subclass API

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect, subscribe every channel in ``self._channels``; raise if it fails."""

    @abc.abstractmethod
    async def _serve(self) -> str:
        """Read (calling :meth:`_deliver`) until the connection is lost; say why."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Drop the connection (no error if there is none)."""

    @abc.abstractmethod
    async def _subscribe(self, channel: str) -> None:
        """Subscribe on the open connection; return once the server confirmed it."""

    @abc.abstractmethod
    async def _unsubscribe(self, channel: str) -> None:
        """Unsubscribe on the open connection (no need to wait for the server)."""

    @abc.abstractmethod
    async def _publish(self, channel: str, payload: bytes) -> None:
        """Publish; raise :class:`BrokerUnavailable` if the server did not take it."""

    @abc.abstractmethod
    async def sync(self) -> None:
        """Return once every payload published (anywhere) before the call reached the handler."""

    # ------------------------------------------------------------- state

    @property
    def up(self) -> bool:
        """Connected to the backplane, with every wanted channel subscribed."""
        return self._up

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    def add_listener(self, listener: BackplaneListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: BackplaneListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _emit(self, event: BackplaneEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("backplane listener failed")

    def last_publication(self, channel: str) -> bytes | None:
        """The last ``pub`` push delivered for ``channel`` (raw), if any."""
        return self._last.get(channel)

    def check_done(self, event: BackplaneUp, reset: Collection[str] = ()) -> None:
        """The listener has acted on ``event``: deliver what was held, except for ``reset``.

        The ``reset`` channels' sessions were told to recover: what arrived for
        them meanwhile reaches them through history.
        """
        if self._after is not event.after:
            return  # a later outage: its own event comes
        held, self._held = self._held, None
        self._after = None
        self._before = None
        handler = self._handler
        for channel, payload in held or ():
            if handler is not None and channel not in reset and channel in self._channels:
                handler(channel, payload)

    # ---------------------------------------------------------- lifecycle

    async def start(self, handler: BrokerHandler) -> None:
        if self._supervisor is not None:
            return
        self._handler = handler
        self._closing = False
        connected = False
        try:
            await asyncio.wait_for(self._open(), self.timeout)
            connected = True
        except Exception as exc:
            await self._disconnect()
            logger.warning("%s backplane unavailable (%s): retrying", self.kind, _why(exc))
            self._went_down(_why(exc))
        else:
            self._came_up()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(connected))

    async def close(self) -> None:
        self._closing = True
        self._handler = None
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        for task in list(self._background):
            task.cancel()
        await self._disconnect()
        self._up = False
        self._channels.clear()
        self._last.clear()

    async def _supervise(self, connected: bool) -> None:
        attempt = 0
        while not self._closing:
            if not connected:
                try:
                    await asyncio.wait_for(self._open(), self.timeout)
                except Exception as exc:
                    await self._disconnect()
                    delay = backoff_delay(attempt, self.min_backoff, self.max_backoff)
                    attempt += 1
                    logger.debug("%s reconnect failed (%s); next in %.2fs", self.kind, exc, delay)
                    await asyncio.sleep(delay)  # the backoff itself: nothing to await instead
                    continue
                attempt = 0
                self.reconnects += 1
                logger.warning("%s backplane reconnected", self.kind)
                self._came_up()
            connected = False
            try:
                reason = await self._serve()
            except Exception as exc:
                reason = _why(exc)
            await self._disconnect()
            if self._closing:
                return
            logger.warning("%s backplane connection lost (%s): reconnecting", self.kind, reason)
            self._went_down(reason)

    def _went_down(self, reason: str) -> None:
        self._up = False
        self.outages += 1
        if self._before is None:
            self._before = dict(self._last)
        self._after = None
        self._held = None  # the next check finds these channels' gaps again
        self._emit(BackplaneDown(reason))

    def _came_up(self) -> None:
        self._up = True
        reconnect = self._ever_up or self._before is not None
        self._ever_up = True
        if reconnect:
            event = BackplaneUp(True, self.outages, sorted(self._channels), self._before or {})
            self._after = event.after
            if self._listeners:
                self._held = []
                self._emit(event)
            else:
                self._after = self._before = None
        if self._gaps:
            self._spawn(self._send_markers())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ pub/sub

    async def publish(self, channel: str, payload: bytes) -> None:
        if self._handler is None:
            raise BrokerUnavailable("broker not started")
        if not self._up:
            raise BrokerUnavailable(f"{self.kind} backplane down: reconnecting")
        await self._publish(channel, payload)

    async def subscribe(self, channel: str) -> None:
        # Wanted from now on: if the connection is down, the supervisor
        # subscribes it on reconnect (and the watcher treats it as affected).
        self._channels.add(channel)
        if self._up:
            try:
                await self._subscribe(channel)
            except BrokerUnavailable:
                if self._up:
                    raise

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        self._last.pop(channel, None)
        if self._up:
            with contextlib.suppress(Exception):
                await self._unsubscribe(channel)

    def _deliver(self, channel: str, payload: bytes) -> None:
        """Hand one payload of a wanted channel to the node."""
        handler = self._handler
        if handler is None or channel not in self._channels:
            return
        if payload.startswith(PUB_PREFIX):
            self._last[channel] = payload
            after = self._after
            if after is not None and channel not in after:
                after[channel] = payload
        elif payload == RESYNC_MARKER:
            self._emit(ChannelsReset([channel]))
            return
        held = self._held
        if held is not None:
            held.append((channel, payload))
            return
        handler(channel, payload)

    # ----------------------------------------------- history, then publish

    async def publish_with_history(
        self,
        history: History,
        channel: str,
        publication: Publication,
        payload: Callable[[StreamPosition], bytes],
        *,
        size: int,
        ttl: float,
        idempotency_key: str | None = None,
    ) -> AddResult:
        """Add to history, then publish, one publication of a channel at a time.

        Serialized per channel on this node, so offsets reach the broker in
        order. If the publish fails after the add, the publication is in
        history but reached nobody: the channel is marked, and once the
        backplane is back every node's subscribers of it recover.
        """
        if self._handler is None:
            raise BrokerUnavailable("broker not started")
        if not self._up:
            raise BrokerUnavailable(f"{self.kind} backplane down: reconnecting")
        lock, users = self._order.get(channel) or (asyncio.Lock(), 0)
        self._order[channel] = (lock, users + 1)
        try:
            async with lock:
                added = await history.add(
                    channel, publication, size=size, ttl=ttl, idempotency_key=idempotency_key
                )
                if added.duplicate:
                    return added
                try:
                    await self.publish(channel, payload(added.position))
                except BrokerUnavailable:
                    self._gaps.add(channel)
                    raise
        finally:
            lock, users = self._order[channel]
            if users == 1:
                del self._order[channel]
            else:
                self._order[channel] = (lock, users - 1)
        if self._gaps:
            await self._send_markers()
        return added

    async def _send_markers(self) -> None:
        for channel in list(self._gaps):
            try:
                await self._publish(channel, RESYNC_MARKER)
            except BrokerUnavailable:
                return  # tried again after the next reconnect
            self._gaps.discard(channel)


def _why(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
