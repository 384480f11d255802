"""Three ``tether serve`` nodes on NATS alone: ``--broker nats://…`` and nothing else.

History goes to JetStream and presence to a KeyValue bucket, so the nodes
agree on both. Each test starts its own ``nats-server -js`` on a free port,
with its store in the test's temporary directory, and restarts it when it
needs to.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from backplane_services import (
    API_KEY,
    CHANNEL,
    GUARD,
    ROOT,
    HubProcess,
    Peer,
    PrivateNats,
    eventually,
    free_port,
    require_nats_server,
    start_cluster,
    unique,
    write_config,
)
from hub_support import api_headers, http

from tether.hub import ClientState, HubClientError
from tether.hub.client import PublicationEvent
from tether.hub.model import StreamPosition

# What spans the nats-server's restart (GUARD: for the rest).
OUTAGE_GUARD = 2 * GUARD
PRESENCE_TTL = 3.0  # as the other cluster tests: a loaded machine may stall a node a second


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[PrivateNats]:
    server = PrivateNats(require_nats_server(), tmp_path / "jetstream")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def cluster(nats_server: PrivateNats, tmp_path: Path) -> AsyncIterator[list[HubProcess]]:
    config = write_config(tmp_path / "hub.toml", unique("natsonly"), presence_ttl=PRESENCE_TTL)
    hubs = await start_cluster(3, ["--broker", nats_server.url], config)
    yield hubs
    await asyncio.gather(*(hub.stop() for hub in hubs))


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    await asyncio.gather(*(asyncio.wait_for(p.client.close(), GUARD) for p in made))


async def api(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, _, raw = await http(port, "POST", path, body, headers=api_headers(API_KEY))
    assert status == 200, raw
    result = json.loads(raw)
    assert isinstance(result, dict)
    return result


async def test_three_nodes_share_history_and_presence(
    cluster: list[HubProcess], peers: list[Peer]
) -> None:
    assert all("history   : shared on nats" in hub.log() for hub in cluster)
    for i, hub in enumerate(cluster):
        peers.append(await Peer(hub.ws_url, f"user{i}").start())
    for i, peer in enumerate(peers):
        ack = await peer.client.publish(CHANNEL, {"from": i})
        assert ack["offset"] == i + 1
    for peer in peers:
        got = [await peer.next_pub() for _ in range(3)]
        assert [(p.data, p.offset) for p in got] == [({"from": i}, i + 1) for i in range(3)]
    everyone = {p.id for p in peers}
    histories = [await api(hub.port, "/api/history", {"channel": CHANNEL}) for hub in cluster]
    assert all(h == histories[0] for h in histories)  # one history, the same epoch everywhere
    assert [p["data"] for p in histories[0]["publications"]] == [{"from": i} for i in range(3)]
    for hub, peer in zip(cluster, peers, strict=True):
        assert set(await peer.client.presence(CHANNEL)) == everyone
        stats = await api(hub.port, "/api/presence_stats", {"channel": CHANNEL})
        assert stats == {"num_clients": 3, "num_users": 1}
    await peers[2].client.unsubscribe(CHANNEL)
    for peer in peers[:2]:
        assert set(await peer.client.presence(CHANNEL)) == everyone - {peers[2].id}


async def test_publishes_through_every_node_at_once_get_contiguous_offsets(
    cluster: list[HubProcess], peers: list[Peer]
) -> None:
    """Three nodes race for one channel's offsets: no hole, no repeat, one order everywhere."""
    listeners = [await Peer(hub.ws_url, f"l{i}").start() for i, hub in enumerate(cluster)]
    peers += listeners
    per_node = 30

    async def publish_from(hub: HubProcess, n: int) -> list[int]:
        offsets = []
        for i in range(n):
            result = await api(hub.port, "/api/publish", {"channel": CHANNEL, "data": i})
            offsets.append(int(result["offset"]))
        return offsets

    results = await asyncio.gather(*(publish_from(hub, per_node) for hub in cluster))
    total = 3 * per_node
    assert sorted(o for offsets in results for o in offsets) == list(range(1, total + 1))
    for offsets in results:  # each node's own publishes in the order it made them
        assert offsets == sorted(offsets)
    for listener in listeners:
        got = [await listener.next_pub() for _ in range(total)]
        assert [p.offset for p in got] == list(range(1, total + 1))
    history = await api(cluster[0].port, "/api/history", {"channel": CHANNEL})
    assert [p["offset"] for p in history["publications"]] == list(range(1, total + 1))


async def test_a_client_moving_to_another_node_recovers_what_it_missed(
    cluster: list[HubProcess], peers: list[Peer]
) -> None:
    mover = await Peer(cluster[0].ws_url, "mover").start()
    publisher = await Peer(cluster[1].ws_url, "publisher").start()
    peers += [mover, publisher]
    for i in range(2):
        await publisher.client.publish(CHANNEL, i)
    assert [(await mover.next_pub()).data for _ in range(2)] == [0, 1]
    # Its node goes away while nothing listens where it reconnects first.
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


