"""Ping, Pong and keepalive: latency measured by Pongs, dead peers found by timeouts."""

# mypy: disable-error-code="misc"
# (Methods take ``self: Connection``: each concern calls the others' methods.
# mypy reports such a self type, a subclass of the class it is in, as "misc".)

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING

from tether.asyncio.attributes import ConnectionAttributes, Data
from tether.protocol.connection import State
from tether.protocol.exceptions import ConcurrencyError, ConnectionClosed
from tether.protocol.frames import CloseCode

if TYPE_CHECKING:
    from tether.asyncio.connection import Connection

logger = logging.getLogger("tether")


class Keepalive(ConnectionAttributes):
    """The ping/keepalive half of :class:`~tether.asyncio.connection.Connection`."""

    __slots__ = ()

    async def ping(
        self: Connection, data: Data | bytearray | memoryview | None = None
    ) -> asyncio.Future[float]:
        """Send a Ping and return a waiter: awaiting it gives the latency in seconds.

        As in websockets: ``pong_waiter = await ws.ping()`` returns as soon
        as the Ping is on its way, ``latency = await pong_waiter`` once its
        Pong arrives (or raises :class:`ConnectionClosed`). ``data`` is the
        payload (4 random bytes by default; ``str`` is sent as UTF-8).
        """
        return self._ping_now(data)

    def _ping_now(
        self: Connection, data: Data | bytearray | memoryview | None = None
    ) -> asyncio.Future[float]:
        self._check_open()
        if data is None:
            payload = os.urandom(4)
            while payload in self._pings:
                payload = os.urandom(4)
        else:
            payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            if payload in self._pings:
                raise ConcurrencyError("already waiting for a pong with the same data")
        fut: asyncio.Future[float] = self.loop.create_future()
        self._pings[payload] = (fut, time.monotonic())
        self._when_idle(lambda: self._send_ping(payload))
        return fut

    def _send_ping(self: Connection, payload: bytes) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_ping(payload)
            self._flush()

    async def pong(self: Connection, data: Data | bytearray | memoryview = b"") -> None:
        proto = await self._ready_to_send()
        proto.send_pong(data.encode("utf-8") if isinstance(data, str) else bytes(data))
        self._flush()

    def _pong_received(self: Connection, data: bytes) -> None:
        if data not in self._pings:
            return  # unsolicited Pong (RFC 6455 §5.5.3): ignore
        now = time.monotonic()
        # A Pong acknowledges its Ping and every Ping sent before it.
        for payload in list(self._pings):
            fut, sent_at = self._pings.pop(payload)
            latency = now - sent_at
            if not fut.done():
                fut.set_result(latency)
            if payload == data:
                self.latency = latency
                break

    def _start_keepalive(self: Connection) -> None:
        if self.ping_interval is not None:
            self._keepalive_handle = self.loop.call_later(self.ping_interval, self._keepalive)

    def _keepalive(self: Connection) -> None:
        self._keepalive_handle = None
        if self.protocol.state is not State.OPEN:
            return
        try:
            fut = self._ping_now()
        except ConnectionClosed:
            return
        if self.ping_timeout is not None:
            timeout = self.loop.call_later(self.ping_timeout, self._keepalive_timeout, fut)
            fut.add_done_callback(lambda _: timeout.cancel())
        fut.add_done_callback(self._keepalive_done)

    def _keepalive_done(self: Connection, fut: asyncio.Future[float]) -> None:
        if not fut.cancelled() and fut.exception() is None and self.ping_interval is not None:
            self._keepalive_handle = self.loop.call_later(self.ping_interval, self._keepalive)

    def _keepalive_timeout(self: Connection, fut: asyncio.Future[float]) -> None:
        if fut.done():
            return
        logger.info("keepalive ping timeout; closing connection")
        fut.cancel()
        self.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
