"""The app-side API, ``node.users``: subscribe, unsubscribe, disconnect and list a
user's sessions, on one node and across two nodes sharing Redis (or NATS)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from backplane_services import eventually
from hub_support import GUARD, WireClient, config, token

from tether.hub import Client, HubServer, Node
from tether.hub.client import PublicationEvent, Subscription
from tether.hub.control import Hello, SessionsQuery
from tether.hub.envelope import Control, MalformedEnvelope, decode, encode
from tether.hub.errors import ErrorCode, HubCloseCode, HubError

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


async def test_one_node_subscribe_list_unsubscribe_disconnect(
    start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub()
    node = hub.node
    tabs = [await wire(hub.websocket_url, token=token("alice")) for _ in range(2)]
    other = await wire(hub.websocket_url, token=token("bob"))

    await node.users.subscribe("alice", "orders:alice")
    for tab in tabs:
        push = await tab.push("subscribe")
        assert push["channel"] == "orders:alice"
    await node.publish("orders:alice", {"order": 1})
    for tab in tabs:
        assert (await tab.push("pub"))["data"] == {"order": 1}

    sessions = await node.users.sessions("alice")
    assert sorted(s.client for s in sessions) == sorted(t.client_id for t in tabs)
    assert all(s.channels == ("orders:alice",) and s.node == node.id for s in sessions)
    assert [s.client for s in await node.users.sessions("bob")] == [other.client_id]
    assert await node.users.sessions("nobody") == []

    await node.users.unsubscribe("alice", "orders:alice", code=2100, reason="order closed")
    for tab in tabs:
        push = await tab.push("unsubscribe")
        assert (push["channel"], push["code"], push["reason"]) == (
            "orders:alice",
            2100,
            "order closed",
        )
    assert not node.registry.sessions("orders:alice")

    await node.users.disconnect("alice")
    for tab in tabs:
        assert (await tab.close_code())[0] == HubCloseCode.DISCONNECTED
    assert await other.call("ping") == {}
    assert await node.users.sessions("alice") == []


async def test_bad_arguments_are_refused_before_anything_is_sent(start_hub: StartHub) -> None:
    hub = await start_hub()
    with pytest.raises(HubError) as caught:
        await hub.node.users.subscribe("alice", "__tether.control")
    assert caught.value.code == ErrorCode.BAD_REQUEST
    with pytest.raises(ValueError):
        await hub.node.users.unsubscribe("alice", "news", code=4000)


async def test_python_client_sees_server_side_subscriptions(start_hub: StartHub) -> None:
    hub = await start_hub()
    received: asyncio.Queue[PublicationEvent] = asyncio.Queue()
    subscribed = asyncio.Event()

    def on_server_subscription(sub: Subscription) -> None:
        sub.on_publication = received.put_nowait
        subscribed.set()

    client = Client(
        hub.websocket_url, token=token("carol"), on_server_subscription=on_server_subscription
    )
    await client.connect(timeout=GUARD)
    try:
        await hub.node.users.subscribe("carol", "alerts")
        # The hub holds the subscription before it sends the push.
        await asyncio.wait_for(subscribed.wait(), GUARD)
        await hub.node.publish("alerts", "fire drill")
        event = await asyncio.wait_for(received.get(), GUARD)
        assert (event.channel, event.data) == ("alerts", "fire drill")
        assert [s.channel for s in client.server_subscriptions()] == ["alerts"]
    finally:
        await client.close()


async def test_two_nodes_sharing_a_backplane(
    start_hub: StartHub, wire: Wire, backplane: dict[str, str]
) -> None:
    hubs = [await start_hub(config=config(**backplane)) for _ in range(2)]
    # Node B said hello at start; node A answered it: each knows the other.
    for hub, peer in ((hubs[0], hubs[1]), (hubs[1], hubs[0])):

        async def knows(hub: HubServer = hub, peer: HubServer = peer) -> bool:
            return peer.node.id in hub.node.users.live_peers()

        await eventually(knows, timeout=GUARD, what="the nodes to know each other")
    on_a = await wire(hubs[0].websocket_url, token=token("dana"))
    on_b = await wire(hubs[1].websocket_url, token=token("dana"))

    # Asked on node A, done on both.
    sessions = await hubs[0].node.users.sessions("dana")
    assert {(s.client, s.node) for s in sessions} == {
        (on_a.client_id, hubs[0].node.id),
        (on_b.client_id, hubs[1].node.id),
    }
    await hubs[0].node.users.subscribe("dana", "team")
    for client in (on_a, on_b):
        assert (await client.push("subscribe"))["channel"] == "team"
    await hubs[1].node.publish("team", "standup")
    for client in (on_a, on_b):
        assert (await client.push("pub"))["data"] == "standup"
    await hubs[1].node.users.unsubscribe("dana", "team")
    for client in (on_a, on_b):
        assert (await client.push("unsubscribe"))["channel"] == "team"
    await hubs[1].node.users.disconnect("dana")
    for client in (on_a, on_b):
        assert (await client.close_code())[0] == HubCloseCode.DISCONNECTED
    assert await hubs[0].node.users.sessions("dana") == []


async def test_a_silent_node_only_delays_the_listing_up_to_the_timeout(
    start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub(Node(config()))
    client = await wire(hub.websocket_url, token=token("eve"))
    # A peer that said hello, then died without a goodbye.
    hub.node.users.on_control(Hello("ghost-node"))
    assert "ghost-node" in hub.node.users.live_peers()
    sessions = await hub.node.users.sessions("eve", timeout=0.2)
    assert [s.client for s in sessions] == [client.client_id]


def test_control_messages_round_trip_and_refuse_garbage() -> None:
    query = SessionsQuery("alice", "r1", "node-a")
    assert decode(encode(Control(query))) == Control(query)
    for bad in (b"[]", b'{"op": "launch"}', b'{"op": "hello"}', b"not json"):
        with pytest.raises(MalformedEnvelope):
            decode(b"t1 control\n" + bad)
