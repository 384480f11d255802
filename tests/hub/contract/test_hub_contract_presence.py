"""Presence contract: membership per channel, stats, and TTL-based cleanup."""

from __future__ import annotations

from contract_support import Backend

from tether.hub import ClientInfo


async def test_add_get_remove(backend: Backend) -> None:
    presence = backend.presence
    alice = ClientInfo("c1", "alice", {"name": "Alice"})
    await presence.add("room", alice, ttl=60)
    await presence.add("room", ClientInfo("c2", "bob"), ttl=60)
    clients = await presence.get("room")
    assert clients["c1"] == alice
    assert set(clients) == {"c1", "c2"}
    await presence.remove("room", "c2")
    await presence.remove("room", "c2")  # absent: no error
    assert set(await presence.get("room")) == {"c1"}
    assert await presence.get("elsewhere") == {}


async def test_stats_count_clients_and_distinct_users(backend: Backend) -> None:
    presence = backend.presence
    await presence.add("room", ClientInfo("c1", "alice"), ttl=60)
    await presence.add("room", ClientInfo("c2", "alice"), ttl=60)
    await presence.add("room", ClientInfo("c3", "bob"), ttl=60)
    stats = await presence.stats("room")
    assert (stats.num_clients, stats.num_users) == (3, 2)


async def test_entries_expire_unless_refreshed(backend: Backend) -> None:
    presence = backend.presence
    await presence.add("room", ClientInfo("stale", "x"), ttl=5)
    await presence.add("room", ClientInfo("live", "y"), ttl=5)
    await backend.advance(3)
    await presence.add("room", ClientInfo("live", "y"), ttl=5)  # refreshed
    await backend.advance(3)
    await presence.expire()
    assert set(await presence.get("room")) == {"live"}
    assert (await presence.stats("room")).num_clients == 1


async def test_add_many_adds_and_refreshes_every_entry(backend: Backend) -> None:
    presence = backend.presence
    alice, bob = ClientInfo("c1", "alice", {"name": "Alice"}), ClientInfo("c2", "bob")
    await presence.add("room", ClientInfo("stale", "x"), ttl=5)
    await presence.add_many("room", [alice, bob], ttl=5)
    await presence.add_many("room", [], ttl=5)  # nothing: no error
    assert await presence.get("room") == {
        "c1": alice,
        "c2": bob,
        "stale": ClientInfo("stale", "x"),
    }
    await backend.advance(3)
    await presence.add_many("room", [alice, bob], ttl=5)  # refreshed, "stale" not
    await backend.advance(3)
    await presence.expire()
    assert await presence.get("room") == {"c1": alice, "c2": bob}
    assert (await presence.stats("room")).num_users == 2
    assert await presence.get("elsewhere") == {}


async def test_remove_many_removes_each_entry_and_ignores_absent_ones(backend: Backend) -> None:
    presence = backend.presence
    people = [ClientInfo(f"c{i}", f"u{i}") for i in range(5)]
    await presence.add_many("room", people, ttl=60)
    await presence.add("other", people[0], ttl=60)
    await presence.remove_many("room", ["c0", "c2", "c4", "absent"])
    await presence.remove_many("room", [])  # nothing: no error
    assert set(await presence.get("room")) == {"c1", "c3"}
    assert set(await presence.get("other")) == {"c0"}  # another channel keeps its entry
