"""The asyncio connection shared by server and client: the pump between transport and core.

One :class:`asyncio.BufferedProtocol` per socket, no reader task: the
transport reads into memory from :meth:`Connection.get_buffer` and calls
:meth:`Connection.buffer_updated`. Whole simple frames (unfragmented text or
binary) become messages right there, in native code when it is built (see
:mod:`tether.asyncio._receiver`); everything else goes to the sans-I/O core
through :meth:`Connection.receive_read`, and what the core returns is
dispatched here: messages to the queue (:mod:`tether.asyncio.messages`) or a
:class:`Listener`, Pongs to :mod:`tether.asyncio.keepalive`, a Close to
:mod:`tether.asyncio.closing`.

The other concerns live in a module each and are mixed into
:class:`Connection`: corking (:mod:`~tether.asyncio.cork`), writing and flow
control (:mod:`~tether.asyncio.writing`), the worker-thread offload
(:mod:`~tether.asyncio.offload`), the message queue
(:mod:`~tether.asyncio.messages`), sending (:mod:`~tether.asyncio.sending`),
keepalive (:mod:`~tether.asyncio.keepalive`) and closing
(:mod:`~tether.asyncio.closing`). They hold no state of their own: every
attribute is a slot declared here, so an idle connection stays small.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from tether.asyncio import _native as _native_io
from tether.asyncio.attributes import ConnectionAttributes, Data
from tether.asyncio.closing import Closing
from tether.asyncio.cork import Corking
from tether.asyncio.keepalive import Keepalive
from tether.asyncio.messages import NO_MESSAGES, Messages
from tether.asyncio.offload import Offload
from tether.asyncio.sending import Sending
from tether.asyncio.writing import Writing
from tether.protocol.connection import Side, State
from tether.protocol.events import CloseReceived, Fragment, Pong
from tether.protocol.exceptions import ConcurrencyError
from tether.protocol.frames import CloseCode

if TYPE_CHECKING:
    pass

__all__ = ["ConcurrencyError", "Connection", "Data"]

logger = logging.getLogger("tether")

_MESSAGE_TYPES = frozenset({str, bytes})

# Inflating costs much less per byte than deflating (about 4 ms per MiB of a
# bomb's zeros, far less for ordinary data), so one read may inflate up to
# this many times ``offload_threshold`` (4 MiB by default) on the event loop.
_INLINE_INFLATE_FACTOR = 16


class Connection(
    Sending, Messages, Keepalive, Closing, Offload, Writing, Corking, ConnectionAttributes
):
    """An open WebSocket connection (base of server and client connections)."""

    # Every attribute is a slot of ConnectionAttributes (attributes.py).
    __slots__ = ()

    def __init__(
        self,
        *,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float | None = 10.0,
        max_queue: int | tuple[int | None, int | None] | None = 16,
        write_limit: int | tuple[int, int | None] = 32768,
        offload_threshold: int = 256 * 1024,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        # websockets' (high, low) water marks; reading resumes at low (high // 4 by default).
        high, low = max_queue if isinstance(max_queue, tuple) else (max_queue, None)
        self.max_queue = high
        self._queue_low = low if low is not None else (high or 0) // 4
        self._logger = logger if logger is not None else logging.getLogger("tether")
        self._logger_adapter = None
        self._id = None
        if isinstance(write_limit, int):
            write_limit = (write_limit, write_limit // 4)
        elif write_limit[1] is None:
            write_limit = (write_limit[0], write_limit[0] // 4)
        self.write_limit = cast("tuple[int, int]", write_limit)
        self.transport = None
        self.request = None
        self.response = None

        # Created with the first message: an empty deque costs 600 bytes, and
        # most connections of a big server are idle. Code that waits for a
        # message re-reads self._queue afterwards.
        self._queue = NO_MESSAGES
        self._recv_waiter = None
        self._reading_paused = False
        self._dropping = False
        self._half_closed = False
        self.offload_threshold = offload_threshold
        self._busy = None
        self._backlog = []
        self._writing_paused = False
        self._drain_waiters = []
        self._pings = {}
        self._keepalive_handle = None
        self._close_handle = None
        self._lost = False
        self._lost_exc = None
        self._closed_waiter = self.loop.create_future()
        self.latency = 0.0
        self._listener = None
        self._recv_parts = []
        # The read side; whole simple frames skip the core once the
        # connection is open (_enable_fast_receive). Transports look the
        # callbacks up when they are created, before connection_made.
        rx = self._rx = _native_io.Receiver()
        self.get_buffer = rx.get_buffer  # type: ignore[method-assign]
        self.buffer_updated = rx.buffer_updated  # type: ignore[method-assign]
        self._rx_deliver = None
        self._fast_rx = False
        # A whole message below 64 KiB is one native call and one write (see send).
        self._fast_tx = False
        # Frames held back while a read's messages are delivered (see cork_writes).
        self._held_frames = None

    @property
    def state(self) -> State:
        return self.protocol.state

    @property
    def id(self) -> uuid.UUID:
        """A unique identifier of the connection, for logs (as websockets' ``ws.id``)."""
        if self._id is None:
            self._id = uuid.uuid4()
        return self._id

    @property
    def logger(self) -> logging.LoggerAdapter[Any]:
        """The ``logger=`` given to serve/connect, with ``{"websocket": ws}`` as its extra.

        As in websockets, a formatter or filter can read the connection (its
        ``id``, ``remote_address`` …) from each record's ``websocket`` attribute.
        """
        adapter = self._logger_adapter
        if adapter is None:
            adapter = self._logger_adapter = logging.LoggerAdapter(
                self._logger, {"websocket": self}
            )
        return adapter

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

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
