"""The permessage-deflate extension (RFC 7692).

Negotiation and the codec are split: :class:`ClientPerMessageDeflateFactory`
and :class:`ServerPerMessageDeflateFactory` validate the handshake parameters
(RFC 7692 §7.1) and hand each connection its own :class:`PerMessageDeflate`,
which compresses outgoing and inflates incoming messages (RFC 7692 §7.2).

Memory
------
zlib state dominates the per-connection cost of this extension. zlib documents
``(1 << (windowBits + 2)) + (1 << (memLevel + 9))`` bytes for a compressor and
``1 << windowBits`` (plus about 7 KiB of state) for a decompressor. Measured
with :mod:`tracemalloc` (CPython 3.11, zlib 1.2.13) once each object has
processed an 11 KiB JSON message, per connection and for 10,000 connections:

=================================  ==============  =====================
zlib object                        per connection  10,000 connections
=================================  ==============  =====================
compressor, 15 bits, memLevel 8    262 KiB         2.5 GiB (RSS 1.2 GiB)
compressor, 12 bits, memLevel 5    38 KiB          371 MiB (RSS 372 MiB)
decompressor, 15 bits              39 KiB          383 MiB (RSS 227 MiB)
decompressor, 12 bits              11 KiB          109 MiB (RSS 119 MiB)
=================================  ==============  =====================

(RSS is lower than the allocation where small messages leave pages of the
window and hash tables untouched; the allocation is the worst case.)

The server defaults are therefore memory-frugal: ``server_max_window_bits=12``
and ``mem_level=5`` for the server's compressor, and ``client_max_window_bits=12``
asked of clients that offer the parameter (browsers do). Measured end to end
on server codecs that have each sent and received one compressed message,
with context takeover both ways:

==========================================  ==============  ======================
server configuration                        per connection  10,000 connections
==========================================  ==============  ======================
defaults                                    49 KiB          480 MiB (RSS 504 MiB)
defaults, client offers no window param     77 KiB          754 MiB (RSS 611 MiB)
zlib defaults (15 bits, memLevel 8)         301 KiB         2.9 GiB (RSS 1.4 GiB)
both ``*_no_context_takeover``, when idle   0               0
==========================================  ==============  ======================

Codecs allocate zlib objects lazily, on the first compressed message in each
direction, so connections that only carry messages below ``compress_threshold``
cost nothing. With ``server_no_context_takeover`` and
``client_no_context_takeover`` the objects are also dropped after every
message, so idle connections hold no zlib memory at all (at the price of a
worse ratio for small, similar messages). With ``server_no_context_takeover``
the server's compressed frames depend only on the message, so a broadcast can
be compressed once for every connection with the same
:attr:`PerMessageDeflate.shareable_key`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tether.protocol.exceptions import (
    InflateDeferred,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
)
from tether.protocol.extensions.base import (
    ClientExtensionFactory,
    Extension,
    ServerExtensionFactory,
)
from tether.protocol.frames import Frame, Opcode
from tether.protocol.headers import ExtensionParams

if TYPE_CHECKING:  # zlib's object types are not importable at run time.
    from zlib import _Compress, _Decompress

__all__ = [
    "ClientPerMessageDeflateFactory",
    "PerMessageDeflate",
    "ServerPerMessageDeflateFactory",
]

NAME = "permessage-deflate"

# RFC 7692 §7.2.1: a sender removes these 4 octets, which end every
# Z_SYNC_FLUSH (an empty stored block), from a compressed message;
# RFC 7692 §7.2.2: the receiver appends them back before inflating.
_EMPTY_BLOCK_TAIL = b"\x00\x00\xff\xff"

# RFC 7692 §7.1.2.1 and §7.1.2.2: "a decimal integer value without leading
# zeroes between 8 to 15, inclusive".
_WINDOW_BITS_RE = re.compile(r"[89]|1[0-5]")

_SERVER_NO_CONTEXT_TAKEOVER = "server_no_context_takeover"
_CLIENT_NO_CONTEXT_TAKEOVER = "client_no_context_takeover"
_SERVER_MAX_WINDOW_BITS = "server_max_window_bits"
_CLIENT_MAX_WINDOW_BITS = "client_max_window_bits"


def _check_window_bits(name: str, value: int) -> int:
    if not 8 <= value <= 15:
        raise ValueError(f"{name} must be between 8 and 15, got {value}")
    return value


def _apply_compress_settings(
    settings: dict[str, Any] | None, mem_level: int, level: int
) -> tuple[int, int]:
    """websockets' ``compress_settings`` (zlib.compressobj keywords) as (mem_level, level)."""
    if not settings:
        return mem_level, level
    if "wbits" in settings:
        raise ValueError(
            "compress_settings must not include wbits, set client_max_window_bits "
            "or server_max_window_bits instead"
        )
    unknown = set(settings) - {"memLevel", "level"}
    if unknown:
        raise ValueError(f"compress_settings supports memLevel and level, not {sorted(unknown)}")
    return int(settings.get("memLevel", mem_level)), int(settings.get("level", level))


