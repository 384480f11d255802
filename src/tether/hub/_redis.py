"""What the Redis backends share: the optional import, clients, key names, errors.

Install with ``pip install 'tether[redis]'`` (redis-py 5 or newer).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from tether.hub.brokers.base import BrokerUnavailable

if TYPE_CHECKING:
    import redis.asyncio as aioredis

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "tether:"


def redis_module() -> Any:
    """``redis.asyncio``, or a clear error naming the extra to install."""
    try:
        import redis.asyncio
    except ImportError:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the Redis backends need redis-py: pip install 'tether[redis]'"
        ) from None
    return redis.asyncio


def make_client(url: str, *, timeout: float = 5.0, retries: int = 0) -> aioredis.Redis:
    """A command client that fails fast.

    ``retries`` (immediate, on a connection error) suits idempotent commands:
    after a Redis restart the pool's idle connections are dead, and a retry
    takes a fresh one instead of failing the caller.
    """
    redis_module()
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        retry=Retry(NoBackoff(), retries),
        # Not timeouts: a slow server is not helped by a second request.
        retry_on_error=[RedisConnectionError] if retries else [],
        retry_on_timeout=False,
        health_check_interval=30,
    )
    return client


def server_of(client: aioredis.Redis) -> tuple[object, ...]:
    """What identifies the server and database a client talks to."""
    kwargs = client.connection_pool.connection_kwargs
    return (
        kwargs.get("path") or kwargs.get("host"),
        kwargs.get("port"),
        kwargs.get("db", 0),
    )


def channel_key(prefix: str, channel: str, suffix: str) -> str:
    """``prefix{channel}:suffix``: one hash slot per channel (Redis Cluster).

    Suffixes never contain ``}``, so the last ``}:`` ends the channel and two
    channels' keys cannot collide whatever their names hold.
    """
    return f"{prefix}{{{channel}}}:{suffix}"


def is_connection_error(exc: BaseException) -> bool:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)


@contextlib.asynccontextmanager
async def unavailable_on_error(what: str) -> AsyncIterator[None]:
    """Turn a lost or refused connection into :class:`BrokerUnavailable` (error 112)."""
    try:
        yield
    except Exception as exc:
        if is_connection_error(exc):
            raise BrokerUnavailable(f"redis {what} unavailable: {exc}") from exc
        raise
