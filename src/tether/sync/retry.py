"""When to retry a failed connection, and how long to wait: the policy of ``reconnect``.

:func:`process_exception` says whether an error may be transient (retry
after the next delay of :func:`backoff`) or fatal (raise it), as websockets'
functions of the same names do for ``websockets.sync.client.reconnect``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from tether.protocol.exceptions import InvalidHandshake, InvalidStatus

__all__ = ["backoff", "process_exception"]

# HTTP statuses that say "try again later": a server or proxy error.
_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})


def process_exception(exc: Exception) -> Exception | None:
    """``None`` if reconnecting may help (network errors, 500/502/503/504), else ``exc``.

    Transient: OSError (refused, reset, unreachable), TimeoutError, an
    upgrade cut short by EOF, and the HTTP statuses above. Everything else
    (a 4xx refusal, a bad URI, a failed negotiation) would fail the same way
    again and is raised.
    """
    if isinstance(exc, OSError | TimeoutError):
        return None
    if isinstance(exc, InvalidStatus):
        return None if exc.response.status_code in _TRANSIENT_STATUSES else exc
    if isinstance(exc, InvalidHandshake) and isinstance(exc.__cause__, EOFError):
        return None
    return exc


def backoff(
    initial_delay: float = 5.0,
    min_delay: float = 3.1,
    max_delay: float = 90.0,
    factor: float = 1.618,
) -> Iterator[float]:
    """Delays between attempts: first a random one up to ``initial_delay`` (so that
    many clients cut off at once do not come back at once), then from
    ``min_delay`` growing by ``factor`` up to ``max_delay``."""
    yield random.uniform(0, initial_delay)
    delay = min_delay
    while True:
        yield delay
        delay = min(delay * factor, max_delay)
