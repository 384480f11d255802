"""The receive queue between the reading thread and the threads that call ``recv``.

The reading thread :meth:`MessageQueue.put`\\ s whole messages (or
:class:`~tether.protocol.events.Fragment`\\ s when the connection streams
them); one application thread at a time takes them with
:meth:`MessageQueue.get`. Hand-off costs one lock and, only when the reader
has to wake a waiting ``recv``, one more: no condition variable and no
allocation per message when messages are already queued.

Flow control: past the high-water mark ``room`` is cleared and the reading
thread stops reading the socket (TCP then pushes back on the peer) until
``recv`` brings the queue down to the low-water mark.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING

from tether.protocol.events import Fragment

if TYPE_CHECKING:
    from _thread import LockType

Item = str | bytes | Fragment


class QueueClosed(Exception):
    """Nothing more will arrive: the connection is closed (internal, becomes ConnectionClosed)."""


class ConcurrentGet(Exception):
    """Another thread is already waiting in ``get`` (internal, becomes ConcurrencyError)."""


class MessageQueue:
    """A bounded hand-off of received messages from one thread to another."""

    __slots__ = ("_idle", "_items", "_mutex", "_waiter", "closed", "high", "low", "room")

    def __init__(self, high: int | None, low: int | None) -> None:
        self.high = high
        self.low = low if low is not None else 0
        self._mutex = threading.Lock()
        self._items: collections.deque[Item] = collections.deque()
        # The lock a waiting get() blocks on; put() releases it. None: nobody waits.
        self._waiter: LockType | None = None
        # Set while the reading thread may read on (below the high-water mark).
        self.room = threading.Event()
        self.room.set()
        self.closed = False
        # Set by get() when it finds nothing to take, if someone asked (wait_idle).
        self._idle: threading.Event | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def waiting(self) -> bool:
        """Whether a ``get`` is blocked, waiting for the next item."""
        return self._waiter is not None

    def put(self, items: list[Item]) -> None:
        """Queue messages (the reading thread); wakes a waiting ``get``."""
        with self._mutex:
            queue = self._items
            queue.extend(items)
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                waiter.release()
            if self.high is not None and len(queue) >= self.high:
                self.room.clear()

    def get(self, timeout: float | None) -> Item:
        """The next item; waits up to ``timeout`` seconds (None: forever, <= 0: not at all).

        Raises :class:`QueueClosed` once closed and empty, :class:`TimeoutError`
        when nothing came in time, :class:`ConcurrentGet` if another thread waits.
        """
        with self._mutex:
            if self._waiter is not None:
                raise ConcurrentGet
            if self._items:
                return self._take()
            if self.closed:
                raise QueueClosed
            if timeout is not None and timeout <= 0:
                raise TimeoutError("no message received")
            if self._idle is not None:
                self._idle.set()
            waiter = self._waiter = threading.Lock()
            waiter.acquire()
        try:
            waiter.acquire(True, -1 if timeout is None else timeout)
        finally:
            with self._mutex:
                if self._waiter is waiter:
                    self._waiter = None
                item: Item | None = self._take() if self._items else None
        if item is not None:
            return item
        if self.closed:
            raise QueueClosed
        raise TimeoutError(f"no message received within {timeout} seconds")

    def _take(self) -> Item:
        # Called with the mutex held and at least one item queued.
        item = self._items.popleft()
        if not self.room.is_set() and len(self._items) <= self.low:
            self.room.set()
        return item

    def idle(self) -> bool:
        """Whether everything queued was taken and a ``get`` waits for more."""
        with self._mutex:
            return not self._items and self._waiter is not None

    def wait_idle(self, timeout: float) -> None:
        """Wait until everything queued was taken and a ``get`` waits for more.

        The reading thread calls this before failing the connection for a
        protocol error that followed valid messages in the same read: the
        application gets those messages, and may answer them, first.
        """
        idle = threading.Event()
        with self._mutex:
            if not self._items and self._waiter is not None:
                return
            self._idle = idle
        try:
            idle.wait(timeout)
        finally:
            self._idle = None

    def close(self) -> None:
        """No more items will come: wake a waiting ``get`` and the reading thread."""
        with self._mutex:
            self.closed = True
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                waiter.release()
        self.room.set()

    def discard(self) -> None:
        """Drop what is queued (closing with a full queue: the peer's Close is behind it)."""
        with self._mutex:
            self._items.clear()
        self.room.set()
