"""Several hub nodes in one process sharing Redis or NATS: fan-out, ordering, outages.

Each test uses key, channel and subject prefixes of its own, and deletes its
Redis keys afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from backplane_services import (
    NATS_URL,
    REDIS_URL,
    PrivateRedis,
    delete_prefix,
    eventually,
    require_nats,
    require_redis,
    require_redis_server,
    unique,
)
from hub_support import GUARD, WireClient, api_headers, config, http

from tether.hub import HubServer, Node
from tether.hub.backplane import missed_publications, pub_position
from tether.hub.brokers.backplane import (
    REORDER_WAIT,
    BackplaneBroker,
    BackplaneDown,
    BackplaneEvent,
    BackplaneUp,
    ChannelsReset,
)
from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.envelope import Envelope, Pub, encode
from tether.hub.errors import HubCloseCode
from tether.hub.model import StreamPosition

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


# ``backplane`` (Redis, then NATS) comes from tests/hub/conftest.py.


async def nodes(start_hub: StartHub, n: int, **overrides: Any) -> list[HubServer]:
    return [await start_hub(config=config(**overrides)) for _ in range(n)]


async def test_api_publish_on_one_node_reaches_subscribers_on_every_node(
    backplane: dict[str, str], start_hub: StartHub, wire: Wire
) -> None:
    hubs = await nodes(start_hub, 3, **backplane)
    clients = [await wire(hub.websocket_url) for hub in hubs]
    for client in clients:
        result = await client.call("subscribe", {"channel": "news"})
        assert result["offset"] == 0
    epoch = result["epoch"]
    status, _, body = await http(
        hubs[2].port,
        "POST",
        "/api/publish",
        {"channel": "news", "data": "hi"},
        headers=api_headers(),
    )
    assert status == 200, body
    for client in clients:
        push = await client.push("pub")
        assert (push["data"], push["offset"], push["epoch"]) == ("hi", 1, epoch)


async def test_one_presence_view_and_join_pushes_across_nodes(
    backplane: dict[str, str], start_hub: StartHub, wire: Wire
) -> None:
    hubs = await nodes(start_hub, 2, **backplane)
    alice = await wire(hubs[0].websocket_url, name="alice")
    await alice.call("subscribe", {"channel": "room"})
    bob = await wire(hubs[1].websocket_url, name="bob")
    await bob.call("subscribe", {"channel": "room"})
    assert (await alice.push("join"))["info"]["client"] == alice.client_id  # its own
    assert (await alice.push("join"))["info"]["client"] == bob.client_id
    for client in (alice, bob):
        clients = (await client.call("presence", {"channel": "room"}))["clients"]
        assert set(clients) == {alice.client_id, bob.client_id}
    await bob.close()
    left = await alice.push("leave")
    assert left["info"]["client"] == bob.client_id
    clients = (await alice.call("presence", {"channel": "room"}))["clients"]
    assert set(clients) == {alice.client_id}


async def test_idempotent_publish_resent_through_another_node(
    backplane: dict[str, str], start_hub: StartHub, wire: Wire
) -> None:
    hubs = await nodes(start_hub, 2, **backplane)
    watcher = await wire(hubs[1].websocket_url)
    await watcher.call("subscribe", {"channel": "ch"})
    first = await (await wire(hubs[0].websocket_url)).call(
        "publish", {"channel": "ch", "data": 1, "idempotency_key": "k"}
    )
    again = await (await wire(hubs[1].websocket_url)).call(
        "publish", {"channel": "ch", "data": 1, "idempotency_key": "k"}
    )
    assert again == first and first["offset"] == 1
    assert (await watcher.push("pub"))["offset"] == 1
    history = await watcher.call("history", {"channel": "ch", "limit": 10})
    assert [p["data"] for p in history["publications"]] == [1]


async def test_concurrent_publishers_on_two_nodes_arrive_in_offset_order(
    backplane: dict[str, str], start_hub: StartHub, wire: Wire
) -> None:
    """Redis: XADD and PUBLISH in one script. NATS: receivers restore offset order."""
    hubs = await nodes(start_hub, 2, **backplane)
    subscribers = [await wire(hub.websocket_url) for hub in hubs]
    for client in subscribers:
        await client.call("subscribe", {"channel": "ch"})
    n = 40
    await asyncio.gather(*(hubs[i % 2].node.publish("ch", i) for i in range(n)))
    for client in subscribers:
        offsets = [(await client.push("pub"))["offset"] for _ in range(n)]
        assert offsets == list(range(1, n + 1))
    for hub in hubs:
        assert hub.node.backplane is not None and hub.node.backplane.resets == 0


class Loopback(BackplaneBroker):
    """A broker with no server: tests feed ``_deliver`` directly."""

    async def _open(self) -> None:
        pass

    async def _serve(self) -> str:
        await asyncio.Future()
        return ""

    async def _disconnect(self) -> None:
        pass

    async def _subscribe(self, channel: str) -> None:
        pass

    async def _unsubscribe(self, channel: str) -> None:
        pass

    async def _publish(self, channel: str, payload: bytes) -> None:
        self._deliver(channel, payload)

    async def sync(self) -> None:
        pass


async def test_receivers_restore_offset_order_and_reset_a_channel_with_a_lost_offset() -> None:
    broker = Loopback()
    got: list[bytes] = []
    events: list[BackplaneEvent] = []
    reset = asyncio.Event()
    broker.add_listener(events.append)
    broker.add_listener(lambda _: reset.set())

    def receive(channel: str, envelope: Envelope) -> None:
        assert isinstance(envelope, Pub)
        got.append(envelope.push)

    await broker.start(receive)
    await broker.subscribe("ch")

    def push(offset: int, epoch: str = "E") -> bytes:
        return encode(Pub(b"p%d" % offset, StreamPosition(offset, epoch), reorder=True))

    try:
        for offset in (1, 3, 2, 4):
            broker._deliver("ch", push(offset))
        assert got == [b"p1", b"p2", b"p3", b"p4"]
        assert events == []
        got.clear()
        broker._deliver("ch", push(6))  # 5 never comes
        assert got == []
        await asyncio.wait_for(reset.wait(), REORDER_WAIT + GUARD)
        assert got == [b"p6"] and events == [ChannelsReset(["ch"])]
        broker._deliver("ch", push(1, "F"))  # a new epoch starts over
        assert got[-1] == b"p1"
    finally:
        await broker.close()


async def test_keys_live_under_the_prefix_and_expire_with_their_ttls(
    start_hub: StartHub, wire: Wire
) -> None:
    import redis.asyncio

    url = require_redis()
    prefix = unique("bp")
    client = redis.asyncio.Redis.from_url(url)
    try:
        (hub,) = await nodes(start_hub, 1, broker=url, backplane_prefix=prefix)
        ws = await wire(hub.websocket_url)
        await ws.call("subscribe", {"channel": "ch"})
        await ws.call("publish", {"channel": "ch", "data": 1, "idempotency_key": "k"})
        await hub.node.publish("ch", 2)  # no key: a short-lived one of its own
        keys = sorted([k.decode() async for k in client.scan_iter(match=prefix + ":*")])
        suffixes = sorted(k.split("}:", 1)[1].split(":")[0] for k in keys)
        assert suffixes == ["idem", "idem", "meta", "presence", "presence", "stream"]
        ttls = {k: await client.pttl(k) for k in keys}
        assert all(ttl > 0 for ttl in ttls.values()), ttls  # nothing lives forever
        stream = next(k for k in keys if k.endswith(":stream"))
        assert 0 < ttls[stream] <= 300_000  # the channel's history_ttl
    finally:
        await client.aclose()
        await delete_prefix(url, prefix + ":")


# ----------------------------------------------------------------- outages


class Blocked:
    """Keep a broker from reconnecting until released (a long outage, on demand)."""

    def __init__(self, broker: BackplaneBroker, monkeypatch: pytest.MonkeyPatch) -> None:
        self.broker = broker
        self.released = asyncio.Event()
        self.ups: asyncio.Queue[BackplaneUp] = asyncio.Queue()
        self.downs: asyncio.Queue[BackplaneDown] = asyncio.Queue()
        original = broker._open

        async def blocked_open() -> None:
            await self.released.wait()
            await original()

        monkeypatch.setattr(broker, "_open", blocked_open)
        broker.add_listener(self.on_event)

    def on_event(self, event: BackplaneEvent) -> None:
        if isinstance(event, BackplaneUp):
            self.ups.put_nowait(event)
        elif isinstance(event, BackplaneDown):
            self.downs.put_nowait(event)

    async def drop(self) -> None:
        """Lose the subscription connection, as a network failure would."""
        await self.broker._disconnect()
        await asyncio.wait_for(self.downs.get(), GUARD)

    async def restore(self) -> BackplaneUp:
        self.released.set()
        return await asyncio.wait_for(self.ups.get(), GUARD)


@pytest.fixture
async def two_nodes(
    backplane: dict[str, str], start_hub: StartHub
) -> tuple[HubServer, HubServer, BackplaneBroker]:
    a, b = await nodes(start_hub, 2, **backplane)
    assert isinstance(b.node.broker, BackplaneBroker)
    return a, b, b.node.broker


async def test_outage_with_missed_publications_resets_clients_who_then_recover(
    two_nodes: tuple[HubServer, HubServer, BackplaneBroker],
    wire: Wire,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, broker = two_nodes
    client = await wire(b.websocket_url)
    subscribed = await client.call("subscribe", {"channel": "room"})
    await a.node.publish("room", "before")
    seen = await client.push("pub")
    blocked = Blocked(broker, monkeypatch)
    await blocked.drop()
    assert not broker.up
    status, _, _ = await http(b.port, "GET", "/healthz")
    assert status == 503
    await a.node.publish("room", "missed")  # node b cannot see this one
    await blocked.restore()
    await b.node.drain()  # the watcher's check
    disconnect = await client.push("disconnect")
    assert disconnect == {
        "push": "disconnect",
        "code": HubCloseCode.BACKPLANE_RESET,
        "reason": "backplane interrupted: reconnect and recover",
        "reconnect": True,
    }
    assert (await client.close_code())[0] == 4013
    again = await wire(b.websocket_url)
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
    assert [p["data"] for p in recovered["publications"]] == ["missed"]


async def test_outage_without_missed_publications_leaves_clients_alone(
    two_nodes: tuple[HubServer, HubServer, BackplaneBroker],
    wire: Wire,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, b, broker = two_nodes
    client = await wire(b.websocket_url)
    await client.call("subscribe", {"channel": "room"})
    await a.node.publish("room", 1)
    await client.push("pub")
    blocked = Blocked(broker, monkeypatch)
    await blocked.drop()
    await blocked.restore()
    await b.node.drain()
    assert b.node.backplane is not None and b.node.backplane.resets == 0
    await a.node.publish("room", 2)  # still subscribed, still connected
    assert (await client.push("pub"))["data"] == 2
    metrics = (await http(b.port, "GET", "/metrics"))[2].decode()
    assert "tether_backplane_up 1" in metrics
    assert "tether_backplane_reconnects_total 1" in metrics


async def test_a_publication_stored_but_not_sent_resets_its_channel_everywhere(
    start_hub: StartHub, wire: Wire, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NATS broker + Redis history (two steps): the broadcast fails after the add."""
    redis_url, prefix = require_redis(), unique("bp")
    try:
        a, b = await nodes(
            start_hub, 2, broker=require_nats(), history=redis_url, backplane_prefix=prefix
        )
        broker = a.node.broker
        assert isinstance(broker, BackplaneBroker)
        subscriber = await wire(b.websocket_url)
        subscribed = await subscriber.call("subscribe", {"channel": "room"})
        original = broker._enqueue

        async def fail_once(channel: str, payload: bytes) -> Awaitable[None]:
            monkeypatch.setattr(broker, "_enqueue", original)
            raise BrokerUnavailable("simulated")

        monkeypatch.setattr(broker, "_enqueue", fail_once)
        publisher = await wire(a.websocket_url)
        reply = await publisher.reply("publish", {"channel": "room", "data": "stored"})
        assert reply["error"]["code"] == 112  # told: retry (same key: no duplicate)
        await publisher.call("publish", {"channel": "room", "data": "next"})
        # Offset 1 never travelled: node b holds 2 back for it, and the marker
        # node a sends once its broker works again resets "room" everywhere.
        assert (await subscriber.close_code())[0] == 4013
        again = await wire(b.websocket_url)
        recovered = await again.call(
            "subscribe",
            {"channel": "room", "recover": True, "offset": 0, "epoch": subscribed["epoch"]},
        )
        assert [p["data"] for p in recovered["publications"]] == ["stored", "next"]
    finally:
        await delete_prefix(redis_url, prefix + ":")