async def test_a_sigkilled_node_clients_recover_elsewhere_and_its_presence_expires(
    cluster: list[HubProcess], peers: list[Peer]
) -> None:
    watcher = await Peer(cluster[0].ws_url, "watcher").start()
    victim = await Peer(cluster[2].ws_url, "victim").start()
    peers += [watcher, victim]
    old_id = victim.id
    assert set(await watcher.client.presence(CHANNEL)) == {watcher.id, old_id}
    await watcher.client.publish(CHANNEL, "before")
    await victim.next_pub()
    victim.client.url = cluster[1].ws_url
    cluster[2].kill()  # no goodbye: its presence entries stay until they expire
    killed_at = time.monotonic()
    await watcher.client.publish(CHANNEL, "meanwhile")
    event = await victim.next_subscribed()
    assert event.resubscribed and event.recovered
    assert (await victim.next_pub()).data == "meanwhile"

    async def ghost_gone() -> bool:
        return old_id not in await watcher.client.presence(CHANNEL)

    await eventually(ghost_gone, timeout=PRESENCE_TTL + GUARD, what="the killed node's client")
    assert time.monotonic() - killed_at <= PRESENCE_TTL + 1.5
    assert set(await watcher.client.presence(CHANNEL)) == {watcher.id, victim.id}


async def test_the_nats_server_restarted_mid_traffic(
    nats_server: PrivateNats, cluster: list[HubProcess], peers: list[Peer]
) -> None:
    """Publishes during the restart fail with 112; JetStream kept the rest: no ack is lost."""
    subscribers = [await Peer(hub.ws_url, f"sub{i}").start() for i, hub in enumerate(cluster)]
    publisher = await Peer(cluster[0].ws_url, "publisher").start("other:channel")
    peers += [*subscribers, publisher]
    acked: dict[int, StreamPosition] = {}
    errors: list[int] = []
    progress = asyncio.Event()
    stop = asyncio.Event()

    async def traffic() -> None:
        i = 0
        while not stop.is_set():
            try:
                # A call during the outage may wait for the backend's timeout (5 s).
                ack = await asyncio.wait_for(publisher.client.publish(CHANNEL, i), OUTAGE_GUARD)
            except HubClientError as exc:
                errors.append(exc.code)
                await asyncio.sleep(0.02)  # pacing a publisher that only gets errors
            else:
                acked[i] = StreamPosition(int(ack["offset"]), str(ack["epoch"]))
            i += 1
            progress.set()

    async def until(what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 2 * OUTAGE_GUARD
        while not check():
            progress.clear()
            assert time.monotonic() < deadline, f"not {what}: {len(acked)} acks, errors {errors}"
            await asyncio.wait_for(progress.wait(), OUTAGE_GUARD)

    task = asyncio.get_running_loop().create_task(traffic())
    try:
        await until("20 acks", lambda: len(acked) >= 20)
        await nats_server.stop()
        await until("3 errors", lambda: len(errors) >= 3)
        before = len(acked)
        await nats_server.start()  # the same port and JetStream store
        await until("20 acks after the restart", lambda: len(acked) >= before + 20)
    finally:
        stop.set()
        # The publish in flight ends within its own OUTAGE_GUARD; the history
        # check below counts on it having ended (acknowledged or refused).
        await asyncio.wait_for(task, 2 * OUTAGE_GUARD)
    assert set(errors) == {112}, errors  # clear and temporary
    positions = [acked[i] for i in sorted(acked)]
    # JetStream kept the stream: the same epoch, offsets going on.
    assert {p.epoch for p in positions} == {positions[0].epoch}
    offsets = [p.offset for p in positions]
    assert offsets == sorted(set(offsets))
    last = positions[-1]
    for subscriber in subscribers:
        delivered = await pubs_until(subscriber, last)
        seen = [p.offset for p in delivered]
        assert len(seen) == len(set(seen)), "a publication was delivered twice"
        data = {p.offset: p.data for p in delivered}
        for i, position in acked.items():
            assert data.get(position.offset) == i, f"publish {i} at {position} lost"
    # The cluster carries on: presence and history answer on every node.
    everyone = {p.id for p in subscribers}

    async def presence_back() -> bool:
        return set(await subscribers[0].client.presence(CHANNEL)) >= everyone

    await eventually(presence_back, timeout=GUARD, what="presence after the restart")
    history = await api(cluster[2].port, "/api/history", {"channel": CHANNEL})
    assert history["offset"] == last.offset and history["epoch"] == last.epoch


async def pubs_until(subscriber: Peer, last: StreamPosition) -> list[PublicationEvent]:
    """What ``subscriber`` receives up to ``last``, following resubscriptions."""
    delivered = [await subscriber.next_pub()]
    while (delivered[-1].offset, delivered[-1].epoch) != (last.offset, last.epoch):
        delivered.append(await subscriber.next_pub())
    return delivered


async def test_jetstream_unavailable_at_start_is_a_clear_error(tmp_path: Path) -> None:
    server = PrivateNats(require_nats_server(), tmp_path / "unused", jetstream=False)
    await server.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tether",
            "serve",
            "--port",
            str(free_port()),
            "--broker",
            server.url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        await server.stop()
    assert process.returncode == 2 and b"listening on" not in out, (out + err).decode()
    lines = err.decode().strip().splitlines()
    assert lines == [
        f"tether serve: cannot start the hub: nats history: the server at {server.url} "
        "has no JetStream (start nats-server with -js)"
    ], lines
