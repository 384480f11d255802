"""Worker-thread offload: large inflates and deflates run off the event loop.

Inflating a large compressed frame can take tens of milliseconds; done on
the event loop it would stall every other connection. zlib releases the
GIL, so above ``offload_threshold`` buffered bytes, or when a frame could
inflate past the read's budget, the core runs in a worker thread while this
connection stops reading and its sends wait (``_busy``). The core is not
thread-safe: everything else that touches it waits for the worker first,
through :meth:`Offload._when_idle` (callbacks) or :meth:`Offload._until_idle`
(coroutines).
"""

# mypy: disable-error-code="misc"
# (Methods take ``self: Connection``: each concern calls the others' methods.
# mypy reports such a self type, a subclass of the class it is in, as "misc".)

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from tether.asyncio.attributes import ConnectionAttributes
from tether.protocol.frames import Opcode

if TYPE_CHECKING:
    from tether.asyncio.connection import Connection


class Offload(ConnectionAttributes):
    """The worker-thread half of :class:`~tether.asyncio.connection.Connection`."""

    __slots__ = ()

    def _when_idle(self: Connection, action: Callable[[], None]) -> None:
        """Run ``action`` now, or once the worker thread using the core is done.

        Every synchronous path that touches the core goes through here (async
        ones await ``_busy``): the core is not thread-safe, and a frame written
        while the worker is mid-frame would interleave on the wire.
        """
        busy = self._busy
        if busy is None:
            action()
        else:
            busy.add_done_callback(lambda _: self._when_idle(action))

    async def _until_idle(self: Connection) -> None:
        """Wait until no worker thread uses the core (the coroutines' ``_when_idle``)."""
        while self._busy is not None:
            await asyncio.shield(self._busy)

    def _receive_in_worker(self: Connection, data: bytes) -> None:
        self._backlog.append(data)
        if self._busy is not None:
            # Busy compressing a send: hold the input, and stop reading more.
            if self.transport is not None:
                self.transport.pause_reading()
            return
        if self.transport is not None:
            self.transport.pause_reading()
        self._busy = self.loop.create_future()
        self.loop.create_task(self._drain_backlog())

    async def _drain_backlog(self: Connection) -> None:
        proto = self.protocol
        try:
            while self._backlog or (
                proto.parse_paused and not self._reading_paused and not self._lost
            ):
                chunk = b"".join(self._backlog)
                self._backlog.clear()
                self._set_parse_budget(None)  # off the event loop: inflate it all
                await self.loop.run_in_executor(None, proto.receive_data, chunk)
                # The worker is done with the core: a Listener answering these
                # messages from on_message (send_nowait) may use it now.
                busy, self._busy = self._busy, None
                try:
                    self._handle_received()
                finally:
                    if self._busy is None:
                        self._busy = busy
        finally:
            busy, self._busy = self._busy, None
            if busy is not None and not busy.done():
                busy.set_result(None)
            if self.transport is not None and not self._reading_paused:
                self.transport.resume_reading()

    async def _encode_in_worker(
        self: Connection, opcode: int, data: bytes, compress: bool | None
    ) -> None:
        proto = self.protocol
        busy = self._busy = self.loop.create_future()
        try:
            if opcode == Opcode.TEXT:
                await self.loop.run_in_executor(None, proto.send_text, data, True, compress)
            else:
                await self.loop.run_in_executor(None, proto.send_binary, data, True, compress)
        finally:
            self._busy = None
            busy.set_result(None)
            if self._backlog:
                self._receive_in_worker(b"")
