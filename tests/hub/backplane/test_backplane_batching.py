"""A hot channel across nodes: publications go to the backplane in batches, in order.

With Redis for everything, the history scripts (which also publish) of the
publications a node makes at once share round trips; with NATS + Redis
history, the adds of a channel's waiting publications share round trips,
then their publishes follow in offset order. Either way offsets are
contiguous and every node sees the channel in one order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hub_support import GUARD, WireClient, config

from tether.hub import HubServer
from tether.hub.history.redis import RedisHistory

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]
PUBLICATIONS = 300


async def test_a_burst_into_one_channel_is_batched_contiguous_and_in_one_order_everywhere(
    backplane: dict[str, str], start_hub: StartHub, wire: Wire
) -> None:
    a, b = [await start_hub(config=config(**backplane)) for _ in range(2)]
    watchers = [await wire(hub.websocket_url) for hub in (a, b)]
    for watcher in watchers:
        await watcher.call("subscribe", {"channel": "hot"})
    history = a.node.history_store
    assert isinstance(history, RedisHistory)
    batches_before = history.pipeline.batches
    results = await asyncio.wait_for(
        asyncio.gather(*(a.node.publish("hot", i) for i in range(PUBLICATIONS))), GUARD
    )
    offsets = [r.position.offset for r in results if r.position is not None]
    # Offsets in the order the publications were made, without a hole.
    assert offsets == list(range(offsets[0], offsets[0] + PUBLICATIONS))
    # Far fewer round trips than publications.
    assert history.pipeline.batches - batches_before < PUBLICATIONS / 4
    for watcher in watchers:
        pushed = [(await watcher.push("pub")) for _ in range(PUBLICATIONS)]
        assert [p["offset"] for p in pushed] == offsets
        assert [p["data"] for p in pushed] == list(range(PUBLICATIONS))
