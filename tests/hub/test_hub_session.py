"""A session over a real socket, driven by a bare wire-protocol client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hub_support import GUARD, WireClient, WireError, config

import tether
from tether.hub import ChannelOptions, HubServer, Limits, MemoryHistory, Node, StreamPosition
from tether.hub.history import Recovery
from tether.hub.wire import SUBPROTOCOL

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


async def test_subscribe_publish_ack_and_push(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    alice = await wire(hub.websocket_url)
    bob = await wire(hub.websocket_url)
    sub = await bob.call("subscribe", {"channel": "chat:lobby"})
    assert sub["recoverable"] and sub["positioned"] and not sub["recovered"]
    assert sub["offset"] == 0 and isinstance(sub["epoch"], str) and sub["publications"] == []
    ack = await alice.call("publish", {"channel": "chat:lobby", "data": {"text": "hi"}})
    assert ack == {"offset": 1, "epoch": sub["epoch"]}
    push = await bob.push("pub")
    assert push == {
        "push": "pub",
        "channel": "chat:lobby",
        "data": {"text": "hi"},
        "offset": 1,
        "epoch": sub["epoch"],
        "info": {"client": alice.client_id, "user": ""},
    }


async def test_connect_result(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub(config=config(ping_interval=7))
    client = await wire(hub.websocket_url, connect=False)
    result = await client.call("connect", {"name": "tester"})
    assert result["user"] == "" and result["ping"] == 7
    assert "ttl" not in result and len(result["client"]) >= 16
    assert await client.call("ping") == {}


async def test_unsubscribe_stops_delivery(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    await client.call("subscribe", {"channel": "a"})
    await client.call("subscribe", {"channel": "b"})
    assert await client.call("unsubscribe", {"channel": "a"}) == {}
    assert await client.call("unsubscribe", {"channel": "never"}) == {}
    await hub.node.publish("a", "lost")
    await hub.node.publish("b", "seen")
    assert (await client.push("pub"))["data"] == "seen"


async def test_channel_without_history_has_no_positions(start_hub: StartHub, wire: Wire) -> None:
    cfg = config(namespaces={"live": ChannelOptions(history_size=0)})
    hub = await start_hub(config=cfg)
    client = await wire(hub.websocket_url)
    sub = await client.call("subscribe", {"channel": "live:x"})
    assert not sub["recoverable"] and "offset" not in sub
    assert await client.call("publish", {"channel": "live:x", "data": 1}) == {}
    assert await client.push("pub") == {
        "push": "pub",
        "channel": "live:x",
        "data": 1,
        "info": {"client": client.client_id, "user": ""},
    }
    with pytest.raises(WireError) as caught:
        await client.call("history", {"channel": "live:x", "limit": 5})
    assert caught.value.code == 108


async def test_connect_with_subs_recovers_in_the_reply(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    for i in range(3):
        await hub.node.publish("news", i)
    position = await hub.node.history_store.position("news")
    client = await wire(hub.websocket_url, connect=False)
    result = await client.call(
        "connect",
        {
            "subs": {
                "news": {"offset": 1, "epoch": position.epoch},
                "other": None,
                "admin:" + "x" * 300: None,
            }
        },
    )
    news = result["subs"]["news"]
    assert news["recovered"] and [p["data"] for p in news["publications"]] == [1, 2]
    assert result["subs"]["other"]["recovered"] is False
    assert result["subs"]["admin:" + "x" * 300]["error"]["code"] == 106
    await hub.node.publish("news", 3)
    assert (await client.push("pub"))["offset"] == 4


async def test_history_command(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    for i in range(5):
        await client.call("publish", {"channel": "h", "data": i})
    only_position = await client.call("history", {"channel": "h"})
    assert only_position["publications"] == [] and only_position["offset"] == 5
    epoch = only_position["epoch"]
    latest = await client.call("history", {"channel": "h", "limit": 2, "reverse": True})
    assert [p["data"] for p in latest["publications"]] == [4, 3]
    since = {"offset": 3, "epoch": epoch}
    after = await client.call("history", {"channel": "h", "limit": 10, "since": since})
    assert [p["offset"] for p in after["publications"]] == [4, 5]
    stale = {"offset": 3, "epoch": "old"}
    moved = await client.call("history", {"channel": "h", "limit": 10, "since": stale})
    assert moved["publications"] == [] and moved["epoch"] == epoch


async def test_command_errors(start_hub: StartHub, wire: Wire) -> None:
    cfg = config(
        strict_namespaces=True,
        namespaces={
            "chat": ChannelOptions(),
            "feed": ChannelOptions(publish=False, presence=False),
        },
    )
    hub = await start_hub(config=cfg)
    client = await wire(hub.websocket_url)

    async def code(method: str, params: dict[str, Any]) -> int:
        with pytest.raises(WireError) as caught:
            await client.call(method, params)
        return caught.value.code

    assert await code("nope", {}) == 104
    assert await code("subscribe", {"channel": "unknown:x"}) == 102
    assert await code("subscribe", {}) == 117  # missing parameter
    assert await code("subscribe", {"channel": 5}) == 107
    assert await code("subscribe", {"channel": ""}) == 107
    assert await code("subscribe", {"channel": "__tether.control"}) == 107
    assert await code("subscribe", {"channel": "chat:a\nb"}) == 107
    assert await code("subscribe", {"channel": "chat:a", "recover": True}) == 107
    await client.call("subscribe", {"channel": "chat:a"})
    assert await code("subscribe", {"channel": "chat:a"}) == 105
    assert await code("publish", {"channel": "chat:a"}) == 117  # data is required
    assert await code("publish", {"channel": "feed:x", "data": 1}) == 103
    assert await code("presence", {"channel": "feed:x"}) == 108
    assert await code("presence_stats", {"channel": "feed:x"}) == 108
    assert await code("connect", {}) == 107
    assert await code("history", {"channel": "chat:a", "limit": -1}) == 107
    # Errors do not end the session.
    assert await client.call("ping") == {}


async def test_command_before_connect_closes_4001(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, connect=False)
    reply = await client.reply("subscribe", {"channel": "a"})
    assert reply["error"]["code"] == 101
    assert await client.close_code() == (4001, "connect first")


@pytest.mark.parametrize("message", ["not json", '{"id": "x", "method": "ping"}', "[]"])
async def test_malformed_message_closes_4001(start_hub: StartHub, wire: Wire, message: str) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    await client.ws.send(message)
    assert (await client.close_code())[0] == 4001


async def test_binary_frame_closes_1003(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    await client.ws.send(b'{"id": 1, "method": "ping"}')
    assert (await client.close_code())[0] == 1003
    disconnect = await client.push("disconnect")
    assert disconnect["code"] == 1003 and disconnect["reconnect"] is False


async def test_connect_timeout_closes_4001(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub(config=config(limits=Limits(connect_timeout=0.05)))
    client = await wire(hub.websocket_url, connect=False)
    assert await client.close_code() == (4001, "connect timeout")


async def test_upgrade_needs_the_subprotocol(start_hub: StartHub) -> None:
    hub = await start_hub()
    with pytest.raises(tether.InvalidStatus) as caught:
        await tether.connect(hub.websocket_url, subprotocols=["chat"])
    assert caught.value.response.status_code == 400
    with pytest.raises(tether.InvalidStatus):
        await tether.connect(hub.websocket_url)
    wrong_path = hub.websocket_url.replace("/connection/websocket", "/elsewhere")
    with pytest.raises(tether.InvalidStatus) as caught:
        await tether.connect(wrong_path, subprotocols=[SUBPROTOCOL])
    assert caught.value.response.status_code == 404
    async with tether.connect(hub.websocket_url, subprotocols=[SUBPROTOCOL]) as ws:
        assert ws.subprotocol == SUBPROTOCOL


class GatedHistory(MemoryHistory):
    """Memory history whose reads wait for the test: a slow backend, made deterministic."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def since(self, channel: str, position: StreamPosition, *, limit: int) -> Recovery:
        self.entered.set()
        await self.gate.wait()
        return await super().since(channel, position, limit=limit)


