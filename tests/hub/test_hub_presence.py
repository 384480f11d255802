"""Presence: who is in a channel, join/leave pushes, cleanup, and no spoofed user ids."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hub_support import GUARD, WireClient, WireError, config, token

from tether.hub import ChannelOptions, HubServer

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


async def test_join_presence_and_leave(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    alice = await wire(hub.websocket_url, token=token("alice", info={"name": "Alice"}))
    await alice.call("subscribe", {"channel": "room"})
    assert (await alice.push("join"))["info"]["client"] == alice.client_id  # sees itself
    bob = await wire(hub.websocket_url, token=token("bob"))
    await bob.call("subscribe", {"channel": "room"})
    join = await alice.push("join")
    assert join == {
        "push": "join",
        "channel": "room",
        "info": {"client": bob.client_id, "user": "bob"},
    }
    presence = await alice.call("presence", {"channel": "room"})
    assert presence["clients"] == {
        alice.client_id: {"client": alice.client_id, "user": "alice", "info": {"name": "Alice"}},
        bob.client_id: {"client": bob.client_id, "user": "bob"},
    }
    assert await bob.call("presence_stats", {"channel": "room"}) == {
        "num_clients": 2,
        "num_users": 2,
    }
    await bob.call("unsubscribe", {"channel": "room"})
    leave = await alice.push("leave")
    assert leave["info"] == {"client": bob.client_id, "user": "bob"}
    assert set((await alice.call("presence", {"channel": "room"}))["clients"]) == {alice.client_id}


async def test_cleanup_when_a_client_disconnects(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    watcher = await wire(hub.websocket_url)
    await watcher.call("subscribe", {"channel": "room"})
    leaving = await wire(hub.websocket_url, token=token("carol"))
    await leaving.call("subscribe", {"channel": "room"})
    await leaving.call("subscribe", {"channel": "other"})
    await leaving.close()
    leave = await watcher.push("leave")
    assert leave["info"]["user"] == "carol"
    assert (await watcher.call("presence_stats", {"channel": "room"}))["num_clients"] == 1
    assert await hub.node.presence("other") == {}
    assert hub.node.registry.sessions("other") == set()


async def test_cleanup_after_silent_death(start_hub: StartHub, wire: Wire) -> None:
    """A client that stops answering pings is dropped by keepalive, then cleaned up."""
    cfg = config(ping_interval=0.05, ping_timeout=0.1, close_timeout=0.2)
    hub = await start_hub(config=cfg)
    watcher = await wire(hub.websocket_url, ws={"ping_interval": None})
    await watcher.call("subscribe", {"channel": "room"})
    ghost = await wire(hub.websocket_url, token=token("ghost"), ws={"ping_interval": None})
    await ghost.call("subscribe", {"channel": "room"})
    assert ghost.ws.transport is not None
    ghost.ws.transport.pause_reading()  # a frozen laptop: reads nothing, answers no ping
    leave = await watcher.push("leave")
    assert leave["info"]["user"] == "ghost"
    clients = await watcher.call("presence", {"channel": "room"})
    assert list(clients["clients"]) == [watcher.client_id]
    assert hub.node.metrics.close_codes[1011] == 1  # tether's keepalive-timeout close


async def test_user_id_comes_only_from_the_token(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    mallory = await wire(
        hub.websocket_url,
        token=token("mallory"),
        user="admin",
        client="someone-else",
        info={"user": "admin", "name": "Admin"},
    )
    assert mallory.client_id != "someone-else"
    anonymous = await wire(hub.websocket_url, user="admin", info={"user": "admin"})
    for client in (mallory, anonymous):
        await client.call("subscribe", {"channel": "room"})
    clients = (await mallory.call("presence", {"channel": "room"}))["clients"]
    assert clients[mallory.client_id]["user"] == "mallory"
    assert clients[anonymous.client_id]["user"] == ""
    # What the client said about itself stays inside "info", labelled as such.
    assert clients[mallory.client_id]["info"] == {"user": "admin", "name": "Admin"}
    await mallory.call("publish", {"channel": "room", "data": "hi", "info": {"user": "admin"}})
    pub = await anonymous.push("pub")
    assert pub["info"]["user"] == "mallory"


async def test_token_info_wins_over_client_info(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(
        hub.websocket_url, token=token("dave", info={"role": "mod"}), info={"role": "admin"}
    )
    await client.call("subscribe", {"channel": "room"})
    clients = (await client.call("presence", {"channel": "room"}))["clients"]
    assert clients[client.client_id]["info"] == {"role": "mod"}


async def test_name_is_shown_as_info(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, name="guest-42")
    await client.call("subscribe", {"channel": "room"})
    join = await client.push("join")
    assert join["info"] == {"client": client.client_id, "user": "", "info": {"name": "guest-42"}}


async def test_presence_info_is_capped(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, connect=False)
    with pytest.raises(WireError) as caught:
        await client.call("connect", {"info": {"bio": "x" * 2000}})
    assert caught.value.code == 106
    # The connection stays usable: connect again, within the limit.
    await client.call("connect", {"info": {"bio": "short"}})


async def test_presence_off_sends_no_join(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub(config=config(namespaces={"quiet": ChannelOptions(presence=False)}))
    client = await wire(hub.websocket_url)
    await client.call("subscribe", {"channel": "quiet:x"})
    await hub.node.publish("quiet:x", "only this")
    assert (await client.push())["push"] == "pub"
    with pytest.raises(WireError) as caught:
        await client.call("presence", {"channel": "quiet:x"})
    assert caught.value.code == 108


async def test_presence_is_refreshed_and_expires(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub(config=config(presence_ttl=0.15))
    client = await wire(hub.websocket_url)
    await client.call("subscribe", {"channel": "room"})
    store = hub.node.presence_store
    await hub.node.refresh_presence()
    assert client.client_id in await store.get("room")
    # An entry nobody refreshes (its node died) disappears after the TTL.
    from tether.hub import ClientInfo

    await store.add("room", ClientInfo("dead-node-client", "zed"), ttl=0.01)
    await asyncio.wait_for(_until_gone(store, "dead-node-client"), GUARD)
    assert client.client_id in await store.get("room")


async def _until_gone(store: object, client_id: str) -> None:
    from tether.hub import Presence

    assert isinstance(store, Presence)
    while client_id in await store.get("room"):
        await asyncio.sleep(0.01)  # a TTL is time passing: there is nothing to await


async def test_refresh_presence_makes_one_call_per_channel(start_hub: StartHub, wire: Wire) -> None:
    from collections.abc import Sequence

    from tether.hub import ClientInfo

    hub = await start_hub(config=config(namespaces={"quiet": ChannelOptions(presence=False)}))
    clients = [await wire(hub.websocket_url) for _ in range(3)]
    for client in clients:
        await client.call("subscribe", {"channel": "room"})
        await client.call("subscribe", {"channel": "quiet:x"})
    await clients[0].call("subscribe", {"channel": "other"})
    store = hub.node.presence_store
    calls: list[tuple[str, set[str], float]] = []
    real_add_many = store.add_many

    async def add_many(channel: str, infos: Sequence[ClientInfo], *, ttl: float) -> None:
        calls.append((channel, {info.client for info in infos}, ttl))
        await real_add_many(channel, infos, ttl=ttl)

    async def add(channel: str, info: ClientInfo, *, ttl: float) -> None:
        raise AssertionError("one add per session and channel")

    store.add_many = add_many  # type: ignore[method-assign]
    store.add = add  # type: ignore[method-assign]
    await hub.node.refresh_presence()
    ttl = hub.node.config.presence_ttl
    ids = {client.client_id for client in clients}
    assert sorted(calls) == [("other", {clients[0].client_id}, ttl), ("room", ids, ttl)]
    assert set(await store.get("room")) == ids
