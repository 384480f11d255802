"""Sending: whole messages, fragmented ones, and the fast path for small server frames.

Every send checks the connection's state in one place,
:meth:`Sending._ready_to_send` (coroutines, after waiting for a worker
thread using the core) or :meth:`Sending._check_open` (callbacks), as
websockets' ``send_context()`` does.
"""

# mypy: disable-error-code="misc"
# (Methods take ``self: Connection``: each concern calls the others' methods.
# mypy reports such a self type, a subclass of the class it is in, as "misc".)

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING

from tether import _native
from tether.asyncio.attributes import ConnectionAttributes, Data
from tether.asyncio.cork import ONE_WRITE, cork_state
from tether.protocol.connection import Connection as CoreConnection
from tether.protocol.connection import State
from tether.protocol.exceptions import ConcurrencyError
from tether.protocol.frames import CloseCode, Opcode

if TYPE_CHECKING:
    from tether.asyncio.connection import Connection


_frame_unmasked = _native.frame_unmasked


def _frame_small(message: object) -> bytes | None:
    """A server's whole frame for a str or bytes message below ONE_WRITE, else None."""
    if type(message) is bytes:
        return _frame_unmasked(2, message) if len(message) < ONE_WRITE else None
    if type(message) is str and len(message) < ONE_WRITE // 4:  # UTF-8: <= 4 bytes each
        return _frame_unmasked(1, message.encode())
    return None


class Sending(ConnectionAttributes):
    """The sending half of :class:`~tether.asyncio.connection.Connection`."""

    __slots__ = ()

    def _check_open(self: Connection) -> CoreConnection:
        """The one check of state before anything is sent: the core, if it is open.

        As websockets' ``send_context()``: ``send``, ``send_nowait``, each
        fragment of a fragmented send, ``ping`` and ``pong`` go through here
        (the fast path reads the core's ``send_ready``, which implies it).
        Losing the TCP connection makes the core CLOSED (``receive_eof``), so
        its state says everything.
        """
        proto = self.protocol
        if proto.state is not State.OPEN:
            raise self._closed_exception()
        return proto

    async def _ready_to_send(self: Connection) -> CoreConnection:
        """Wait until no worker thread uses the core, then :meth:`_check_open`."""
        await self._until_idle()
        return self._check_open()

    async def send(
        self: Connection,
        message: Data | bytearray | memoryview | Iterable[Data] | AsyncIterable[Data],
        text: bool | None = None,
        *,
        compress: bool | None = None,
    ) -> None:
        """Send a message: ``str`` as text, bytes-like as binary.

        ``text=True`` sends bytes (which must be UTF-8) in a text frame and
        ``text=False`` sends a ``str`` in a binary frame, as in websockets.
        An iterable (or async iterable) of str/bytes is sent as one fragmented
        message. Waits while the write buffer is above the high-water mark.
        """
        proto = self.protocol
        if self._fast_tx and proto.send_ready and text is None:
            # Fast path: a server frame with no extension is just header + payload.
            frame = _frame_small(message)
            if frame is not None:
                self._write_small(frame)
                if self._writing_paused:
                    await self._drain()
                return
        await self._ready_to_send()
        if type(message) is bytes:
            opcode, data = Opcode.BINARY, message
        elif isinstance(message, str):
            opcode, data = Opcode.TEXT, message.encode("utf-8")
        elif isinstance(message, bytes | bytearray | memoryview):
            opcode, data = Opcode.BINARY, bytes(message)
        elif isinstance(message, AsyncIterable):
            await self._send_fragments_async(message, compress, text)
            return
        elif isinstance(message, Iterable):
            await self._send_fragments(iter(message), compress, text)
            return
        else:
            raise TypeError(f"cannot send {type(message).__name__}")
        if text is not None:
            opcode = Opcode.TEXT if text else Opcode.BINARY
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
        self: Connection,
        message: Data | bytearray | memoryview,
        text: bool | None = None,
        *,
        compress: bool | None = None,
    ) -> None:
        """Send a whole message now, without waiting for the write buffer to drain.

        For callbacks (see :class:`Listener`), which cannot await: check
        :attr:`buffered_amount` to apply backpressure yourself. ``text`` as
        for :meth:`send`.
        """
        proto = self.protocol
        if self._fast_tx and proto.send_ready and text is None:
            frame = _frame_small(message)
            if frame is not None:
                # _write_small, inlined: this is the Listener's hot path.
                if cork_state.loop is self.loop:
                    self._hold(frame)
                    return
                if self._held_frames is not None:
                    self._flush_held()
                self.transport.write(frame)  # type: ignore[union-attr]
                return
        self._check_open()
        if self._busy is not None:
            raise ConcurrencyError("a large message is being compressed; await send() instead")
        if isinstance(message, str):
            data = message.encode("utf-8")
            as_text = True if text is None else text
        elif isinstance(message, bytes | bytearray | memoryview):
            data = message if type(message) is bytes else bytes(message)
            as_text = bool(text)
        else:
            raise TypeError(f"cannot send {type(message).__name__}")
        if as_text:
            proto.send_text(data, compress=compress)
        else:
            proto.send_binary(data, compress=compress)
        out = proto.data_to_send()
        if out:
            self._write_out(out)

    async def _send_fragments(
        self: Connection, chunks: Iterable[Data], compress: bool | None, as_text: bool | None
    ) -> None:
        await self._send_fragments_async(_aiter_sync(chunks), compress, as_text)

    async def _send_fragments_async(
        self: Connection,
        chunks: AsyncIterable[Data],
        compress: bool | None,
        as_text: bool | None = None,
    ) -> None:
        proto = self.protocol
        iterator = aiter(chunks)
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            return
        text = isinstance(first, str) if as_text is None else as_text
        prev: Data = first
        started = False
        try:
            async for chunk in iterator:
                if as_text is None and isinstance(chunk, str) != text:
                    raise TypeError("fragments of one message must all be str or all be bytes")
                await self._until_idle()
                self._send_fragment(prev, text, started, False, compress)
                started = True
                prev = chunk
                self._flush()
                if self._writing_paused:
                    await self._drain()
            await self._until_idle()
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
        self: Connection, chunk: Data, text: bool, started: bool, fin: bool, compress: bool | None
    ) -> None:
        proto = self._check_open()
        data = chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk)
        if started:
            proto.send_continuation(data, fin)
        elif text:
            proto.send_text(data, fin, compress)
        else:
            proto.send_binary(data, fin, compress)


async def _aiter_sync(chunks: Iterable[Data]) -> AsyncIterator[Data]:
    for chunk in chunks:
        yield chunk