def test_missed_publications_rule() -> None:
    e = "E"
    assert missed_publications(None, None, StreamPosition(0, e))
    assert not missed_publications(StreamPosition(4, e), None, StreamPosition(4, e))
    assert missed_publications(StreamPosition(4, e), None, StreamPosition(5, e))
    assert missed_publications(StreamPosition(4, e), None, StreamPosition(4, "F"))
    assert not missed_publications(StreamPosition(4, e), StreamPosition(5, e), StreamPosition(9, e))
    assert missed_publications(StreamPosition(4, e), StreamPosition(6, e), StreamPosition(9, e))
    assert pub_position(Pub(b"{}", StreamPosition(3, "x"))) == StreamPosition(3, "x")
    assert pub_position(Pub(b"{}")) is None
    assert pub_position(None) is None


# ------------------------------------------------------- Redis down and back


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis(require_redis_server())
    await server.start()
    yield server
    await server.kill()


async def test_health_metrics_and_errors_follow_a_redis_outage(
    private_redis: PrivateRedis, start_hub: StartHub, wire: Wire
) -> None:
    (hub,) = await nodes(start_hub, 1, broker=private_redis.url, backplane_prefix=unique("bp"))
    client = await wire(hub.websocket_url)
    await client.call("subscribe", {"channel": "ch"})
    assert (await http(hub.port, "GET", "/healthz"))[0] == 200
    await private_redis.kill()

    async def unhealthy() -> bool:
        return (await http(hub.port, "GET", "/healthz"))[0] == 503

    await eventually(unhealthy, timeout=GUARD, what="/healthz 503 while Redis is down")
    metrics = (await http(hub.port, "GET", "/metrics"))[2].decode()
    assert "tether_backplane_up 0" in metrics
    reply = await client.reply("publish", {"channel": "ch", "data": 1})
    assert reply["error"]["code"] == 112 and reply["error"]["temporary"] is True
    status, _, body = await http(
        hub.port, "POST", "/api/publish", {"channel": "ch", "data": 1}, headers=api_headers()
    )
    assert status == 503 and b"112" in body
    assert (await client.call("ping")) == {}  # local traffic goes on
    await private_redis.start()

    async def healthy() -> bool:
        return (await http(hub.port, "GET", "/healthz"))[0] == 200

    await eventually(healthy, timeout=GUARD, what="/healthz 200 once Redis is back")
    # Redis came back empty: a new epoch, so the subscriber was reset to recover.
    assert (await client.close_code())[0] == 4013
    publisher = await wire(hub.websocket_url)
    assert (await publisher.call("publish", {"channel": "ch", "data": 2}))["offset"] == 1


def test_default_urls_are_the_local_servers() -> None:
    assert REDIS_URL.startswith(("redis://", "rediss://", "unix://"))
    assert NATS_URL.startswith(("nats://", "tls://"))


async def test_node_builds_its_backends_from_the_config() -> None:
    url = require_redis()
    node = Node(config(broker=url, backplane_prefix=unique("bp")))
    from tether.hub.brokers.redis import RedisBroker
    from tether.hub.history.redis import RedisHistory
    from tether.hub.presence.redis import RedisPresence

    assert isinstance(node.broker, RedisBroker)
    assert isinstance(node.history_store, RedisHistory)
    assert isinstance(node.presence_store, RedisPresence)
    await node.start()
    await node.close()
