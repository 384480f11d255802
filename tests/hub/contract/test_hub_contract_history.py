"""History contract: offsets, epochs, trimming, TTLs, recovery and idempotency keys."""

from __future__ import annotations

from contract_support import Backend

from tether.hub import Publication, StreamPosition


async def add(backend: Backend, channel: str, n: int, *, size: int = 10, ttl: float = 60) -> None:
    for i in range(n):
        await backend.history.add(channel, Publication({"i": i}), size=size, ttl=ttl)


async def test_offsets_grow_by_one_within_one_epoch(backend: Backend) -> None:
    history = backend.history
    start = await history.position("ch")
    assert start.offset == 0
    first = await history.add("ch", Publication("a"), size=10, ttl=60)
    second = await history.add("ch", Publication("b"), size=10, ttl=60)
    assert first.position == StreamPosition(1, start.epoch)
    assert second.position == StreamPosition(2, start.epoch)
    assert not first.duplicate
    assert await history.position("ch") == second.position


async def test_epoch_is_stable_and_per_channel(backend: Backend) -> None:
    history = backend.history
    assert (await history.position("a")).epoch == (await history.position("a")).epoch
    await add(backend, "b", 3)
    assert (await history.position("a")).offset == 0


async def test_read_forward_reverse_and_since(backend: Backend) -> None:
    await add(backend, "ch", 5)
    pubs, position = await backend.history.read("ch", limit=10)
    assert [p.offset for p in pubs] == [1, 2, 3, 4, 5]
    assert [p.data for p in pubs] == [{"i": i} for i in range(5)]
    assert position.offset == 5
    pubs, _ = await backend.history.read("ch", limit=2)
    assert [p.offset for p in pubs] == [1, 2]
    pubs, _ = await backend.history.read("ch", limit=2, reverse=True)
    assert [p.offset for p in pubs] == [5, 4]
    pubs, _ = await backend.history.read("ch", limit=10, since=3)
    assert [p.offset for p in pubs] == [4, 5]
    pubs, _ = await backend.history.read("ch", limit=10, since=3, reverse=True)
    assert [p.offset for p in pubs] == [2, 1]
    pubs, _ = await backend.history.read("ch", limit=0)
    assert pubs == []


async def test_size_keeps_the_newest(backend: Backend) -> None:
    await add(backend, "ch", 8, size=3)
    pubs, position = await backend.history.read("ch", limit=10)
    assert [p.offset for p in pubs] == [6, 7, 8]
    assert position.offset == 8


async def test_since_recovers_exactly_the_missed_ones(backend: Backend) -> None:
    await add(backend, "ch", 5)
    epoch = (await backend.history.position("ch")).epoch
    recovery = await backend.history.since("ch", StreamPosition(2, epoch), limit=100)
    assert recovery.recovered
    assert [p.offset for p in recovery.publications] == [3, 4, 5]
    assert recovery.position == StreamPosition(5, epoch)
    nothing_missed = await backend.history.since("ch", StreamPosition(5, epoch), limit=100)
    assert nothing_missed.recovered and nothing_missed.publications == []


async def test_since_fails_for_another_epoch_a_trimmed_gap_or_over_limit(backend: Backend) -> None:
    await add(backend, "ch", 8, size=3)
    epoch = (await backend.history.position("ch")).epoch
    other = await backend.history.since("ch", StreamPosition(7, "another-epoch"), limit=100)
    assert not other.recovered and other.publications == []
    assert other.position == StreamPosition(8, epoch)
    trimmed = await backend.history.since("ch", StreamPosition(2, epoch), limit=100)
    assert not trimmed.recovered
    over = await backend.history.since("ch", StreamPosition(6, epoch), limit=1)
    assert not over.recovered
    future = await backend.history.since("ch", StreamPosition(99, epoch), limit=100)
    assert not future.recovered


async def test_publications_expire_but_the_position_survives(backend: Backend) -> None:
    await add(backend, "ch", 3, ttl=5)
    position = await backend.history.position("ch")
    await backend.advance(6)
    pubs, after = await backend.history.read("ch", limit=10)
    assert pubs == []
    assert after == position
    # A client that had seen everything still recovers; one that had not, cannot.
    assert (await backend.history.since("ch", position, limit=10)).recovered
    behind = StreamPosition(1, position.epoch)
    assert not (await backend.history.since("ch", behind, limit=10)).recovered


async def test_remove_starts_a_new_epoch(backend: Backend) -> None:
    await add(backend, "ch", 3)
    old = await backend.history.position("ch")
    await backend.history.remove("ch")
    new = await backend.history.position("ch")
    assert new.epoch != old.epoch
    assert new.offset == 0
    recovery = await backend.history.since("ch", old, limit=10)
    assert not recovery.recovered and recovery.position.epoch == new.epoch


async def test_idempotency_key_returns_the_original_position(backend: Backend) -> None:
    history = backend.history
    first = await history.add("ch", Publication(1), size=10, ttl=60, idempotency_key="k1")
    again = await history.add("ch", Publication(1), size=10, ttl=60, idempotency_key="k1")
    other = await history.add("ch", Publication(2), size=10, ttl=60, idempotency_key="k2")
    assert again.duplicate and again.position == first.position
    assert other.position.offset == first.position.offset + 1
    pubs, _ = await history.read("ch", limit=10)
    assert [p.data for p in pubs] == [1, 2]
    # Keys are per channel.
    elsewhere = await history.add("other", Publication(1), size=10, ttl=60, idempotency_key="k1")
    assert not elsewhere.duplicate


async def test_idempotency_keys_expire_with_the_history_ttl(backend: Backend) -> None:
    history = backend.history
    await history.add("ch", Publication(1), size=10, ttl=5, idempotency_key="k")
    await backend.advance(6)
    later = await history.add("ch", Publication(1), size=10, ttl=5, idempotency_key="k")
    assert not later.duplicate


async def test_expire_is_safe_to_call(backend: Backend) -> None:
    await add(backend, "ch", 2, ttl=1)
    await backend.advance(2)
    await backend.history.expire()
    pubs, _ = await backend.history.read("ch", limit=10)
    assert pubs == []
