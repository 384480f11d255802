"""Chooses between the core's native hot path and its pure-Python twin.

The asyncio layer's read path has its own chooser, :mod:`tether.asyncio._native`.

``TETHER_NO_SPEEDUPS=1`` forces the pure-Python code (the test suite runs both).
Without a compiled ``_speedups`` module tether still works, only slower, and
says so once at debug level.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from tether import _frame_out, _mask, _utf8

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
USING_SPEEDUPS = False
# Why the speedups are off ("" while they are on), for `tether --version` and
# tether.speedups_status(): a user asking "is it fast?" deserves the reason.
SPEEDUPS_OFF_REASON = ""
# Why each native module is off, by name (filled by load_native).
OFF_REASONS: dict[str, str] = {}


def load_native(name: str) -> Any:
    """The compiled module ``name``, or None: not built, or ``TETHER_NO_SPEEDUPS=1``.

    Its absence is said once per module at debug level. The asyncio layer's
    chooser (:mod:`tether.asyncio._native`) uses this too.
    """
    if os.environ.get("TETHER_NO_SPEEDUPS"):
        OFF_REASONS[name] = f"TETHER_NO_SPEEDUPS={os.environ['TETHER_NO_SPEEDUPS']}"
        return None
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        OFF_REASONS[name] = f"{name} failed to import: {exc}"

        # Imported here: logging loads threading, which the sans-I/O core must not.
        import logging

        logging.getLogger("tether").debug(
            "tether: %s unavailable, using the pure-Python fallback", name
        )
        return None


_speedups = load_native("tether._speedups")
if _speedups is not None:
    apply_mask = _speedups.apply_mask
    parse_simple_frames = _speedups.parse_simple_frames
    Utf8Validator = _speedups.Utf8Validator
    frame_unmasked = _speedups.frame_unmasked
    USING_SPEEDUPS = True
else:
    SPEEDUPS_OFF_REASON = OFF_REASONS["tether._speedups"]
