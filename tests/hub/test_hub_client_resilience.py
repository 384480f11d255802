"""The Python hub client against a scripted hub: subscribe errors, epochs and gaps.

The scripted hub speaks the wire protocol (docs/wire-protocol.md) and does
nothing on its own: each test reads the client's commands and writes the
replies and pushes, so it can produce what a real hub does only under faults
(a broker that is down, a history that was reset, a lost publication).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hub_support import GUARD, Recorder

import tether
import tether.hub.client as client_module
from tether.hub import Client, ClientState, HubClientError, StreamPosition
from tether.hub.client import SubscribedEvent, UnsubscribedEvent
from tether.hub.wire import SUBPROTOCOL


class ScriptedHub:
    """Accepts connections; hands each command to the test, which answers it."""

    def __init__(self) -> None:
        self.commands: asyncio.Queue[tuple[tether.ServerConnection, dict[str, Any]]] = (
            asyncio.Queue()
        )
        self.server: tether.Server | None = None

    async def start(self) -> str:
        self.server = await tether.serve(self._handler, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL])
        port = int(self.server.sockets[0].getsockname()[1])
        return f"ws://127.0.0.1:{port}/connection/websocket"

    async def _handler(self, ws: tether.ServerConnection) -> None:
        async for raw in ws:
            assert isinstance(raw, str)
            self.commands.put_nowait((ws, json.loads(raw)))

    async def command(self, method: str) -> tuple[tether.ServerConnection, dict[str, Any]]:
        """The client's next command, which must be ``method``."""
        ws, message = await asyncio.wait_for(self.commands.get(), GUARD)
        assert message["method"] == method, message
        return ws, message

    async def answer(self, method: str, result: dict[str, Any]) -> dict[str, Any]:
        """Answer the next command (``method``) with ``result``; return its params."""
        ws, message = await self.command(method)
        await ws.send(json.dumps({"id": message["id"], "result": result}))
        params: dict[str, Any] = message["params"]
        return params

    async def refuse(self, method: str, code: int, temporary: bool) -> dict[str, Any]:
        ws, message = await self.command(method)
        error = {"code": code, "message": f"error {code}", "temporary": temporary}
        await ws.send(json.dumps({"id": message["id"], "error": error}))
        params: dict[str, Any] = message["params"]
        return params

    async def accept_connect(self) -> tether.ServerConnection:
        ws, message = await self.command("connect")
        result = {"client": "c1", "user": "u", "ping": 25}
        await ws.send(json.dumps({"id": message["id"], "result": result}))
        return ws

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), GUARD)


def subscribed(offset: int, epoch: str, **extra: Any) -> dict[str, Any]:
    result = {"offset": offset, "epoch": epoch, "recoverable": True, "positioned": True}
    result.update(recovered=False, publications=[])
    result.update(extra)
    return result


def pub(channel: str, offset: int, epoch: str) -> str:
    message = {"push": "pub", "channel": channel, "data": offset, "offset": offset, "epoch": epoch}
    return json.dumps(message)


class Events(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.unsubscribed: asyncio.Queue[UnsubscribedEvent] = asyncio.Queue()
        self.order: list[tuple[str, object]] = []

    def on_pub(self, event: Any) -> None:
        self.order.append(("pub", event.data))
        self.pubs.put_nowait(event)

    def on_subscribed(self, event: SubscribedEvent) -> None:
        self.order.append(("subscribed", event.recovered))
        self.subscribed.put_nowait(event)

    async def next_subscribed(self) -> SubscribedEvent:
        return await asyncio.wait_for(self.subscribed.get(), GUARD)


class FakeRandom:
    """Records each backoff's jitter range and waits nothing."""

    def __init__(self) -> None:
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, low: float, high: float) -> float:
        self.ranges.append((low, high))
        return 0.0


@pytest.fixture
async def hub() -> AsyncIterator[ScriptedHub]:
    scripted = ScriptedHub()
    yield scripted
    await scripted.close()


@pytest.fixture
def jitter(monkeypatch: pytest.MonkeyPatch) -> FakeRandom:
    fake = FakeRandom()
    monkeypatch.setattr(client_module, "random", fake)
    return fake


