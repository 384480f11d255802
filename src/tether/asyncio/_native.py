"""Chooses the asyncio layer's native read path or its pure-Python twin.

Like :mod:`tether._native` for the core: ``TETHER_NO_SPEEDUPS=1`` forces the
pure-Python code (the test suite runs both), and without a compiled
``tether.asyncio._speedups`` tether still works, only slower.
"""

from __future__ import annotations

from tether._native import load_native
from tether.asyncio import _receiver

# A connection's fast read path (the BufferedProtocol side); see tether.asyncio._receiver.
Receiver: type[_receiver.Receiver] = _receiver.Receiver
USING_SPEEDUPS = False

_speedups = load_native("tether.asyncio._speedups")
if _speedups is not None:
    Receiver = _speedups.Receiver
    USING_SPEEDUPS = True
