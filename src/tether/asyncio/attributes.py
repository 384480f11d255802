"""Every attribute of an asyncio connection, declared once, as slots.

:class:`~tether.asyncio.connection.Connection` is put together from one
module per concern (corking, writing, offload, messages, sending,
keepalive, closing); each of those classes derives from
:class:`ConnectionAttributes` and holds no state of its own. Declaring the
state here, in one place, keeps it in slots (an idle connection stays
small: thousands of them per process) and lets each concern's module see
the types of what the others keep.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.protocol.connection import Connection as CoreConnection
from tether.protocol.events import Fragment
from tether.protocol.handshake import Request, Response

if TYPE_CHECKING:
    from tether.asyncio._receiver import Receiver
    from tether.asyncio.listener import Listener

Data = str | bytes


class ConnectionAttributes(asyncio.BufferedProtocol):
    """The state of one connection; see each attribute's user for what it means."""

    # Subclasses (ServerConnection, ClientConnection) add a __dict__, so users
    # can still attach their own attributes. get_buffer and buffer_updated, the
    # BufferedProtocol callbacks, are slots holding the Receiver's own
    # (native) methods: no Python frame per read.
    __slots__ = (
        "_backlog",
        "_busy",
        "_close_handle",
        "_closed_waiter",
        "_drain_waiters",
        "_dropping",
        "_fast_rx",
        "_fast_tx",
        "_half_closed",
        "_held_frames",
        "_id",
        "_keepalive_handle",
        "_listener",
        "_logger",
        "_logger_adapter",
        "_lost",
        "_lost_exc",
        "_pings",
        "_queue",
        "_queue_low",
        "_reading_paused",
        "_recv_parts",
        "_recv_waiter",
        "_rx",
        "_rx_deliver",
        "_writing_paused",
        "buffer_updated",
        "close_timeout",
        "get_buffer",
        "latency",
        "loop",
        "max_queue",
        "offload_threshold",
        "ping_interval",
        "ping_timeout",
        "protocol",
        "request",
        "response",
        "transport",
        "write_limit",
    )

    # Options (see tether.asyncio.options) and the objects around the connection.
    loop: asyncio.AbstractEventLoop
    protocol: CoreConnection
    transport: asyncio.Transport | None
    request: Request | None
    response: Response | None
    ping_interval: float | None
    ping_timeout: float | None
    close_timeout: float | None
    max_queue: int | None
    write_limit: tuple[int, int]
    offload_threshold: int
    latency: float
    # ws.id and ws.logger (connection.py), made on first use.
    _id: uuid.UUID | None
    _logger: logging.Logger | logging.LoggerAdapter[Any]
    _logger_adapter: logging.LoggerAdapter[Any] | None
    # Reading (connection.py) and the fast read path.
    _rx: Receiver
    _rx_deliver: Callable[[Any, Any], object] | None
    _fast_rx: bool
    _listener: Listener | None
    _lost: bool
    _lost_exc: BaseException | None
    # Messages (messages.py).
    _queue: collections.deque[Data | Fragment]
    _queue_low: int
    _recv_waiter: asyncio.Future[None] | None
    _recv_parts: list[Any]
    _reading_paused: bool
    _dropping: bool
    # Worker-thread offload (offload.py).
    _busy: asyncio.Future[None] | None
    _backlog: list[bytes]
    # Writing and corking (writing.py, cork.py), sending (sending.py).
    _writing_paused: bool
    _drain_waiters: list[asyncio.Future[None]]
    _half_closed: bool
    _held_frames: list[bytes] | None
    _fast_tx: bool
    # Keepalive (keepalive.py) and closing (closing.py).
    _pings: dict[bytes, tuple[asyncio.Future[float], float]]
    _keepalive_handle: asyncio.TimerHandle | None
    _close_handle: asyncio.TimerHandle | None
    _closed_waiter: asyncio.Future[None]