async def connected(hub: ScriptedHub, rec: Events) -> tuple[Client, tether.ServerConnection]:
    url = await hub.start()
    client = Client(url, min_backoff=0.01, max_backoff=0.03, on_state=rec.states.put_nowait)
    connecting = asyncio.ensure_future(client.connect())
    ws = await hub.accept_connect()
    await asyncio.wait_for(connecting, GUARD)
    return client, ws


def subscribe(client: Client, rec: Events, channel: str = "ch") -> asyncio.Future[Any]:
    return asyncio.ensure_future(
        client.subscribe(
            channel,
            on_publication=rec.on_pub,
            on_subscribed=rec.on_subscribed,
            on_unsubscribed=rec.unsubscribed.put_nowait,
        )
    )


@pytest.mark.parametrize("code", [100, 111, 112])
async def test_temporary_subscribe_errors_are_retried_with_backoff(
    hub: ScriptedHub, jitter: FakeRandom, code: int
) -> None:
    rec = Events()
    client, ws = await connected(hub, rec)
    try:
        pending = subscribe(client, rec)
        for _ in range(3):
            assert await hub.refuse("subscribe", code, temporary=True) == {"channel": "ch"}
            assert not pending.done()  # subscribe() waits for the outcome
        await hub.answer("subscribe", subscribed(0, "E"))
        sub = await asyncio.wait_for(pending, GUARD)
        # Full jitter between 0 and a ceiling that doubles, up to max_backoff.
        assert jitter.ranges == [(0, 0.01), (0, 0.02), (0, 0.03)]
        assert (await rec.next_subscribed()).position == StreamPosition(0, "E")
        await ws.send(pub("ch", 1, "E"))
        assert await rec.data(1) == [1]
        assert client._subs["ch"] is sub and sub.active
        assert rec.unsubscribed.empty()
    finally:
        await client.close()


async def test_temporary_error_on_resubscribe_keeps_the_position(
    hub: ScriptedHub, jitter: FakeRandom
) -> None:
    rec = Events()
    client, ws = await connected(hub, rec)
    try:
        pending = subscribe(client, rec)
        await hub.answer("subscribe", subscribed(4, "E"))
        await asyncio.wait_for(pending, GUARD)
        await ws.close(1012, "restarting")
        ws = await hub.accept_connect()
        recover = {"channel": "ch", "recover": True, "offset": 4, "epoch": "E"}
        assert await hub.refuse("subscribe", 112, temporary=True) == recover
        assert await hub.refuse("subscribe", 112, temporary=True) == recover
        publications = [{"data": 5, "offset": 5}]
        result = subscribed(5, "E", recovered=True, publications=publications)
        assert await hub.answer("subscribe", result) == recover
        assert await rec.data(1) == [5]
        assert [e.recovered for e in [await rec.next_subscribed() for _ in range(2)]] == [
            False,
            True,
        ]
        assert rec.unsubscribed.empty()
    finally:
        await client.close()


async def test_permanent_subscribe_error_ends_the_subscription(
    hub: ScriptedHub, jitter: FakeRandom
) -> None:
    rec = Events()
    client, ws = await connected(hub, rec)
    try:
        pending = subscribe(client, rec)
        await hub.answer("subscribe", subscribed(0, "E"))
        await asyncio.wait_for(pending, GUARD)
        # Permission revoked while the client was away: it stops asking.
        await ws.close(1012, "restarting")
        ws = await hub.accept_connect()
        await hub.refuse("subscribe", 103, temporary=False)
        event = await asyncio.wait_for(rec.unsubscribed.get(), GUARD)
        assert (event.channel, event.code) == ("ch", 103)
        assert "ch" not in client._subs
        ping = asyncio.ensure_future(client._call("ping", {}))
        await hub.answer("ping", {})  # the next command: no subscribe retried
        await asyncio.wait_for(ping, GUARD)
        assert jitter.ranges == [(0, 0.01)]  # the reconnect's backoff only
        # A first subscribe refused for good raises.
        pending = subscribe(client, rec, "other")
        await hub.refuse("subscribe", 103, temporary=False)
        with pytest.raises(HubClientError) as caught:
            await asyncio.wait_for(pending, GUARD)
        assert caught.value.code == 103 and not caught.value.temporary
    finally:
        await client.close()


