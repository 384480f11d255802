"""A hub session's downstream as answers to long polls (``POST /connection/poll``).

Messages are numbered (``seq`` 1, 2, 3 …) and kept until the client
acknowledges them in its next poll, so an answer lost on the way (a proxy
that timed out, a cut connection) is sent again. Unacknowledged messages
count against ``max_bytes``: past it the transport is not ready, the
session's writer queues, and a client that never polls again is
disconnected as a slow consumer (4010); memory stays bounded.

A session without a waiting poll for ``session_timeout`` seconds is over:
``on_idle`` ends it (4012). Once closed, the transport keeps what the client
has not acknowledged (its ``disconnect`` push) for one more
``session_timeout``, then ``on_forget`` drops the session key.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from tether.hub.metrics import Metrics
from tether.hub.transport import PingPolicy, TransportKind

LONG_POLL = TransportKind("long_poll", ping=PingPolicy.CLIENT, buffered=True)


class PollTransport:
    """Implements :class:`~tether.hub.transport.Transport` for long polling."""

    kind = LONG_POLL

    def __init__(self, *, max_bytes: int, session_timeout: float, metrics: Metrics) -> None:
        self.max_bytes = max_bytes
        self.session_timeout = session_timeout
        self.metrics = metrics
        self.on_idle: Callable[[], None] = lambda: None
        self.on_forget: Callable[[], None] = lambda: None
        self._frames: collections.deque[tuple[int, str]] = collections.deque()
        self._bytes = 0
        self.next_seq = 1
        self.closed = False
        self._poller: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._arm(self.on_idle_timeout)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def _arm(self, callback: Callable[[], None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self.session_timeout, callback)

    def on_idle_timeout(self) -> None:
        self._timer = None
        if not self.closed:
            self.on_idle()

    def _forget(self) -> None:
        self._timer = None
        self.on_forget()

    # ------------------------------------------------------------ Transport

    def ready(self) -> bool:
        return not self.closed and self._bytes < self.max_bytes

    def write_now(self, text: str) -> None:
        if self.closed:
            return
        self._frames.append((self.next_seq, text))
        self.next_seq += 1
        self._bytes += len(text)
        self._wake_poller()

    async def write(self, text: str) -> None:
        while not self.closed and self._bytes >= self.max_bytes:
            self._room = self._loop.create_future()
            try:
                await self._room
            finally:
                self._room = None
        self.write_now(text)

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        # The disconnect push waits for the client's next poll, for a while.
        self.closed = True
        self._wake_poller()
        self._wake(self._room)
        self._arm(self._forget)

    # ----------------------------------------------------------- polling

    def _wake_poller(self) -> None:
        self._wake(self._poller)

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def acknowledge(self, ack: int) -> None:
        """Drop the messages up to ``ack`` (the client has them)."""
        frames = self._frames
        while frames and frames[0][0] <= ack:
            self._bytes -= len(frames.popleft()[1])
        if self._bytes < self.max_bytes:
            self._wake(self._room)

    def pending(self) -> tuple[int, list[str]]:
        """The ``seq`` of the first unacknowledged message, and those messages."""
        if not self._frames:
            return self.next_seq, []
        return self._frames[0][0], [text for _, text in self._frames]

    async def poll(self, ack: int, wait: float) -> tuple[int, list[str]] | None:
        """Messages after ``ack``, waiting up to ``wait`` s for one; ``None`` once over."""
        self.acknowledge(ack)
        # One poll at a time: a newer one ends the older one (with what there is).
        self._wake_poller()
        if not self._frames and not self.closed and wait > 0:
            poller = self._poller = self._loop.create_future()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                await asyncio.wait_for(asyncio.shield(poller), wait)
            except asyncio.TimeoutError:
                pass
            finally:
                if self._poller is poller:
                    self._poller = None
                    self._arm(self.on_idle_timeout if not self.closed else self._forget)
        if self.closed and not self._frames:
            return None
        seq, texts = self.pending()
        self.metrics.transport_bytes[LONG_POLL.name] += sum(len(t) for t in texts)
        return seq, texts