def _check_settings(compress_threshold: int, mem_level: int, level: int) -> None:
    if compress_threshold < 0:
        raise ValueError(f"compress_threshold must be >= 0, got {compress_threshold}")
    if not 1 <= mem_level <= 9:
        raise ValueError(f"mem_level must be between 1 and 9, got {mem_level}")
    if not -1 <= level <= 9:
        raise ValueError(f"level must be between -1 and 9, got {level}")


# DEFLATE's best case is a 258-byte match coded in 2 bits: 1032 bytes out per
# byte in, so 16 KiB of compressed data may inflate to 16 MiB.
MAX_INFLATE_RATIO = 1032


def _may_inflate_past(size: int, max_size: int | None, max_output: int) -> bool:
    """Whether ``size`` compressed bytes could inflate to more than ``max_output``."""
    worst = size * MAX_INFLATE_RATIO
    if max_size is not None:
        worst = min(worst, max(max_size, 0) + 1)
    return worst > max_output


class PerMessageDeflate(Extension):
    """The permessage-deflate codec of one connection.

    "Remote" is the peer's compressor (what :meth:`decode` undoes) and "local"
    is ours (what :meth:`encode` produces). ``remote_max_window_bits`` sizes
    the decompressor and ``local_max_window_bits`` the compressor; the
    ``*_no_context_takeover`` flags reset the matching side after each message.
    ``mem_level`` and ``level`` tune the compressor; messages whose first frame
    is shorter than ``compress_threshold`` bytes are sent uncompressed unless
    the caller insists.
    """

    name = NAME

    def __init__(
        self,
        remote_no_context_takeover: bool = False,
        local_no_context_takeover: bool = False,
        remote_max_window_bits: int = 15,
        local_max_window_bits: int = 15,
        *,
        mem_level: int = 8,
        level: int = 6,
        compress_threshold: int = 128,
    ) -> None:
        _check_window_bits("remote_max_window_bits", remote_max_window_bits)
        _check_window_bits("local_max_window_bits", local_max_window_bits)
        _check_settings(compress_threshold, mem_level, level)
        self.remote_no_context_takeover = remote_no_context_takeover
        self.local_no_context_takeover = local_no_context_takeover
        self.remote_max_window_bits = remote_max_window_bits
        self.local_max_window_bits = local_max_window_bits
        self.mem_level = mem_level
        self.level = level
        self.compress_threshold = compress_threshold
        # zlib >= 1.2.9 refuses windowBits=8 for raw deflate streams, so a
        # negotiated 8 compresses with 9. That stays within the 256-byte
        # window promised to the peer: zlib's deflate never emits a distance
        # beyond w_size - MIN_LOOKAHEAD = 512 - 262 = 250 bytes. Inflating
        # accepts 8 as is.
        self._compress_wbits = max(local_max_window_bits, 9)
        # Created on first use and, without context takeover, dropped after
        # each message: idle connections then hold no zlib memory.
        self._decoder: _Decompress | None = None
        self._encoder: _Compress | None = None
        # Whether the message being received / sent is compressed; continuation
        # frames inherit the decision made on the message's first frame.
        self._decoding = False
        self._encoding = False

    def __repr__(self) -> str:
        return (
            f"PerMessageDeflate(remote_no_context_takeover={self.remote_no_context_takeover}, "
            f"local_no_context_takeover={self.local_no_context_takeover}, "
            f"remote_max_window_bits={self.remote_max_window_bits}, "
            f"local_max_window_bits={self.local_max_window_bits})"
        )

    @property
    def shareable_key(self) -> tuple[object, ...] | None:
        """Which connections may be sent the same compressed frame, or ``None``.

        Without context takeover on our side, :meth:`encode` of a whole
        message depends only on the message and the values in this key, and
        every peer that negotiated the same key can inflate it. With context
        takeover each connection's compressor carries its own history, so
        nothing can be shared and this is ``None``. Compress shared frames with
        a dedicated codec (see :meth:`clone`), not with a connection's own,
        which may be in the middle of a fragmented message.
        """
        if not self.local_no_context_takeover:
            return None
        return (NAME, self._compress_wbits, self.mem_level, self.level, self.compress_threshold)

    def clone(self) -> PerMessageDeflate:
        """A codec with the same parameters and fresh state."""
        return PerMessageDeflate(
            self.remote_no_context_takeover,
            self.local_no_context_takeover,
            self.remote_max_window_bits,
            self.local_max_window_bits,
            mem_level=self.mem_level,
            level=self.level,
            compress_threshold=self.compress_threshold,
        )

    def decode(
        self, frame: Frame, *, max_size: int | None = None, max_output: int | None = None
    ) -> Frame:
        was_decoding = self._decoding
        if frame.opcode == Opcode.CONT:
            # RFC 7692 §6.1: "An endpoint MUST NOT set the 'Per-Message
            # Compressed' bit of control frames and non-first fragments of a
            # data message. An endpoint receiving such a frame MUST _Fail the
            # WebSocket Connection_."
            if frame.rsv1:
                raise ProtocolError("RSV1 set on a continuation frame")
            if not self._decoding:
                return frame
        elif frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._decoding = frame.rsv1
            if not frame.rsv1:
                return frame
        else:
            # Control frames, which may arrive between the fragments of a
            # message, are never compressed and must not disturb its state.
            return frame

        decoder = self._decoder
        fresh = decoder is None
        if decoder is None:
            decoder = self._decoder = zlib.decompressobj(-self.remote_max_window_bits)
        try:
            if decoder.eof:
                # The peer ended its DEFLATE stream with a BFINAL block
                # (RFC 7692 §7.2.3.4) in an earlier frame. Whatever follows is
                # ignored, and not handed to zlib, which would buffer it in
                # unused_data for as long as the peer kept sending.
                data = b""
            else:
                # RFC 7692 §7.2.2: "Append 4 octets of 0x00 0x00 0xff 0xff to
                # the tail end of the payload of the message", then inflate.
                # The copy is cheap next to inflating.
                payload = frame.data + _EMPTY_BLOCK_TAIL if frame.fin else frame.data
                bound = None
                if max_output is not None and _may_inflate_past(len(payload), max_size, max_output):
                    bound = max_output
                # Try within the bound; past it, put everything back (from a
                # copy of the decompressor's state, taken only for a try).
                snapshot = decoder.copy() if bound is not None and not fresh else None
                inflated = self._inflate(decoder, payload, max_size, bound)
                if inflated is None:
                    self._decoder = snapshot
                    self._decoding = was_decoding
                    raise InflateDeferred
                data = inflated
        except zlib.error as exc:
            self._reset_decoder()
            raise ProtocolError("invalid compressed data") from exc
        except PayloadTooBig:
            self._reset_decoder()
            raise

        if frame.fin:
            self._decoding = False
            # RFC 7692 §7.2.2: with no context takeover the peer starts each
            # message with an empty window. After a BFINAL block the next
            # message is a new DEFLATE stream, which needs a new decompressor.
            if self.remote_no_context_takeover or decoder.eof:
                self._decoder = None
        return Frame(frame.opcode, data, frame.fin, False, frame.rsv2, frame.rsv3)

    @staticmethod
    def _inflate(
        decoder: _Decompress, data: bytes, max_size: int | None, max_output: int | None = None
    ) -> bytes | None:
        """The inflated ``data``; None if it would be longer than ``max_output``."""
        if max_size is None and max_output is None:
            return decoder.decompress(data)
        # Ask zlib for one byte more than the budget: if it delivers that byte,
        # the message is too big, and zlib stopped there instead of expanding
        # the rest. If it delivers less, its output buffer had room left, so it
        # stopped because the input ran out (or the stream ended) and nothing
        # stays behind in unconsumed_tail. (max_length=0 would mean
        # "unlimited", hence the + 1 and the clamp.)
        budget = None if max_size is None else max(max_size, 0)
        cap = min(x for x in (budget, max_output) if x is not None)
        data = decoder.decompress(data, cap + 1)
        if len(data) > cap:
            if budget is not None and len(data) > budget:
                raise PayloadTooBig(
                    f"message exceeds the size limit after decompression ({budget=})"
                )
            return None  # only past max_output
        return data

    def _reset_decoder(self) -> None:
        # After an error the connection fails; free the memory now.
        self._decoder = None
        self._decoding = False

    def encode(self, frame: Frame, *, compress: bool | None = None) -> Frame:
        if frame.opcode == Opcode.CONT:
            if not self._encoding:
                return frame
        elif frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            if compress is None:
                compress = len(frame.data) >= self.compress_threshold
            self._encoding = compress
            if not compress:
                return frame
        else:
            # RFC 7692 §6.1: control frames are never compressed.
            return frame

        encoder = self._encoder
        if encoder is None:
            encoder = self._encoder = zlib.compressobj(
                self.level, zlib.DEFLATED, -self._compress_wbits, self.mem_level
            )
        # A sync flush per frame makes every frame inflatable on arrival, so
        # the peer never has to buffer compressed data across frames.
        data = encoder.compress(frame.data) + encoder.flush(zlib.Z_SYNC_FLUSH)
        if frame.fin:
            # RFC 7692 §7.2.1: "Remove 4 octets (that are 0x00 0x00 0xff 0xff)
            # from the tail end". Z_SYNC_FLUSH always ends with an empty stored
            # block, whose 3 header bits sit in the byte before those octets,
            # so at least that byte remains: an empty message becomes b"\x00",
            # the single-octet empty block of RFC 7692 §7.2.3.6.
            data = data[:-4]
            self._encoding = False
            if self.local_no_context_takeover:
                self._encoder = None
        # RFC 7692 §6: RSV1 is set on the first frame of a compressed message
        # only.
        rsv1 = frame.opcode != Opcode.CONT
        return Frame(frame.opcode, data, frame.fin, rsv1, frame.rsv2, frame.rsv3)


