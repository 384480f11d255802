"""Write corking: the frames a burst of messages produces leave in one write per socket.

When one read holds several messages, each answer (an echo, a broadcast)
would be one system call per message and socket. From a read's second
message on, the Receiver corks (:meth:`Corking.cork_writes`): fast-path
frames written meanwhile are held per connection, and leave in one write
per socket when the read is done (microseconds later). A lone message, as
in a request/response exchange, is never held. Any other write of a
connection flushes its held frames first, so order is kept.

Messages that do not come from a client's read (a hub's publications arriving
from its broker, a burst of presence changes) get the same batching through
:func:`hold_writes`: frames are held until the current event loop iteration
ends.
"""

# mypy: disable-error-code="misc"
# (Methods take ``self: Connection``: each concern calls the others' methods.
# mypy reports such a self type, a subclass of the class it is in, as "misc".)

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from tether.asyncio.attributes import ConnectionAttributes

if TYPE_CHECKING:
    from tether.asyncio.connection import Connection

logger = logging.getLogger("tether")

# Frames a connection holds while corked before it writes them anyway.
MAX_HELD_FRAMES = 64
# Above this, header and payload go out as a gathered write: no copy of the payload.
ONE_WRITE = 65536


class _Cork(threading.local):
    """Per thread (each event loop has its own): whether writes are held, and by whom."""

    # The loop whose writes are held, or None. A loop, not a flag: a loop
    # that stopped before its uncork ran must not leave the next one corked.
    loop: asyncio.AbstractEventLoop | None = None

    def __init__(self) -> None:
        self.held: list[Connection] = []


cork_state = _Cork()


def corked_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop if its writes are held now, else None."""
    loop = cork_state.loop
    if loop is None:
        return None
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop if loop is running else None


def hold_writes() -> None:
    """Hold fast-path frames written from now to the end of this loop iteration.

    Then each connection writes what it holds in one system call. A burst
    of broadcasts handled in one iteration (say, publications read from a
    broker connection in one go) costs one write per subscriber instead of
    one per subscriber and message; a lone message waits microseconds.
    """
    loop = asyncio.get_running_loop()
    if cork_state.loop is loop:
        return  # held already (by a Receiver's read or an earlier call)
    cork_state.loop = loop
    loop.call_soon(_release, loop)


def _release(loop: asyncio.AbstractEventLoop) -> None:
    if cork_state.loop is loop:  # else a Receiver uncorked at the end of its read
        _write_held()


def _write_held() -> None:
    """Stop holding, and write every connection's held frames."""
    cork = cork_state
    cork.loop = None
    held, cork.held = cork.held, []
    for conn in held:
        try:
            conn._flush_held()
        except Exception:  # a transport's bug must not keep the others' frames held
            logger.exception("error while writing held frames")


class Corking(ConnectionAttributes):
    """The corking half of :class:`~tether.asyncio.connection.Connection`."""

    __slots__ = ()

    def cork_writes(self: Connection) -> None:
        """Hold fast-path writes until :meth:`uncork_writes` (I/O contract: for the Receiver)."""
        cork_state.loop = self.loop

    def uncork_writes(self: Connection) -> None:
        """Write every connection's held frames (I/O contract: the Receiver calls it)."""
        _write_held()

    def _hold(self: Connection, frame: bytes) -> None:
        held = self._held_frames
        if held is None:
            self._held_frames = [frame]
            cork_state.held.append(self)
        else:
            held.append(frame)
            if len(held) >= MAX_HELD_FRAMES:
                # A long burst: bound the delay and the memory held.
                self._flush_held()

    def _write_small(self: Connection, frame: bytes) -> None:
        """Write a fast-path frame now, or hold it while corked (see cork_writes)."""
        self._write_frame(frame, hold=cork_state.loop is self.loop)

    def _write_frame(self: Connection, frame: bytes, *, hold: bool) -> None:
        """Write a whole frame after the held ones, or (``hold``: corked) hold it too."""
        if hold:
            self._hold(frame)
            return
        if self._held_frames is not None:
            self._flush_held()
        self.transport.write(frame)  # type: ignore[union-attr]

    def _flush_held(self: Connection) -> None:
        frames = self._held_frames
        if frames is None:
            return
        self._held_frames = None
        transport = self.transport
        if transport is None or transport.is_closing() or self._half_closed:
            return
        if len(frames) == 1:
            transport.write(frames[0])
        else:
            # Held frames are each below ONE_WRITE, at most MAX_HELD_FRAMES.
            transport.write(b"".join(frames))
