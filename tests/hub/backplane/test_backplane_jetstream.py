"""Hub nodes keeping history in NATS JetStream (``--history nats://…``).

Each test uses a prefix of its own and deletes its stream and buckets after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from backplane_services import require_nats, unique
from hub_support import WireClient, config

from tether.hub import HubServer, Node
from tether.hub.backends import resolve
from tether.hub.history.nats import NatsHistory
from tether.hub.presence.nats import NatsPresence

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


@pytest.fixture
async def jetstream() -> AsyncIterator[dict[str, str]]:
    """Config overrides for nodes with a NATS broker and JetStream history."""
    url = require_nats()
    prefix = unique("js")
    yield {"broker": url, "backplane_prefix": prefix}
    cleaner = NatsHistory(url, prefix=prefix)
    presence = NatsPresence(url, prefix=prefix)
    try:
        await cleaner.destroy()
        await presence.destroy()
    finally:
        await cleaner.close()
        await presence.close()


def test_a_nats_broker_alone_brings_jetstream_history_and_kv_presence() -> None:
    url = "nats://127.0.0.1:4222"
    urls = resolve(config(broker=url))
    assert (urls.broker, urls.history, urls.presence) == (url, url, url)


async def test_node_builds_jetstream_history_from_the_config(jetstream: dict[str, str]) -> None:
    node = Node(config(**jetstream))
    assert isinstance(node.history_store, NatsHistory)
    assert isinstance(node.presence_store, NatsPresence)
    await node.start()
    await node.close()


async def test_a_client_recovers_missed_publications_after_reconnecting(
    start_hub: StartHub, wire: Wire, jetstream: dict[str, str]
) -> None:
    a = await start_hub(config=config(**jetstream))
    b = await start_hub(config=config(**jetstream))
    client = await wire(b.websocket_url)
    subscribed = await client.call("subscribe", {"channel": "room"})
    await a.node.publish("room", "before")
    seen = await client.push("pub")
    assert seen["data"] == "before"
    await client.close()
    await a.node.publish("room", "missed 1")
    await a.node.publish("room", "missed 2")
    # Back through the other node: the history is JetStream's, shared by both.
    again = await wire(a.websocket_url)
    recovered = await again.call(
        "subscribe",
        {
            "channel": "room",
            "recover": True,
            "offset": seen["offset"],
            "epoch": subscribed["epoch"],
        },
    )
    assert recovered["recovered"] is True
    assert [p["data"] for p in recovered["publications"]] == ["missed 1", "missed 2"]
    assert recovered["epoch"] == subscribed["epoch"]
    # A stale epoch cannot recover.
    stale = await wire(b.websocket_url)
    lost = await stale.call(
        "subscribe", {"channel": "room", "recover": True, "offset": 1, "epoch": "gone"}
    )
    assert lost["recovered"] is False
