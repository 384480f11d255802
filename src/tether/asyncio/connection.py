"""The asyncio connection shared by server and client: reading, writing, closing, keepalive.

One :class:`asyncio.BufferedProtocol` per socket, no reader task: the
transport reads into memory from :meth:`Connection.get_buffer` and calls
:meth:`Connection.buffer_updated`. Whole simple frames (unfragmented text or
binary) become messages right there, in native code when it is built (see
:mod:`tether.asyncio._receiver`); everything else goes to the sans-I/O core through
:meth:`Connection.data_received`. Messages go to whoever awaits
:meth:`Connection.recv` (or into a bounded queue; when it is full the
transport stops reading, so a slow consumer pushes back on its peer through
TCP instead of growing memory), or to a :class:`Listener`'s ``on_message``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from tether import _native
from tether.asyncio import _native as _native_io
from tether.protocol.connection import Connection as CoreConnection
from tether.protocol.connection import Side, State
from tether.protocol.events import CloseReceived, Fragment, Pong
from tether.protocol.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
)
from tether.protocol.frames import CloseCode, Opcode
from tether.protocol.handshake import Request, Response

if TYPE_CHECKING:
    from tether.asyncio.listener import Listener

logger = logging.getLogger("tether")

Data = str | bytes
_MESSAGE_TYPES = frozenset({str, bytes})
_OPEN = State.OPEN


# Frames a connection holds while corked before it writes them anyway.
_MAX_HELD_FRAMES = 64


class _Cork(threading.local):
    """Per thread (each event loop has its own): whether writes are held, and by whom."""

    # The loop whose writes are held, or None. A loop, not a flag: a loop
    # that stopped before its uncork ran must not leave the next one corked.
    loop: asyncio.AbstractEventLoop | None = None

    def __init__(self) -> None:
        self.held: list[Connection] = []


_cork_state = _Cork()
# The queue of a connection that never received a message (see Connection.__init__).
# An empty tuple: no memory of its own, and appending to it would fail loudly.
_NO_MESSAGES = cast("collections.deque[Any]", ())
_frame_unmasked = _native.frame_unmasked
# Above this, header and payload go out as a gathered write: no copy of the payload.
_ONE_WRITE = 65536


def _frame_small(message: object) -> bytes | None:
    """A server's whole frame for a str or bytes message below _ONE_WRITE, else None."""
    if type(message) is bytes:
        return _frame_unmasked(2, message) if len(message) < _ONE_WRITE else None
    if type(message) is str and len(message) < _ONE_WRITE // 4:  # UTF-8: <= 4 bytes each
        return _frame_unmasked(1, message.encode())
    return None


# A clean close, as websockets counts it: 1005 is a Close frame without a code,
# which is what a browser's ws.close() sends.
_OK_CODES = (CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.NO_STATUS)

# Inflating costs much less per byte than deflating (about 4 ms per MiB of a
# bomb's zeros, far less for ordinary data), so one read may inflate up to
# this many times ``offload_threshold`` (4 MiB by default) on the event loop.
_INLINE_INFLATE_FACTOR = 16


class ConcurrencyError(RuntimeError):
    """Two coroutines called recv (or streamed a send) on one connection at once."""


