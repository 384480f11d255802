"""A hub session's Transport over an ASGI WebSocket: a bounded queue and one writer task.

tether's own WebSocket transport knows how full the socket's buffer is; ASGI
does not tell: ``await send(...)`` just returns once the server has taken the
message (uvicorn and hypercorn wait while their own write buffer is over its
high-water mark). So this transport keeps the buffer itself:

- :meth:`write_now` puts the text on a queue that one writer task drains,
  one ``websocket.send`` at a time. A message counts as buffered from the
  moment it is queued until ``send`` returns for it.
- :meth:`ready` is true while the buffered size is within ``write_limit``
  (256 KiB by default, the limit tether's own server uses). Past it, the
  session's :class:`~tether.hub.writer.SessionWriter` holds further messages
  in its own queue (``limits.send_queue_size``) and disconnects the client
  with 4010 "slow consumer" when that overflows: the same policy as over
  tether's server, so a slow client costs at most both limits of memory and
  never slows down the others (fan-out never awaits a client).
- :meth:`close` sends what is queued, then ``websocket.close``, waiting at
  most ``close_timeout``; a client that reads nothing does not hold it longer
  (the writer is cancelled and the handler returns, which ends the
  connection in the ASGI server).

Sizes are counted in characters of the JSON text (the hub's messages are
mostly ASCII), which keeps the accounting free of an extra encode.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from tether.asgi.scope import Send
from tether.hub.transport import TransportKind
from tether.protocol.exceptions import ConnectionClosedError

logger = logging.getLogger("tether.asgi")

DEFAULT_WRITE_LIMIT = 256 * 1024

# Messages are queued one by one for one ASGI ``send`` each: nothing to share.
ASGI_WEBSOCKET = TransportKind("websocket")


class AsgiWebSocketTransport:
    """Implements :class:`tether.hub.transport.Transport` over an accepted ASGI WebSocket."""

    kind = ASGI_WEBSOCKET

    def __init__(
        self, send: Send, *, write_limit: int = DEFAULT_WRITE_LIMIT, close_timeout: float = 5.0
    ) -> None:
        self._send = send
        self.write_limit = write_limit
        self.close_timeout = close_timeout
        self._queue: collections.deque[str] = collections.deque()
        self._buffered = 0
        self._close_frame: tuple[int, str] | None = None
        self._failed = False
        loop = asyncio.get_running_loop()
        self._work: asyncio.Event = asyncio.Event()
        self._below_limit: asyncio.Event = asyncio.Event()
        self._below_limit.set()
        self.writer: asyncio.Task[None] = loop.create_task(self._write_loop())
        """Ends once ``websocket.close`` is sent, or when sending fails."""

    @property
    def buffered_amount(self) -> int:
        """Characters queued or being sent (the ASGI server took none of them yet)."""
        return self._buffered

    @property
    def open(self) -> bool:
        return self._close_frame is None and not self._failed and not self.writer.done()

    # ------------------------------------------------------------ Transport

    def ready(self) -> bool:
        return self.open and self._buffered <= self.write_limit

    def write_now(self, text: str) -> None:
        if not self.open:
            return
        self._queue.append(text)
        self._buffered += len(text)
        if self._buffered > self.write_limit:
            self._below_limit.clear()
        self._work.set()

    async def write(self, text: str) -> None:
        if not self.open:
            raise ConnectionClosedError(None, self._close_frame, detail="the WebSocket is closed")
        self.write_now(text)
        while self._buffered > self.write_limit and self.open:
            await self._below_limit.wait()
        if self._failed:
            raise ConnectionClosedError(None, None, detail="the ASGI server refused a send")

    async def close(self, code: int, reason: str) -> None:
        """Send what is queued, then close with ``code`` and ``reason``; bounded in time."""
        if self._close_frame is None and not self._failed:
            self._close_frame = (code, reason)
            self._work.set()
        # asyncio.wait, not wait_for: it neither cancels the writer nor raises.
        done, _ = await asyncio.wait((self.writer,), timeout=self.close_timeout)
        if not done:
            logger.info("WebSocket close not sent within %.1fs: abandoning", self.close_timeout)
            await self.abort()

    async def abort(self) -> None:
        """Stop writing at once (the connection is gone or must go)."""
        self._failed = True
        self._queue.clear()
        self._buffered = 0
        self._below_limit.set()
        if not self.writer.done():
            self.writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.writer

    # --------------------------------------------------------------- writer

    async def _write_loop(self) -> None:
        send = self._send
        queue = self._queue
        try:
            while True:
                while queue:
                    text = queue[0]
                    await send({"type": "websocket.send", "text": text})
                    queue.popleft()
                    self._buffered -= len(text)
                    if self._buffered <= self.write_limit:
                        self._below_limit.set()
                if self._close_frame is not None:
                    break
                self._work.clear()
                await self._work.wait()
            code, reason = self._close_frame
            await send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception as exc:
            # The client went away (uvicorn raises ClientDisconnected, others
            # an OSError or RuntimeError): the read side sees the disconnect.
            logger.debug("WebSocket send failed: %r", exc)
            self._failed = True
        finally:
            self._below_limit.set()
