"""The node starts on first use: publish before any server or lifespan, concurrently, once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tether.hub import HubConfig, MemoryBroker, Node


class CountingBroker(MemoryBroker):
    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.starts = 0
        self.failures = failures
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def start(self, handler: Any) -> None:
        self.starts += 1
        self.entered.set()
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        await super().start(handler)


def anonymous() -> HubConfig:
    return HubConfig(allow_anonymous=True)


async def test_publish_starts_the_node() -> None:
    node = Node(anonymous(), broker=CountingBroker())
    assert not node.started
    result = await node.publish("c", 1)
    assert result.position is not None and result.position.offset == 1
    assert node.started
    history = await node.history("c", limit=10)
    assert [p.data for p in history.publications] == [1]
    await node.close()
    assert not node.started


async def test_concurrent_first_uses_share_one_start() -> None:
    broker = CountingBroker()
    broker.gate.clear()
    node = Node(anonymous(), broker=broker)
    calls = [node.publish("c", i) for i in range(5)]
    tasks = [asyncio.get_running_loop().create_task(c) for c in calls]
    await broker.entered.wait()  # the start is under way, held at the gate
    broker.gate.set()
    results = await asyncio.gather(*tasks)
    assert sorted(r.position.offset for r in results if r.position) == [1, 2, 3, 4, 5]
    assert broker.starts == 1
    await node.close()


async def test_a_cancelled_caller_does_not_cancel_the_start() -> None:
    broker = CountingBroker()
    broker.gate.clear()
    node = Node(anonymous(), broker=broker)
    first = asyncio.get_running_loop().create_task(node.start())
    second = asyncio.get_running_loop().create_task(node.start())
    await broker.entered.wait()
    first.cancel()
    broker.gate.set()
    await second
    assert node.started and broker.starts == 1
    with pytest.raises(asyncio.CancelledError):
        await first
    await node.close()


async def test_a_failed_start_raises_and_the_next_use_retries() -> None:
    broker = CountingBroker(failures=1)
    node = Node(anonymous(), broker=broker)
    with pytest.raises(ConnectionError):
        await node.publish("c", 1)
    assert not node.started
    assert (await node.publish("c", 2)).position is not None
    assert broker.starts == 2
    await node.close()


async def test_a_closed_node_is_not_restarted_by_a_late_publish() -> None:
    broker = CountingBroker()
    node = Node(anonymous(), broker=broker)
    await node.start()
    await node.close()
    await node.ensure_started()
    assert not node.started and broker.starts == 1
    await node.start()  # an explicit start reopens it
    assert node.started and broker.starts == 2
    await node.close()
