"""Received messages: the bounded queue, its backpressure, and ``recv`` / ``async for``.

Messages go to whoever awaits :meth:`Messages.recv` or into a queue of at
most ``max_queue``; when it is full the transport stops reading, so a slow
consumer pushes back on its peer through TCP instead of growing memory.
Fragments (``stream_fragments=True``) are joined here, or streamed by
:meth:`Messages.recv_streaming`.
"""

# mypy: disable-error-code="misc"
# (Methods take ``self: Connection``: each concern calls the others' methods.
# mypy reports such a self type, a subclass of the class it is in, as "misc".)

from __future__ import annotations

import asyncio
import codecs
import collections
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from tether.asyncio.attributes import ConnectionAttributes, Data
from tether.asyncio.cork import cork_state
from tether.protocol.connection import State
from tether.protocol.events import Fragment
from tether.protocol.exceptions import ConcurrencyError, ConnectionClosedOK

if TYPE_CHECKING:
    from tether.asyncio.connection import Connection

logger = logging.getLogger("tether")


# The queue of a connection that never received a message (see Connection.__init__).
# An empty tuple: no memory of its own, and appending to it would fail loudly.
NO_MESSAGES = cast("collections.deque[Any]", ())


def _as_decoded(message: Data, decode: bool) -> Data:
    """``recv(decode=...)``: text as bytes (False) or binary as text (True)."""
    if decode and isinstance(message, bytes):
        return message.decode("utf-8")
    if not decode and isinstance(message, str):
        return message.encode("utf-8")
    return message


class Messages(ConnectionAttributes):
    """The receiving half of :class:`~tether.asyncio.connection.Connection`."""

    __slots__ = ()

    def _deliver(self: Connection, message: Data | Fragment) -> None:
        # Called once per message: each attribute is read once.
        queue = self._queue
        max_queue = self.max_queue
        full = max_queue is not None and len(queue) >= max_queue
        if self._dropping or (full and self.protocol.state is not State.OPEN):
            # Closing: reading goes on to reach the peer's Close; keep memory bounded
            # (and once one piece is dropped, drop the rest: no half messages).
            self._dropping = True
            logger.debug("dropping a message received while closing with a full queue")
            return
        if queue is NO_MESSAGES:
            queue = self._queue = collections.deque()
        queue.append(message)
        waiter = self._recv_waiter
        if waiter is not None:
            self._recv_waiter = None  # don't keep a done future per idle connection
            if not waiter.done():
                waiter.set_result(None)
        if (
            max_queue is not None
            and len(queue) >= max_queue
            and not self._reading_paused
            and self.transport is not None
        ):
            self._reading_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self: Connection) -> None:
        if (
            self._reading_paused
            and len(self._queue) <= self._queue_low
            and self.transport is not None
        ):
            self._reading_paused = False
            if self.protocol.parse_paused and self._busy is None:
                # Messages held back by the parse budget come first; they may
                # fill the queue again before the socket is read. Compressed
                # ones are inflated off the event loop, as on a read.
                if self.protocol.extensions:
                    self._receive_in_worker(b"")
                    return
                self._after_receive()
                if self._reading_paused:
                    return
            if not self.transport.is_closing() and self._busy is None:
                self.transport.resume_reading()

    def _wait_message(self: Connection) -> asyncio.Future[None]:
        """A future that the next delivered message (or the connection closing) resolves.

        A plain function returning the future, not a coroutine: awaiting it
        directly saves a coroutine frame per message and per idle connection.
        """
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            raise ConcurrencyError("another coroutine is already receiving on this connection")
        if self._lost:
            raise self._closed_exception()
        waiter = self._recv_waiter = self.loop.create_future()
        return waiter

    async def recv(self: Connection, decode: bool | None = None) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        ``decode=False`` returns a text message as UTF-8 ``bytes``;
        ``decode=True`` decodes a binary message as UTF-8 (as websockets).
        Raises :class:`ConnectionClosedOK` or :class:`ConnectionClosedError`
        once the connection is closed and every received message was read.
        """
        while not self._queue:
            await self._wait_message()
        queue = self._queue
        item = queue.popleft()
        if self._reading_paused:
            self._maybe_resume_reading()
        if isinstance(item, Fragment):
            # Kept on the connection, not in this frame: if this recv() is
            # cancelled halfway, the next one carries on with the same message.
            parts = self._recv_parts
            parts.append(item.data)
            fragment = item
            while not fragment.fin:
                while not queue:
                    await self._wait_message()
                nxt = queue.popleft()
                assert isinstance(nxt, Fragment)
                fragment = nxt
                parts.append(fragment.data)
                if self._reading_paused:
                    # A message may have more fragments than max_queue.
                    self._maybe_resume_reading()
            self._recv_parts = []
            if self._reading_paused:
                self._maybe_resume_reading()
            joined = "".join(parts) if isinstance(parts[0], str) else b"".join(parts)
            return joined if decode is None else _as_decoded(joined, decode)
        return item if decode is None else _as_decoded(item, decode)

    async def recv_streaming(self: Connection, decode: bool | None = None) -> AsyncIterator[Data]:
        """Yield the next message piece by piece as its frames arrive.

        Fragments arrive separately only on connections opened with
        ``stream_fragments=True``; otherwise the whole message is one piece.
        ``decode`` as for :meth:`recv`.
        """
        decoder = None
        while True:
            while not self._queue:
                await self._wait_message()
            item = self._queue.popleft()
            if self._reading_paused:
                self._maybe_resume_reading()
            if type(item) is Fragment:
                data, fin = item.data, item.fin
            else:
                data, fin = cast(Data, item), True
            if decode is True and isinstance(data, bytes):
                # A character may straddle two fragments.
                if decoder is None:
                    decoder = codecs.getincrementaldecoder("utf-8")()
                yield decoder.decode(data, fin)
            elif decode is False and isinstance(data, str):
                yield data.encode("utf-8")
            else:
                yield data
            if fin:
                return

    def __aiter__(self: Connection) -> Connection:
        return self

    async def __anext__(self: Connection) -> Data:
        queue = self._queue
        if not queue:
            # Wait here rather than in recv(): one coroutine less per message.
            try:
                while not self._queue:
                    await self._wait_message()
            except ConnectionClosedOK:
                raise StopAsyncIteration from None
            queue = self._queue
        if type(queue[0]) is not Fragment:
            # A whole message (the usual case; fragments are joined by recv).
            if len(queue) > 1 and cork_state.loop is not self.loop:
                # More are waiting: the handler answers them all before it
                # waits again; hold its writes until then (see cork_writes).
                cork_state.loop = self.loop
                self.loop.call_soon(self.uncork_writes)
            item = queue.popleft()
            if self._reading_paused:
                self._maybe_resume_reading()
            return item  # type: ignore[return-value]
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None