async def test_publishes_racing_a_recovering_subscribe(start_hub: StartHub, wire: Wire) -> None:
    """What is published while a subscribe reads history comes after the reply, once."""
    history = GatedHistory()
    node = Node(config(), history=history)
    hub = await start_hub(node)
    client = await wire(hub.websocket_url)
    first = await node.publish("race", 1)
    await node.publish("race", 2)
    assert first.position is not None
    params = {"channel": "race", "recover": True, "offset": 1, "epoch": first.position.epoch}
    reply = client.send("subscribe", params)
    await asyncio.wait_for(history.entered.wait(), GUARD)
    await node.publish("race", 3)  # subscribed already, so held until the reply is out
    history.gate.set()
    result = (await asyncio.wait_for(reply, GUARD))["result"]
    assert result["recovered"]
    assert [p["data"] for p in result["publications"]] == [2, 3]
    await node.publish("race", 4)
    push = await client.push("pub")
    assert push["data"] == 4  # 3 came in the reply and is not pushed again
    replies = [m for m in client.messages if m.startswith('{"id":2,')]
    assert client.messages.index(replies[0]) < len(client.messages) - 1


async def test_pushes_held_during_a_slow_subscribe_are_bounded(
    start_hub: StartHub, wire: Wire
) -> None:
    history = GatedHistory()
    node = Node(config(limits=Limits(send_queue_size=10_000)), history=history)
    hub = await start_hub(node)
    client = await wire(hub.websocket_url)
    first = await node.publish("hot", 0)
    assert first.position is not None
    params = {"channel": "hot", "recover": True, "offset": 1, "epoch": first.position.epoch}
    client.send("subscribe", params)
    await asyncio.wait_for(history.entered.wait(), GUARD)
    for _ in range(3):
        await node.publish("hot", "z" * 4000)  # held: more than the queue may hold
    history.gate.set()
    assert (await client.close_code())[0] == 4010
    assert node.metrics.slow_consumer_disconnects == 1
    assert node.registry.sessions("hot") == set()
