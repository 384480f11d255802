"""Automatic pipelining of Redis commands: batches, order, errors kept per command."""

from __future__ import annotations

import asyncio

import pytest
from backplane_services import delete_prefix, require_redis, unique

from tether.hub._redis import make_client
from tether.hub.redis_pipeline import CommandPipeline


@pytest.fixture
async def pipeline() -> object:
    url, prefix = require_redis(), unique("pipe")
    client = make_client(url)
    pipeline = CommandPipeline(client, max_batch=100)
    yield pipeline, prefix
    await pipeline.close()
    await client.aclose()
    await delete_prefix(url, prefix)


async def test_calls_made_together_share_round_trips_in_the_order_they_were_made(
    pipeline: tuple[CommandPipeline, str],
) -> None:
    pipe, prefix = pipeline
    key = prefix + ":list"
    lengths = await asyncio.gather(*(pipe.call("RPUSH", key, i) for i in range(300)))
    # RPUSH returns the new length: each call saw exactly the calls before it.
    assert lengths == list(range(1, 301))
    assert [int(v) for v in await pipe.call("LRANGE", key, 0, -1)] == list(range(300))
    # The first call left alone, the rest in batches of at most 100.
    assert pipe.commands == 301 and 4 <= pipe.batches <= 10


async def test_an_error_fails_its_own_call_only(pipeline: tuple[CommandPipeline, str]) -> None:
    from redis.exceptions import ResponseError

    pipe, prefix = pipeline
    key = prefix + ":s"
    results = await asyncio.gather(
        pipe.call("SET", key, "x"),
        pipe.call("INCR", key),  # not an integer
        pipe.call("GET", key),
        return_exceptions=True,
    )
    assert results[0] is True and results[2] == b"x"
    assert isinstance(results[1], ResponseError)


async def test_scripts_are_loaded_again_when_the_server_lost_them(
    pipeline: tuple[CommandPipeline, str],
) -> None:
    pipe, prefix = pipeline
    script = pipe.client.register_script("return KEYS[1] .. ARGV[1] .. '" + prefix + "'")
    script.sha = "0" * 40  # as after a server restart: NOSCRIPT
    assert await pipe.script(script, ["k"], ["v"]) == ("kv" + prefix).encode()


async def test_close_fails_what_is_queued_instead_of_leaving_it_waiting(
    pipeline: tuple[CommandPipeline, str],
) -> None:
    pipe, _ = pipeline
    calls = [asyncio.ensure_future(pipe.call("PING")) for _ in range(5)]
    await asyncio.sleep(0)  # the first batch is on its way
    await pipe.close()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(r is True or r == b"PONG" or isinstance(r, ConnectionError) for r in results)
    assert any(isinstance(r, ConnectionError) for r in results)