def _parse_params(params: ExtensionParams, *, response: bool) -> dict[str, int | None]:
    """Validate permessage-deflate parameters into {name: window bits or None}.

    RFC 7692 §7: an offer or response is invalid if it has "any extension
    parameter not defined for use in an offer/response", "an extension
    parameter with an invalid value" or "multiple extension parameters with
    the same name".
    """
    parsed: dict[str, int | None] = {}
    for name, value in params:
        if name in parsed:
            raise NegotiationError(f"duplicate {name} parameter")
        if name in (_SERVER_NO_CONTEXT_TAKEOVER, _CLIENT_NO_CONTEXT_TAKEOVER):
            # RFC 7692 §7.1.1.1, §7.1.1.2: "This extension parameter has no value."
            if value is not None:
                raise NegotiationError(f"{name} takes no value, got {value!r}")
            parsed[name] = None
        elif name in (_SERVER_MAX_WINDOW_BITS, _CLIENT_MAX_WINDOW_BITS):
            if value is None:
                # RFC 7692 §7.1.2.2: only an offer may carry a valueless
                # client_max_window_bits ("this parameter may have no value").
                if name == _SERVER_MAX_WINDOW_BITS or response:
                    raise NegotiationError(f"{name} needs a value")
                parsed[name] = None
            elif _WINDOW_BITS_RE.fullmatch(value) is None:
                raise NegotiationError(f"invalid {name} value {value!r}")
            else:
                parsed[name] = int(value)
        else:
            raise NegotiationError(f"unknown permessage-deflate parameter {name}")
    return parsed


