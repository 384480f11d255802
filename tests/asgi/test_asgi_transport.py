"""AsgiWebSocketTransport: buffering that ASGI cannot show, made bounded.

A client that stops reading makes the ASGI server's ``send`` block (the driver's gate
closed). The transport then buffers up to ``write_limit``, the session's writer up to
``limits.send_queue_size``, and past both the client is disconnected as a slow consumer
(4010) without delaying anyone else; closing a stuck connection takes at most
``close_timeout``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgi_driver import GUARD, next_push, wire
from test_asgi_app import make_hub, open_session

from tether.asgi import AsgiWebSocketTransport
from tether.asgi.scope import Message
from tether.hub import Limits
from tether.protocol.exceptions import ConnectionClosed


class Sink:
    """An ASGI ``send`` that records, and blocks while ``gate`` is closed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.arrived = asyncio.Event()

    async def __call__(self, message: Message) -> None:
        await self.gate.wait()
        self.messages.append(message)
        self.arrived.set()

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages if m["type"] == "websocket.send"]


async def test_ready_until_the_limit_then_write_waits_for_the_drain() -> None:
    sink = Sink()
    sink.gate.clear()
    transport = AsgiWebSocketTransport(sink, write_limit=10)
    assert transport.ready()
    transport.write_now("a" * 8)
    assert transport.ready() and transport.buffered_amount == 8
    transport.write_now("b" * 8)
    assert not transport.ready()  # 16 characters buffered, over 10
    waiting = asyncio.get_running_loop().create_task(transport.write("c"))
    await asyncio.sleep(0)
    assert not waiting.done()  # over the limit: write() waits like a full socket buffer
    sink.gate.set()
    await asyncio.wait_for(waiting, GUARD)
    assert transport.buffered_amount <= 10
    await transport.close(1000, "bye")
    assert sink.texts() == ["a" * 8, "b" * 8, "c"]
    assert sink.messages[-1] == {"type": "websocket.close", "code": 1000, "reason": "bye"}
    assert not transport.ready()


async def test_close_sends_what_is_queued_first_and_writes_after_it_fail() -> None:
    sink = Sink()
    transport = AsgiWebSocketTransport(sink)
    transport.write_now("one")
    transport.write_now("two")
    await transport.close(4010, "slow consumer")
    assert sink.texts() == ["one", "two"]
    assert sink.messages[-1]["code"] == 4010
    transport.write_now("late")  # ignored, like a write to a closed socket
    try:
        await transport.write("late")
    except ConnectionClosed:
        pass
    else:
        raise AssertionError("write after close must raise ConnectionClosed")
    assert sink.texts() == ["one", "two"]


async def test_close_of_a_stuck_connection_is_bounded() -> None:
    sink = Sink()
    sink.gate.clear()  # the client reads nothing: send never returns
    transport = AsgiWebSocketTransport(sink, close_timeout=0.05)
    transport.write_now("stuck")
    await asyncio.wait_for(transport.close(1001, "going away"), GUARD)
    assert transport.writer.done()
    assert transport.buffered_amount == 0
    assert sink.messages == []


async def test_a_failing_send_stops_the_transport() -> None:
    async def broken(message: Message) -> None:
        raise OSError("client disconnected")

    transport = AsgiWebSocketTransport(broken)
    transport.write_now("x")
    await asyncio.wait_for(asyncio.shield(transport.writer), GUARD)
    assert not transport.ready()
    try:
        await transport.write("y")
    except ConnectionClosed:
        pass
    else:
        raise AssertionError("write on a failed transport must raise ConnectionClosed")


async def test_slow_consumer_is_disconnected_and_others_keep_receiving() -> None:
    hub = make_hub(limits=Limits(send_queue_size=4000), close_timeout=0.1)
    hub.write_limit = 1000
    slow = await open_session(hub)
    fast = await open_session(hub)
    for driver in (slow, fast):
        command = {"id": 2, "method": "subscribe", "params": {"channel": "c"}}
        driver.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(command)})
        assert wire(await driver.next())["id"] == 2
    slow.gate.clear()  # slow stops reading; fast keeps up
    payload: Any = "x" * 200
    for _ in range(40):  # ~9 KB: past write_limit + send_queue_size for slow
        await hub.node.publish("c", payload)
        # fast reads each one as it comes (and so has nothing buffered).
        assert (await next_push(fast, "pub"))["data"] == payload
    await asyncio.wait_for(slow.finished(), GUARD)  # bounded by close_timeout
    assert hub.node.metrics.slow_consumer_disconnects == 1
    assert hub.node.metrics.close_codes[4010] == 1
    assert len(hub.node.sessions) == 1
    fast.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await fast.finished()
    await hub.shutdown()


async def test_slow_consumer_that_catches_up_gets_its_close_frame() -> None:
    hub = make_hub(limits=Limits(send_queue_size=2000))
    hub.write_limit = 500
    slow = await open_session(hub)
    command = {"id": 2, "method": "subscribe", "params": {"channel": "c"}}
    slow.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(command)})
    assert wire(await slow.next())["id"] == 2
    slow.gate.clear()
    for _ in range(30):
        await hub.node.publish("c", "y" * 200)
    assert hub.node.metrics.slow_consumer_disconnects == 1
    slow.gate.set()  # it reads again: what the transport held, then the close
    closed = await slow.next("websocket.close")
    assert closed["code"] == 4010
    slow.inbox.put_nowait({"type": "websocket.disconnect", "code": 4010})
    await slow.finished()
    await hub.shutdown()
