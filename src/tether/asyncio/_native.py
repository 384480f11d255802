"""Chooses the asyncio layer's native read path or its pure-Python twin.

Like :mod:`tether._native` for the core: ``TETHER_NO_SPEEDUPS=1`` forces the
pure-Python code (the test suite runs both), and without a compiled
``tether.asyncio._speedups`` tether still works, only slower.
"""

from __future__ import annotations

import os

from tether.asyncio import _receiver

# A connection's fast read path (the BufferedProtocol side); see tether.asyncio._receiver.
Receiver: type[_receiver.Receiver] = _receiver.Receiver
USING_SPEEDUPS = False

if not os.environ.get("TETHER_NO_SPEEDUPS"):
    try:
        from tether.asyncio import _speedups
    except ImportError:
        import logging

        logging.getLogger("tether").debug(
            "tether: native read path unavailable, using the pure-Python fallback"
        )
    else:
        Receiver = _speedups.Receiver  # type: ignore[assignment]
        USING_SPEEDUPS = True
