"""Broker contract: an envelope reaches every subscribed node, in order, and nothing else."""

from __future__ import annotations

import pytest
from contract_support import Backend

from tether.hub import Broker, BrokerUnavailable
from tether.hub.envelope import Envelope, Pub


async def started(
    backend: Backend, n: int
) -> tuple[list[Broker], list[list[tuple[str, Envelope]]]]:
    brokers = backend.make_brokers(n)
    inboxes: list[list[tuple[str, Envelope]]] = [[] for _ in brokers]
    for broker, inbox in zip(brokers, inboxes, strict=True):
        await broker.start(lambda channel, payload, inbox=inbox: inbox.append((channel, payload)))
        backend.closers.append(broker.close)
    return brokers, inboxes


async def test_publish_reaches_every_subscribed_node_including_itself(backend: Backend) -> None:
    (a, b, _), (in_a, in_b, in_c) = await started(backend, 3)
    await a.subscribe("news")
    await b.subscribe("news")
    await a.publish("news", Pub(b"one"))
    assert in_a == [("news", Pub(b"one"))]
    assert in_b == [("news", Pub(b"one"))]
    assert in_c == []


async def test_order_is_kept_per_channel(backend: Backend) -> None:
    (a, b), (_, in_b) = await started(backend, 2)
    await b.subscribe("ch")
    for i in range(50):
        await a.publish("ch", Pub(str(i).encode()))
    assert [p for _, p in in_b] == [Pub(str(i).encode()) for i in range(50)]


async def test_unsubscribe_stops_delivery_and_is_idempotent(backend: Backend) -> None:
    (a, b), (_, in_b) = await started(backend, 2)
    await b.subscribe("ch")
    await b.subscribe("ch")  # twice: still one delivery per publish
    await a.publish("ch", Pub(b"1"))
    await b.unsubscribe("ch")
    await b.unsubscribe("ch")
    await a.publish("ch", Pub(b"2"))
    assert in_b == [("ch", Pub(b"1"))]


async def test_channels_are_separate(backend: Backend) -> None:
    (a,), (in_a,) = await started(backend, 1)
    await a.subscribe("x")
    await a.publish("y", Pub(b"not for x"))
    assert in_a == []


async def test_publish_without_start_is_unavailable(backend: Backend) -> None:
    (broker,) = backend.make_brokers(1)
    with pytest.raises(BrokerUnavailable):
        await broker.publish("ch", Pub(b"x"))


async def test_close_stops_delivery(backend: Backend) -> None:
    (a, b), (_, in_b) = await started(backend, 2)
    await b.subscribe("ch")
    await b.close()
    await a.publish("ch", Pub(b"after close"))
    assert in_b == []