class Connection(asyncio.BufferedProtocol):
    """An open WebSocket connection (base of server and client connections)."""

    # Slots keep an idle connection small (thousands of them per process);
    # subclasses add a __dict__, so users can still attach their own attributes.
    # get_buffer and buffer_updated, the BufferedProtocol callbacks, are slots
    # holding the Receiver's own (native) methods: no Python frame per read.
    __slots__ = (
        "_backlog",
        "_busy",
        "_close_handle",
        "_closed_waiter",
        "_drain_waiters",
        "_dropping",
        "_fast_rx",
        "_fast_tx",
        "_half_closed",
        "_held_frames",
        "_keepalive_handle",
        "_listener",
        "_lost",
        "_lost_exc",
        "_pings",
        "_queue",
        "_reading_paused",
        "_recv_parts",
        "_recv_waiter",
        "_rx",
        "_rx_deliver",
        "_writing_paused",
        "buffer_updated",
        "close_timeout",
        "get_buffer",
        "latency",
        "loop",
        "max_queue",
        "offload_threshold",
        "ping_interval",
        "ping_timeout",
        "protocol",
        "request",
        "response",
        "transport",
        "write_limit",
    )

    protocol: CoreConnection

    def __init__(
        self,
        *,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 10.0,
        max_queue: int | None = 16,
        write_limit: int | tuple[int, int] = 32768,
        offload_threshold: int = 256 * 1024,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.max_queue = max_queue
        if isinstance(write_limit, int):
            write_limit = (write_limit, write_limit // 4)
        self.write_limit = write_limit
        self.transport: asyncio.Transport | None = None
        self.request: Request | None = None
        self.response: Response | None = None

        # Created with the first message: an empty deque costs 600 bytes, and
        # most connections of a big server are idle. Code that waits for a
        # message re-reads self._queue afterwards.
        self._queue: collections.deque[Data | Fragment] = _NO_MESSAGES
        self._recv_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._dropping = False
        self._half_closed = False
        self.offload_threshold = offload_threshold
        self._busy: asyncio.Future[None] | None = None
        self._backlog: list[bytes] = []
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] = {}
        self._keepalive_handle: asyncio.TimerHandle | None = None
        self._close_handle: asyncio.TimerHandle | None = None
        self._lost = False
        self._lost_exc: BaseException | None = None
        self._closed_waiter: asyncio.Future[None] = self.loop.create_future()
        self.latency = 0.0
        self._listener: Listener | None = None
        self._recv_parts: list[Any] = []
        # The read side; whole simple frames skip the core once the
        # connection is open (_enable_fast_receive). Transports look the
        # callbacks up when they are created, before connection_made.
        rx = self._rx = _native_io.Receiver()
        self.get_buffer = rx.get_buffer  # type: ignore[method-assign]
        self.buffer_updated = rx.buffer_updated  # type: ignore[method-assign]
        self._rx_deliver: Callable[[Any, Any], object] | None = None
        self._fast_rx = False
        # A whole message below 64 KiB is one native call and one write (see send).
        self._fast_tx = False
        # Frames held back while a read's messages are delivered (see cork_writes).
        self._held_frames: list[bytes] | None = None

    # ------------------------------------------------------------ properties

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def close_code(self) -> int | None:
        """Close code received from the peer (1006 if none), ``None`` while open."""
        if not self._lost and self.protocol.state is not State.CLOSED:
            return None
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        if not self._lost and self.protocol.state is not State.CLOSED:
            return None
        return self.protocol.close_reason

    @property
    def remote_address(self) -> Any:
        return self.transport.get_extra_info("peername") if self.transport else None

    @property
    def local_address(self) -> Any:
        return self.transport.get_extra_info("sockname") if self.transport else None

    @property
    def subprotocol(self) -> str | None:
        return getattr(self.protocol, "subprotocol", None)

    @property
    def request_headers(self) -> Any:
        return self.request.headers if self.request else None

    @property
    def response_headers(self) -> Any:
        return self.response.headers if self.response else None

    @property
    def lost_exception(self) -> BaseException | None:
        """The error the transport reported when the TCP connection was lost.

        ``None`` while connected and after a clean end of the connection.
        """
        return self._lost_exc

    @property
    def buffered_amount(self) -> int:
        """Bytes written but not yet handed to the kernel (like the browser's)."""
        held = sum(map(len, self._held_frames)) if self._held_frames else 0
        return held + (self.transport.get_write_buffer_size() if self.transport else 0)

    # ----------------------------------------------------- transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: no isinstance check.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        high, low = self.write_limit
        transport.set_write_buffer_limits(high, low)
        # Messages that arrive just before a protocol error reach the
        # application before the connection fails (see _fail_pending): the
        # server and client build their cores with defer_failure=True.
        proto = self.protocol
        limit = proto.max_size if proto.max_size is not None else sys.maxsize
        if proto.max_frame_size is not None:
            limit = min(limit, proto.max_frame_size)
        limit = min(limit, sys.maxsize)  # a C Py_ssize_t
        # Per read, buffer_updated (the Receiver's) delivers whole simple
        # frames itself while ``fast`` holds; anything else (a control frame,
        # a fragment, an error ...) goes to _receive, exactly as it arrived.
        self._rx.bind(self, proto, proto.side is Side.SERVER, limit)

    def _enable_fast_paths(self) -> None:
        """Once open: let whole simple messages bypass the core both ways."""
        proto = self.protocol
        if proto.extensions or proto.frame_observer is not None:
            # Compression needs the core (and its worker thread: _busy); so
            # does tracing.
            return
        # Clients mask every frame with a fresh key: the core frames those.
        self._fast_tx = proto.side is Side.SERVER
        if proto.stream_fragments:
            return
        listener = self._listener
        self._rx_deliver = listener.on_message if listener is not None else type(self)._deliver
        self._fast_rx = True
        self._rx.enable(self._rx_deliver)
        self._update_fast_receive()

    def _update_fast_receive(self) -> None:
        # The core must be between frames: nothing buffered, no message half-read.
        self._rx.fast = self._fast_rx and self.protocol.between_frames

    # Corking. When one read holds several messages, each answer (an echo, a
    # broadcast) would be one system call per message and socket. From a
    # read's second message on, the Receiver corks: fast-path frames written
    # meanwhile are held per connection, and leave in one write per socket
    # when the read is done (microseconds later). A lone message, as in a
    # request/response exchange, is never held. Any other write of a
    # connection flushes its held frames first, so order is kept.

    def cork_writes(self) -> None:
        """Hold fast-path writes until :meth:`uncork_writes` (I/O contract: for the Receiver)."""
        _cork_state.loop = self.loop

    def uncork_writes(self) -> None:
        """Write every connection's held frames (I/O contract: the Receiver calls it)."""
        cork = _cork_state
        cork.loop = None
        held, cork.held = cork.held, []
        for conn in held:
            try:
                conn._flush_held()
            except Exception:  # a transport's bug must not keep the others' frames held
                logger.exception("error while writing held frames")

    def _hold(self, frame: bytes) -> None:
        held = self._held_frames
        if held is None:
            self._held_frames = [frame]
            _cork_state.held.append(self)
        else:
            held.append(frame)
            if len(held) >= _MAX_HELD_FRAMES:
                # A long burst: bound the delay and the memory held.
                self._flush_held()

    def _write_small(self, frame: bytes) -> None:
        """Write a fast-path frame now, or hold it while corked (see cork_writes)."""
        if _cork_state.loop is self.loop:
            self._hold(frame)
            return
        if self._held_frames is not None:
            self._flush_held()
        self.transport.write(frame)  # type: ignore[union-attr]

    def _flush_held(self) -> None:
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
            # Held frames are each below _ONE_WRITE, at most _MAX_HELD_FRAMES.
            transport.write(b"".join(frames))

    def fast_receive_failed(self, exc: Exception) -> None:
        """A fast-path callback raised (I/O contract: the Receiver calls it)."""
        self._listener_failed(exc)

    def data_received(self, data: bytes) -> None:
        self.receive_read(data, False)

    def receive_read(self, data: bytes, after_messages: bool) -> None:
        """Bytes for the core; ``after_messages``: the fast path just delivered some.

        I/O contract: the Receiver calls it with what it did not deliver itself.
        """
        proto = self.protocol
        if proto.state is State.CONNECTING:
            self._handshake_data(data)
            return
        if self._busy is not None or (
            proto.extensions and proto.buffered_input + len(data) >= self.offload_threshold
        ):
            self._receive_in_worker(data)
            return
        self._set_parse_budget(self._read_inflate_budget())
        proto.receive_data(data, after_messages=after_messages)
        self._after_receive()
        if self._fast_rx:
            self._update_fast_receive()

    def _set_parse_budget(self, inflate_budget: int | None) -> None:
        # Parse no more messages than the queue has room for: compressed ones
        # may each inflate to max_size.
        max_queue = self.max_queue
        max_messages = None if max_queue is None else max(max_queue - len(self._queue), 1)
        self.protocol.set_read_budget(max_messages=max_messages, inflate_budget=inflate_budget)

    def _read_inflate_budget(self) -> int:
        # On the event loop, inflate a bounded amount per read; a frame that
        # could go past it is tried within what is left, and if it needs more
        # it waits for a worker thread (see _after_receive).
        return self.offload_threshold * _INLINE_INFLATE_FACTOR

    def _handshake_data(self, data: bytes) -> None:
        """Bytes of the opening handshake; each side implements it."""
        raise NotImplementedError

    def _after_receive(self) -> None:
        self._handle_received()
        proto = self.protocol
        while True:
            if proto.take_inflate_deferred():
                # A frame would inflate past this read's budget: a worker
                # thread takes it and what follows.
                self._receive_in_worker(b"")
                return
            if not (
                proto.parse_paused
                and not self._reading_paused
                and not self._lost
                and self._busy is None
            ):
                return
            # The parse budget stopped early but there is room: go on, with
            # what is left of this read's inflate budget (not a fresh one).
            self._set_parse_budget(proto.inflate_budget)
            proto.receive_data(b"")
            self._handle_received()

    def _handle_received(self) -> None:
        proto = self.protocol
        out = proto.data_to_send()
        if out:
            # Pongs (and a Close) the parse produced answer frames that came
            # before the messages: they leave before anything those trigger.
            self._write_out(out)
        events = proto.events_received()
        if events:
            listener = self._listener
            if (
                listener is not None
                and len(events) == 1
                and type(events[0]) in _MESSAGE_TYPES
                and proto.pending_failure is None  # else _handle_events schedules the failure
            ):
                # Fast path for callbacks: one message, straight to the listener.
                try:
                    listener.on_message(self, cast(Data, events[0]))
                except Exception:
                    self._listener_failed()
            else:
                self._handle_events(events)
        elif proto.pending_failure is not None:
            # Messages delivered by the fast path came first (see _handle_events).
            self.loop.call_soon(self._fail_pending)
        out = proto.data_to_send()
        if out:
            self._write_out(out)
        if proto.close_transport:
            self._close_transport()

    # Inflating a large compressed frame can take tens of milliseconds; done on
    # the event loop it would stall every other connection. zlib releases the
    # GIL, so above ``offload_threshold`` buffered bytes, or when they might
    # inflate to more than 16 times that (see _inflates_much), the core runs in
    # a worker thread while this connection stops reading and its sends wait.

    def _receive_in_worker(self, data: bytes) -> None:
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

    async def _drain_backlog(self) -> None:
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

    async def _encode_in_worker(self, opcode: int, data: bytes, compress: bool | None) -> None:
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

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._lost_exc = exc
        self.protocol.receive_eof()
        for handle in (self._keepalive_handle, self._close_handle):
            if handle is not None:
                handle.cancel()
        closed = self._closed_exception()
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        for fut, _ in self._pings.values():
            if not fut.done():
                fut.set_exception(closed)
                fut.exception()  # nobody may await a keepalive ping: mark retrieved
        self._pings.clear()
        self._wake_drainers()
        if not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
        if self._listener is not None:
            self._call_listener(self._listener.on_close)

    def pause_writing(self) -> None:
        self._writing_paused = True
        # A peer that sends Pings but never reads would grow the buffer forever.
        self.protocol.pause_pongs()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._when_idle(self._send_deferred_pong)
        self._wake_drainers()

    def _send_deferred_pong(self) -> None:
        self.protocol.resume_pongs()
        self._flush()

    # ------------------------------------------------------------- internals

    def _wake_drainers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _write_out(self, out: list[bytes]) -> None:
        if self._held_frames is not None:
            self._flush_held()
        transport = self.transport
        if transport is None or transport.is_closing() or self._half_closed:
            return
        if len(out) == 1:
            transport.write(out[0])
        elif sum(map(len, out)) > 65536:
            # One gathered write (writev on uvloop): no copy of a large payload,
            # and no separate tiny segment for the frame header.
            transport.writelines(out)
        else:
            transport.write(b"".join(out))

    def _flush(self) -> None:
        out = self.protocol.data_to_send()
        if out:
            self._write_out(out)
        if self.protocol.close_transport:
            self._close_transport()

    def _close_transport(self) -> None:
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
            if self.close_timeout is not None and self._close_handle is None:
                # A peer that never reads would keep the buffered bytes forever.
                self._close_handle = self.loop.call_later(self.close_timeout, transport.abort)

    def _handle_events(self, events: list[Any]) -> None:
        for event in events:
            kind = type(event)
            if kind is str or kind is bytes or kind is Fragment:
                if self._listener is None:
                    self._deliver(event)
                else:
                    self._call_listener(self._listener.on_message, event)
            elif kind is Pong:
                self._pong_received(event.data)
            elif kind is CloseReceived:
                self._close_received()
        if self.protocol.pending_failure is not None:
            # The same bytes held a protocol error after these messages. Fail
            # the connection one loop iteration later: a handler waiting in
            # recv() runs first and can still answer them, as Autobahn
            # expects (cases 3.2, 4.1.3, 5.15 ...), and nothing after the bad
            # frame is read meanwhile.
            self.loop.call_soon(self._fail_pending)

    def _call_listener(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(self, *args)
        except Exception:
            self._listener_failed()

    def _listener_failed(self, exc: BaseException | None = None) -> None:
        logger.error("listener callback failed", exc_info=exc or True)
        if self.protocol.state is State.OPEN:
            self.fail(CloseCode.INTERNAL_ERROR, "")

    def _when_idle(self, action: Callable[[], None]) -> None:
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

    def _fail_pending(self) -> None:
        self._when_idle(self._fail_pending_now)

    def _fail_pending_now(self) -> None:
        self.protocol.fail_pending()
        self._flush()

    def _deliver(self, message: Data | Fragment) -> None:
        # Called once per message: each attribute is read once.
        queue = self._queue
        max_queue = self.max_queue
        full = max_queue is not None and len(queue) >= max_queue
        if self._dropping or (full and self.protocol.state is not _OPEN):
            # Closing: reading goes on to reach the peer's Close; keep memory bounded
            # (and once one piece is dropped, drop the rest: no half messages).
            self._dropping = True
            logger.debug("dropping a message received while closing with a full queue")
            return
        if queue is _NO_MESSAGES:
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

    def _maybe_resume_reading(self) -> None:
        if (
            self._reading_paused
            and len(self._queue) <= (self.max_queue or 0) // 4
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

    def _close_received(self) -> None:
        # A client waits for the server to close TCP; bound that wait.
        if self.close_timeout is not None and self._close_handle is None and self.transport:
            self._close_handle = self.loop.call_later(self.close_timeout, self.transport.abort)

    def _closed_exception(self) -> ConnectionClosed:
        rcvd, sent = self.protocol.close_rcvd, self.protocol.close_sent
        failure = self.protocol.failure
        detail = failure.reason if failure is not None else ""
        if rcvd is not None and sent is not None and rcvd[0] in _OK_CODES and sent[0] in _OK_CODES:
            return ConnectionClosedOK(rcvd, sent, detail)
        if rcvd is not None and sent is None and rcvd[0] in _OK_CODES:
            return ConnectionClosedOK(rcvd, sent, detail)
        if not detail and self._lost_exc is not None:
            detail = str(self._lost_exc)
        return ConnectionClosedError(rcvd, sent, detail)

    # ---------------------------------------------------------------- receive

    def _wait_message(self) -> asyncio.Future[None]:
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

    async def recv(self) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

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
            return "".join(parts) if isinstance(parts[0], str) else b"".join(parts)
        return item

    async def recv_streaming(self) -> AsyncIterator[Data]:
        """Yield the next message piece by piece as its frames arrive.

        Fragments arrive separately only on connections opened with
        ``stream_fragments=True``; otherwise the whole message is one piece.
        """
        while True:
            while not self._queue:
                await self._wait_message()
            item = self._queue.popleft()
            if self._reading_paused:
                self._maybe_resume_reading()
            if type(item) is Fragment:
                yield item.data
                if item.fin:
                    return
            else:
                yield item  # type: ignore[misc]
                return

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> Data:
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
            if len(queue) > 1 and _cork_state.loop is not self.loop:
                # More are waiting: the handler answers them all before it
                # waits again; hold its writes until then (see cork_writes).
                _cork_state.loop = self.loop
                self.loop.call_soon(self.uncork_writes)
            item = queue.popleft()
            if self._reading_paused:
                self._maybe_resume_reading()
            return item  # type: ignore[return-value]
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    # ------------------------------------------------------------------- send

    async def send(
        self,
        message: Data | bytearray | memoryview | Iterable[Data] | AsyncIterable[Data],
        *,
        compress: bool | None = None,
    ) -> None:
        """Send a message: ``str`` as text, bytes-like as binary.

        An iterable (or async iterable) of str/bytes is sent as one fragmented
        message. Waits while the write buffer is above the high-water mark.
        """
        proto = self.protocol
        if self._fast_tx and proto.send_ready:
            # Fast path: a server frame with no extension is just header + payload.
            frame = _frame_small(message)
            if frame is not None:
                self._write_small(frame)
                if self._writing_paused:
                    await self._drain()
                return
        while self._busy is not None:
            await asyncio.shield(self._busy)
        if proto.state is not State.OPEN or self._lost:
            raise self._closed_exception()
        if type(message) is bytes:
            opcode, data = Opcode.BINARY, message
        elif isinstance(message, str):
            opcode, data = Opcode.TEXT, message.encode("utf-8")
        elif isinstance(message, bytes | bytearray | memoryview):
            opcode, data = Opcode.BINARY, bytes(message)
        elif isinstance(message, AsyncIterable):
            await self._send_fragments_async(message, compress)
            return
        elif isinstance(message, Iterable):
            await self._send_fragments(iter(message), compress)
            return
        else:
            raise TypeError(f"cannot send {type(message).__name__}")
        if proto.extensions and compress is not False and len(data) >= self.offload_threshold:
            await self._encode_in_worker(opcode, data, compress)
        elif opcode == Opcode.BINARY:
            proto.send_binary(data, compress=compress)
        else:
            proto.send_text(data, compress=compress)
        out = proto.data_to_send()
        if out:
            self._write_out(out)
        if self._writing_paused:
            await self._drain()

    def send_nowait(
        self, message: Data | bytearray | memoryview, *, compress: bool | None = None
    ) -> None:
        """Send a whole message now, without waiting for the write buffer to drain.

        For callbacks (see :class:`Listener`), which cannot await: check
        :attr:`buffered_amount` to apply backpressure yourself.
        """
        proto = self.protocol
        if self._fast_tx and proto.send_ready:
            frame = _frame_small(message)
            if frame is not None:
                # _write_small, inlined: this is the Listener's hot path.
                if _cork_state.loop is self.loop:
                    self._hold(frame)
                    return
                if self._held_frames is not None:
                    self._flush_held()
                self.transport.write(frame)  # type: ignore[union-attr]
                return
        if proto.state is not State.OPEN or self._busy is not None:
            if proto.state is State.OPEN:
                raise ConcurrencyError("a large message is being compressed; await send() instead")
            raise self._closed_exception()
        if type(message) is bytes:
            proto.send_binary(message, compress=compress)
        elif isinstance(message, str):
            proto.send_text(message.encode("utf-8"), compress=compress)
        elif isinstance(message, bytearray | memoryview):
            proto.send_binary(bytes(message), compress=compress)
        else:
            raise TypeError(f"cannot send {type(message).__name__}")
        out = proto.data_to_send()
        if out:
            self._write_out(out)

    def close_nowait(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake without waiting for it to finish."""
        self._when_idle(lambda: self._close_now(code, reason))

    def _close_now(self, code: int, reason: str) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code, reason)
            self._flush()
            if self.close_timeout is not None and self._close_handle is None and self.transport:
                self._close_handle = self.loop.call_later(self.close_timeout, self.transport.abort)

    async def _send_fragments(self, chunks: Iterable[Data], compress: bool | None) -> None:
        await self._send_fragments_async(_aiter_sync(chunks), compress)

    async def _send_fragments_async(
        self, chunks: AsyncIterable[Data], compress: bool | None
    ) -> None:
        proto = self.protocol
        iterator = aiter(chunks)
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            return
        text = isinstance(first, str)
        prev: Data = first
        started = False
        try:
            async for chunk in iterator:
                if isinstance(chunk, str) != text:
                    raise TypeError("fragments of one message must all be str or all be bytes")
                while self._busy is not None:
                    await asyncio.shield(self._busy)
                self._send_fragment(prev, text, started, False, compress)
                started = True
                prev = chunk
                self._flush()
                if self._writing_paused:
                    await self._drain()
            while self._busy is not None:
                await asyncio.shield(self._busy)
        except BaseException:
            if started and proto.state is State.OPEN:
                # Half a message is on the wire and the rest will never come:
                # the stream cannot continue (as websockets does).
                self.fail(CloseCode.INTERNAL_ERROR, "error while sending a fragmented message")
            raise
        self._send_fragment(prev, text, started, True, compress)
        self._flush()
        if self._writing_paused and proto.state is State.OPEN:
            await self._drain()

    def _send_fragment(
        self, chunk: Data, text: bool, started: bool, fin: bool, compress: bool | None
    ) -> None:
        proto = self.protocol
        if proto.state is not State.OPEN:
            raise self._closed_exception()
        data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
        if started:
            proto.send_continuation(data, fin)
        elif text:
            proto.send_text(data, fin, compress)
        else:
            proto.send_binary(data, fin, compress)

    async def _drain(self) -> None:
        if self._lost:
            raise self._closed_exception()
        fut = self.loop.create_future()
        self._drain_waiters.append(fut)
        await fut
        if self._lost and self.protocol.state is not State.CLOSED:
            raise self._closed_exception()

    # ------------------------------------------------------------ ping / pong

    def ping(self, data: Data | None = None) -> asyncio.Future[float]:
        """Send a Ping; the returned future resolves to the latency in seconds on its Pong."""
        proto = self.protocol
        if proto.state is not State.OPEN:
            raise self._closed_exception()
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

    def _send_ping(self, payload: bytes) -> None:
        if self.protocol.state is State.OPEN:
            self.protocol.send_ping(payload)
            self._flush()

    async def pong(self, data: Data = b"") -> None:
        proto = self.protocol
        while self._busy is not None:
            await asyncio.shield(self._busy)
        if proto.state is not State.OPEN:
            raise self._closed_exception()
        proto.send_pong(data.encode("utf-8") if isinstance(data, str) else bytes(data))
        self._flush()

    def _pong_received(self, data: bytes) -> None:
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

    def _start_keepalive(self) -> None:
        if self.ping_interval is not None:
            self._keepalive_handle = self.loop.call_later(self.ping_interval, self._keepalive)

    def _keepalive(self) -> None:
        self._keepalive_handle = None
        if self.protocol.state is not State.OPEN:
            return
        try:
            fut = self.ping()
        except ConnectionClosed:
            return
        if self.ping_timeout is not None:
            timeout = self.loop.call_later(self.ping_timeout, self._keepalive_timeout, fut)
            fut.add_done_callback(lambda _: timeout.cancel())
        fut.add_done_callback(self._keepalive_done)

    def _keepalive_done(self, fut: asyncio.Future[float]) -> None:
        if not fut.cancelled() and fut.exception() is None and self.ping_interval is not None:
            self._keepalive_handle = self.loop.call_later(self.ping_interval, self._keepalive)

    def _keepalive_timeout(self, fut: asyncio.Future[float]) -> None:
        if fut.done():
            return
        logger.info("keepalive ping timeout; closing connection")
        fut.cancel()
        self.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

    # ------------------------------------------------------------------ close

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Run the closing handshake; return once the TCP connection is closed.

        Gives up after ``close_timeout`` and drops the TCP connection.
        """
        proto = self.protocol
        while self._busy is not None:
            await asyncio.shield(self._busy)
        if proto.state is State.OPEN:
            with contextlib.suppress(InvalidState):
                proto.send_close(code, reason)
            self._flush()
            if self._reading_paused and self.transport is not None:
                # The peer's Close may sit behind messages nobody reads: read on
                # (_deliver drops what exceeds max_queue) or close_timeout expires.
                self._reading_paused = False
                self.transport.resume_reading()
            if self.close_timeout is not None and self._close_handle is None and self.transport:
                self._close_handle = self.loop.call_later(self.close_timeout, self.transport.abort)
        elif proto.state is State.CONNECTING and self.transport is not None:
            self.transport.abort()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed_waiter)

    def fail(self, code: int, reason: str) -> None:
        """Close at once with ``code``, without waiting for the peer's answer."""
        self._when_idle(lambda: self._fail_now(code, reason))

    def _fail_now(self, code: int, reason: str) -> None:
        self.protocol.fail(code, reason)
        self._flush()


async def _aiter_sync(chunks: Iterable[Data]) -> AsyncIterator[Data]:
    for chunk in chunks:
        yield chunk