async def test_unsubscribe_or_close_stops_the_retries(hub: ScriptedHub, jitter: FakeRandom) -> None:
    rec = Events()
    client, _ = await connected(hub, rec)
    try:
        pending = subscribe(client, rec)
        await hub.refuse("subscribe", 112, temporary=True)
        await client.unsubscribe("ch")
        await asyncio.wait_for(pending, GUARD)  # returns: nothing left to wait for
        assert "ch" not in client._subs
        pending = subscribe(client, rec, "later")
        await hub.refuse("subscribe", 112, temporary=True)
        ping = asyncio.ensure_future(client._call("ping", {}))
        await hub.answer("ping", {})  # no subscribe to "ch" was retried in between
        await asyncio.wait_for(ping, GUARD)
    finally:
        await client.close()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(pending, GUARD)
    assert client.state is ClientState.CLOSED


async def test_new_epoch_in_a_publication_is_a_position_loss(hub: ScriptedHub) -> None:
    rec = Events()
    client, ws = await connected(hub, rec)
    try:
        pending = subscribe(client, rec)
        await hub.answer("subscribe", subscribed(5, "A"))
        sub = await asyncio.wait_for(pending, GUARD)
        first = await rec.next_subscribed()
        assert not first.resubscribed and first.position == StreamPosition(5, "A")
        await ws.send(pub("ch", 6, "A"))
        await ws.send(pub("ch", 1, "B"))  # history reset on the hub
        await ws.send(pub("ch", 2, "B"))
        assert await rec.data(3) == [6, 1, 2]
        lost = await rec.next_subscribed()
        assert not lost.recovered and lost.resubscribed
        assert lost.position == StreamPosition(1, "B")
        # The app hears of the loss before the new epoch's first publication.
        assert rec.order[1:] == [("pub", 6), ("subscribed", False), ("pub", 1), ("pub", 2)]
        assert sub.position == StreamPosition(2, "B")
        # A reconnect recovers from the new position.
        await ws.close(1012, "restarting")
        await hub.accept_connect()
        params = await hub.answer("subscribe", subscribed(2, "B", recovered=True))
        assert params == {"channel": "ch", "recover": True, "offset": 2, "epoch": "B"}
    finally:
        await client.close()


async def test_gap_resubscribes_and_recovers_from_the_last_position(hub: ScriptedHub) -> None:
    rec = Events()
    client, ws = await connected(hub, rec)
    try:
        pending = subscribe(client, rec)
        await hub.answer("subscribe", subscribed(5, "A"))
        sub = await asyncio.wait_for(pending, GUARD)
        await rec.next_subscribed()
        await ws.send(pub("ch", 6, "A"))
        await ws.send(pub("ch", 9, "A"))  # 7 and 8 were lost
        await ws.send(pub("ch", 10, "A"))  # in flight before the hub saw the unsubscribe
        assert await hub.answer("unsubscribe", {}) == {"channel": "ch"}
        ws_sub, message = await hub.command("subscribe")
        params = message["params"]
        assert params == {"channel": "ch", "recover": True, "offset": 6, "epoch": "A"}
        missed = [{"data": n, "offset": n} for n in (7, 8, 9, 10)]
        result = subscribed(10, "A", recovered=True, publications=missed)
        await ws_sub.send(json.dumps({"id": message["id"], "result": result}))
        await ws.send(pub("ch", 11, "A"))
        assert await rec.data(6) == [6, 7, 8, 9, 10, 11]  # in order, each once
        again = await rec.next_subscribed()
        assert again.recovered and again.resubscribed
        assert sub.position == StreamPosition(11, "A")
    finally:
        await client.close()


async def test_gap_that_cannot_be_recovered_tells_the_app(hub: ScriptedHub) -> None:
    rec = Events()
    client, ws = await connected(hub, rec)
    try:
        pending = subscribe(client, rec)
        await hub.answer("subscribe", subscribed(5, "A"))
        sub = await asyncio.wait_for(pending, GUARD)
        await rec.next_subscribed()
        await ws.send(pub("ch", 8, "A"))
        await hub.answer("unsubscribe", {})
        params = await hub.answer("subscribe", subscribed(20, "A"))  # recovered: false
        assert params["recover"] is True and params["offset"] == 5
        lost = await rec.next_subscribed()
        assert not lost.recovered and lost.resubscribed
        assert sub.position == StreamPosition(20, "A")
        await ws.send(pub("ch", 21, "A"))
        assert await rec.data(1) == [21]  # 8 was never delivered out of order
    finally:
        await client.close()
