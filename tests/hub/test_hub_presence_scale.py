"""Presence at scale: coalesced joins and leaves, the count-only mode, mass disconnects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import pytest
from backplane_services import delete_prefix, require_redis, unique
from hub_support import GUARD, WireClient, config

from tether.hub import HubServer, MemoryBroker, presence_changes
from tether.hub.config import ChannelOptions
from tether.hub.envelope import Envelope, Join, Leave, PresenceChanges
from tether.hub.model import ClientInfo
from tether.hub.presence.memory import MemoryPresence
from tether.hub.presence.redis import RedisPresence
from tether.hub.presence_changes import LEAVE_ATTEMPTS, PresenceChangesBatcher

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


def infos(n: int) -> list[ClientInfo]:
    return [ClientInfo(f"c{i}", f"u{i % 7}") for i in range(n)]


async def started_broker(channel: str) -> tuple[MemoryBroker, list[Envelope]]:
    broker, seen = MemoryBroker(), []
    await broker.start(lambda _channel, envelope: seen.append(envelope))
    await broker.subscribe(channel)
    return broker, seen


class GatedPresence(MemoryPresence):
    """Memory presence whose writes wait at a gate, and whose removes can fail."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.writes = 0
        self.failures_left = 0

    async def add_many(self, channel: str, infos: Sequence[ClientInfo], *, ttl: float) -> None:
        self.writes += 1
        await self.gate.wait()
        await super().add_many(channel, infos, ttl=ttl)

    async def remove_many(self, channel: str, client_ids: Sequence[str]) -> None:
        self.writes += 1
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("presence backend down")
        await super().remove_many(channel, client_ids)


async def test_changes_made_while_a_batch_is_written_go_out_together_in_order() -> None:
    presence = GatedPresence()
    broker, seen = await started_broker("room")
    batcher = PresenceChangesBatcher(presence, broker, ttl=60)
    people = infos(100)
    presence.gate.clear()
    first = asyncio.ensure_future(batcher.join("room", people[0]))
    await asyncio.sleep(0)
    while presence.writes == 0:
        await asyncio.sleep(0)  # the first batch is being written, held at the gate
    rest = [asyncio.ensure_future(batcher.join("room", info)) for info in people[1:]]
    rest.append(asyncio.ensure_future(batcher.leave("room", people[5])))
    presence.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), GUARD)
    # Two batches for 101 changes (the second: one remove and one add, one envelope),
    # every change in order.
    assert batcher.batches == 2 and presence.writes == 3
    assert [len(e.changes) for e in seen if isinstance(e, PresenceChanges)] == [1, 100]
    changes = [c for e in seen if isinstance(e, PresenceChanges) for c in e.changes]
    assert changes == [*(Join(i) for i in people), Leave(people[5])]
    # The last change of a client wins in the store.
    members = await presence.get("room")
    assert len(members) == 99 and "c5" not in members
    await broker.close()


async def test_a_failed_leave_is_tried_again_and_a_failed_join_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(presence_changes, "LEAVE_BACKOFF", (0.01, 0.01, 0.01))
    presence = GatedPresence()
    broker, seen = await started_broker("room")
    batcher = PresenceChangesBatcher(presence, broker, ttl=60)
    alice, bob = infos(2)
    await batcher.join("room", alice)
    presence.failures_left = LEAVE_ATTEMPTS - 1  # the last attempt succeeds
    await asyncio.wait_for(batcher.leave("room", alice), GUARD)
    assert "c0" not in await presence.get("room")
    assert seen[-1] == PresenceChanges((Leave(alice),))
    presence.failures_left = LEAVE_ATTEMPTS  # never succeeds: reported after the last
    await batcher.join("room", bob)
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(batcher.leave("room", bob), GUARD)

    class Down(MemoryPresence):
        async def add_many(self, channel: str, infos: Sequence[ClientInfo], *, ttl: float) -> None:
            raise ConnectionError("down")

    failing = PresenceChangesBatcher(Down(), broker, ttl=60)
    with pytest.raises(ConnectionError):  # at once: its subscriber may try again
        await asyncio.wait_for(failing.join("room", alice), 0.5)
    await broker.close()


