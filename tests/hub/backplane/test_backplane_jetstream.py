"""Hub nodes keeping history in NATS JetStream (``--history nats://…``).

Each test uses a prefix of its own and deletes its stream and buckets after.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from backplane_services import GUARD, free_port, require_nats, unique
from hub_support import WireClient, config

from tether.hub import BrokerUnavailable, HubServer, Node, Publication, StreamPosition
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


@pytest.fixture
async def histories() -> AsyncIterator[list[NatsHistory]]:
    """Three nodes' JetStream histories on one prefix of this test's own."""
    url = require_nats()
    prefix = unique("js")
    made = [NatsHistory(url, prefix=prefix) for _ in range(3)]
    yield made
    try:
        await made[0].destroy()
    finally:
        for history in made:
            await history.close()


async def test_nodes_racing_for_offsets_leave_no_hole_and_no_repeat(
    histories: list[NatsHistory],
) -> None:
    # A new channel: the nodes agree on one epoch (one marker wins the race).
    epochs = await asyncio.gather(*(h.position("race") for h in histories))
    assert len({p.epoch for p in epochs}) == 1 and {p.offset for p in epochs} == {0}

    async def adds(history: NatsHistory, node: int) -> list[int]:
        offsets = []
        for i in range(15):
            added = await history.add("race", Publication([node, i]), size=100, ttl=60)
            offsets.append(added.position.offset)
        return offsets

    results = await asyncio.gather(*(adds(h, n) for n, h in enumerate(histories)))
    assert sorted(o for r in results for o in r) == list(range(1, 46))
    pubs, position = await histories[1].read("race", limit=100)
    assert [p.offset for p in pubs] == list(range(1, 46))
    assert position == StreamPosition(45, epochs[0].epoch)
    by_offset = {o: n for n, r in enumerate(results) for o in r}
    # Each offset holds what the node that got it published.
    assert all(isinstance(p.data, list) and by_offset[p.offset] == p.data[0] for p in pubs)


async def test_a_key_is_honoured_even_if_its_node_died_before_recording_it(
    histories: list[NatsHistory],
) -> None:
    first, other = histories[0], histories[1]
    added = await first.add("ch", Publication("once"), size=10, ttl=60, idempotency_key="k")
    # As if the node died between storing the publication and writing the key's
    # entry: the retry, through another node, finds it through JetStream's
    # duplicate window (Nats-Msg-Id) and gets the original position.
    assert first._idem is not None
    if first._recording:  # the key's entry is written after the ack: let it land first
        await asyncio.wait(list(first._recording))
    await first._idem.purge(f"c{b'ch'.hex()}.k{b'k'.hex()}")
    retry = await other.add("ch", Publication("once"), size=10, ttl=60, idempotency_key="k")
    assert retry.duplicate and retry.position == added.position
    pubs, _ = await other.read("ch", limit=10)
    assert [p.data for p in pubs] == ["once"]


async def test_trimming_and_expiry_keep_reads_exact(histories: list[NatsHistory]) -> None:
    history = histories[0]
    for i in range(12):
        await history.add("ch", Publication(i), size=4, ttl=60)
    pubs, position = await history.read("ch", limit=10)
    assert [p.data for p in pubs] == [8, 9, 10, 11] and position.offset == 12
    recovery = await histories[2].since("ch", StreamPosition(9, position.epoch), limit=10)
    assert recovery.recovered and [p.data for p in recovery.publications] == [9, 10, 11]
    gone = await histories[2].since("ch", StreamPosition(2, position.epoch), limit=100)
    assert not gone.recovered


async def test_a_lost_stream_is_made_again_with_a_new_epoch(histories: list[NatsHistory]) -> None:
    """A NATS server that lost its store: one refused call (112), then a new epoch."""
    history, other = histories[0], histories[1]
    old = (await history.add("ch", Publication(1), size=10, ttl=60)).position
    await other.destroy()  # the stream and bucket are gone, as with a lost store
    with pytest.raises(BrokerUnavailable, match="stream was missing"):
        await history.add("ch", Publication(2), size=10, ttl=60)
    again = (await history.add("ch", Publication(3), size=10, ttl=60)).position
    assert again.epoch != old.epoch and again.offset == 1
    pubs, _ = await other.read("ch", limit=10)
    assert [p.data for p in pubs] == [3]


async def test_a_stream_jetstream_refuses_is_a_clear_error_at_start() -> None:
    """Another stream already takes the history's subjects: said at start, not at a publish."""
    import nats

    url, prefix = require_nats(), unique("js")
    nc = await nats.connect(url)
    js = nc.jetstream()
    squatter = unique("squatter")
    await js.add_stream(name=squatter, subjects=[f"{prefix}.h.>"])
    history = NatsHistory(url, prefix=prefix)
    try:
        with pytest.raises(BrokerUnavailable, match=f"cannot make the stream {prefix}_history"):
            await history.start()
    finally:
        await history.close()
        await js.delete_stream(squatter)
        await nc.close()


async def test_a_nats_server_that_is_down_fails_calls_instead_of_hanging() -> None:
    """nats-py would retry a first connect forever (max_reconnect_attempts=-1): bounded."""
    require_nats()
    down = f"nats://127.0.0.1:{free_port()}"
    history = NatsHistory(down, prefix=unique("js"), timeout=1.0)
    presence = NatsPresence(down, prefix=unique("js"), timeout=1.0)
    try:
        with pytest.raises(BrokerUnavailable, match="nats history unavailable"):
            await asyncio.wait_for(history.position("ch"), GUARD)
        with pytest.raises(BrokerUnavailable, match="nats presence unavailable"):
            await asyncio.wait_for(presence.get("ch"), GUARD)
    finally:
        await history.close()
        await presence.close()


async def test_the_key_bucket_keeps_keys_as_long_as_the_longest_history_ttl(
    histories: list[NatsHistory],
) -> None:
    history = histories[0]
    await history.add("ch", Publication(1), size=10, ttl=60, idempotency_key="short")
    stream = f"KV_{history.idem_bucket}"
    assert (await history._js.stream_info(stream)).config.max_age == 600  # not a day
    await history.add("ch", Publication(2), size=10, ttl=1200, idempotency_key="long")
    while history._recording:  # the key is recorded after the ack
        await asyncio.wait(list(history._recording))
    assert (await history._js.stream_info(stream)).config.max_age == 1200
    await history._idem.get(f"c{b'ch'.hex()}.k{b'long'.hex()}")  # it is there


async def test_a_key_bucket_made_by_an_older_tether_is_used_as_it_is() -> None:
    import nats

    url, prefix = require_nats(), unique("js")
    nc = await nats.connect(url)
    history = NatsHistory(url, prefix=prefix)
    try:
        await nc.jetstream().create_key_value(bucket=history.idem_bucket, history=1, ttl=86400)
        await history.start()
        added = await history.add("ch", Publication(1), size=10, ttl=60, idempotency_key="k")
        again = await history.add("ch", Publication(1), size=10, ttl=60, idempotency_key="k")
        assert again.duplicate and again.position == added.position
    finally:
        await history.destroy()
        await history.close()
        await nc.close()
