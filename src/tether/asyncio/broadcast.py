"""``broadcast``: one message to many connections, framed (and compressed) once."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tether.asyncio.connection import Connection, Data
from tether.asyncio.cork import ONE_WRITE, corked_loop
from tether.protocol.connection import Side
from tether.protocol.extensions.base import Extension
from tether.protocol.frames import Frame, Opcode, frame_header

logger = logging.getLogger("tether")


def broadcast(
    connections: Iterable[Connection],
    message: Data,
    # Positional too, as in websockets before 17.
    raise_exceptions: bool = False,
    *,
    text: bool | None = None,
    compress: bool | None = None,
) -> None:
    """Send ``message`` to every open connection without waiting.

    Server frames are unmasked, so the same bytes suit every socket: the frame
    is built once. With permessage-deflate, connections whose compressor keeps
    no context between messages share one compressed frame per distinct set of
    parameters; a connection with context takeover has its own compressor
    history, so it compresses for itself. Connections that are closing, in the
    middle of sending a fragmented message, or whose write buffer is above its
    high-water mark are skipped: one slow consumer never holds up the others
    or grows memory without bound (as with ``websockets.broadcast``).
    """
    if isinstance(message, str):
        payload = message.encode("utf-8")
        opcode = Opcode.TEXT
    elif isinstance(message, bytes | bytearray | memoryview):
        payload = bytes(message)
        opcode = Opcode.BINARY
    else:
        raise TypeError(f"cannot broadcast {type(message).__name__}")
    if text is not None:
        # websockets' text=: bytes (UTF-8) in a text frame, or a str in a binary one.
        opcode = Opcode.TEXT if text else Opcode.BINARY
    plain = frame_header(opcode, len(payload)) + payload
    shared: dict[tuple[object, ...], bytes] = {}
    skipped = 0
    # Called while a read's messages are delivered: hold small frames (see
    # tether.asyncio.cork). A large one gains little from sharing a system
    # call, and every socket's write buffer keeps a reference to the same
    # bytes instead.
    corked = len(plain) < ONE_WRITE and corked_loop() is not None
    for conn in connections:
        proto = conn.protocol
        if conn._fast_tx and proto.send_ready:
            # The common case first, inline (a method call per socket would
            # triple the cost of a fan-out): an open server connection with no
            # extension, not in the middle of a fragmented message.
            if conn._writing_paused:
                skipped += 1
            elif corked:
                conn._hold(plain)
            else:
                if conn._held_frames is not None:
                    conn._flush_held()  # a large message after small held ones
                conn.transport.write(plain)  # type: ignore[union-attr]
            continue
        if not proto.send_ready or conn.transport is None:
            continue  # closing, or in the middle of sending a fragmented message
        if conn.writing_paused or conn._busy is not None:
            # Over its write limit, or a worker thread is using its core.
            skipped += 1
            continue
        client = proto.side is Side.CLIENT
        if client or (proto.extensions and compress is not False):
            key = None if client else _shareable_key(proto.extensions)
            if key is None:
                # Clients mask every frame with a fresh key, and a compressor
                # with context takeover is per connection: send individually.
                if opcode == Opcode.TEXT:
                    proto.send_text(payload, compress=compress)
                else:
                    proto.send_binary(payload, compress=compress)
                conn._flush()
                continue
            frame = shared.get(key)
            if frame is None:
                frame = shared[key] = _encode_shared(proto.extensions, opcode, payload, compress)
            conn._write_frame(frame, hold=False)
            continue
        # A server connection that is traced: written at once, never held.
        conn._write_frame(plain, hold=False)
    if skipped:
        logger.warning("broadcast skipped %d slow connection(s)", skipped)
        if raise_exceptions:
            raise RuntimeError(f"{skipped} connection(s) skipped: write buffer full")


def _shareable_key(extensions: list[Extension]) -> tuple[object, ...] | None:
    keys = []
    for ext in extensions:
        key = ext.shareable_key
        if key is None:
            return None
        keys.append(key)
    return tuple(keys)


def _encode_shared(
    extensions: list[Extension], opcode: int, payload: bytes, compress: bool | None
) -> bytes:
    frame = Frame(opcode, payload)
    for ext in extensions:
        # A fresh codec: the connection's own may be in the middle of a message.
        fresh = ext.clone()
        frame = fresh.encode(frame, compress=compress)
    return frame_header(opcode, len(frame.data), rsv1=frame.rsv1) + frame.data
