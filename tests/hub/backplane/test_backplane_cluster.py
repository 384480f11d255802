"""Three ``tether serve`` processes sharing a backplane, with Python hub clients spread over them.

Run twice: Redis for everything, and NATS as the broker with Redis history
and presence.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from backplane_services import (
    API_KEY,
    CHANNEL,
    GUARD,
    HubProcess,
    Peer,
    delete_prefix,
    free_port,
    require_nats,
    require_redis,
    start_cluster,
    unique,
    write_config,
)
from hub_support import api_headers, http

from tether.hub import ClientState


@pytest.fixture(params=["redis", "nats+redis"])
async def cluster(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[list[HubProcess]]:
    redis_url = require_redis()
    if request.param == "redis":
        args = ["--broker", redis_url]
    else:
        args = ["--broker", require_nats(), "--history", redis_url, "--presence", redis_url]
    prefix = unique("cluster")
    hubs = await start_cluster(3, args, write_config(tmp_path / "hub.toml", prefix))
    yield hubs
    await asyncio.gather(*(hub.stop() for hub in hubs))
    await delete_prefix(redis_url, prefix + ":")


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    await asyncio.gather(*(asyncio.wait_for(p.client.close(), GUARD) for p in made))


async def test_clients_on_three_nodes_exchange_messages_and_see_one_presence(
    cluster: list[HubProcess], peers: list[Peer]
) -> None:
    for i, hub in enumerate(cluster):
        peers.append(await Peer(hub.ws_url, f"user{i}").start())
    for i, peer in enumerate(peers):
        ack = await peer.client.publish(CHANNEL, {"from": i})
        assert ack["offset"] == i + 1
    for peer in peers:
        got = [await peer.next_pub() for _ in range(3)]
        assert [p.data for p in got] == [{"from": 0}, {"from": 1}, {"from": 2}]
        assert [p.offset for p in got] == [1, 2, 3]
        assert got[0].info is not None and got[0].info.client == peers[0].id
    everyone = {p.id for p in peers}
    for peer in peers:
        assert set(await peer.client.presence(CHANNEL)) == everyone
        assert await peer.client.presence_stats(CHANNEL) == {"num_clients": 3, "num_users": 1}
    # The backend's publish through any node reaches every node's clients.
    status, _, body = await http(
        cluster[1].port,
        "POST",
        "/api/publish",
        {"channel": CHANNEL, "data": "from the backend"},
        headers=api_headers(API_KEY),
    )
    assert status == 200, body
    for peer in peers:
        event = await peer.next_pub()
        assert (event.data, event.offset) == ("from the backend", 4)


async def test_a_client_moved_to_another_node_recovers_what_it_missed(
    cluster: list[HubProcess], peers: list[Peer]
) -> None:
    mover = await Peer(cluster[0].ws_url, "mover").start()
    publisher = await Peer(cluster[1].ws_url, "publisher").start()
    peers += [mover, publisher]
    for i in range(2):
        await publisher.client.publish(CHANNEL, i)
    assert [(await mover.next_pub()).data for _ in range(2)] == [0, 1]
    # Its node goes away (1012) while nothing listens where it reconnects first.
    mover.client.url = f"ws://127.0.0.1:{free_port()}/connection/websocket"
    await cluster[0].stop()
    await mover.state(ClientState.DISCONNECTED)
    for i in range(2, 5):
        await publisher.client.publish(CHANNEL, i)
    mover.client.url = cluster[2].ws_url  # the load balancer's next pick
    event = await mover.next_subscribed()
    assert event.resubscribed and event.recovered
    assert [(await mover.next_pub()).data for _ in range(3)] == [2, 3, 4]
    await publisher.client.publish(CHANNEL, 5)
    pub = await mover.next_pub()
    assert (pub.data, pub.offset) == (5, 6)
    assert mover.pubs.empty()