def _check_not_accepted(accepted: Sequence[Extension]) -> None:
    # Two permessage-deflate instances would both claim RSV1 (RFC 7692 §6).
    if any(ext.name == NAME for ext in accepted):
        raise NegotiationError("permessage-deflate is already in use")


class ClientPerMessageDeflateFactory(ClientExtensionFactory):
    """Offer permessage-deflate from a client.

    ``server_no_context_takeover`` and ``server_max_window_bits`` are requests
    to the server, which must grant them or decline the extension.
    ``client_no_context_takeover`` announces that we will reset our
    compressor after each message. ``client_max_window_bits=True`` offers the
    valueless parameter, letting the server choose our window; an integer also
    caps it; ``None`` leaves the parameter out.
    """

    name = NAME

    def __init__(
        self,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = None,
        client_max_window_bits: int | bool | None = True,
        compress_settings: dict[str, Any] | None = None,
        *,
        compress_threshold: int = 128,
        mem_level: int = 8,
        level: int = 6,
    ) -> None:
        # websockets' compress_settings={"memLevel": .., "level": ..} or tether's keywords.
        mem_level, level = _apply_compress_settings(compress_settings, mem_level, level)
        if server_max_window_bits is not None:
            _check_window_bits("server_max_window_bits", server_max_window_bits)
        if client_max_window_bits is False:
            client_max_window_bits = None
        if client_max_window_bits is not None and client_max_window_bits is not True:
            _check_window_bits("client_max_window_bits", client_max_window_bits)
        _check_settings(compress_threshold, mem_level, level)
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.compress_threshold = compress_threshold
        self.mem_level = mem_level
        self.level = level

    def get_request_params(self) -> ExtensionParams:
        params: ExtensionParams = []
        if self.server_no_context_takeover:
            params.append((_SERVER_NO_CONTEXT_TAKEOVER, None))
        if self.client_no_context_takeover:
            params.append((_CLIENT_NO_CONTEXT_TAKEOVER, None))
        if self.server_max_window_bits is not None:
            params.append((_SERVER_MAX_WINDOW_BITS, str(self.server_max_window_bits)))
        if self.client_max_window_bits is True:
            params.append((_CLIENT_MAX_WINDOW_BITS, None))
        elif self.client_max_window_bits is not None:
            params.append((_CLIENT_MAX_WINDOW_BITS, str(self.client_max_window_bits)))
        return params

    def process_response_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> PerMessageDeflate:
        _check_not_accepted(accepted)
        parsed = _parse_params(params, response=True)

        # RFC 7692 §7.1.1.1: "A server accepts an extension negotiation offer
        # that includes the server_no_context_takeover extension parameter by
        # including [it] in the corresponding extension negotiation response";
        # it may also include it unasked.
        server_no_context_takeover = _SERVER_NO_CONTEXT_TAKEOVER in parsed
        if self.server_no_context_takeover and not server_no_context_takeover:
            raise NegotiationError("server did not grant server_no_context_takeover")

        # RFC 7692 §7.1.1.2: "A client MUST support the client_no_context_takeover
        # extension parameter"; having offered it, we keep our word regardless.
        client_no_context_takeover = (
            _CLIENT_NO_CONTEXT_TAKEOVER in parsed or self.client_no_context_takeover
        )

        # RFC 7692 §7.1.2.1: the server answers a server_max_window_bits offer
        # "with the same or smaller value as the offer", and may include the
        # parameter unasked.
        server_bits = parsed.get(_SERVER_MAX_WINDOW_BITS)
        if self.server_max_window_bits is not None:
            if server_bits is None:
                raise NegotiationError("server did not grant server_max_window_bits")
            if server_bits > self.server_max_window_bits:
                raise NegotiationError(
                    f"server_max_window_bits={server_bits} exceeds the requested "
                    f"{self.server_max_window_bits}"
                )

        # RFC 7692 §7.1.2.2: "If a received extension negotiation offer doesn't
        # have the client_max_window_bits extension parameter, the corresponding
        # extension negotiation response to the offer MUST NOT include" it; a
        # value in the offer caps the response ("equal to or smaller than").
        client_bits = parsed.get(_CLIENT_MAX_WINDOW_BITS)
        offered = self.client_max_window_bits
        if client_bits is not None:
            if offered is None:
                raise NegotiationError("server sent client_max_window_bits, which was not offered")
            if offered is not True and client_bits > offered:
                raise NegotiationError(
                    f"client_max_window_bits={client_bits} exceeds the offered {offered}"
                )
        elif offered is not None and offered is not True:
            # Our offer promised this cap "even if the server doesn't include"
            # the parameter.
            client_bits = offered

        return PerMessageDeflate(
            remote_no_context_takeover=server_no_context_takeover,
            local_no_context_takeover=client_no_context_takeover,
            remote_max_window_bits=15 if server_bits is None else server_bits,
            local_max_window_bits=15 if client_bits is None else client_bits,
            mem_level=self.mem_level,
            level=self.level,
            compress_threshold=self.compress_threshold,
        )


