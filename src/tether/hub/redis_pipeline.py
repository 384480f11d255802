"""Automatic pipelining for a Redis client: one round trip for many callers.

A hot channel makes many small commands (a history script per publication,
a ``PUBLISH``, presence updates) from many sessions at once. Sent one by
one, each waits for its own round trip and takes its own pooled connection,
so a node tops out at a few hundred publications per second whatever the
server could do. A :class:`CommandPipeline` sends the first command at once;
commands made while it is on the wire queue and leave together, as one
pipeline, when it returns (no timer: an idle node adds no latency, a busy
one sends bigger batches). One batch is in flight at a time, so commands
reach Redis in the order they were made: a channel's offsets are assigned,
and its pushes published, in the order the node's sessions asked.

Errors stay per command: a script error fails its caller only. A lost
connection fails what the batch had not been answered yet (each caller sees
it, as it would have alone), or, with ``retries``, sends that part again on
a fresh connection: only for commands that are safe to resend (idempotent
reads and writes, history adds that carry an idempotency key).

A batch is written as one buffer of RESP commands on one pooled connection
and its replies read in order: redis-py's own pipeline object costs more per
command than the round trip it saves on a busy node.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import sys
from typing import TYPE_CHECKING, Any

from tether.hub._redis import is_connection_error

if sys.version_info >= (3, 11):
    from asyncio import timeout
else:  # the same context manager, before it joined asyncio
    from async_timeout import timeout

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

# Commands per pipeline at most: bounds one batch's memory and the wait of
# the commands behind it.
MAX_BATCH = 512


class CommandPipeline:
    """Queue commands while one batch is in flight; send the queue as the next batch."""

    def __init__(
        self, client: aioredis.Redis, *, max_batch: int = MAX_BATCH, retries: int = 0
    ) -> None:
        self.client = client
        self.max_batch = max_batch
        self.retries = retries
        """Times a batch's unanswered commands are sent again after a lost connection."""
        self._queue: collections.deque[tuple[tuple[Any, ...], asyncio.Future[Any]]] = (
            collections.deque()
        )
        self._sender: asyncio.Task[None] | None = None
        self.batches = 0
        """Pipelines sent so far (for tests and benchmarks: commands / batches)."""
        self.commands = 0

    async def call(self, *args: Any) -> Any:
        """Run one command in the next batch; its reply, or its error raised."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, future))
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())
        return await future

    async def script(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        """``EVALSHA`` in the next batch, loading the script when the server lacks it."""
        from redis.exceptions import NoScriptError

        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # A restarted or flushed server: load it once and run this call again.
            script.sha = await self.client.script_load(script.script)
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)

    async def close(self) -> None:
        """Stop sending; queued commands fail with ConnectionError."""
        sender, self._sender = self._sender, None
        queue, self._queue = self._queue, collections.deque()
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        for _, future in queue:
            if not future.done():
                future.set_exception(ConnectionError("redis pipeline closed"))

    async def _send(self) -> None:
        queue = self._queue
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                await self._run(batch)
        finally:
            if self._sender is asyncio.current_task():
                self._sender = None

    async def _run(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        self.batches += 1
        self.commands += len(batch)
        results: list[Any] = []
        attempts = 1 + self.retries
        while len(results) < len(batch):
            attempts -= 1
            try:
                await self._exchange([args for args, _ in batch[len(results) :]], results)
            except Exception as exc:
                # A lost connection: the commands not answered yet may be sent
                # again (only to a client whose commands are safe to resend).
                if attempts > 0 and is_connection_error(exc):
                    continue
                results += [exc] * (len(batch) - len(results))
            except BaseException:  # cancelled (closing): nobody may wait forever
                for _, future in batch:
                    if not future.done():
                        future.set_exception(ConnectionError("redis pipeline closed"))
                raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue  # its caller gave up; the command ran anyway
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _exchange(self, commands: list[tuple[Any, ...]], results: list[Any]) -> None:
        """Write ``commands`` in one go on one pooled connection; append their replies.

        A reply that is an error (a script's, NOSCRIPT) is appended as the
        exception: the connection stays in step and the next reply is read.
        """
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        client = self.client
        callbacks = client.response_callbacks
        pool = client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            # One deadline for the batch, not a timer per reply (redis-py's own).
            async with timeout(conn.socket_timeout or None):
                await conn.send_packed_command(b"".join(map(pack, commands)), check_health=False)
                for args in commands:
                    try:
                        reply = await conn.read_response(timeout=math.inf)
                    except ResponseError as exc:
                        results.append(exc)
                        continue
                    callback = callbacks.get(args[0])
                    results.append(reply if callback is None else callback(reply))
        except BaseException as exc:
            await conn.disconnect()  # in an unknown state: never reused
            if isinstance(exc, asyncio.TimeoutError):
                raise RedisTimeoutError("redis: no reply within the socket timeout") from None
            raise
        finally:
            await pool.release(conn)


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP (what redis-py's packer makes, without its per-argument cost)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)
