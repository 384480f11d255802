"""What the Redis backends share: the optional import, clients, key names, errors.

Install with ``pip install 'tether[redis]'`` (redis-py 5 or newer).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.errors import ErrorCode, HubError

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


DEFAULT_POOL_SIZE = 32
"""Connections per client (a node has up to three: broker, history, presence)."""
DEFAULT_POOL_TIMEOUT = 10.0
"""Seconds a command waits for a free pooled connection before error 116."""


class PoolExhausted(Exception):
    """Every pooled connection stayed busy for the pool timeout: overload, not an outage."""


def pool_options(url: str) -> tuple[str, int, float]:
    """``url`` without the hub's pool options, and their values (or the defaults).

    ``?pool_size=N&pool_timeout=S`` size the pool of each Redis client of a
    node (``tether serve --broker 'redis://host/0?pool_size=500'``).
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    size, wait = DEFAULT_POOL_SIZE, DEFAULT_POOL_TIMEOUT
    rest = []
    for name, value in query:
        try:
            if name == "pool_size":
                size = int(value)
            elif name == "pool_timeout":
                wait = float(value)
            else:
                rest.append((name, value))
        except ValueError:
            raise ValueError(f"invalid {name} {value!r} in the Redis URL") from None
    if size < 1 or not wait > 0:
        raise ValueError("pool_size must be at least 1 and pool_timeout above 0")
    return urlunsplit(parts._replace(query=urlencode(rest))), size, wait


def make_client(url: str, *, timeout: float = 5.0, retries: int = 0) -> aioredis.Redis:
    """A command client that fails fast, over a bounded pool that waits.

    redis-py's default asyncio pool fails at once when its 100 connections
    are busy: a burst of 300 publishes then got "backplane unavailable"
    while the backplane was fine. This pool holds ``pool_size`` connections
    (default 32: Redis runs commands one at a time, more
    connections add connect cost, not throughput) and a command waits up to ``pool_timeout`` seconds
    (default 10) for one; only then does it fail, with :class:`PoolExhausted`
    (error 116 "overloaded", a temporary error), never 112.

    ``retries`` (immediate, on a connection error) suits idempotent commands:
    after a Redis restart the pool's idle connections are dead, and a retry
    takes a fresh one instead of failing the caller.
    """
    redis_module()
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    url, size, wait = pool_options(url)
    pool = _bounded_pool_class().from_url(
        url,
        max_connections=size,
        timeout=wait,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        retry=Retry(NoBackoff(), retries),
        # Not timeouts: a slow server is not helped by a second request.
        retry_on_error=[RedisConnectionError] if retries else [],
        retry_on_timeout=False,
        health_check_interval=30,
    )
    client: redis.asyncio.Redis = redis.asyncio.Redis(connection_pool=pool)
    # The client owns its pool: closing the client closes the pool.
    client.auto_close_connection_pool = True
    return client


_pool_class: type[Any] | None = None


def _bounded_pool_class() -> type[Any]:
    """redis-py's BlockingConnectionPool, whose wait timeout raises :class:`PoolExhausted`."""
    global _pool_class
    if _pool_class is None:
        from redis.asyncio import BlockingConnectionPool
        from redis.exceptions import ConnectionError as RedisConnectionError

        class BoundedPool(BlockingConnectionPool):
            async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
                try:
                    return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
                except RedisConnectionError as exc:
                    # redis-py's words for "waited the pool timeout for a connection".
                    if "No connection available" in str(exc):
                        raise PoolExhausted(
                            f"all {self.max_connections} Redis connections busy "
                            f"for {self.timeout} s"
                        ) from exc
                    raise

        _pool_class = BoundedPool
    return _pool_class


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
    """Turn a lost or refused connection into :class:`BrokerUnavailable` (error 112),
    and a pool that stayed busy into error 116 (overloaded)."""
    try:
        yield
    except PoolExhausted as exc:
        raise HubError(ErrorCode.OVERLOADED, f"redis {what} overloaded: {exc}") from exc
    except Exception as exc:
        if is_connection_error(exc):
            raise BrokerUnavailable(f"redis {what} unavailable: {exc}") from exc
        raise
