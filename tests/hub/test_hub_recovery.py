"""Recovery with the Python client: nothing lost, nothing doubled, epochs that move on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hub_support import GUARD, Recorder, WireClient, config, kill_sockets

from tether.hub import Client, ClientState, HubServer, Node, serve_hub
from tether.hub.auth import Action

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


async def subscribed_client(hub: HubServer, channel: str) -> tuple[Client, Recorder]:
    rec = Recorder()
    client = Client(
        hub.websocket_url, min_backoff=0.01, max_backoff=0.05, on_state=rec.states.put_nowait
    )
    await asyncio.wait_for(client.connect(), GUARD)
    await client.subscribe(channel, on_publication=rec.pubs.put, on_subscribed=rec.subscribed.put)
    first = await asyncio.wait_for(rec.subscribed.get(), GUARD)
    assert not first.resubscribed
    return client, rec


async def test_recovery_after_the_socket_dies(start_hub: StartHub) -> None:
    hub = await start_hub()
    node = hub.node
    client, rec = await subscribed_client(hub, "chat:r")
    try:
        for i in range(3):
            await node.publish("chat:r", i)
        assert await rec.data(3) == [0, 1, 2]
        kill_sockets(node)
        # Published before the hub noticed: written into a dead socket, never delivered.
        for i in range(3, 6):
            await node.publish("chat:r", i)
        await rec.state(ClientState.DISCONNECTED)
        for i in range(6, 9):
            await node.publish("chat:r", i)  # while the client is away
        again = await asyncio.wait_for(rec.subscribed.get(), GUARD)
        assert again.resubscribed and again.recovered
        await node.publish("chat:r", 9)
        assert await rec.data(7) == [3, 4, 5, 6, 7, 8, 9]
        assert rec.pubs.empty()
    finally:
        await client.close()


async def test_new_epoch_when_history_is_gone(start_hub: StartHub) -> None:
    hub = await start_hub()
    node = hub.node
    client, rec = await subscribed_client(hub, "chat:e")
    try:
        await node.publish("chat:e", "before")
        await rec.data(1)
        old_epoch = client._subs["chat:e"].epoch
        await node.history_store.remove("chat:e")
        kill_sockets(node)
        again = await asyncio.wait_for(rec.subscribed.get(), GUARD)
        assert again.resubscribed and not again.recovered
        assert again.position is not None and again.position.epoch != old_epoch
        await node.publish("chat:e", "after")
        pub = await asyncio.wait_for(rec.pubs.get(), GUARD)
        assert (pub.data, pub.offset, pub.epoch) == ("after", 1, again.position.epoch)
    finally:
        await client.close()


async def test_new_epoch_after_a_hub_restart(start_hub: StartHub) -> None:
    hub = await start_hub()
    client, rec = await subscribed_client(hub, "chat:restart")
    second = serve_hub(Node(config()), "127.0.0.1", hub.port)
    try:
        await hub.node.publish("chat:restart", "x")
        await rec.data(1)
        await hub.close(1012)  # what SIGTERM does: clients come back and recover
        await rec.state(ClientState.DISCONNECTED)
        await second.start()  # a new process: history (in memory) is gone
        again = await asyncio.wait_for(rec.subscribed.get(), GUARD)
        assert again.resubscribed and not again.recovered
    finally:
        await client.close()
        await second.close()


async def test_unacknowledged_publish_is_resent_once(start_hub: StartHub) -> None:
    """The hub publishes, the ack is lost with the socket, the client resends: one copy."""
    node = Node(config())
    killed: list[str] = []

    async def authorize(user: str, channel: str, action: Action) -> bool:
        if action == "publish" and not killed:
            killed.append(channel)
            kill_sockets(node)  # the reply to this publish will go nowhere
        return True

    node.authorize = authorize
    hub = await start_hub(node)
    client, rec = await subscribed_client(hub, "chat:ack")
    try:
        ack = await asyncio.wait_for(client.publish("chat:ack", "once"), GUARD)
        assert killed == ["chat:ack"]
        assert ack["offset"] == 1
        pubs, position = await asyncio.wait_for(client.history("chat:ack", limit=10), GUARD)
        assert [p.data for p in pubs] == ["once"] and position.offset == 1
        assert await rec.data(1) == ["once"]
    finally:
        await client.close()


async def test_idempotency_key_on_the_wire(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    params = {"channel": "k", "data": {"n": 1}, "idempotency_key": "abc"}
    first = await client.call("publish", params)
    second = await client.call("publish", params)
    assert first == second == {"offset": 1, "epoch": first["epoch"]}
    history = await client.call("history", {"channel": "k", "limit": 10})
    assert len(history["publications"]) == 1
