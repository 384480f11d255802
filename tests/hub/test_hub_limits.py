"""Limits: each violation gets the spec's error or close code, and hurts nobody else."""

from __future__ import annotations

import asyncio
import base64
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import pytest
from hub_support import GUARD, WireClient, WireError, config

from tether.hub import HubServer, Limits

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


async def error_code(client: WireClient, method: str, params: dict[str, object]) -> int:
    with pytest.raises(WireError) as caught:
        await client.call(method, params)
    return caught.value.code


async def test_payload_size(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub(config=config(limits=Limits(max_payload_size=1000)))
    client = await wire(hub.websocket_url)
    await client.call("publish", {"channel": "c", "data": "x" * 990})
    assert await error_code(client, "publish", {"channel": "c", "data": "x" * 1000}) == 110
    assert hub.node.metrics.publish_errors[110] == 1


async def test_message_size_closes_1009(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub(config=config(limits=Limits(max_message_size=10_000)))
    client = await wire(hub.websocket_url)
    client.send("publish", {"channel": "c", "data": "x" * 20_000})
    assert (await client.close_code())[0] == 1009


async def test_channel_name_length(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    await client.call("subscribe", {"channel": "c" * 255})
    assert await error_code(client, "subscribe", {"channel": "c" * 256}) == 106
    assert await error_code(client, "publish", {"channel": "c" * 256, "data": 1}) == 106


async def test_subscription_count(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub(config=config(limits=Limits(max_subscriptions=3)))
    client = await wire(hub.websocket_url)
    for i in range(3):
        await client.call("subscribe", {"channel": f"c{i}"})
    assert await error_code(client, "subscribe", {"channel": "c3"}) == 106
    await client.call("unsubscribe", {"channel": "c0"})
    await client.call("subscribe", {"channel": "c3"})


async def test_idempotency_key_length(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    params = {"channel": "c", "data": 1, "idempotency_key": "k" * 65}
    assert await error_code(client, "publish", params) == 107


async def test_publish_rate_limit_then_flood_close(start_hub: StartHub, wire: Wire) -> None:
    limits = Limits(publish_rate=0.001, publish_burst=3, flood_strikes=4)
    hub = await start_hub(config=config(limits=limits))
    client = await wire(hub.websocket_url)
    for i in range(3):
        await client.call("publish", {"channel": "c", "data": i})
    for _ in range(4):
        reply = await client.reply("publish", {"channel": "c", "data": "again"})
        assert reply["error"] == {"code": 111, "message": "too many requests", "temporary": True}
    client.send("publish", {"channel": "c", "data": "flood"})
    disconnect = await client.push("disconnect")
    assert disconnect["code"] == 4011 and disconnect["reconnect"] is True
    assert (await client.close_code())[0] == 4011
    assert hub.node.metrics.publish_errors[111] == 5


async def test_slow_consumer_is_cut_off_and_others_keep_their_latency(
    start_hub: StartHub, wire: Wire
) -> None:
    """A subscriber that stops reading is disconnected with 4010; the others never wait."""
    # Compression off: this test stops the slow client's socket from under it
    # (pause_reading), and a compressed read is handed to a worker thread that
    # resumes reading when done, as a real client would.
    hub = await start_hub(
        config=config(limits=Limits(send_queue_size=256 * 1024), compression=False)
    )
    node = hub.node
    fast = await wire(hub.websocket_url)
    slow = await wire(hub.websocket_url, ws={"max_queue": 1})
    for client in (fast, slow):
        await client.call("subscribe", {"channel": "firehose"})
    assert slow.ws.transport is not None
    slow.ws.transport.pause_reading()  # stops reading: kernel buffers, then ours, fill up
    latencies = []
    for i in range(2000):  # stops as soon as the slow one is cut off
        # Random text: compression (on by default) must not make the flood small.
        payload = base64.b64encode(os.urandom(24 * 1024)).decode()
        started = time.perf_counter()
        await node.publish("firehose", {"i": i, "pad": payload})
        push = await fast.push("pub")
        latencies.append(time.perf_counter() - started)
        assert push["data"]["i"] == i
        if node.metrics.slow_consumer_disconnects:
            break
    assert node.metrics.slow_consumer_disconnects == 1, "the slow client was never cut off"
    # The fast subscriber was served at once all along (generous bound for a loaded CI).
    assert max(latencies) < 0.5, max(latencies)
    assert statistics.median(latencies) < 0.05
    slow.ws.transport.resume_reading()
    assert (await slow.close_code())[0] == 4010
    await node.publish("firehose", {"i": "after"})
    assert (await fast.push("pub"))["data"]["i"] == "after"
    assert node.metrics.close_codes[4010] == 1
    assert len(node.sessions) == 1


async def test_slow_writer_queue_drains_when_the_client_catches_up(
    start_hub: StartHub, wire: Wire
) -> None:
    """A client briefly behind is queued, not dropped, and gets everything in order."""
    hub = await start_hub()
    node = hub.node
    client = await wire(hub.websocket_url, ws={"max_queue": 1})
    await client.call("subscribe", {"channel": "burst"})
    assert client.ws.transport is not None
    client.ws.transport.pause_reading()
    session = node.sessions[client.client_id]
    i = 0
    while not session.writer.queued_bytes:  # until the hub starts queueing for it
        pad = base64.b64encode(os.urandom(12 * 1024)).decode()  # incompressible
        await node.publish("burst", {"i": i, "pad": pad})
        await asyncio.sleep(0)  # let the event loop flush to the socket
        i += 1
        assert i < 2000
    client.ws.transport.resume_reading()
    received = [(await client.push("pub"))["data"]["i"] for _ in range(i)]
    assert received == list(range(i))
    assert node.metrics.slow_consumer_disconnects == 0
    await asyncio.wait_for(client.call("ping"), GUARD)
