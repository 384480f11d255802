"""What the networked brokers (Redis, NATS) share: one connection, kept alive.

A :class:`BackplaneBroker` keeps one subscription connection to its server
and the set of channels this node wants. A supervisor task opens it,
subscribes every wanted channel, reads until the connection is lost, and
reconnects with jittered exponential backoff. While the connection is down,
:meth:`publish` raises :class:`BrokerUnavailable` at once (clients get error
112, the HTTP API 503): nothing is dropped silently. Local traffic goes on.

What a node may have missed while it was down is told to its listeners (the
node's :class:`~tether.hub.backplane.BackplaneWatcher`) through
:class:`BackplaneUp` events: the last publication each channel saw before the
outage, and the first one after it. With the channel's history position the
watcher decides which channels have a gap, and has their clients recover.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Coroutine
from dataclasses import dataclass, field
from typing import Any

from tether.hub.brokers.base import Broker, BrokerHandler, BrokerUnavailable
from tether.hub.envelope import (
    RESYNC,
    Envelope,
    MalformedEnvelope,
    Pub,
    PubDraft,
    Resync,
    decode,
    encode,
)
from tether.hub.history.base import AddResult, History
from tether.hub.model import Publication, StreamPosition

logger = logging.getLogger("tether.hub.backplane")

# How long a receiver holds pushes that arrived ahead of a missing offset.
REORDER_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class BackplaneDown:
    """The connection to the backplane server was lost (or could not be made)."""

    reason: str


@dataclass(slots=True)
class BackplaneUp:
    """Connected, and every wanted channel is subscribed again.

    ``before`` holds each channel's last publication before the outage
    (channels that had seen none are absent); ``after`` fills with each
    channel's first publication after it while the check runs. Until the
    listener calls :meth:`BackplaneBroker.check_done`, payloads are held
    back, so no client sees a publication of a new epoch before being told.
    """

    reconnect: bool
    """False for the first connection of a broker that started connected."""
    outage: int
    """Which outage this ends (:attr:`BackplaneBroker.outages` at the time)."""
    channels: list[str]
    before: dict[str, Pub]
    after: dict[str, Pub] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChannelsReset:
    """Another node (or this one) lost publications of ``channels`` on the way."""

    channels: list[str]


BackplaneEvent = BackplaneDown | BackplaneUp | ChannelsReset
BackplaneListener = Callable[[BackplaneEvent], None]


@dataclass(slots=True)
class _Sequence:
    """A channel's last offset handed over, and publications that came ahead of a gap."""

    epoch: str
    last: int
    ahead: dict[int, Pub] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None
    starting: bool = False
    """Waiting for the channel's position at subscribe time: everything waits."""


@dataclass(eq=False, slots=True)
class _Pending:
    """A publication waiting for its channel's turn to be added to history and sent."""

    history: History
    publication: Publication
    draft: PubDraft
    size: int
    ttl: float
    idempotency_key: str | None
    done: asyncio.Future[tuple[AddResult, Awaitable[None]]]

    def add(self, channel: str) -> Awaitable[AddResult]:
        return self.history.add(
            channel,
            self.publication,
            size=self.size,
            ttl=self.ttl,
            idempotency_key=self.idempotency_key,
        )

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)
            self.done.exception()  # its caller may be gone: never "never retrieved"


