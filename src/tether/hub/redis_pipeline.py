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
connection fails the whole batch (each caller sees it, as it would have
alone). Commands are not retried here; the client's own retry policy
applies to the batch, so give a pipeline only to a client whose commands
are safe to resend (idempotent, or without retries).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

# Commands per pipeline at most: bounds one batch's memory and the wait of
# the commands behind it.
MAX_BATCH = 512


class CommandPipeline:
    """Queue commands while one batch is in flight; send the queue as the next batch."""

    def __init__(self, client: aioredis.Redis, *, max_batch: int = MAX_BATCH) -> None:
        self.client = client
        self.max_batch = max_batch
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
        try:
            if len(batch) == 1:
                command = self.client.execute_command(*batch[0][0])  # type: ignore[no-untyped-call]
                results: list[Any] = [await command]
            else:
                async with self.client.pipeline(transaction=False) as pipe:
                    for args, _ in batch:
                        pipe.execute_command(*args)
                    results = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            results = [exc] * len(batch)
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
