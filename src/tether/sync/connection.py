"""The threaded WebSocket connection shared by the sync client and server.

A blocking socket and the sans-I/O core (:mod:`tether.protocol`), pumped by
threads, with no event loop anywhere:

- one *reading thread* per connection reads the socket, feeds the core
  (``receive_data``, whose hot path is native code), writes what the core
  answers on its own (Pongs, the Close echo) and hands messages to the
  :class:`~tether.sync.messages.MessageQueue`, from which ``recv`` takes them;
- the application's threads call ``send``, ``ping``, ``close`` …; each call
  takes ``protocol_mutex``, asks the core for frames and writes them with
  ``sendall`` before letting go, so frames leave in the order the core made
  them;
- with ``ping_interval`` set, a *keepalive thread* pings and fails the
  connection with 1011 when no Pong comes within ``ping_timeout``.

Every wait that depends on the peer is bounded: the opening handshake by
``open_timeout`` (client and server), the closing handshake by
``close_timeout``, after which the socket is shut down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeAlias

from tether.protocol.connection import Connection as CoreConnection
from tether.protocol.connection import State
from tether.protocol.events import CloseReceived, Fragment, Pong
from tether.protocol.exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
)
from tether.protocol.frames import CloseCode
from tether.protocol.handshake import Request, Response
from tether.sync.messages import ConcurrentGet, MessageQueue, QueueClosed
from tether.sync.options import MaxQueue, queue_marks
from tether.sync.tls import TLSStream

__all__ = ["Connection", "Data", "DataLike"]

Data = str | bytes
DataLike = str | bytes | bytearray | memoryview
# A string: LoggerAdapter is not subscriptable at run time before Python 3.11.
LoggerLike: TypeAlias = "logging.Logger | logging.LoggerAdapter[Any]"

# A clean close, as websockets counts it: 1005 is a Close frame without a code,
# which is what a browser's ws.close() sends.
_OK_CODES = (CloseCode.NORMAL, CloseCode.GOING_AWAY, CloseCode.NO_STATUS)

# How long the reading thread lets the application take (and answer) the
# messages that came just before a protocol error, before failing the
# connection for it (see MessageQueue.wait_idle).
_ANSWER_BEFORE_FAILURE = 1.0


class Connection:
    """An open WebSocket connection over a blocking socket (base of client and server)."""

    # Bytes asked of the socket per read: a whole 64 KiB frame in one call.
    recv_bufsize = 65536

    def __init__(
        self,
        socket: socket.socket,
        protocol: CoreConnection,
        *,
        ping_interval: float | None = 20,
        ping_timeout: float | None = 20,
        close_timeout: float | None = 10,
        max_queue: MaxQueue = 16,
        logger: LoggerLike | None = None,
    ) -> None:
        self.socket = socket
        self.protocol = protocol
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        high, low = queue_marks(max_queue)
        self.max_queue = (high, low)
        self.id = uuid.uuid4()
        if logger is None:
            logger = logging.getLogger("tether.sync")
        # websockets' ws.logger: every line about this connection says which one.
        self.logger: LoggerLike = logging.LoggerAdapter(logger, {"websocket": self})
        # Guards the core and the socket's write side: frames are produced and
        # written under it, so they leave in the order the core made them.
        self.protocol_mutex = threading.Lock()
        self.recv_messages = MessageQueue(high, low)
        self.request: Request | None = None
        self.response: Response | None = None
        # Pings awaiting their Pong: payload -> (event, sent at, set it on close).
        self.pings: dict[bytes, tuple[threading.Event, float, bool]] = {}
        # Latency of the last Ping answered (keepalive's or the application's).
        self.latency = 0.0
        # Why the socket failed, if it did (an OSError), for ConnectionClosedError.
        self.recv_exc: BaseException | None = None
        # Time (monotonic) by which the TCP connection must be closed, once closing.
        self.close_deadline: float | None = None
        self._closed = threading.Event()
        # Drops the TCP connection if the closing handshake overruns (see _arm_close_deadline).
        self._close_timer: threading.Timer | None = None
        # The TLS connection's thread-safe reads and writes, once threads share it.
        self._tls: TLSStream | None = None
        self._keepalive_wake = threading.Event()
        self._sending_fragments = False
        self.recv_events_thread = threading.Thread(
            target=self.recv_events, name=f"tether-recv-{self.id}", daemon=True
        )
        self.keepalive_thread: threading.Thread | None = None

    # ---------------------------------------------------------------- about

    @property
    def state(self) -> State:
        """The core's state: CONNECTING, OPEN, CLOSING or CLOSED."""
        return self.protocol.state

    @property
    def local_address(self) -> Any:
        try:
            return self.socket.getsockname()
        except OSError:
            return None

    @property
    def remote_address(self) -> Any:
        try:
            return self.socket.getpeername()
        except OSError:
            return None

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the handshake negotiated, if any."""
        return getattr(self.protocol, "subprotocol", None)

    @property
    def close_code(self) -> int | None:
        """The code of the peer's Close frame (1006 if none came); ``None`` while open."""
        if self.protocol.state is not State.CLOSED:
            return None
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        """The reason of the peer's Close frame; ``None`` while open."""
        if self.protocol.state is not State.CLOSED:
            return None
        return self.protocol.close_reason

    # ------------------------------------------------------- context manager

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(CloseCode.INTERNAL_ERROR)

    def __iter__(self) -> Iterator[Data]:
        """Yield messages until the connection closes: cleanly ends the loop, else raises."""
        try:
            while True:
                yield self.recv()
        except ConnectionClosedOK:
            return

    # -------------------------------------------------------------- receiving

    def recv(self, timeout: float | None = None, decode: bool | None = None) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        ``timeout``: wait that long at most, then raise :exc:`TimeoutError`
        (``0`` or less: only take a message that is already there).
        ``decode=False`` returns text as UTF-8 ``bytes``, ``decode=True``
        returns binary decoded as UTF-8. Raises
        :exc:`~tether.protocol.exceptions.ConnectionClosedOK` or
        ``ConnectionClosedError`` once closed and every message was read, and
        ``ConcurrencyError`` if another thread is receiving.
        """
        try:
            item = self.recv_messages.get(timeout)
        except QueueClosed:
            raise self._closed_exception() from self.recv_exc
        except ConcurrentGet:
            raise ConcurrencyError(
                "another thread is already receiving on this connection"
            ) from None
        if type(item) is Fragment:
            item = self._join_fragments(item)
        if decode is None:
            return item  # type: ignore[return-value]
        return _convert(item, decode)  # type: ignore[arg-type]

    def _join_fragments(self, first: Fragment) -> Data:
        parts = [first.data]
        fragment = first
        while not fragment.fin:
            try:
                nxt = self.recv_messages.get(None)
            except QueueClosed:
                raise self._closed_exception() from self.recv_exc
            assert type(nxt) is Fragment
            fragment = nxt
            parts.append(fragment.data)
        if isinstance(parts[0], str):
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    def recv_streaming(self, decode: bool | None = None) -> Iterator[Data]:
        """Yield the next message piece by piece.

        Pieces are the message's frames on a connection opened with
        ``stream_fragments=True``; otherwise the core joins them and the
        whole message is one piece. Consume the iterator to the end.
        """
        while True:
            try:
                item = self.recv_messages.get(None)
            except QueueClosed:
                raise self._closed_exception() from self.recv_exc
            except ConcurrentGet:
                raise ConcurrencyError(
                    "another thread is already receiving on this connection"
                ) from None
            if type(item) is Fragment:
                data, fin = item.data, item.fin
            else:
                data, fin = item, True  # type: ignore[assignment]
            yield data if decode is None else _convert(data, decode)
            if fin:
                return

    # ---------------------------------------------------------------- sending

    def send(self, message: DataLike | Iterable[DataLike], *, text: bool | None = None) -> None:
        """Send a message: ``str`` as text, bytes-like as binary.

        ``text=True`` sends UTF-8 bytes as a text frame, ``text=False`` a str
        as a binary frame. An iterable of str or bytes-like pieces is sent as
        one fragmented message, a frame per piece (all of one type, else
        TypeError and the connection fails with 1011). Raises
        ``ConnectionClosed`` once closed.
        """
        if isinstance(message, str):
            data = message.encode("utf-8")
            is_text = text is not False
        elif isinstance(message, bytes | bytearray | memoryview):
            data = bytes(message)
            is_text = text is True
        elif isinstance(message, Mapping):
            # A dict is iterable (its keys), but sending its keys is surely a mistake.
            raise TypeError("cannot send a dict-like object; send its keys() explicitly")
        elif isinstance(message, Iterable):
            self._send_fragments(iter(message), text)
            return
        else:
            raise TypeError(f"cannot send {type(message).__name__}")
        with self.protocol_mutex:
            proto = self._check_open()
            if is_text:
                proto.send_text(data)
            else:
                proto.send_binary(data)
            self._write_out()

    def _send_fragments(self, chunks: Iterator[DataLike], text: bool | None) -> None:
        try:
            first = next(chunks)
        except StopIteration:
            return
        if not isinstance(first, str | bytes | bytearray | memoryview):
            raise TypeError(f"cannot send a fragment of type {type(first).__name__}")
        is_str = isinstance(first, str)
        is_text = is_str if text is None else text
        with self.protocol_mutex:
            if self._sending_fragments:
                raise ConcurrencyError("another thread is sending a fragmented message")
            self._check_open()
            self._sending_fragments = True
        started = False
        try:
            prev = first
            for chunk in chunks:
                if isinstance(chunk, str) != is_str or not isinstance(
                    chunk, str | bytes | bytearray | memoryview
                ):
                    raise TypeError("fragments of one message must all be str or all bytes-like")
                self._send_fragment(prev, is_text, started, False)
                started = True
                prev = chunk
            self._send_fragment(prev, is_text, started, True)
        except BaseException as exc:
            if started or isinstance(exc, TypeError):
                # Half a message is on the wire (or was about to be) and the
                # rest will never come: the stream cannot go on (RFC 6455 §5.4
                # has no way to abort a message). websockets closes it too.
                with self.protocol_mutex:
                    if self.protocol.state is State.OPEN:
                        self.protocol.fail(
                            CloseCode.INTERNAL_ERROR, "error while sending a fragmented message"
                        )
                        self._write_out()
            raise
        finally:
            self._sending_fragments = False

    def _send_fragment(self, chunk: DataLike, text: bool, started: bool, fin: bool) -> None:
        data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
        with self.protocol_mutex:
            proto = self._check_open()
            if started:
                proto.send_continuation(data, fin)
            elif text:
                proto.send_text(data, fin)
            else:
                proto.send_binary(data, fin)
            self._write_out()

    def ping(self, data: DataLike | None = None, *, ack_on_close: bool = False) -> threading.Event:
        """Send a Ping; the returned event is set when its Pong arrives.

        ``data`` defaults to 4 random bytes. With ``ack_on_close`` the event
        is also set when the connection closes (check ``state`` then). Each
        answered Ping updates :attr:`latency`. Raises ``ConcurrencyError``
        if a Ping with the same payload still waits for its Pong.
        """
        pong_received = threading.Event()
        with self.protocol_mutex:
            proto = self._check_open()
            if data is None:
                payload = os.urandom(4)
                while payload in self.pings:
                    payload = os.urandom(4)
            else:
                payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
                if payload in self.pings:
                    raise ConcurrencyError("already waiting for a pong with the same data")
            self.pings[payload] = (pong_received, time.monotonic(), ack_on_close)
            proto.send_ping(payload)
            self._write_out()
        return pong_received

    def pong(self, data: DataLike = b"") -> None:
        """Send an unsolicited Pong (RFC 6455 §5.5.3: a unidirectional heartbeat)."""
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        with self.protocol_mutex:
            self._check_open().send_pong(payload)
            self._write_out()

    # ---------------------------------------------------------------- closing

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Run the closing handshake; return once the TCP connection is closed.

        Waits ``close_timeout`` at most for the peer, then drops the TCP
        connection. Does nothing more once the connection is closed.
        """
        self.start_close(code, reason)
        self.wait_closed()

    def start_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Send a Close frame (if still open) without waiting for the peer's answer."""
        with self.protocol_mutex:
            proto = self.protocol
            if proto.state is State.OPEN:
                proto.send_close(code, reason)  # ValueError for a bad code or reason
                self._arm_close_deadline()
                self._write_out()
        # Reading must go on to reach the peer's Close, even with a full queue.
        self.recv_messages.room.set()
        self._keepalive_wake.set()

    def wait_closed(self) -> None:
        """Wait until the TCP connection is closed.

        Once closing, ``close_timeout`` bounds the wait: a timer drops the
        TCP connection when it expires (see :meth:`_arm_close_deadline`).
        """
        thread = self.recv_events_thread
        if thread is threading.current_thread():
            return
        if thread.ident is None:
            # Never started (the handshake failed): nothing to wait for.
            self._close_socket()
            return
        thread.join()

    def abort(self) -> None:
        """Drop the TCP connection now; the reading thread ends (shutdown wakes its recv)."""
        with contextlib.suppress(OSError):  # already closed or never connected
            self.socket.shutdown(socket.SHUT_RDWR)

    def _arm_close_deadline(self) -> None:
        """From now on, the TCP connection must end within ``close_timeout``.

        Every wait for the end goes through here: our Close awaiting the
        peer's, a client awaiting the server's TCP close, a failed connection
        whose peer no longer answers. The reading thread bounds its own reads
        by the deadline; another thread arming it starts a timer, since the
        reading thread may be blocked in a read that began before.
        """
        if self.close_deadline is not None or self._closed.is_set():
            return
        timeout = self.close_timeout
        if timeout is None:
            self.close_deadline = float("inf")
            return
        self.close_deadline = time.monotonic() + timeout
        reader = self.recv_events_thread
        if reader.is_alive() and threading.current_thread() is not reader:
            # (A reader never started, as after a refused handshake, waits for nothing.)
            timer = self._close_timer = threading.Timer(timeout, self._close_timed_out)
            timer.daemon = True
            timer.start()

    def _close_timed_out(self) -> None:
        if not self._closed.is_set():
            self.logger.debug("closing handshake timed out; dropping the connection")
            self.abort()

    def _check_open(self) -> CoreConnection:
        """The core, if a message may be sent now; else raise ConnectionClosed.

        Called with ``protocol_mutex`` held.
        """
        proto = self.protocol
        if proto.state is not State.OPEN:
            raise self._closed_exception()
        return proto

    def _closed_exception(self) -> ConnectionClosed:
        proto = self.protocol
        rcvd, sent, first = proto.close_rcvd, proto.close_sent, proto.close_rcvd_then_sent
        failure = proto.failure
        detail = failure.reason if failure is not None else ""
        if rcvd is not None and rcvd[0] in _OK_CODES and (sent is None or sent[0] in _OK_CODES):
            return ConnectionClosedOK(rcvd, sent, first, detail)
        if not detail and self.recv_exc is not None:
            detail = str(self.recv_exc) or type(self.recv_exc).__name__
        return ConnectionClosedError(rcvd, sent, first, detail)

    # ---------------------------------------------------------------- writing

    def _write_out(self) -> None:
        """Write what the core has to send. Called with ``protocol_mutex`` held."""
        out = self.protocol.data_to_send()
        if not out:
            if self.protocol.close_transport:
                self._half_close()
            return
        try:
            data = out[0] if len(out) == 1 else b"".join(out)
            tls = self._tls
            if tls is None:
                self.socket.sendall(data)
            else:
                tls.sendall(data)
        except OSError as exc:
            # The peer is gone (reset, broken pipe) or we shut the socket down.
            if self.recv_exc is None:
                self.recv_exc = exc
            self.logger.debug("error while writing: %s", exc)
            self.abort()
            proto = self.protocol
            if proto.state is not State.CLOSED:
                proto.receive_eof()
            raise self._closed_exception() from exc
        if self.protocol.close_transport:
            self._half_close()

    def _half_close(self) -> None:
        # RFC 6455 §7.1.1: once the closing handshake is done the server closes
        # TCP first. Half-close (FIN after what was written) and read on until
        # the peer closes too: closing with unread input would send a RST,
        # which can destroy the Close frame before the peer reads it.
        self._arm_close_deadline()
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_WR)

    def _close_socket(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.close()

    # ---------------------------------------------------------- reading thread

    def start_threads(self) -> None:
        """Start the reading thread (and keepalive's), once the handshake succeeded."""
        if isinstance(self.socket, ssl.SSLSocket):
            # Two threads will use the TLS connection: serialize OpenSSL (see tls.py).
            self._tls = TLSStream(self.socket)
        self.recv_events_thread.start()
        if self.ping_interval is not None:
            self.keepalive_thread = threading.Thread(
                target=self.keepalive, name=f"tether-keepalive-{self.id}", daemon=True
            )
            self.keepalive_thread.start()

    def recv_events(self) -> None:
        """The reading thread: socket → core → messages, until the TCP connection ends."""
        sock = self.socket
        proto = self.protocol
        mutex = self.protocol_mutex
        queue = self.recv_messages
        room = queue.room
        put = queue.put
        bufsize = self.recv_bufsize
        high = queue.high
        tls = self._tls
        try:
            while True:
                if not room.is_set() and proto.state is State.OPEN:
                    # Flow control: the application is behind; TCP pushes back.
                    room.wait()
                if proto.parse_paused:
                    data = b""  # resume parsing what the budget left buffered
                else:
                    deadline = self.close_deadline
                    if deadline == float("inf"):
                        deadline = None
                    if tls is not None:
                        data = tls.recv(bufsize, deadline)
                    else:
                        if deadline is not None:
                            left = deadline - time.monotonic()
                            if left <= 0:
                                raise TimeoutError("closing handshake timed out")
                            sock.settimeout(left)
                        data = sock.recv(bufsize)
                    if not data:
                        break
                with mutex:
                    if proto.extensions and high is not None:
                        # Each compressed message may inflate to max_size:
                        # parse no more of them than the queue has room for.
                        proto.set_read_budget(
                            max_messages=max(high - len(queue), 1), inflate_budget=None
                        )
                    # Messages handed out but not answered yet (the application
                    # has not come back for more) count as messages of this
                    # read: a protocol error now waits until they are answered,
                    # as it would had they come in the same read. Threads make
                    # the split likely (Autobahn 4.1.3: a message, then a bad
                    # opcode a moment later).
                    proto.receive_data(data, after_messages=not queue.idle())
                    events = proto.events_received()
                    self._write_out_quietly()
                if events:
                    self._process_events(events, put)
                if proto.pending_failure is not None:
                    # Valid messages came just before a protocol error in this
                    # read: let the application take and answer them first.
                    queue.wait_idle(_ANSWER_BEFORE_FAILURE)
                    with mutex:
                        proto.fail_pending()
                        self._write_out_quietly()
                if proto.state is not State.OPEN and not proto.parse_paused:
                    # Closing: whatever still comes is read and dropped.
                    self._arm_close_deadline()
                    if not room.is_set():
                        queue.discard()
        except TimeoutError:
            self.logger.debug("closing handshake timed out; dropping the connection")
        except OSError as exc:
            if self.recv_exc is None and not self._shut_by_us():
                self.recv_exc = exc
            self.logger.debug("error while reading: %s", exc)
        except Exception:  # a bug must not leave recv() waiting forever
            self.logger.exception("unexpected error in the reading thread")
        finally:
            self._connection_lost()

    def _shut_by_us(self) -> bool:
        return self.close_deadline is not None

    def _write_out_quietly(self) -> None:
        with contextlib.suppress(ConnectionClosed):  # the reading thread finds out
            self._write_out()

    def _process_events(self, events: list[Any], put: Any) -> None:
        messages: list[Any] = []
        for event in events:
            kind = type(event)
            if kind is str or kind is bytes or kind is Fragment:
                messages.append(event)
            elif kind is Pong:
                self._pong_received(event.data)
            elif kind is CloseReceived:
                # A client waits for the server to close TCP; bound that wait.
                self._arm_close_deadline()
        if messages:
            put(messages)

    def _pong_received(self, data: bytes) -> None:
        with self.protocol_mutex:
            if data not in self.pings:
                return  # unsolicited Pong (RFC 6455 §5.5.3): ignore
            now = time.monotonic()
            # A Pong acknowledges its Ping and every Ping sent before it.
            for payload in list(self.pings):
                event, sent_at, _ = self.pings.pop(payload)
                event.set()
                if payload == data:
                    self.latency = now - sent_at
                    break

    def _connection_lost(self) -> None:
        with self.protocol_mutex:
            if self.protocol.state is not State.CLOSED:
                self.protocol.receive_eof()
            pings, self.pings = self.pings, {}
        for event, _, ack_on_close in pings.values():
            if ack_on_close:
                event.set()
        self.recv_messages.close()
        self._keepalive_wake.set()
        self._close_socket()
        self._closed.set()
        timer = self._close_timer
        if timer is not None:
            timer.cancel()  # its thread ends now instead of sleeping out close_timeout

    # ---------------------------------------------------------------- keepalive

    def keepalive(self) -> None:
        """The keepalive thread: a Ping every ``ping_interval``; no Pong in time → 1011."""
        interval = self.ping_interval
        assert interval is not None
        wake = self._keepalive_wake
        while not wake.wait(interval):
            try:
                pong_received = self.ping(ack_on_close=True)
            except ConnectionClosed:
                return
            if self.ping_timeout is None:
                continue
            if not pong_received.wait(self.ping_timeout) and self.protocol.state is State.OPEN:
                self.logger.info("keepalive ping timeout; closing connection")
                with self.protocol_mutex:
                    if self.protocol.state is State.OPEN:
                        self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                        self._write_out_quietly()
                self._arm_close_deadline()
                return


def _convert(data: Data, decode: bool) -> Data:
    """``decode=True``: bytes to str (UTF-8); ``decode=False``: str to UTF-8 bytes."""
    if decode:
        return data.decode("utf-8") if isinstance(data, bytes) else data
    return data.encode("utf-8") if isinstance(data, str) else data
