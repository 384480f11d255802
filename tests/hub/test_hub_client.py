"""The Python hub client: states, tokens, reconnects, acks, presence, history."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hub_support import GUARD, Recorder, config, kill_sockets, token

from tether.hub import Client, ClientState, HubClientError, HubServer, StreamPosition
from tether.hub.client import PresenceEvent
from tether_testing import closed_port

StartHub = Callable[..., Awaitable[HubServer]]


def make_client(hub: HubServer, rec: Recorder, **kwargs: object) -> Client:
    return Client(
        hub.websocket_url,
        min_backoff=0.01,
        max_backoff=0.05,
        on_state=rec.states.put_nowait,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_states_and_basic_calls(start_hub: StartHub) -> None:
    hub = await start_hub()
    rec = Recorder()
    client = make_client(hub, rec, token=token("alice"), info={"name": "Alice"})
    joins: asyncio.Queue[PresenceEvent] = asyncio.Queue()
    try:
        await asyncio.wait_for(client.connect(), GUARD)
        assert (await rec.state(ClientState.CONNECTED)).state is ClientState.CONNECTED
        assert client.user == "alice" and client.client_id in hub.node.sessions
        # It takes presence pushes (many joins in one): its join below comes in one.
        assert hub.node.sessions[client.client_id].presence_batches
        await client.subscribe("room", on_publication=rec.pubs.put, on_join=joins.put)
        join = await asyncio.wait_for(joins.get(), GUARD)
        assert join.info.user == "alice" and join.info.info == {"name": "Alice"}
        ack = await client.publish("room", {"t": 1})
        assert ack["offset"] == 1
        assert await rec.data(1) == [{"t": 1}]
        presence = await client.presence("room")
        assert presence[client.client_id].user == "alice"
        assert await client.presence_stats("room") == {"num_clients": 1, "num_users": 1}
        pubs, position = await client.history("room", limit=5)
        assert [p.data for p in pubs] == [{"t": 1}]
        since = StreamPosition(1, position.epoch)
        assert (await client.history("room", limit=5, since=since))[0] == []
        with pytest.raises(HubClientError) as caught:
            await client.subscribe("room")
        assert caught.value.code == 105
        await client.unsubscribe("room")
        await hub.node.publish("room", "unseen")
        assert hub.node.registry.sessions("room") == set()
    finally:
        await client.close()
    assert client.state is ClientState.CLOSED


async def test_refused_token_stops(start_hub: StartHub) -> None:
    hub = await start_hub(config=config(allow_anonymous=False))
    rec = Recorder()
    client = make_client(hub, rec, token=token(secret="wrong-secret-wrong-secret-wrong-secret"))
    with pytest.raises(HubClientError) as caught:
        await asyncio.wait_for(client.connect(), GUARD)
    assert caught.value.code == 101
    assert client.state is ClientState.CLOSED
    await client.close()


async def test_refused_upgrade_stops_with_the_reason(start_hub: StartHub) -> None:
    """A 403 (here: a foreign Origin) is final: connect() raises instead of retrying forever."""
    hub = await start_hub()
    client = make_client(hub, Recorder(), origin="https://evil.example")
    with pytest.raises(ConnectionError) as caught:
        await asyncio.wait_for(client.connect(), GUARD)
    assert "HTTP 403" in str(caught.value)
    assert client.state is ClientState.CLOSED
    await client.close()


async def test_connect_timeout_gives_up_and_closes() -> None:
    client = Client(f"ws://127.0.0.1:{closed_port()}/", min_backoff=0.01, max_backoff=0.05)
    with pytest.raises(ConnectionError) as caught:
        await asyncio.wait_for(client.connect(timeout=0.3), GUARD)
    assert "within 0.3 s" in str(caught.value)
    assert "last error" in str(caught.value)  # e.g. connection refused
    assert client.state is ClientState.CLOSED


async def test_forbidden_subscribe_raises(start_hub: StartHub) -> None:
    hub = await start_hub()
    client = make_client(hub, Recorder(), token=token("u", channels=["public:*"]))
    try:
        await asyncio.wait_for(client.connect(), GUARD)
        with pytest.raises(HubClientError) as caught:
            await client.subscribe("private:x")
        assert caught.value.code == 103
        await client.subscribe("public:x")  # the client goes on
    finally:
        await client.close()


async def test_get_token_refreshes_before_expiry(start_hub: StartHub) -> None:
    hub = await start_hub(config=config(allow_anonymous=False))
    issued: list[str] = []
    refreshed = asyncio.Event()

    async def get_token() -> str:
        issued.append(token("tina", ttl=2 if not issued else 3600))
        if len(issued) == 2:
            refreshed.set()
        return issued[-1]

    client = make_client(hub, Recorder(), get_token=get_token)
    try:
        await asyncio.wait_for(client.connect(), GUARD)
        session = hub.node.sessions[client.client_id]
        await asyncio.wait_for(refreshed.wait(), GUARD)  # about a second before expiry
        await client._call("ping", {})  # commands run in order: the refresh is done
        assert session.credentials is not None and session.credentials.ttl() > 3000  # type: ignore[operator]
        assert hub.node.sessions.get(client.client_id) is session
    finally:
        await client.close()


async def test_token_expiry_3000_fetches_a_new_token(start_hub: StartHub) -> None:
    hub = await start_hub(config=config(allow_anonymous=False))
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return token("uma", ttl=1 if calls == 1 else 3600)

    rec = Recorder()
    # No refresh before expiry in this test: the token is too short-lived for it.
    client = make_client(hub, rec, get_token=get_token)
    client._schedule_refresh = lambda ttl: None  # type: ignore[method-assign]
    try:
        await asyncio.wait_for(client.connect(), GUARD)
        event = await rec.state(ClientState.DISCONNECTED)
        assert event.code == 3000
        await rec.state(ClientState.CONNECTED)
        assert calls == 2 and client.user == "uma"
    finally:
        await client.close()


async def test_publish_while_disconnected_is_sent_after_reconnect(start_hub: StartHub) -> None:
    hub = await start_hub()
    rec = Recorder()
    client = make_client(hub, rec)
    try:
        await asyncio.wait_for(client.connect(), GUARD)
        await client.subscribe("q", on_publication=rec.pubs.put)
        kill_sockets(hub.node)
        await rec.state(ClientState.DISCONNECTED)
        ack = await asyncio.wait_for(client.publish("q", "queued"), GUARD)
        assert ack["offset"] == 1
        assert await rec.data(1) == ["queued"]
    finally:
        await client.close()


async def test_disconnect_4005_stops_reconnecting(start_hub: StartHub) -> None:
    hub = await start_hub()
    rec = Recorder()
    client = make_client(hub, rec, token=token("vic"))
    try:
        await asyncio.wait_for(client.connect(), GUARD)
        pending = asyncio.ensure_future(client.publish("never-acked", 1))
        await hub.node.disconnect("vic")
        closed = await rec.state(ClientState.CLOSED)
        assert closed.code == 4005
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(pending, GUARD)
        with pytest.raises(ConnectionError):
            await client.presence("room")
    finally:
        await client.close()


async def test_handlers_may_be_coroutines_and_may_fail(start_hub: StartHub) -> None:
    hub = await start_hub()
    seen: list[object] = []

    async def slow_handler(event: object) -> None:
        await asyncio.sleep(0)
        seen.append(event)

    def broken_handler(event: object) -> None:
        raise RuntimeError("application bug")

    client = make_client(hub, Recorder())
    try:
        await asyncio.wait_for(client.connect(), GUARD)
        await client.subscribe("h1", on_publication=slow_handler)
        await client.subscribe("h2", on_publication=broken_handler)
        await client.publish("h2", "boom")
        await client.publish("h1", "ok")
        await asyncio.wait_for(client._events.join(), GUARD)
        assert [getattr(e, "data", None) for e in seen] == ["ok"]
    finally:
        await client.close()


async def test_subscribe_retries_while_the_broker_is_unavailable(start_hub: StartHub) -> None:
    """A real hub answers 112 (temporary) while its broker is down: the client keeps
    the subscription and retries until the hub accepts."""
    from tether.hub.brokers.base import BrokerUnavailable

    hub = await start_hub()
    broker = hub.node.broker
    real_subscribe = broker.subscribe
    refusals = 3

    async def flaky_subscribe(channel: str) -> None:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise BrokerUnavailable("broker down")
        await real_subscribe(channel)

    broker.subscribe = flaky_subscribe  # type: ignore[method-assign]
    rec = Recorder()
    unsubscribed: asyncio.Queue[object] = asyncio.Queue()
    client = make_client(hub, rec)
    try:
        await asyncio.wait_for(client.connect(), GUARD)
        sub = await asyncio.wait_for(
            client.subscribe(
                "flaky", on_publication=rec.pubs.put, on_unsubscribed=unsubscribed.put
            ),
            GUARD,
        )
        assert refusals == 0 and sub.active
        assert hub.node.registry.sessions("flaky") != set()
        await client.publish("flaky", "through")
        assert await rec.data(1) == ["through"]
        assert unsubscribed.empty()
    finally:
        await client.close()
