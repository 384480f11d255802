"""When a reconnecting client retries, and how long it waits: ``process_exception`` and ``backoff``.

Policy without I/O, shared by the asyncio client's ``async for ws in
connect(...)`` and the threaded client. The defaults are websockets' (a
porter's program behaves the same), and so are the environment variables
that tune the delays (``TETHER_BACKOFF_*`` first, then ``WEBSOCKETS_BACKOFF_*``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Generator

from tether.protocol.exceptions import InvalidMessage, InvalidStatus


def _setting(name: str, default: str) -> float:
    return float(os.environ.get(f"TETHER_{name}", os.environ.get(f"WEBSOCKETS_{name}", default)))


# The first delay is random in [0, BACKOFF_INITIAL_DELAY) so that clients cut
# off together do not come back together (RFC 6455 §7.2.3: "the first
# reconnect attempt SHOULD be delayed by a random amount of time"); then
# BACKOFF_MIN_DELAY, growing by BACKOFF_FACTOR up to BACKOFF_MAX_DELAY.
BACKOFF_INITIAL_DELAY = _setting("BACKOFF_INITIAL_DELAY", "5")
BACKOFF_MIN_DELAY = _setting("BACKOFF_MIN_DELAY", "3.1")
BACKOFF_MAX_DELAY = _setting("BACKOFF_MAX_DELAY", "90.0")
BACKOFF_FACTOR = _setting("BACKOFF_FACTOR", "1.618")

# Statuses from a server or a gateway that say "not now" rather than "no".
RETRYABLE_STATUSES = frozenset({500, 502, 503, 504})


def backoff(
    initial_delay: float = BACKOFF_INITIAL_DELAY,
    min_delay: float = BACKOFF_MIN_DELAY,
    max_delay: float = BACKOFF_MAX_DELAY,
    factor: float = BACKOFF_FACTOR,
) -> Generator[float, None, None]:
    """Yield the seconds to wait before each reconnection attempt, forever.

    A random delay in ``[0, initial_delay)`` (jitter, RFC 6455 §7.2.3), then
    ``min_delay`` multiplied by ``factor`` after each failure, capped at
    ``max_delay``. The reconnecting client starts a new series after each
    connection that opened.
    """
    yield random.random() * initial_delay
    delay = min_delay
    while delay < max_delay:
        yield delay
        delay *= factor
    while True:
        yield max_delay


def process_exception(exc: Exception) -> Exception | None:
    """Decide whether a failed connection attempt is retried: None to retry, an exception to raise.

    Retried, as network trouble that may pass: :class:`OSError` (refused,
    reset, unreachable, a SOCKS proxy that cannot be reached) and
    :class:`TimeoutError`; :class:`InvalidMessage` caused by an
    :class:`EOFError` (the connection ended during the handshake); and
    :class:`InvalidStatus` 500, 502, 503 or 504. Everything else (a 4xx, a
    bad handshake, a refusing proxy, a bad URI) comes back unchanged and is
    raised: the same attempt would fail the same way.

    A ``process_exception`` given to ``connect`` may also return a different
    exception, raised in place of ``exc`` (with ``exc`` as its cause).
    """
    if isinstance(exc, OSError | TimeoutError):
        return None
    if isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError):
        return None
    if isinstance(exc, InvalidStatus) and exc.response.status_code in RETRYABLE_STATUSES:
        return None
    return exc
