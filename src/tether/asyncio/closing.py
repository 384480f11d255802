"""Closing: the closing handshake, failing, and the timer that bounds every wait for TCP.

RFC 6455 §7.1.1: the server closes TCP first and a client waits for it;
every wait is bounded by ``close_timeout``, armed in one place
(:meth:`Closing._arm_close_timer`), after which the transport is aborted.
"""

# mypy: disable-error-code="misc"
# (Methods take ``self: Connection``: each concern calls the others' methods.
# mypy reports such a self type, a subclass of the class it is in, as "misc".)

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from tether.asyncio.attributes import ConnectionAttributes
from tether.protocol.connection import State
from tether.protocol.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
)
from tether.protocol.frames import CloseCode

if TYPE_CHECKING:
    from tether.asyncio.connection import Connection


# A clean close, as websockets counts it: 1005 is a Close frame without a code,
# which is what a browser's ws.close() sends.
_OK_CODES = (CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.NO_STATUS)


class Closing(ConnectionAttributes):
    """The closing half of :class:`~tether.asyncio.connection.Connection`."""

    __slots__ = ()

    async def close(self: Connection, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Run the closing handshake; return once the TCP connection is closed.

        Gives up after ``close_timeout`` and drops the TCP connection.
        """
        proto = self.protocol
        await self._until_idle()
        if proto.state is State.OPEN:
            with contextlib.suppress(InvalidState):
                proto.send_close(code, reason)
            self._flush()
            if self._reading_paused and self.transport is not None:
                # The peer's Close may sit behind messages nobody reads: read on
                # (_deliver drops what exceeds max_queue) or close_timeout expires.
                self._reading_paused = False
                self.transport.resume_reading()
            self._arm_close_timer()
        elif proto.state is State.CONNECTING and self.transport is not None:
            self.transport.abort()
        await self.wait_closed()

    async def wait_closed(self: Connection) -> None:
        await asyncio.shield(self._closed_waiter)

    def close_nowait(self: Connection, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake without waiting for it to finish."""
        self._when_idle(lambda: self._close_now(code, reason))

    def _close_now(self: Connection, code: int, reason: str) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
            self._arm_close_timer()

    def fail(self: Connection, code: int, reason: str) -> None:
        """Close at once with ``code``, without waiting for the peer's answer."""
        self._when_idle(lambda: self._fail_now(code, reason))

    def _fail_now(self: Connection, code: int, reason: str) -> None:
        self.protocol.fail(code, reason)
        self._flush()

    def _fail_pending(self: Connection) -> None:
        self._when_idle(self._fail_pending_now)

    def _fail_pending_now(self: Connection) -> None:
        self.protocol.fail_pending()
        self._flush()

    def _close_received(self: Connection) -> None:
        # A client waits for the server to close TCP; bound that wait.
        self._arm_close_timer()

    def _close_transport(self: Connection) -> None:
        if self._held_frames is not None:
            self._flush_held()
        transport = self.transport
        if transport is not None and not transport.is_closing() and not self._half_closed:
            if transport.can_write_eof():
                # Half-close (FIN after what is buffered) and read on, discarding,
                # until the peer closes: closing with unread input sends a RST,
                # which can destroy our Close frame or HTTP error response
                # before the peer reads it.
                self._half_closed = True
                transport.write_eof()
                if self._reading_paused:
                    self._reading_paused = False
                    transport.resume_reading()
            else:
                transport.close()  # flushes what is buffered, then closes
            # A peer that never reads would keep the buffered bytes forever.
            self._arm_close_timer()

    def _arm_close_timer(self: Connection) -> None:
        """Abort the transport ``close_timeout`` from now, unless it is already armed.

        Every wait for the TCP connection to end goes through here: our Close
        awaiting the peer's, a client awaiting the server's TCP close, and
        buffered bytes that a peer never reads.
        """
        transport = self.transport
        if self.close_timeout is not None and self._close_handle is None and transport:
            self._close_handle = self.loop.call_later(self.close_timeout, transport.abort)

    def _closed_exception(self: Connection) -> ConnectionClosed:
        proto = self.protocol
        rcvd, sent, first = proto.close_rcvd, proto.close_sent, proto.close_rcvd_then_sent
        failure = self.protocol.failure
        detail = failure.reason if failure is not None else ""
        if rcvd is not None and sent is not None and rcvd[0] in _OK_CODES and sent[0] in _OK_CODES:
            return ConnectionClosedOK(rcvd, sent, first, detail)
        if rcvd is not None and sent is None and rcvd[0] in _OK_CODES:
            return ConnectionClosedOK(rcvd, sent, first, detail)
        if not detail and self._lost_exc is not None:
            detail = str(self._lost_exc)
        return ConnectionClosedError(rcvd, sent, first, detail)
