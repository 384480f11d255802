"""The asyncio layer's fast read path: the interface it calls, and its pure-Python twin.

An asyncio ``BufferedProtocol`` asks :meth:`Receiver.get_buffer` for memory
to read into, then calls :meth:`Receiver.feed`, which turns each whole
*simple* frame (an unfragmented TEXT or BINARY frame: first byte 0x81 or
0x82, masked exactly when expected, within the size limit) into a message
and hands it to a callback at once. Anything else stops ``feed`` with
:data:`SLOW`; :meth:`Receiver.take` then returns every held byte, exactly as
it arrived, for the full parser in :mod:`tether.protocol.connection`.

A text frame that has only partly arrived is left to the full parser too:
it checks UTF-8 as the bytes come and fails fast (Autobahn 6.4.*).

Reads land in one buffer shared by the thread's connections; only the bytes
of a frame cut by the end of a read are copied into the connection, so an
idle connection holds no buffer. The native twin
(``tether.asyncio._speedups.Receiver``) also reads a large binary frame
straight into the bytes object that becomes the message.

Both twins call the connection and its core only through
:class:`ReceiverHost` and :class:`ReceiverCore`: public names, part of the
I/O contract (docs/protocol.md). This module lives in the asyncio layer
because it serves that layer alone; the sans-I/O core never imports it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from tether._lengths import payload_length
from tether._mask import apply_mask


class ReceiverCore(Protocol):
    """What the Receiver reads of the sans-I/O core (``tether.protocol.Connection``)."""

    @property
    def discarding_input(self) -> bool:
        """True once the core ignores input (failed, closing, or a failure pending)."""
        ...


class ReceiverHost(Protocol):
    """What the Receiver calls on the connection it serves (``tether.asyncio.Connection``)."""

    def receive_read(self, data: bytes, after_messages: bool) -> None:
        """Bytes the fast path did not deliver, exactly as read, for the core.

        ``after_messages``: the fast path delivered messages from the same read
        just before these bytes (see ``Connection.receive_data`` of the core).
        """
        ...

    def fast_receive_failed(self, exc: Exception) -> None:
        """``deliver`` raised ``exc`` while the fast path delivered a message."""
        ...

    def cork_writes(self) -> None:
        """Hold small writes: more messages of the same read are coming."""
        ...

    def uncork_writes(self) -> None:
        """Write what was held while corked."""
        ...


OK = 0  # every whole simple frame was delivered; at most an incomplete one is held
SLOW = 1  # what is held needs the full parser: call take()

_SHARED_SIZE = 256 * 1024
_local = threading.local()


def _shared_buffer() -> memoryview:
    view: memoryview | None = getattr(_local, "view", None)
    if view is None:
        view = _local.view = memoryview(bytearray(_SHARED_SIZE))
    return view


class Receiver:
    """See the module docstring; the API matches ``tether.asyncio._speedups.Receiver``."""

    __slots__ = (
        "_busy",
        "_conn",
        "_core",
        "_deliver",
        "_delivered",
        "_held",
        "_limit",
        "_mask_bit",
        "_reading_shared",
        "fast",
    )

    def __init__(self, expect_mask: bool = True, limit: int = 0) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self._mask_bit = 0x80 if expect_mask else 0
        self._limit = limit
        self._held = bytearray()
        self._reading_shared = False
        self._busy = False
        self._delivered = 0
        self.fast = False
        self._conn: ReceiverHost | None = None
        self._core: ReceiverCore | None = None
        self._deliver: Callable[[Any, Any], object] | None = None

    def bind(self, conn: ReceiverHost, core: ReceiverCore, expect_mask: bool, limit: int) -> None:
        """Attach to a connection (``conn``) and its sans-I/O core for :meth:`buffer_updated`."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self._mask_bit = 0x80 if expect_mask else 0
        self._limit = limit
        self._conn = conn
        self._core = core

    def enable(self, deliver: Callable[[Any, Any], object]) -> None:
        """Deliver whole simple frames with ``deliver(conn, message)`` (while ``fast``)."""
        self._deliver = deliver
        self.fast = True

    def buffer_updated(self, nbytes: int) -> None:
        """The BufferedProtocol callback: feed(), then the rest to ``conn.receive_read``."""
        conn, core = self._conn, self._core
        if conn is None or core is None:
            raise RuntimeError("Receiver.bind() was not called")
        deliver = self._deliver
        if self.fast and deliver is not None and not core.discarding_input:
            try:
                if self._feed(nbytes, deliver, conn, core, True) == OK:
                    return
            except Exception as exc:
                conn.fast_receive_failed(exc)
                if not self._held:
                    return
                # The rest of the read still counts (say a Close, while the
                # connection was closing anyway): the core takes it, or drops
                # it if the failure failed the connection.
            conn.receive_read(self.take(), self._delivered > 0)
        else:
            conn.receive_read(self.take(nbytes), False)

    @property
    def delivered(self) -> int:
        """Messages the last feed() passed on."""
        return self._delivered

    @property
    def pending(self) -> int:
        return len(self._held)

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        self._check_idle()
        self._reading_shared = True
        return _shared_buffer()

    def _check_idle(self) -> None:
        if self._busy:
            raise RuntimeError("Receiver used from inside its own feed() callback")

    def _commit(self, nbytes: int) -> bytes | None:
        """Account for ``nbytes`` read; the bytes, unless they joined what is held.

        A copy out of the shared buffer: a callback may (in theory) make
        another connection read into it while these bytes are parsed.
        """
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        if not self._reading_shared:
            if nbytes:
                raise ValueError("nbytes is larger than the buffer handed out")
            return None
        if nbytes > _SHARED_SIZE:
            raise ValueError("nbytes is larger than the buffer handed out")
        self._reading_shared = False
        view = _shared_buffer()[:nbytes]
        if self._held:
            self._held += view
            return None
        return bytes(view)

    def take(self, nbytes: int = 0) -> bytes:
        self._check_idle()
        data = self._commit(nbytes)
        if data is not None:
            return data
        held = bytes(self._held)
        self._held = bytearray()
        return held

    def feed(
        self, nbytes: int, deliver: Callable[[Any, Any], object], conn: Any, core: ReceiverCore
    ) -> int:
        return self._feed(nbytes, deliver, conn, core, False)

    def _feed(
        self,
        nbytes: int,
        deliver: Callable[[Any, Any], object],
        conn: Any,
        core: ReceiverCore,
        cork: bool,
    ) -> int:
        # With ``cork`` (``conn`` is then a ReceiverHost): conn.cork_writes()
        # before a read's second message, so that what the callbacks write
        # leaves in one system call per socket, and conn.uncork_writes() at the
        # end. A single message goes out at once.
        self._check_idle()
        data = self._commit(nbytes)
        buf: bytes | bytearray = self._held if data is None else data
        self._delivered = 0
        self._busy = True
        pos = 0
        n = len(buf)
        mask_bit = self._mask_bit
        limit = self._limit
        status = OK
        corked = False
        try:
            while pos < n:
                b0 = buf[pos]
                if b0 != 0x81 and b0 != 0x82:
                    status = SLOW
                    break
                if n - pos < 2:
                    break
                if buf[pos + 1] & 0x80 != mask_bit:
                    status = SLOW
                    break
                sizes = payload_length(buf, pos, n)
                if sizes is None:
                    break
                length, head = sizes
                if length > limit:
                    status = SLOW  # the full parser reports 1009 (or 1002)
                    break
                if mask_bit:
                    head += 4
                    if n - pos < head:
                        break
                end = pos + head + length
                if end > n:
                    # Incomplete: the full parser checks text as it arrives.
                    status = SLOW if b0 == 0x81 else OK
                    break
                start = pos + head
                if mask_bit:
                    payload = apply_mask(buf[start:end], bytes(buf[start - 4 : start]))
                else:
                    payload = bytes(buf[start:end])
                message: bytes | str = payload
                if b0 == 0x81:
                    try:
                        message = payload.decode("utf-8")
                    except UnicodeDecodeError:
                        status = SLOW  # the full parser fails with 1007
                        break
                pos = end
                if cork and self._delivered == 1:
                    conn.cork_writes()
                    corked = True
                self._delivered += 1
                deliver(conn, message)
                if pos < n and core.discarding_input:
                    status = SLOW  # the callback failed or closed the connection
                    break
        finally:
            self._busy = False
            # Keep what was not delivered, even when a callback raised.
            if data is None:
                del self._held[:pos]
            elif pos < n:
                self._held += data[pos:]
            if corked:
                conn.uncork_writes()
        return status
