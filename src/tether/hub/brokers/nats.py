"""A broker over core NATS subjects (nats-py).

Each hub channel is one subject, ``<prefix>.c.<channel>`` with every byte
outside ``[A-Za-z0-9_-]`` escaped as ``%XX`` (so ``.``, ``*``, ``>`` and
spaces in channel names cannot change the subject's meaning). A node
subscribes only to the subjects of channels that have local subscribers.

nats-py's own reconnect logic is off (``allow_reconnect=False``): the
shared supervisor (:mod:`tether.hub.brokers.backplane`) reconnects with
jittered exponential backoff, resubscribes, and tells the node what it may
have missed, exactly as for Redis. While disconnected, publishes raise
:class:`BrokerUnavailable` instead of sitting in nats-py's reconnect buffer.

A publish returns once the server has it: publishes are followed by a
flush (PING/PONG), shared by every publish made while one is in flight.
A subscriber that falls behind nats-py's pending limits loses messages
(a "slow consumer"): the broker then resets that channel on every node, so
its clients recover from history instead of silently missing publications.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from tether.hub.brokers.backplane import BackplaneBroker
from tether.hub.brokers.base import BrokerUnavailable

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

logger = logging.getLogger("tether.hub.backplane")

DEFAULT_URL = "nats://127.0.0.1:4222"
DEFAULT_PREFIX = "tether"

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def escape_token(channel: str) -> str:
    """``channel`` as one subject token: unsafe bytes as ``%XX``."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in channel.encode())


def import_nats() -> Any:
    try:
        import nats
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError("the NATS broker needs nats-py: pip install 'tether[nats]'") from None
    return nats


class NatsBroker(BackplaneBroker):
    kind = "nats"

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
        import_nats()
        self.url = url
        self.prefix = prefix
        self._nc: NatsClient | None = None
        self._subs: dict[str, Subscription] = {}
        self._lost: asyncio.Future[str] | None = None
        self._flush: asyncio.Future[None] | None = None

    def subject(self, channel: str) -> str:
        return f"{self.prefix}.c.{escape_token(channel)}"

    # --------------------------------------------------------- connection

    async def _open(self) -> None:
        nats = import_nats()
        loop = asyncio.get_running_loop()
        lost: asyncio.Future[str] = loop.create_future()
        self._lost = lost

        def lose(reason: str) -> None:
            if not lost.done():
                lost.set_result(reason)

        async def on_closed() -> None:
            lose("connection closed")

        async def on_disconnected() -> None:
            lose("disconnected")

        async def on_error(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError):
                self._slow_consumer(exc)
            else:
                logger.debug("nats: %s", exc)

        nc = await nats.connect(
            servers=[self.url],
            allow_reconnect=False,
            connect_timeout=max(1, round(self.timeout)),
            ping_interval=max(1, round(self.ping_interval)),
            max_outstanding_pings=2,
            closed_cb=on_closed,
            disconnected_cb=on_disconnected,
            error_cb=on_error,
            name="tether-hub",
        )
        self._nc = nc
        self._subs = {}
        for channel in list(self._channels):
            self._subs[channel] = await nc.subscribe(
                self.subject(channel), cb=self._callback(channel)
            )
        await self._round_trip(nc)

    async def _round_trip(self, nc: NatsClient) -> None:
        """Return once the server has everything this client sent before the call.

        nats-py's flush() writes its PING straight to the socket, while
        earlier publishes and subscriptions may still wait in its pending
        buffer for the flusher task: the PONG could then come back before
        the server saw them, and a publish would count as confirmed (or a
        subscription as active) too early. So the buffer goes out first.
        """
        push_pending = getattr(nc, "_flush_pending", None)  # private in nats-py 2.x
        if push_pending is not None:
            await push_pending(force_flush=True)
        await nc.flush(timeout=max(1, round(self.timeout)))

    def _callback(self, channel: str) -> Any:
        deliver = self._deliver

        async def on_message(msg: Msg) -> None:
            deliver(channel, msg.data)

        return on_message

    def _slow_consumer(self, exc: Any) -> None:
        sub = getattr(exc, "sub", None)
        for channel, known in self._subs.items():
            if known is sub:
                logger.warning("nats: slow consumer on %s: resetting the channel", channel)
                self._gaps.add(channel)
                self._spawn(self._send_markers())
                return

    async def _serve(self) -> str:
        assert self._lost is not None
        return await self._lost

    async def _disconnect(self) -> None:
        nc, self._nc = self._nc, None
        self._subs = {}
        flush, self._flush = self._flush, None
        if flush is not None and not flush.done():
            flush.set_exception(BrokerUnavailable("nats backplane connection lost"))
            flush.exception()
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    # ---------------------------------------------------------- pub/sub

    async def sync(self) -> None:
        nc = self._nc
        if not self._up or nc is None:
            return
        try:
            await self._round_trip(nc)
        except Exception as exc:
            raise BrokerUnavailable(f"nats sync failed: {exc}") from exc
        # Everything sent before the PONG is queued in the subscriptions; each
        # queue's task hands a message over as soon as it takes it.
        while any(sub.pending_msgs for sub in list(self._subs.values())):
            await asyncio.sleep(0)

    async def _subscribe(self, channel: str) -> None:
        nc = self._nc
        if nc is None or channel in self._subs:
            return
        try:
            self._subs[channel] = await nc.subscribe(
                self.subject(channel), cb=self._callback(channel)
            )
            await self._round_trip(nc)
        except Exception as exc:
            raise BrokerUnavailable(f"nats subscribe failed: {exc}") from exc

    async def _unsubscribe(self, channel: str) -> None:
        sub = self._subs.pop(channel, None)
        if sub is not None:
            await sub.unsubscribe()

    async def _publish(self, channel: str, data: bytes) -> None:
        await (await self._enqueue(channel, data))

    async def _enqueue(self, channel: str, data: bytes) -> Awaitable[None]:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise BrokerUnavailable("nats backplane down: reconnecting")
        try:
            await nc.publish(self.subject(channel), data)
        except Exception as exc:
            raise BrokerUnavailable(f"nats publish failed: {exc}") from exc
        return self._flushed(nc)

    async def _flushed(self, nc: NatsClient) -> None:
        """Wait for a PING sent after this publish to be answered (one for many publishes)."""
        flush = self._flush
        if flush is None:
            flush = self._flush = asyncio.get_running_loop().create_future()
            self._spawn(self._run_flush(nc, flush))
        await asyncio.shield(flush)

    async def _run_flush(self, nc: NatsClient, flush: asyncio.Future[None]) -> None:
        # Publishes made from here on wait for the next flush.
        if self._flush is flush:
            self._flush = None
        try:
            await self._round_trip(nc)
        except Exception as exc:
            if not flush.done():
                flush.set_exception(BrokerUnavailable(f"nats publish not confirmed: {exc}"))
                flush.exception()
        else:
            if not flush.done():
                flush.set_result(None)