# The channel's history position (None without history), for sequencing.
PositionSource = Callable[[str], Awaitable[StreamPosition | None]]


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
        self._last: dict[str, Pub] = {}
        # Set at the first outage not checked yet; cleared by check_done.
        self._before: dict[str, Pub] | None = None
        self._after: dict[str, Pub] | None = None
        # Envelopes held back while a listener checks an outage.
        self._held: list[tuple[str, Envelope]] | None = None
        self.malformed = 0
        """Broker messages dropped because they were not envelopes (logged)."""
        self._gaps: set[str] = set()
        # Per channel, while its publications are being added and sent: those waiting.
        self._order: dict[str, list[_Pending]] = {}
        self._sequences: dict[str, _Sequence] = {}
        self.position_source: PositionSource | None = None
        """Set by the node when pushes may come from two-step publishers (see
        :meth:`sequencing_needed`): a channel's order starts from its position
        when this node subscribes, so the first pushes can be put in order too."""
        self._background: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ subclass API

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect, subscribe every channel in ``self._channels``; raise if it fails."""

    @abc.abstractmethod
    async def _serve(self) -> str:
        """Read (calling :meth:`_deliver` with each message's bytes) until the connection
        is lost; say why."""

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
    async def _publish(self, channel: str, data: bytes) -> None:
        """Publish an encoded envelope; raise :class:`BrokerUnavailable` if the server
        did not take it."""

    async def _enqueue(self, channel: str, data: bytes) -> Awaitable[None]:
        """Start a publish, in order with earlier ones; return what confirms it.

        By default the whole publish happens here (nothing left to confirm).
        """
        await self._publish(channel, data)
        return _done()

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

    def last_publication(self, channel: str) -> Pub | None:
        """The last publication delivered for ``channel``, if any."""
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
        for channel, envelope in held or ():
            if handler is not None and channel not in reset and channel in self._channels:
                handler(channel, envelope)

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
        self._forget_sequences()
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
        # Sequences stay: a push after the outage that does not follow on is
        # held for the gap, and the watcher's check resets such channels.
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

    async def publish(self, channel: str, envelope: Envelope) -> None:
        if self._handler is None:
            raise BrokerUnavailable("broker not started")
        if not self._up:
            raise BrokerUnavailable(f"{self.kind} backplane down: reconnecting")
        await self._publish(channel, encode(envelope))

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
                return
            await self._start_sequence(channel)

    def sequencing_needed(self, history: History) -> bool:
        """Whether publications with this history may arrive out of offset order."""
        return True

    async def _start_sequence(self, channel: str) -> None:
        source = self.position_source
        if source is None or channel in self._sequences:
            return
        sequence = self._sequences[channel] = _Sequence("", 0, starting=True)
        try:
            position = await source(channel)
        except Exception:
            position = None
        if self._sequences.get(channel) is not sequence:
            return
        ahead = sequence.ahead
        if position is None:
            del self._sequences[channel]  # no history: publications carry no offsets
        else:
            sequence.epoch, sequence.last = position.epoch, position.offset
            sequence.ahead = {}
            sequence.starting = False
        for offset in sorted(ahead):  # what came meanwhile, in order
            pub = ahead[offset]
            if position is not None and offset <= position.offset:
                self._pass(channel, pub)  # before the position: subscribers filter it
            else:
                self._in_order(channel, pub)

    def reset_sequence(self, channel: str) -> None:
        """Forget ``channel``'s order (its sessions were reset): the next push starts it."""
        sequence = self._sequences.pop(channel, None)
        if sequence is not None and sequence.timer is not None:
            sequence.timer.cancel()

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        self._last.pop(channel, None)
        sequence = self._sequences.pop(channel, None)
        if sequence is not None and sequence.timer is not None:
            sequence.timer.cancel()
        if self._up:
            with contextlib.suppress(Exception):
                await self._unsubscribe(channel)

    def _deliver(self, channel: str, data: bytes) -> None:
        """Decode one message of a wanted channel and hand it to the node."""
        if self._handler is None or channel not in self._channels:
            return
        try:
            envelope = decode(data)
        except MalformedEnvelope as exc:
            self.malformed += 1
            if self.malformed == 1 or self.malformed % 1000 == 0:
                logger.warning(
                    "%s backplane: dropped a malformed message on %r (%d so far): %s",
                    self.kind,
                    channel,
                    self.malformed,
                    exc,
                )
            return
        if type(envelope) is Pub and envelope.reorder:
            self._in_order(channel, envelope)
            return
        self._pass(channel, envelope)

    def _in_order(self, channel: str, pub: Pub) -> None:
        """Hand over a two-step publication in offset order, waiting briefly for a missing one."""
        position = pub.position
        assert position is not None  # only positioned publications are reordered
        offset, epoch = position.offset, position.epoch
        sequence = self._sequences.get(channel)
        if sequence is not None and sequence.starting:
            sequence.ahead[offset] = pub
            return
        if sequence is None or sequence.epoch != epoch:
            if sequence is not None:
                self._give_up(channel, reset=False)
            self._sequences[channel] = _Sequence(epoch, offset)
            self._pass(channel, pub)
            return
        if offset <= sequence.last:
            # Later offsets went out already: clients skip this one as old.
            self._pass(channel, pub)
            self._emit(ChannelsReset([channel]))
            return
        sequence.ahead[offset] = pub
        while sequence.last + 1 in sequence.ahead:
            sequence.last += 1
            self._pass(channel, sequence.ahead.pop(sequence.last))
        if not sequence.ahead:
            if sequence.timer is not None:
                sequence.timer.cancel()
                sequence.timer = None
        elif sequence.timer is None:
            loop = asyncio.get_running_loop()
            sequence.timer = loop.call_later(REORDER_WAIT, self._give_up, channel)

    def _give_up(self, channel: str, reset: bool = True) -> None:
        """The gap did not fill (lost on the way): hand over what came, reset the channel."""
        sequence = self._sequences.get(channel)
        if sequence is None:
            return
        if sequence.timer is not None:
            sequence.timer.cancel()
            sequence.timer = None
        for offset in sorted(sequence.ahead):
            sequence.last = offset
            self._pass(channel, sequence.ahead.pop(offset))
        if reset:
            self._emit(ChannelsReset([channel]))

    def _forget_sequences(self) -> None:
        for sequence in self._sequences.values():
            if sequence.timer is not None:
                sequence.timer.cancel()
        self._sequences.clear()

    def _pass(self, channel: str, envelope: Envelope) -> None:
        handler = self._handler
        if handler is None:
            return
        if type(envelope) is Pub:
            self._last[channel] = envelope
            after = self._after
            if after is not None and channel not in after:
                after[channel] = envelope
        elif type(envelope) is Resync:
            self._emit(ChannelsReset([channel]))
            return
        held = self._held
        if held is not None:
            held.append((channel, envelope))
            return
        handler(channel, envelope)

    # ----------------------------------------------- history, then publish

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
        """Add to history, then publish, in the channel's order on this node.

        A channel's publications made while the previous ones are being added
        wait, and go together: their adds, then their publishes, in the order
        they were made, so offsets reach the broker in order. With a history
        that keeps call order (Redis, pipelined) the adds of a batch take one
        round trip; with another, one after the other. If a publish fails
        after its add, the publication is in history but reached nobody: the
        channel is marked, and once the backplane is back every node's
        subscribers of it recover.
        """
        if self._handler is None:
            raise BrokerUnavailable("broker not started")
        if not self._up:
            raise BrokerUnavailable(f"{self.kind} backplane down: reconnecting")
        loop = asyncio.get_running_loop()
        item = _Pending(
            history, publication, draft, size, ttl, idempotency_key, loop.create_future()
        )
        waiting = self._order.get(channel)
        if waiting is None:
            waiting = self._order[channel] = [item]
            self._spawn(self._add_and_send(channel, waiting))
        else:
            waiting.append(item)
        added, confirm = await asyncio.shield(item.done)
        # Confirmed outside the channel's turn: the next publications of the
        # channel are on their way meanwhile (the connection keeps their order).
        try:
            await confirm
        except BrokerUnavailable:
            self._gaps.add(channel)
            raise
        if self._gaps:
            await self._send_markers()
        return added

    async def _add_and_send(self, channel: str, waiting: list[_Pending]) -> None:
        """Add and send ``channel``'s waiting publications, batch after batch."""
        batch: list[_Pending] = []
        try:
            while waiting:
                batch = waiting[:]
                del waiting[:]
                results = await self._add_batch(channel, batch)
                for item, result in zip(batch, results, strict=True):
                    if isinstance(result, BaseException):
                        item.fail(result)
                    elif result.duplicate:
                        item.done.set_result((result, _done()))
                    else:
                        await self._send_added(channel, item, result)
        finally:
            if self._order.get(channel) is waiting:
                del self._order[channel]
            closed = BrokerUnavailable(f"{self.kind} broker closed")
            for item in [*batch, *waiting]:  # when cancelled (closing): nobody waits forever
                item.fail(closed)

    async def _add_batch(
        self, channel: str, batch: list[_Pending]
    ) -> list[AddResult | BaseException]:
        if all(item.history.adds_in_call_order for item in batch):
            return await asyncio.gather(
                *(item.add(channel) for item in batch), return_exceptions=True
            )
        results: list[AddResult | BaseException] = []
        for item in batch:
            try:
                results.append(await item.add(channel))
            except Exception as exc:
                results.append(exc)
        return results

    async def _send_added(self, channel: str, item: _Pending, added: AddResult) -> None:
        try:
            if not self._up:
                raise BrokerUnavailable(f"{self.kind} backplane down: reconnecting")
            confirm = await self._enqueue(
                channel, encode(item.draft.at(added.position, reorder=True))
            )
        except BrokerUnavailable as exc:
            self._gaps.add(channel)
            item.fail(exc)
        else:
            item.done.set_result((added, confirm))

    async def _send_markers(self) -> None:
        for channel in list(self._gaps):
            try:
                await self._publish(channel, encode(RESYNC))
            except BrokerUnavailable:
                return  # tried again after the next reconnect
            self._gaps.discard(channel)


async def _done() -> None:
    return None


def _why(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
