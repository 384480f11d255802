"""The sync API's options, in websockets' forms, turned into what the core and the pump take.

``max_size`` may be one number (a message's limit) or a ``(message,
fragment)`` pair; ``max_queue`` one number (the high-water mark, the
low-water mark a quarter of it) or a ``(high, low)`` pair. Both are checked
here, once, so that a bad value fails at the call, not at the first message.
"""

from __future__ import annotations

from tether.protocol.extensions.defaults import Compression, client_extensions, server_extensions

__all__ = [
    "Compression",
    "MaxQueue",
    "MaxSize",
    "client_extensions",
    "queue_marks",
    "server_extensions",
    "size_limits",
]

# A message or frame size limit, or the pair (message, fragment).
MaxSize = int | None | tuple[int | None, int | None]
# The receive queue's high-water mark, or the pair (high, low).
MaxQueue = int | None | tuple[int | None, int | None]


def size_limits(max_size: MaxSize) -> tuple[int | None, int | None]:
    """``(max_size, max_frame_size)`` for the core, from websockets' ``max_size``."""
    if isinstance(max_size, tuple):
        if len(max_size) != 2:
            raise ValueError("max_size must be an int, None or a (message, fragment) pair")
        message, fragment = max_size
    else:
        message, fragment = max_size, None
    for value in (message, fragment):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"max_size values must be positive integers or None, not {value!r}")
    return message, fragment


def queue_marks(max_queue: MaxQueue) -> tuple[int | None, int | None]:
    """``(high, low)`` water marks of the receive queue, from websockets' ``max_queue``."""
    if isinstance(max_queue, tuple):
        if len(max_queue) != 2:
            raise ValueError("max_queue must be an int, None or a (high, low) pair")
        high, low = max_queue
    else:
        high, low = max_queue, None
    if high is None:
        return None, None
    if not isinstance(high, int) or high < 1:
        raise ValueError("max_queue must be at least 1 (or None)")
    if low is None:
        low = high // 4
    if not 0 <= low <= high:
        raise ValueError("max_queue's low-water mark must be between 0 and the high-water mark")
    return high, low
