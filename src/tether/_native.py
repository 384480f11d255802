"""Chooses between the native hot path and its pure-Python twin.

``TETHER_NO_SPEEDUPS=1`` forces the pure-Python code (the test suite runs both).
Without a compiled ``_speedups`` module tether still works, only slower, and
says so once at debug level.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from tether import _frame_out, _mask, _receiver, _utf8

MaskFunction = Callable[[bytes | bytearray | memoryview, bytes], bytes]
FrameBatchParser = Callable[[bytes | bytearray, int, bool, int, list[object]], int]
FrameFunction = Callable[[int, bytes], bytes]

apply_mask: MaskFunction = _mask.apply_mask
# Parses a run of whole simple frames in one call; its pure-Python twin is
# the fast path inside Connection._parse, used when this is None.
parse_simple_frames: FrameBatchParser | None = None
# Incremental fail-fast UTF-8 validation: feed(data, final=False) -> bool.
Utf8Validator: type[_utf8.Utf8Validator] = _utf8.Utf8Validator
# A whole unmasked frame (a server's), header and payload in one bytes object.
frame_unmasked: FrameFunction = _frame_out.frame_unmasked
# A connection's fast read path (asyncio BufferedProtocol side); see tether._receiver.
Receiver: type[_receiver.Receiver] = _receiver.Receiver
USING_SPEEDUPS = False
# Why the speedups are off ("" while they are on), for `tether --version` and
# tether.speedups_status(): a user asking "is it fast?" deserves the reason.
SPEEDUPS_OFF_REASON = ""

if os.environ.get("TETHER_NO_SPEEDUPS"):
    SPEEDUPS_OFF_REASON = f"TETHER_NO_SPEEDUPS={os.environ['TETHER_NO_SPEEDUPS']}"
else:
    try:
        from tether import _speedups  # type: ignore[attr-defined, unused-ignore]
    except ImportError as exc:
        SPEEDUPS_OFF_REASON = f"tether._speedups failed to import: {exc}"
        logging.getLogger("tether").debug(
            "tether: native speedups unavailable, using the pure-Python fallback"
        )
    else:
        apply_mask = _speedups.apply_mask
        parse_simple_frames = _speedups.parse_simple_frames
        Utf8Validator = _speedups.Utf8Validator  # type: ignore[assignment]
        Receiver = _speedups.Receiver  # type: ignore[assignment]
        frame_unmasked = _speedups.frame_unmasked
        USING_SPEEDUPS = True