async def test_count_only_announces_nothing() -> None:
    broker, seen = await started_broker("big")
    batcher = PresenceChangesBatcher(MemoryPresence(), broker, ttl=60)
    for info in infos(3):
        await batcher.join("big", info, announce=False)
    await batcher.leave("big", infos(1)[0], announce=False)
    assert seen == []
    assert (await batcher.presence.stats("big")).num_clients == 2
    await broker.close()


async def test_a_thousand_clients_leaving_at_once_on_redis_lose_no_leave(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, prefix = require_redis(), unique("pres")
    # Two pooled connections: one round trip per call would wait for them.
    presence = RedisPresence(url + "?pool_size=2&pool_timeout=1", prefix=prefix + ":")
    broker, seen = await started_broker("crowd")
    batcher = PresenceChangesBatcher(presence, broker, ttl=60)
    people = infos(1000)
    try:
        await asyncio.wait_for(asyncio.gather(*(batcher.join("crowd", i) for i in people)), GUARD)
        assert (await presence.stats("crowd")).num_clients == 1000
        with caplog.at_level(logging.INFO, "tether.hub"):
            await asyncio.wait_for(
                asyncio.gather(*(batcher.leave("crowd", i) for i in people)), GUARD
            )
        left = [c for e in seen if isinstance(e, PresenceChanges) for c in e.changes]
        assert sorted(c.info.client for c in left if isinstance(c, Leave)) == sorted(
            i.client for i in people
        )
        assert (await presence.stats("crowd")).num_clients == 0
        assert batcher.batches < 100  # coalesced: far fewer writes than changes
        assert not [r for r in caplog.records if "not written" in r.getMessage()]
    finally:
        await broker.close()
        await presence.close()
        await delete_prefix(url, prefix)


# ------------------------------------------------------------------ end to end


async def test_clients_that_ask_get_presence_pushes_and_the_others_single_ones(
    start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub(config=config())
    batched = await wire(hub.websocket_url, presence_batches=True)
    single = await wire(hub.websocket_url)
    for watcher in (batched, single):
        await watcher.call("subscribe", {"channel": "room"})
    members = [await wire(hub.websocket_url) for _ in range(20)]
    await asyncio.gather(*(m.call("subscribe", {"channel": "room"}) for m in members))
    ids = {m.client_id for m in members}
    everyone = ids | {single.client_id, batched.client_id}  # a client sees its own join
    joined: list[str] = []
    while len(joined) < len(everyone):
        push = await batched.push()
        assert push["push"] == "presence", push  # never a single join for this client
        joined += [info["client"] for kind, info in push["changes"] if kind == "join"]
    assert set(joined) == everyone
    singles = [(await single.push("join"))["info"]["client"] for _ in range(len(ids) + 1)]
    assert set(singles) == ids | {single.client_id}


async def test_count_only_channels_count_members_without_pushes_or_a_list(
    start_hub: StartHub, wire: Wire
) -> None:
    namespaces = {"big": ChannelOptions(presence_count_only=True)}
    hub = await start_hub(config=config(namespaces=namespaces))
    watcher = await wire(hub.websocket_url)
    await watcher.call("subscribe", {"channel": "big:hall"})
    for _ in range(3):
        member = await wire(hub.websocket_url)
        await member.call("subscribe", {"channel": "big:hall"})
    stats = await watcher.call("presence_stats", {"channel": "big:hall"})
    assert stats == {"num_clients": 4, "num_users": 1}
    refused = await watcher.reply("presence", {"channel": "big:hall"})
    assert refused["error"]["code"] == 108
    await watcher.call("publish", {"channel": "big:hall", "data": "after"})
    # The publication is the first push: no join came before it.
    assert (await watcher.push())["push"] == "pub"
