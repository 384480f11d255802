"""The sans-I/O WebSocket connection (RFC 6455 §5-§7): bytes in, frames and events out.

Nothing here touches a socket, a clock or an event loop. The I/O layer feeds
bytes with :meth:`Connection.receive_data` / :meth:`Connection.receive_eof`,
then drains :meth:`Connection.data_to_send` and
:meth:`Connection.events_received`. ``receive_*`` never raise: a protocol
violation becomes a Close frame with the right code, after which incoming
bytes are ignored and :attr:`Connection.close_transport` asks the I/O layer to
close the TCP connection.
"""

from __future__ import annotations

import codecs
import enum
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from tether import _native
from tether._lengths import payload_length
from tether._native import apply_mask
from tether._utf8 import Utf8Validator
from tether.protocol.events import CloseReceived, Event, Fragment, Ping, Pong
from tether.protocol.exceptions import InflateDeferred, InvalidState, PayloadTooBig, ProtocolError
from tether.protocol.extensions.base import Extension
from tether.protocol.frames import (
    MAX_CONTROL_PAYLOAD,
    Close,
    CloseCode,
    Frame,
    Opcode,
    frame_header,
    is_valid_close_code,
    parse_close_payload,
    serialize_close_payload,
)

# State is re-exported: it lived here before the table had its own module.
from tether.protocol.states import State as State
from tether.protocol.states import check_transition

if TYPE_CHECKING:
    import logging


def _logger() -> logging.Logger:
    # Imported on first use, not with the module: logging loads threading,
    # and importing the sans-I/O core must load no thread or event loop.
    import logging

    return logging.getLogger("tether.protocol")


_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

# ``(direction, opcode, fin, rsv, length, masked, payload)``: direction is "<" (received)
# or ">" (sent); rsv holds RSV1-3 as bits 2-0; payload is unmasked, as on the wire
# (before extension decoding, after extension encoding).
FrameObserver = Callable[[str, int, bool, int, int, bool, bytes], None]


