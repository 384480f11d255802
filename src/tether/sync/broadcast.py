"""``broadcast(connections, message)``: one message to many sync connections.

As websockets' sync ``broadcast``: the writes run in a thread pool
(:class:`concurrent.futures.ThreadPoolExecutor`, configured by extra keyword
arguments such as ``max_workers``), so a stuck connection holds one worker,
not the others. Connections that are not open are skipped; failures are
logged, or raised together with ``raise_exceptions=True``. Fragmented
messages are not supported (each connection would need its own iterator).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterable
from typing import Any

from tether.protocol.connection import State
from tether.sync.connection import Connection, DataLike

__all__ = ["broadcast"]

logger = logging.getLogger("tether.server")


def broadcast(
    connections: Iterable[Connection],
    message: DataLike,
    *,
    raise_exceptions: bool = False,
    text: bool | None = None,
    **kwargs: Any,
) -> None:
    """Send ``message`` to every open connection of ``connections``.

    ``text`` as in :meth:`Connection.send`. With ``raise_exceptions`` the
    errors are raised at the end, as one ExceptionGroup (Python 3.11+; on
    3.10 the first error); otherwise they are logged.
    """
    if not isinstance(message, str | bytes | bytearray | memoryview):
        raise TypeError(f"cannot broadcast {type(message).__name__}")
    targets = [conn for conn in connections if conn.state is State.OPEN]
    if not targets:
        return
    errors: list[Exception] = []
    with concurrent.futures.ThreadPoolExecutor(**kwargs) as pool:
        futures = {pool.submit(conn.send, message, text=text): conn for conn in targets}
        for future in concurrent.futures.as_completed(futures):
            exc = future.exception()
            if exc is None:
                continue
            if not isinstance(exc, Exception):  # pragma: no cover - KeyboardInterrupt & co
                raise exc
            if raise_exceptions:
                errors.append(exc)
            else:
                logger.warning("skipped broadcast to %s: %s", futures[future].remote_address, exc)
    if errors:
        _raise_group(errors)


def _raise_group(errors: list[Exception]) -> None:
    try:
        group_type = ExceptionGroup  # type: ignore[name-defined,unused-ignore]
    except NameError:  # Python 3.10: no ExceptionGroup
        raise errors[0] from None
    raise group_type("skipped broadcast", errors)
