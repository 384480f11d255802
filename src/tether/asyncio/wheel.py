"""One timer for the keepalive of every connection on an event loop.

A keepalive timer per connection costs a ``TimerHandle`` (with a context
copy) per connection, re-armed after every Pong, and on top of it a future,
a second timer and two callbacks per Ping for the Pong's deadline. A server
holding 20,000 idle connections carried 20,000 live timers and made 800 of
each of those objects a second. The wheel puts connections due in the same
tick (``TICK`` seconds) in one set; one loop timer fires per tick that has
members, and a connection moving from "ping due" to "pong due" is moved from
one set to another. Deadlines are rounded up to the next tick, which is
fine for intervals of seconds (shorter ones keep exact per-connection timers,
see :mod:`tether.asyncio.keepalive`).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from typing import Protocol

TICK = 1.0
"""Seconds per slot: deadlines are rounded up to a multiple of it."""
MIN_PERIOD = 1.0
"""Intervals and timeouts shorter than this keep their own exact timers."""


class Due(Protocol):
    def _keepalive_due(self) -> None: ...


class KeepaliveWheel:
    """The deadlines of one event loop, in slots of ``TICK`` seconds."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, set[Due]] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._armed = 0

    def add(self, member: Due, delay: float) -> int:
        """Call ``member._keepalive_due()`` in ``delay`` seconds (rounded up); the slot."""
        slot = math.ceil((self.loop.time() + delay) / TICK)
        members = self.slots.get(slot)
        if members is None:
            members = self.slots[slot] = set()
        members.add(member)
        if self._handle is None or slot < self._armed:
            self._arm(slot)
        return slot

    def remove(self, member: Due, slot: int) -> None:
        members = self.slots.get(slot)
        if members is not None:
            members.discard(member)
            if not members:
                del self.slots[slot]

    def __len__(self) -> int:
        return sum(map(len, self.slots.values()))

    def _arm(self, slot: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = slot
        self._handle = self.loop.call_at(slot * TICK, self._tick)

    def _tick(self) -> None:
        self._handle = None
        now = self.loop.time()
        for slot in sorted(s for s in self.slots if s * TICK <= now):
            for member in self.slots.pop(slot):
                try:
                    member._keepalive_due()
                except Exception as exc:  # one connection's failure must not stop the others'
                    self.loop.call_exception_handler(
                        {"message": f"keepalive of {member!r} failed", "exception": exc}
                    )
        if self.slots:
            self._arm(min(self.slots))


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, KeepaliveWheel] = (
    weakref.WeakKeyDictionary()
)


def wheel_of(loop: asyncio.AbstractEventLoop) -> KeepaliveWheel:
    """The loop's wheel (made on first use, gone with the loop)."""
    wheel = _WHEELS.get(loop)
    if wheel is None:
        wheel = _WHEELS[loop] = KeepaliveWheel(loop)
    return wheel