class ServerPerMessageDeflateFactory(ServerExtensionFactory):
    """Accept permessage-deflate offers on a server.

    ``server_no_context_takeover`` and ``client_no_context_takeover`` impose
    resets after each message even when the client did not ask.
    ``server_max_window_bits`` caps the server's compressor window and
    ``client_max_window_bits`` asks clients that offer that parameter to cap
    theirs (``None`` means no cap). With ``require_client_max_window_bits``,
    offers that do not let us cap the client's window are declined. The
    defaults are memory-frugal; see the module docstring.
    """

    name = NAME

    def __init__(
        self,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        server_max_window_bits: int | None = 12,
        client_max_window_bits: int | None = 12,
        compress_settings: dict[str, Any] | None = None,
        require_client_max_window_bits: bool = False,
        *,
        compress_threshold: int = 128,
        mem_level: int = 5,
        level: int = 6,
    ) -> None:
        # websockets' compress_settings={"memLevel": .., "level": ..} or tether's keywords.
        mem_level, level = _apply_compress_settings(compress_settings, mem_level, level)
        if server_max_window_bits is not None:
            _check_window_bits("server_max_window_bits", server_max_window_bits)
        if client_max_window_bits is not None:
            _check_window_bits("client_max_window_bits", client_max_window_bits)
        _check_settings(compress_threshold, mem_level, level)
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.require_client_max_window_bits = require_client_max_window_bits
        self.compress_threshold = compress_threshold
        self.mem_level = mem_level
        self.level = level

    def process_request_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> tuple[ExtensionParams, PerMessageDeflate]:
        _check_not_accepted(accepted)
        parsed = _parse_params(params, response=False)
        response: ExtensionParams = []

        # RFC 7692 §7.1.1.1: accepting an offer with server_no_context_takeover
        # means echoing it; the server may also add it unasked.
        server_no_context_takeover = (
            _SERVER_NO_CONTEXT_TAKEOVER in parsed or self.server_no_context_takeover
        )
        if server_no_context_takeover:
            response.append((_SERVER_NO_CONTEXT_TAKEOVER, None))

        # RFC 7692 §7.1.1.2: the offer's client_no_context_takeover is only a
        # hint; echoing it makes it binding, which lets us drop the
        # decompressor between messages. "A server MAY include" it unasked.
        client_no_context_takeover = (
            _CLIENT_NO_CONTEXT_TAKEOVER in parsed or self.client_no_context_takeover
        )
        if client_no_context_takeover:
            response.append((_CLIENT_NO_CONTEXT_TAKEOVER, None))

        # RFC 7692 §7.1.2.1: a requested server_max_window_bits is accepted "by
        # including [it] in the extension negotiation response ... with the
        # same or smaller value"; without a request the server MAY still
        # announce its window so the client can allocate a smaller one.
        offered_server_bits = parsed.get(_SERVER_MAX_WINDOW_BITS)
        server_bits = min(
            15 if offered_server_bits is None else offered_server_bits,
            15 if self.server_max_window_bits is None else self.server_max_window_bits,
        )
        if offered_server_bits is not None or server_bits < 15:
            response.append((_SERVER_MAX_WINDOW_BITS, str(server_bits)))

        # RFC 7692 §7.1.2.2: a response may carry client_max_window_bits only
        # if the offer had it; a value in the offer is a cap the client keeps
        # "even if the server doesn't include" the parameter, and our answer
        # must be "equal to or smaller than" it.
        if _CLIENT_MAX_WINDOW_BITS in parsed:
            offered_client_bits = parsed[_CLIENT_MAX_WINDOW_BITS]
            client_cap = 15 if offered_client_bits is None else offered_client_bits
            client_bits = min(
                client_cap,
                15 if self.client_max_window_bits is None else self.client_max_window_bits,
            )
            if client_bits < client_cap:
                response.append((_CLIENT_MAX_WINDOW_BITS, str(client_bits)))
        elif self.require_client_max_window_bits:
            raise NegotiationError("offer does not allow capping client_max_window_bits")
        else:
            client_bits = 15

        return response, PerMessageDeflate(
            remote_no_context_takeover=client_no_context_takeover,
            local_no_context_takeover=server_no_context_takeover,
            remote_max_window_bits=client_bits,
            local_max_window_bits=server_bits,
            mem_level=self.mem_level,
            level=self.level,
            compress_threshold=self.compress_threshold,
        )
