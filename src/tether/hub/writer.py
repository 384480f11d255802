"""A session's outgoing messages: a bounded queue drained at the client's pace.

Most of the time a client keeps up and a message is written at once (and a
publication's frame is shared with every other ready subscriber). When the
transport's buffer is full, messages wait in this session's queue, drained by
a task that waits for the transport after each write. If the queue grows past
its byte limit, the client is too slow: its queue is dropped and ``on_overflow``
disconnects it (4010) so it reconnects and recovers from history, instead of
holding memory or slowing down everyone else.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from tether.hub.metrics import Metrics
from tether.hub.transport import Transport
from tether.protocol.exceptions import ConnectionClosed

logger = logging.getLogger("tether.hub")


class SessionWriter:
    def __init__(
        self,
        transport: Transport,
        *,
        max_bytes: int,
        metrics: Metrics,
        on_overflow: Callable[[], None],
    ) -> None:
        self.transport = transport
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.on_overflow = on_overflow
        # Made when something has to wait, dropped once drained: most sessions are
        # idle and write directly, and an empty deque costs 600 bytes each.
        self._queue: collections.deque[tuple[str, int]] | None = None
        self._queued_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def idle(self) -> bool:
        """Nothing waiting and the transport takes writes: write directly."""
        return (
            not self._queue and self._task is None and not self._closed and self.transport.ready()
        )

    def send(self, text: str, size: int) -> None:
        """Send ``text`` (``size`` bytes as UTF-8) now or after what is queued."""
        if self._closed:
            return
        if self.idle:
            self.transport.write_now(text)
            self.metrics.sent(1, size)
        else:
            self.enqueue(text, size)

    def enqueue(self, text: str, size: int) -> None:
        """Queue ``text`` behind what is waiting (the caller found the writer not idle)."""
        if self._closed:
            return
        if self._queued_bytes + size > self.max_bytes:
            self.close()
            self.on_overflow()
            return
        if self._queue is None:
            self._queue = collections.deque()
        self._queue.append((text, size))
        self._queued_bytes += size
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        transport = self.transport
        try:
            while self._queue and not self._closed:
                text, size = self._queue.popleft()
                if not self._queue:
                    self._queue = None
                self._queued_bytes -= size
                await transport.write(text)
                self.metrics.sent(1, size)
        except ConnectionClosed:
            self.close()
        except Exception:  # a bug must not leave the session silently stuck
            logger.exception("session writer failed")
            self.close()
        finally:
            self._task = None

    def close(self) -> None:
        """Drop what is queued and accept nothing more."""
        self._closed = True
        self._queue = None
        self._queued_bytes = 0
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            self._task = None
