"""Durable single-node history (``--data DIR``, SQLite): what survives, what is refused.

The history contract itself runs over SQLite in tests/hub/contract/; here:
reopening keeps everything, adds are batched off the event loop, and the
faults an operator meets (a damaged file, a newer schema, a store that stops
writing) give a clear error at start or error 127, never a silent drop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from hub_support import WireClient, WireError, api_headers, config, http

from tether.hub import HubError, HubServer, Node, Publication, StreamPosition
from tether.hub.errors import ErrorCode
from tether.hub.history.errors import HistoryUnavailable
from tether.hub.history.sqlite import FILE_NAME, SqliteHistory


async def add(history: SqliteHistory, n: int, **kwargs: Any) -> list[StreamPosition]:
    return [
        (await history.add("ch", Publication({"i": i}), size=100, ttl=60, **kwargs)).position
        for i in range(n)
    ]


async def test_reopening_keeps_epoch_offsets_publications_and_keys(tmp_path: Path) -> None:
    first = SqliteHistory(tmp_path)
    positions = await add(first, 3)
    keyed = await first.add("ch", Publication("k"), size=100, ttl=60, idempotency_key="key-1")
    await first.close()

    again = SqliteHistory(tmp_path)  # a new process, as after a restart
    try:
        assert await again.position("ch") == keyed.position == StreamPosition(4, positions[0].epoch)
        pubs, _ = await again.read("ch", limit=10)
        assert [p.data for p in pubs] == [{"i": 0}, {"i": 1}, {"i": 2}, "k"]
        recovery = await again.since("ch", positions[0], limit=10)
        assert recovery.recovered and [p.offset for p in recovery.publications] == [2, 3, 4]
        retry = await again.add("ch", Publication("k"), size=100, ttl=60, idempotency_key="key-1")
        assert retry.duplicate and retry.position == keyed.position
        assert (await again.add("ch", Publication("n"), size=100, ttl=60)).position.offset == 5
    finally:
        await again.close()


async def test_concurrent_adds_share_transactions_on_the_history_thread(tmp_path: Path) -> None:
    history = SqliteHistory(tmp_path)
    threads: set[int] = set()
    batches: list[int] = []
    call, writes = history._call, history._writes

    def recording_call(work: Any) -> Any:
        threads.add(threading.get_ident())
        return call(work)

    def counting_writes(batch: Any) -> Any:
        batches.append(len(batch))
        return writes(batch)

    history._call = recording_call  # type: ignore[method-assign]
    history._writes = counting_writes  # type: ignore[method-assign]
    try:
        results = await asyncio.gather(
            *(history.add("ch", Publication(i), size=1000, ttl=60) for i in range(300))
        )
        # Offsets in the order the adds were made, none missing.
        assert [r.position.offset for r in results] == list(range(1, 301))
        pubs, _ = await history.read("ch", limit=1000)
        assert [p.data for p in pubs] == list(range(300))
        assert sum(batches) == 300 and len(batches) < 300 / 4, batches  # one fsync per batch
        assert threading.get_ident() not in threads  # never on the event loop's thread
    finally:
        await history.close()


async def test_a_damaged_file_stops_the_node_at_start(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).write_bytes(b"definitely not SQLite" * 500)
    node = Node(config(data=str(tmp_path)))
    with pytest.raises(HistoryUnavailable, match=r"file is not a database.*damaged"):
        await node.start()
    assert not node.started
    # The operator moves the file away: the same node starts.
    (tmp_path / FILE_NAME).rename(tmp_path / "damaged.sqlite3")
    await node.start()
    assert (await node.publish("ch", "fresh")).position is not None
    await node.close()


async def test_damaged_pages_stop_the_node_at_start(tmp_path: Path) -> None:
    history = SqliteHistory(tmp_path)
    for i in range(200):
        await history.add(f"ch{i}", Publication("x" * 500), size=10, ttl=60)
    await history.close()
    path = tmp_path / FILE_NAME
    raw = bytearray(path.read_bytes())
    assert len(raw) > 8 * 4096
    raw[3 * 4096 : 6 * 4096] = b"\xa5" * (3 * 4096)  # pages of the tables, not the header
    path.write_bytes(bytes(raw))
    with pytest.raises(HistoryUnavailable, match=r"damaged|malformed"):
        await SqliteHistory(tmp_path).start()


async def test_a_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / FILE_NAME)
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(HistoryUnavailable, match="newer tether"):
        await SqliteHistory(tmp_path).start()


async def test_a_data_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HistoryUnavailable, match="cannot create the data directory"):
        await SqliteHistory(blocker / "data").start()


async def test_a_store_that_stops_writing_refuses_publishes_with_125(
    tmp_path: Path, start_hub: Any, wire: Any
) -> None:
    hub: HubServer = await start_hub(config=config(data=str(tmp_path)))
    node = hub.node
    history = node.history_store
    assert isinstance(history, SqliteHistory)
    before = await node.publish("ch", "stored")
    # The file turns unwritable under the node (as a remount read-only would).
    await history._run(lambda db: db.execute("PRAGMA query_only = 1"))
    with pytest.raises(HubError) as caught:
        await node.publish("ch", "refused")
    assert caught.value.code == ErrorCode.HISTORY_UNAVAILABLE and caught.value.temporary
    assert "readonly" in caught.value.message
    client: WireClient = await wire(hub.websocket_url)
    with pytest.raises(WireError) as refused:
        await client.call("publish", {"channel": "ch", "data": "refused"})
    assert (refused.value.code, refused.value.temporary) == (127, True)
    status, _, body = await http(
        hub.port, "POST", "/api/publish", {"channel": "ch", "data": "x"}, headers=api_headers()
    )
    assert status == 503 and b'"code":127' in body.replace(b" ", b"")
    # Nothing refused was kept; once writable again, offsets go on without a hole.
    await history._run(lambda db: db.execute("PRAGMA query_only = 0"))
    after = await node.publish("ch", "stored again")
    assert before.position is not None and after.position is not None
    assert after.position.offset == before.position.offset + 1
    result = await node.history("ch", limit=10)
    assert [p.data for p in result.publications] == ["stored", "stored again"]


async def test_two_processes_sharing_the_directory_allocate_contiguous_offsets(
    tmp_path: Path,
) -> None:
    """Two connections to one file (as two workers of one machine would hold)."""
    first, second = SqliteHistory(tmp_path), SqliteHistory(tmp_path)
    try:
        results = await asyncio.gather(
            *(
                history.add("ch", Publication([n, i]), size=1000, ttl=60)
                for i in range(100)
                for n, history in enumerate((first, second))
            )
        )
        assert sorted(r.position.offset for r in results) == list(range(1, 201))
        assert len({r.position.epoch for r in results}) == 1
        pubs, position = await second.read("ch", limit=1000)
        assert [p.offset for p in pubs] == list(range(1, 201)) and position.offset == 200
    finally:
        await first.close()
        await second.close()
