"""Translating user-facing options into protocol objects."""

from __future__ import annotations

from typing import Any

from tether.protocol.extensions.defaults import Compression, client_extensions, server_extensions

__all__ = ["Compression", "client_extensions", "server_extensions"]

MaxSize = int | None | tuple[int | None, int | None]
MaxQueue = int | None | tuple[int | None, int | None]
WriteLimit = int | tuple[int, int | None]


def split_max_size(max_size: MaxSize, max_frame_size: int | None) -> tuple[int | None, int | None]:
    """``max_size`` as (message limit, frame limit).

    websockets takes ``max_size=(message, fragment)`` for long messages sent
    in short fragments; tether also has ``max_frame_size=``.
    """
    if isinstance(max_size, tuple):
        if len(max_size) != 2:
            raise ValueError("max_size must be an int, None or a (message, fragment) tuple")
        message, fragment = max_size
        if max_frame_size is not None and fragment is not None:
            fragment = min(fragment, max_frame_size)
        elif fragment is None:
            fragment = max_frame_size
        return message, fragment
    return max_size, max_frame_size


def connection_options(
    *,
    ping_interval: float | None,
    ping_timeout: float | None,
    close_timeout: float | None,
    max_queue: MaxQueue,
    write_limit: WriteLimit,
    offload_threshold: int,
    logger: Any = None,
) -> dict[str, Any]:
    """The per-connection options that server and client share, validated once."""
    high = max_queue[0] if isinstance(max_queue, tuple) else max_queue
    if high is not None and high < 1:
        raise ValueError("max_queue must be at least 1 (or None)")
    if offload_threshold < 1:
        raise ValueError("offload_threshold must be positive")
    return {
        "ping_interval": ping_interval,
        "ping_timeout": ping_timeout,
        "close_timeout": close_timeout,
        "max_queue": max_queue,
        "write_limit": write_limit,
        "offload_threshold": offload_threshold,
        "logger": logger,
    }