class Side(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


class _MaskPool:
    """Masking keys from a strong source, fetched from the OS in batches.

    RFC 6455 §5.3: the masking key "MUST be derived from a strong source of
    entropy"; one ``os.urandom`` call per 1024 frames instead of per frame.
    """

    __slots__ = ("_data", "_pos")

    def __init__(self) -> None:
        self._data = b""
        self._pos = 0

    def next(self) -> bytes:
        # Clients may frame in a worker thread (large compressed sends):
        # reserve the slot before reading it, and retry on a refill race.
        while True:
            data, pos = self._data, self._pos
            self._pos = pos + 4
            key = data[pos : pos + 4]
            if len(key) == 4:
                return key
            self._data, self._pos = os.urandom(4096), 0


_MASKS = _MaskPool()


class Connection:
    """State shared by both sides once the handshake is done (or before it, see subclasses)."""

    # Slots: one of these per connection, thousands per process.
    __slots__ = (
        "_buf",
        "_events",
        "_is_client",
        "_msg_compressed",
        "_msg_decoder",
        "_msg_parts",
        "_msg_size",
        "_msg_text",
        "_observed_deferred",
        "_out",
        "_partial_checked",
        "_partial_decoder",
        "_pending_pong",
        "_sending",
        "close_rcvd",
        "close_rcvd_then_sent",
        "close_sent",
        "close_transport",
        "defer_failure",
        "defer_pongs",
        "discarding_input",
        "eof_received",
        "extensions",
        "failure",
        "frame_observer",
        "inflate_budget",
        "inflate_deferred",
        "max_frame_size",
        "max_messages",
        "max_size",
        "parse_paused",
        "pending_failure",
        "send_ready",
        "side",
        "state",
        "stream_fragments",
    )

    def __init__(
        self,
        side: Side,
        *,
        state: State = State.OPEN,
        max_size: int | None = 2**20,
        max_frame_size: int | None = None,
        extensions: list[Extension] | None = None,
        stream_fragments: bool = False,
        defer_failure: bool = False,
        frame_observer: FrameObserver | None = None,
    ) -> None:
        self.side = side
        self.state = state
        # Open and not in the middle of a fragmented send: a whole message may
        # go out now. Kept by _set_state and _send_data; an I/O layer's send
        # path reads it (one attribute, not two checks per message).
        self.send_ready = state is State.OPEN
        self.max_size = max_size
        self.max_frame_size = max_frame_size
        self.extensions: list[Extension] = extensions or []
        self.stream_fragments = stream_fragments
        self._is_client = side is Side.CLIENT

        self._buf = bytearray()
        # Parse budget per receive_data call for messages an extension may
        # expand (e.g. inflate); see receive_data.
        self.max_messages: int | None = None
        self.parse_paused = False
        # Bytes that extensions may still expand (inflate) into during this
        # receive_data call; see receive_data.
        self.inflate_budget: int | None = None
        self.inflate_deferred = False
        self._observed_deferred = False
        self._out: list[bytes] = []
        self._events: list[Event] = []

        # Message being received: None when between messages.
        self._msg_text: bool | None = None
        self._msg_size = 0
        self._msg_parts: list[bytes] | list[str] = []
        self._msg_decoder: codecs.IncrementalDecoder | None = None
        self._msg_compressed = False
        # Fail-fast UTF-8 check of a text frame still arriving (Autobahn 6.4.*).
        self._partial_checked = 0
        self._partial_decoder: Utf8Validator | None = None

        # Message being sent: None when between messages.
        self._sending: int | None = None

        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.close_rcvd_then_sent: bool | None = None
        self.failure: ProtocolError | None = None
        # With ``defer_failure`` set (by an I/O layer that runs the application
        # between reads), a protocol error found after complete messages in
        # the same chunk of bytes is kept in ``pending_failure`` instead of
        # failing at once: the application gets those messages and may still
        # answer them (Autobahn 3.2, 4.1.3, 5.15 ...) before the I/O layer
        # calls :meth:`fail_pending`. Nothing after the bad frame is parsed.
        self.defer_failure = defer_failure
        self.pending_failure: ProtocolError | None = None
        self.eof_received = False
        # Set when the I/O layer should close the TCP connection after flushing.
        self.close_transport = False
        self.discarding_input = False
        # Set (pause_pongs) while the I/O layer's write buffer is full: keep
        # only the latest Pong to send, until resume_pongs().
        self.defer_pongs = False
        self._pending_pong: bytes | None = None
        # Debugging hook (``tether connect --trace``): called for every complete frame.
        self.frame_observer: FrameObserver | None = frame_observer

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes, *, after_messages: bool = False) -> None:
        """Feed bytes read from the network. Never raises.

        With ``max_messages`` set, parsing stops after that many messages and
        ``parse_paused`` turns true: the rest stays buffered until
        ``receive_data(b"")`` is called again (when the application caught up).
        ``after_messages`` tells that the I/O layer delivered messages from
        the same read itself, just before these bytes (see ``defer_failure``).

        With ``inflate_budget`` set, compressed frames inflate to at most that
        many bytes in all during this call (the budget goes down as they do).
        The first frame that could go past it, by DEFLATE's best ratio, is
        tried within what is left; if it needs more, parsing stops before it
        with ``parse_paused`` and ``inflate_deferred`` true, and it stays
        buffered, as if never seen, for a later ``receive_data(b"")`` (say in
        a worker thread, with no budget). An I/O layer uses this to bound the
        time one read can take on its event loop.
        """
        if self.discarding_input or (not data and not self.parse_paused):
            return
        if self.state is State.CONNECTING:
            self._receive_handshake(data)
            return
        try:
            if self._buf:
                self._buf += data
                consumed = self._parse(self._buf)
                if consumed:
                    del self._buf[:consumed]
            else:
                consumed = self._parse(data)
                if consumed < len(data):
                    self._buf += data[consumed:]
        except ProtocolError as exc:
            if self.defer_failure and (
                after_messages
                or any(type(event) in (str, bytes, Fragment) for event in self._events)
            ):
                self.pending_failure = exc
                self.discarding_input = True
            else:
                self.fail(exc.code, exc.reason, exc)
        except Exception as exc:  # a bug must not escape receive_data
            _logger().exception("unexpected error while parsing frames")
            self.fail(CloseCode.INTERNAL_ERROR, "internal error", ProtocolError(str(exc), 1011))

    def _set_state(self, state: State) -> None:
        """Every change of :attr:`state` goes through here, checked against the table
        in :mod:`tether.protocol.states`."""
        check_transition(self.state, state)
        self.state = state
        self.send_ready = state is State.OPEN and self._sending is None

    # ------------------------------------------------ the I/O contract: asking
    # What an I/O layer may read besides the public attributes (see
    # docs/protocol.md, "The I/O contract"); none of these changes anything.

    @property
    def between_frames(self) -> bool:
        """Nothing buffered and no message half-received: the next byte starts a frame.

        An I/O layer with a fast path of its own for whole frames (the
        asyncio Receiver) may use it only while this holds.
        """
        return not self._buf and self._msg_text is None

    @property
    def buffered_input(self) -> int:
        """Bytes received but not parsed yet (a frame still arriving, or paused)."""
        return len(self._buf)

    # ------------------------------------------------- the I/O contract: setting

    def set_read_budget(self, *, max_messages: int | None, inflate_budget: int | None) -> None:
        """Bound what the next :meth:`receive_data` calls may parse.

        ``max_messages``: stop after that many messages that an extension may
        have expanded (``parse_paused`` turns true; ``receive_data(b"")``
        resumes). ``inflate_budget``: bytes that extensions may inflate into,
        in all, until the next call of this method (see :meth:`receive_data`).
        ``None`` lifts a bound.
        """
        self.max_messages = max_messages
        self.inflate_budget = inflate_budget

    def take_inflate_deferred(self) -> bool:
        """Whether a frame waits because it could inflate past the budget; clears it.

        The I/O layer then parses on (``receive_data(b"")``) with a larger
        budget, say in a worker thread.
        """
        deferred, self.inflate_deferred = self.inflate_deferred, False
        return deferred

    def pause_pongs(self) -> None:
        """The I/O layer cannot write for now: answer only the latest Ping, later.

        RFC 6455 §5.5.3: an endpoint MAY answer only the most recent Ping; a
        peer flooding Pings without reading costs no memory meanwhile.
        """
        self.defer_pongs = True

    def resume_pongs(self) -> None:
        """The I/O layer can write again: answer the Ping kept while paused."""
        self.defer_pongs = False
        self.send_pending_pong()

    def receive_eof(self) -> None:
        """The peer closed its side of the TCP connection. Never raises."""
        if self.eof_received:
            return
        self.eof_received = True
        self.discarding_input = True
        self._set_state(State.CLOSED)
        self.close_transport = True

    def _receive_handshake(self, data: bytes) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _parse(self, buf: bytes | bytearray) -> int:
        """Parse as many whole frames as ``buf`` holds; return bytes consumed."""
        pos = 0
        n = len(buf)
        expect_mask = 0 if self._is_client else 0x80
        # Fast path: a whole unfragmented TEXT/BINARY frame, no RSV bits, no
        # extension, within limits, becomes a message without further checks.
        limit = self.max_size if self.max_size is not None else 1 << 62
        if self.max_frame_size is not None and self.max_frame_size < limit:
            limit = self.max_frame_size
        simple = not self.extensions and not self.stream_fragments
        events = self._events
        # Only messages that an extension may have expanded (inflated) count
        # against the budget; plain ones are bounded by the bytes read.
        budget = self.max_messages if self.extensions else None
        self.parse_paused = False
        batch = _native.parse_simple_frames if simple and self.frame_observer is None else None
        while n - pos >= 2 and not self.discarding_input:
            if budget is not None and len(events) >= budget:
                # Each compressed message may inflate to max_size: bound what
                # one read can turn into (the caller resumes when it drained).
                self.parse_paused = True
                break
            if batch is not None and self._msg_text is None:
                # Native: every whole simple frame from here on in one call.
                start = pos
                pos = batch(buf, pos, bool(expect_mask), limit, events)  # type: ignore[arg-type]
                if pos != start:
                    self._partial_checked = 0
                    self._partial_decoder = None
                if n - pos < 2:
                    break
            frame_start = pos
            b0 = buf[pos]
            sizes = payload_length(buf, pos, n)
            if sizes is None:
                break
            length, head = sizes
            masked = buf[pos + 1] & 0x80
            if masked:
                head += 4
            fast = (
                (b0 == 0x82 or b0 == 0x81)
                and masked == expect_mask
                and length <= limit
                and self._msg_text is None
            )
            if not fast:
                self._check_header(b0, masked == expect_mask, length)
            end = pos + head + length
            if end > n:
                if (
                    self._msg_text is not False
                    and not self._msg_compressed
                    and b0 & 0x4F in (0x01, 0x00)
                ):
                    # 0x4F keeps RSV1 and the opcode: an uncompressed TEXT or CONT frame.
                    self._check_partial_text(buf, pos, head, n, masked)
                break
            start = pos + head
            if masked:
                if length > 4096:
                    with memoryview(buf) as view:
                        payload = apply_mask(view[start:end], bytes(buf[start - 4 : start]))
                else:
                    payload = apply_mask(buf[start:end], bytes(buf[start - 4 : start]))
            else:
                payload = bytes(buf[start:end])
            pos = end
            if self._observed_deferred:
                self._observed_deferred = False  # seen before it was deferred
            elif self.frame_observer is not None:
                self.frame_observer(
                    "<", b0 & 0x0F, bool(b0 & 0x80), (b0 >> 4) & 7, length, bool(masked), payload
                )
            if self._partial_checked:
                self._partial_checked = 0
                self._partial_decoder = None
            if fast and simple:
                if b0 == 0x82:
                    events.append(payload)
                    continue
                try:
                    events.append(payload.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise ProtocolError(
                        f"invalid UTF-8 in text message: {exc.reason}", 1007
                    ) from None
                continue
            opcode = b0 & 0x0F
            if opcode >= 8:
                self._control_frame(opcode, payload)
            else:
                try:
                    self._data_frame(opcode, bool(b0 & 0x80), bool(b0 & 0x40), payload)
                except InflateDeferred:
                    # Past inflate_budget: the frame waits, whole, for a later call.
                    pos = frame_start
                    self.parse_paused = True
                    self.inflate_deferred = True
                    self._observed_deferred = self.frame_observer is not None
                    break
        return pos

    def _check_header(self, b0: int, mask_ok: bool, length: int) -> None:
        """Validate a frame header before its payload arrives (fail fast)."""
        opcode = b0 & 0x0F
        if b0 & 0x30:
            raise ProtocolError("reserved bits RSV2/RSV3 set")
        if b0 & 0x40 and (not self.extensions or opcode >= 8):
            # RFC 6455 §5.2: RSV1 "MUST be 0 unless an extension is negotiated
            # that defines meanings for non-zero values"; RFC 7692 §6 never
            # defines it on control frames.
            raise ProtocolError("reserved bit RSV1 set")
        if opcode >= 8:
            if opcode > 10:
                raise ProtocolError(f"reserved opcode {opcode:#x}")
            # RFC 6455 §5.5: "All control frames MUST have a payload length of
            # 125 bytes or less and MUST NOT be fragmented."
            if not b0 & 0x80:
                raise ProtocolError("fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError("control frame payload longer than 125 bytes")
        else:
            if opcode > 2:
                raise ProtocolError(f"reserved opcode {opcode:#x}")
            if opcode == 0 and self._msg_text is None:
                raise ProtocolError("continuation frame without a message to continue")
            if opcode != 0 and self._msg_text is not None:
                raise ProtocolError("new data frame before the previous message finished")
            if length >> 63:
                # RFC 6455 §5.2: "the most significant bit MUST be 0".
                raise ProtocolError("frame length has its most significant bit set")
            if self.max_frame_size is not None and length > self.max_frame_size:
                raise PayloadTooBig(f"frame of {length} bytes exceeds limit {self.max_frame_size}")
            if self.max_size is not None:
                remaining = self.max_size - self._msg_size
                if b0 & 0x40 or self._msg_compressed:
                    # max_size bounds the message once inflated (checked while
                    # inflating). The wire size must be bounded too, or a peer
                    # could make us buffer a frame of any size, but data that
                    # does not compress grows a little: a 1 MiB random message
                    # is ~1,051,000 bytes from a small-memLevel compressor.
                    # Allow zlib's conservative deflateBound (any memLevel or
                    # window): n + n/8 + n/256 + n/512 + a few bytes.
                    bound = remaining + (remaining >> 3) + (remaining >> 8) + (remaining >> 9)
                    if length > bound + 64:
                        raise PayloadTooBig(
                            f"compressed frame of {length} bytes exceeds limit {self.max_size}"
                        )
                elif length > remaining:
                    raise PayloadTooBig(
                        f"message of {self._msg_size + length} bytes exceeds limit {self.max_size}"
                    )
        if not mask_ok:
            # RFC 6455 §5.1: a server MUST close on an unmasked frame; a client
            # MUST close on a masked one.
            raise ProtocolError(
                "masked frame from server" if self._is_client else "unmasked frame from client"
            )

    def _check_partial_text(
        self, buf: bytes | bytearray, pos: int, head: int, n: int, masked: int
    ) -> None:
        """Validate the UTF-8 of a text frame that has only partly arrived."""
        start = pos + head + self._partial_checked
        if start >= n:
            return
        chunk = bytes(buf[start:n])
        if masked:
            key = bytes(buf[pos + head - 4 : pos + head])
            shift = self._partial_checked % 4
            chunk = apply_mask(chunk, key[shift:] + key[:shift])
        validator = self._partial_decoder
        if validator is None:
            # Fail-fast validator (unlike codecs' decoder, it rejects a cut-off
            # surrogate such as b"\xed\xa0" at once), primed with the bytes of
            # a character the previous fragment left unfinished.
            validator = self._partial_decoder = _native.Utf8Validator()
            if self._msg_decoder is not None:
                validator.feed(self._msg_decoder.getstate()[0])
        if not validator.feed(chunk):
            raise ProtocolError("invalid UTF-8 in text frame", 1007)
        self._partial_checked += len(chunk)

    def _data_frame(self, opcode: int, fin: bool, rsv1: bool, payload: bytes) -> None:
        if self.extensions:
            was_compressed = self._msg_compressed
            if opcode:
                self._msg_compressed = rsv1
            remaining = None if self.max_size is None else self.max_size - self._msg_size
            frame = Frame(opcode, payload, fin, rsv1)
            budget = self.inflate_budget
            if budget is not None and self._msg_compressed and len(self.extensions) == 1:
                # One extension (permessage-deflate): bound what it inflates.
                try:
                    frame = self.extensions[0].decode(
                        frame, max_size=remaining, max_output=max(budget, 0)
                    )
                except InflateDeferred:
                    self._msg_compressed = was_compressed
                    raise
                self.inflate_budget = budget - len(frame.data)
            else:
                for ext in reversed(self.extensions):
                    frame = ext.decode(frame, max_size=remaining)
            payload = frame.data
            if fin:
                self._msg_compressed = False
        size = self._msg_size + len(payload)
        if self.max_size is not None and size > self.max_size:
            raise PayloadTooBig(f"message of {size} bytes exceeds limit {self.max_size}")

        if opcode:  # first frame of a message
            text = opcode == Opcode.TEXT
            if fin and not self.stream_fragments:
                if text:
                    try:
                        self._events.append(payload.decode("utf-8"))
                    except UnicodeDecodeError as exc:
                        raise ProtocolError(
                            f"invalid UTF-8 in text message: {exc.reason}", 1007
                        ) from None
                else:
                    self._events.append(payload)
                return
            self._msg_text = text
            self._msg_decoder = _Utf8Decoder() if text else None
            self._msg_parts = []
        self._msg_size = size
        data: str | bytes = payload
        if self._msg_decoder is not None:
            try:
                data = self._msg_decoder.decode(payload, fin)
            except UnicodeDecodeError as exc:
                raise ProtocolError(f"invalid UTF-8 in text message: {exc.reason}", 1007) from None
            if not fin:
                # CPython's decoder holds back a cut-off surrogate (ED A0..BF)
                # as if it could still complete; no continuation makes it valid.
                held = self._msg_decoder.getstate()[0]
                if len(held) >= 2 and held[0] == 0xED and held[1] >= 0xA0:
                    raise ProtocolError("invalid UTF-8 in text message: surrogate", 1007)
        if self.stream_fragments:
            self._events.append(Fragment(data, fin))
        else:
            self._msg_parts.append(data)  # type: ignore[arg-type]
            if fin:
                parts = self._msg_parts
                self._events.append("".join(parts) if self._msg_text else b"".join(parts))  # type: ignore[arg-type]
        if fin:
            self._msg_text = None
            self._msg_decoder = None
            self._msg_parts = []
            self._msg_size = 0

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == Opcode.PING:
            # RFC 6455 §5.5.2: answer with a Pong carrying the same payload,
            # unless we already sent a Close.
            if self.state is State.OPEN:
                if self.defer_pongs:
                    # RFC 6455 §5.5.3: an endpoint MAY answer only the most recent
                    # Ping. A peer flooding Pings without reading costs no memory.
                    self._pending_pong = payload
                else:
                    self._write(Opcode.PONG, payload)
            self._events.append(Ping(payload))
        elif opcode == Opcode.PONG:
            self._events.append(Pong(payload))
        else:
            try:
                code, reason = parse_close_payload(payload)
            except UnicodeDecodeError:
                raise ProtocolError("close reason is not valid UTF-8", 1007) from None
            except ValueError as exc:
                raise ProtocolError(str(exc)) from None
            self.close_rcvd = Close(code, reason)
            if self.close_sent is None:
                self.close_rcvd_then_sent = True
                # RFC 6455 §5.5.1: "the endpoint typically echos the status
                # code it received"; the reason is echoed too, as websockets
                # does, so both ends log the same (code, reason).
                self._send_close_payload(payload, code, reason)
            elif self.close_rcvd_then_sent is None:
                self.close_rcvd_then_sent = False
            self._set_state(State.CLOSING)
            self.discarding_input = True
            # RFC 6455 §7.1.1: "the server SHOULD close the underlying TCP
            # connection first"; a client waits for it (with a timeout).
            if not self._is_client:
                self.close_transport = True
            self._events.append(CloseReceived(code, reason))

    # ----------------------------------------------------------------- output

    def _write(self, opcode: int, data: bytes, fin: bool = True, rsv1: bool = False) -> None:
        if self.frame_observer is not None:
            self.frame_observer(
                ">", opcode, fin, 4 if rsv1 else 0, len(data), self._is_client, data
            )
        if self._is_client:
            mask = _MASKS.next()
            self._out.append(frame_header(opcode, len(data), fin=fin, rsv1=rsv1, mask=mask))
            self._out.append(apply_mask(data, mask))
        elif len(data) < 4096:
            self._out.append(frame_header(opcode, len(data), fin=fin, rsv1=rsv1) + data)
        else:
            self._out.append(frame_header(opcode, len(data), fin=fin, rsv1=rsv1))
            self._out.append(data)

    def frame_simple(self, opcode: int, data: bytes) -> bytes | None:
        """Serialize a whole unfragmented message and return it, if that is all it takes.

        The fast path for an I/O layer that writes the bytes itself: a server
        connection, open, with no extension, not in the middle of a fragmented
        send and not traced. Returns ``None`` when any of that does not hold;
        use ``send_text``/``send_binary`` then.
        """
        if (
            self.state is not State.OPEN
            or self._is_client
            or self.extensions
            or self._sending is not None
            or self.frame_observer is not None
            or len(data) >= 65536  # large: write header and payload separately, no copy
        ):
            return None
        return frame_header(opcode, len(data)) + data

    def _check_can_send(self) -> None:
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send in state {self.state.name}")

    def _send_data(self, opcode: int, data: bytes, fin: bool, compress: bool | None) -> None:
        self._check_can_send()
        if opcode:
            if self._sending is not None:
                raise InvalidState("a fragmented message is being sent")
        elif self._sending is None:
            raise InvalidState("no fragmented message to continue")
        rsv1 = False
        if self.extensions:
            frame = Frame(opcode, data, fin)
            for ext in self.extensions:
                frame = ext.encode(frame, compress=compress)
            data, rsv1 = frame.data, frame.rsv1
        self._sending = None if fin else (opcode or self._sending)
        self.send_ready = fin
        self._write(opcode, data, fin, rsv1)

    def send_text(self, data: str | bytes, fin: bool = True, compress: bool | None = None) -> None:
        """Send a text frame; ``data`` as ``bytes`` must already be UTF-8."""
        self._send_data(
            Opcode.TEXT, data.encode("utf-8") if isinstance(data, str) else data, fin, compress
        )

    def send_binary(self, data: bytes, fin: bool = True, compress: bool | None = None) -> None:
        self._send_data(Opcode.BINARY, data, fin, compress)

    def send_continuation(self, data: bytes, fin: bool) -> None:
        self._send_data(Opcode.CONT, data, fin, None)

    def send_ping(self, data: bytes = b"") -> None:
        self._check_can_send()
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError("ping payload longer than 125 bytes")
        self._write(Opcode.PING, data)

    def send_pending_pong(self) -> None:
        """Answer the most recent Ping received while ``defer_pongs`` was set."""
        payload, self._pending_pong = self._pending_pong, None
        if payload is not None and self.state is State.OPEN:
            self._write(Opcode.PONG, payload)

    def send_pong(self, data: bytes = b"") -> None:
        self._check_can_send()
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError("pong payload longer than 125 bytes")
        self._write(Opcode.PONG, data)

    def send_close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 §7.1.2)."""
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot close in state {self.state.name}")
        if self.pending_failure is not None:
            # The peer already broke the protocol: close with that error's code.
            self.fail_pending()
            return
        payload = serialize_close_payload(code, reason)  # ValueError for bad input
        self._send_close_payload(payload, code, reason)
        self._set_state(State.CLOSING)

    def _send_close_frame(self, code: int, reason: str) -> None:
        self._send_close_payload(serialize_close_payload(code, reason), code, reason)

    def _send_close_payload(self, payload: bytes, code: int, reason: str) -> None:
        self._write(Opcode.CLOSE, payload)
        self.close_sent = Close(code, reason)

    def fail_pending(self) -> None:
        """Fail the connection for the protocol error kept in ``pending_failure``, if any."""
        exc, self.pending_failure = self.pending_failure, None
        if exc is not None:
            self.fail(exc.code, exc.reason, exc)

    def fail(self, code: int, reason: str, exc: ProtocolError | None = None) -> None:
        """Fail the WebSocket connection (RFC 6455 §7.1.7): Close frame, then drop TCP."""
        if self.failure is None:
            self.failure = exc or ProtocolError(reason, code)
            _logger().debug("failing connection: %s %s", code, reason)
        if self.state is State.OPEN and self.close_sent is None:
            if not is_valid_close_code(code):
                code = CloseCode.INTERNAL_ERROR  # e.g. 1006 may never go on the wire
            reason = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
            self._send_close_frame(code, reason)
        if self.state is not State.CLOSED:
            self._set_state(State.CLOSING)
        self.discarding_input = True
        self.close_transport = True

    # --------------------------------------------------------------- draining

    def events_received(self) -> list[Event]:
        events = self._events
        if events:
            self._events = []
        return events

    def data_to_send(self) -> list[bytes]:
        out = self._out
        if out:
            self._out = []
        return out

    @property
    def close_code(self) -> int:
        """The code the peer closed with; 1006 if no Close frame arrived."""
        return self.close_rcvd[0] if self.close_rcvd is not None else CloseCode.ABNORMAL

    @property
    def close_reason(self) -> str:
        return self.close_rcvd[1] if self.close_rcvd is not None else ""
