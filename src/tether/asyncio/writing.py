"""The write side of a connection: frames out to the transport, flow control, closing TCP.

The transport says when its buffer passes the high-water mark of
``write_limit`` (``pause_writing``) and drains below the low one
(``resume_writing``); ``send`` waits meanwhile, and Pongs are held back
(only the latest is answered) so a peer that never reads costs no memory.
"""

# mypy: disable-error-code="misc"
# (Methods take ``self: Connection``: each concern calls the others' methods.
# mypy reports such a self type, a subclass of the class it is in, as "misc".)

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.asyncio.attributes import ConnectionAttributes
from tether.asyncio.quirks import WRITELINES_PAUSES_WRITING
from tether.protocol.connection import State

if TYPE_CHECKING:
    from tether.asyncio.connection import Connection


class Writing(ConnectionAttributes):
    """The writing half of :class:`~tether.asyncio.connection.Connection`."""

    __slots__ = ()

    @property
    def writing_paused(self: Connection) -> bool:
        """Whether the write buffer is above the high-water mark of ``write_limit``.

        ``send`` waits while this holds and :func:`broadcast` skips the
        connection, so a caller that must not drop messages queues them.
        """
        return self._writing_paused

    @property
    def buffered_amount(self: Connection) -> int:
        """Bytes written but not yet handed to the kernel (like the browser's)."""
        held = sum(map(len, self._held_frames)) if self._held_frames else 0
        return held + (self.transport.get_write_buffer_size() if self.transport else 0)

    def pause_writing(self: Connection) -> None:
        self._writing_paused = True
        # A peer that sends Pings but never reads would grow the buffer forever.
        self.protocol.pause_pongs()

    def resume_writing(self: Connection) -> None:
        self._writing_paused = False
        self._when_idle(self._send_deferred_pong)
        self._wake_drainers()

    def _send_deferred_pong(self: Connection) -> None:
        self.protocol.resume_pongs()
        self._flush()

    def _wake_drainers(self: Connection) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _drain(self: Connection) -> None:
        if self._lost:
            raise self._closed_exception()
        fut = self.loop.create_future()
        self._drain_waiters.append(fut)
        await fut
        if self._lost and self.protocol.state is not State.CLOSED:
            raise self._closed_exception()

    def _write_out(self: Connection, out: list[bytes]) -> None:
        if self._held_frames is not None:
            self._flush_held()
        transport = self.transport
        if transport is None or transport.is_closing() or self._half_closed:
            return
        if len(out) == 1:
            transport.write(out[0])
        elif WRITELINES_PAUSES_WRITING and sum(map(len, out)) > 65536:
            # One gathered write (writev on uvloop): no copy of a large payload,
            # and no separate tiny segment for the frame header.
            transport.writelines(out)
        else:
            transport.write(b"".join(out))

    def _flush(self: Connection) -> None:
        out = self.protocol.data_to_send()
        if out:
            self._write_out(out)
        if self.protocol.close_transport:
            self._close_transport()
