"""App hooks on a Node: each hook allowing, refusing, rewriting, raising and timing out.

The hub is real (in-process, on a free port) and the clients speak the wire
protocol (WireClient) or are tether.hub.Client; a hook that "times out" waits
on an event nobody sets, bounded by a short hook timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hub_support import GUARD, WireClient, WireError, config, token

from tether.hub import Client, HubClientError, HubServer, Node
from tether.hub.errors import ErrorCode, HubCloseCode
from tether.hub.hooks import (
    ConnectRequest,
    ConnectResult,
    DisconnectEvent,
    Hooks,
    PublishRequest,
    PublishRewrite,
    Refuse,
    RpcRequest,
    SubscribeRequest,
    SubscribeResult,
)

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]

# Short enough for a quick test, long enough for a loaded machine to run a hook that answers.
HOOK_TIMEOUT = 0.3


async def never(*_: Any) -> Any:
    """A hook that does not answer: waits on an event nobody sets."""
    await asyncio.Event().wait()


async def boom(*_: Any) -> Any:
    raise RuntimeError("the app's bug")


async def hub_with(start_hub: StartHub, **hooks: Any) -> HubServer:
    hooks.setdefault("timeout", HOOK_TIMEOUT)
    return await start_hub(Node(config(), hooks=Hooks(**hooks)))


# ------------------------------------------------------------------ connect


async def test_connect_hook_sees_headers_cookies_and_claims_and_sets_the_user(
    start_hub: StartHub, wire: Wire
) -> None:
    seen: list[ConnectRequest] = []

    async def on_connect(request: ConnectRequest) -> ConnectResult:
        seen.append(request)
        assert request.credentials is not None
        return ConnectResult(
            user="user-" + request.cookies["sid"],
            info={"plan": request.credentials.claims["plan"]},  # type: ignore[index]
            data={"greeting": "hi"},
        )

    hub = await hub_with(start_hub, on_connect=on_connect)
    headers = {"Cookie": "sid=42; theme=dark", "X-Tenant": "acme"}
    client = await wire(hub.websocket_url, connect=False, ws={"additional_headers": headers})
    result = await client.connect(token=token("alice", plan="gold"), data={"app": 1})
    assert result["user"] == "user-42"
    assert result["data"] == {"greeting": "hi"}
    (request,) = seen
    assert request.headers["X-Tenant"] == "acme"
    assert request.cookies == {"sid": "42", "theme": "dark"}
    assert request.data == {"app": 1}
    assert request.credentials is not None and request.credentials.user == "alice"
    await client.call("subscribe", {"channel": "room"})
    presence = await client.call("presence", {"channel": "room"})
    (info,) = presence["clients"].values()
    assert info["user"] == "user-42" and info["info"] == {"plan": "gold"}


async def test_connect_hook_server_side_subscriptions_come_after_the_reply(
    start_hub: StartHub, wire: Wire
) -> None:
    async def on_connect(request: ConnectRequest) -> ConnectResult:
        return ConnectResult(user="bob", channels=["inbox:bob"])

    hub = await hub_with(start_hub, on_connect=on_connect)
    client = await wire(hub.websocket_url, connect=False)
    await client.connect()
    push = await client.push("subscribe")
    assert push["channel"] == "inbox:bob" and push["recoverable"] is True
    reply_at = next(i for i, m in enumerate(client.messages) if m.startswith('{"id":1,'))
    push_at = next(i for i, m in enumerate(client.messages) if '"push":"subscribe"' in m)
    assert reply_at < push_at
    await hub.node.publish("inbox:bob", {"n": 1})
    pub = await client.push("pub")
    assert pub["channel"] == "inbox:bob" and pub["data"] == {"n": 1}
    assert pub["offset"] == push["offset"] + 1


async def test_connect_hook_refusal_answers_the_code_and_closes_4003(
    start_hub: StartHub, wire: Wire
) -> None:
    async def on_connect(request: ConnectRequest) -> ConnectResult:
        raise Refuse(1001, "your plan has expired")

    hub = await hub_with(start_hub, on_connect=on_connect)
    client = await wire(hub.websocket_url, connect=False)
    with pytest.raises(WireError) as caught:
        await client.connect()
    assert caught.value.code == 1001
    assert caught.value.message == "your plan has expired"
    assert caught.value.temporary is False
    code, reason = await client.close_code()
    assert code == HubCloseCode.FORBIDDEN
    assert reason == "your plan has expired"


async def test_connect_hook_none_leaves_the_decision_to_the_token(
    start_hub: StartHub, wire: Wire
) -> None:
    calls: list[str] = []

    async def on_connect(request: ConnectRequest) -> None:
        calls.append(request.client)

    hub = await start_hub(Node(config(allow_anonymous=False), hooks=Hooks(on_connect=on_connect)))
    client = await wire(hub.websocket_url, connect=False)
    assert (await client.connect(token=token("carol")))["user"] == "carol"
    refused = await wire(hub.websocket_url, connect=False)
    with pytest.raises(WireError) as caught:
        await refused.connect()
    assert caught.value.code == ErrorCode.UNAUTHORIZED
    assert len(calls) == 2


async def test_a_bad_token_is_refused_before_the_connect_hook_runs(
    start_hub: StartHub, wire: Wire
) -> None:
    calls: list[ConnectRequest] = []

    async def on_connect(request: ConnectRequest) -> ConnectResult:
        calls.append(request)
        return ConnectResult(user="x")

    hub = await hub_with(start_hub, on_connect=on_connect)
    client = await wire(hub.websocket_url, connect=False)
    with pytest.raises(WireError) as caught:
        await client.connect(token=token("alice", secret="not-the-hub-secret-0123456789abcdef"))
    assert caught.value.code == ErrorCode.UNAUTHORIZED
    assert calls == []


async def test_without_jwt_the_connect_hook_checks_its_own_tokens(
    start_hub: StartHub, wire: Wire
) -> None:
    async def on_connect(request: ConnectRequest) -> ConnectResult:
        if request.token != "opaque-session-token":
            raise Refuse(ErrorCode.UNAUTHORIZED, "unknown session")
        return ConnectResult(user="dave")

    node = Node(config(jwt_secret=None), hooks=Hooks(on_connect=on_connect))
    hub = await start_hub(node)
    client = await wire(hub.websocket_url, connect=False)
    assert (await client.connect(token="opaque-session-token"))["user"] == "dave"
    other = await wire(hub.websocket_url, connect=False)
    with pytest.raises(WireError) as caught:
        await other.connect(token="forged")
    assert caught.value.code == ErrorCode.UNAUTHORIZED
    assert (await other.close_code())[0] == HubCloseCode.FORBIDDEN


@pytest.mark.parametrize(
    ("hook", "code"), [(boom, ErrorCode.APP_ERROR), (never, ErrorCode.APP_TIMEOUT)]
)
async def test_connect_hook_failure_is_temporary_and_keeps_the_connection(
    start_hub: StartHub,
    wire: Wire,
    hook: Callable[..., Awaitable[Any]],
    code: ErrorCode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = await hub_with(start_hub, on_connect=hook)
    client = await wire(hub.websocket_url, connect=False)
    with (
        caplog.at_level(logging.WARNING, logger="tether.hub.hooks"),
        pytest.raises(WireError) as caught,
    ):
        await client.connect()
    assert caught.value.code == code and caught.value.temporary
    assert any("on_connect" in r.getMessage() for r in caplog.records)
    # The connection is still usable: a ping before connect is answered 101, not dropped.
    reply = await client.reply("ping")
    assert reply["error"]["code"] == ErrorCode.UNAUTHORIZED


async def test_python_client_raises_the_connect_refusal(start_hub: StartHub) -> None:
    async def on_connect(request: ConnectRequest) -> ConnectResult:
        raise Refuse(ErrorCode.PERMISSION_DENIED, "banned")

    hub = await hub_with(start_hub, on_connect=on_connect)
    client = Client(hub.websocket_url)
    with pytest.raises(HubClientError) as caught:
        await client.connect(timeout=GUARD)
    assert caught.value.code == ErrorCode.PERMISSION_DENIED
    await client.close()


# ---------------------------------------------------------------- subscribe


async def test_subscribe_hook_allows_with_data_and_denies(start_hub: StartHub, wire: Wire) -> None:
    async def on_subscribe(request: SubscribeRequest) -> SubscribeResult:
        if request.channel.startswith("vip:"):
            raise Refuse(ErrorCode.PERMISSION_DENIED, "members only")
        return SubscribeResult(data={"welcome": request.channel, "asked": request.data})

    hub = await hub_with(start_hub, on_subscribe=on_subscribe)
    client = await wire(hub.websocket_url, token=token("erin"))
    result = await client.call("subscribe", {"channel": "news", "data": 7})
    assert result["data"] == {"welcome": "news", "asked": 7}
    with pytest.raises(WireError) as caught:
        await client.call("subscribe", {"channel": "vip:lounge"})
    assert (caught.value.code, caught.value.message) == (103, "members only")
    # Denied means not subscribed: a publication there does not reach the client.
    await hub.node.publish("vip:lounge", "secret")
    await hub.node.publish("news", "public")
    assert (await client.push("pub"))["data"] == "public"


@pytest.mark.parametrize(
    ("hook", "code"), [(boom, ErrorCode.APP_ERROR), (never, ErrorCode.APP_TIMEOUT)]
)
async def test_subscribe_hook_failure_answers_a_temporary_error(
    start_hub: StartHub, wire: Wire, hook: Callable[..., Awaitable[Any]], code: ErrorCode
) -> None:
    hub = await hub_with(start_hub, on_subscribe=hook)
    client = await wire(hub.websocket_url)
    with pytest.raises(WireError) as caught:
        await client.call("subscribe", {"channel": "news"})
    assert caught.value.code == code and caught.value.temporary
    assert not hub.node.registry.sessions("news")
    assert await client.call("ping") == {}


# ------------------------------------------------------------------ publish


async def test_publish_hook_rewrites_allows_and_denies(start_hub: StartHub, wire: Wire) -> None:
    async def on_publish(request: PublishRequest) -> PublishRewrite | None:
        text = request.data.get("text", "")
        if "spam" in text:
            raise Refuse(ErrorCode.PERMISSION_DENIED, "no spam")
        if "darn" in text:
            return PublishRewrite({**request.data, "text": text.replace("darn", "****")})
        return None

    hub = await hub_with(start_hub, on_publish=on_publish)
    reader = await wire(hub.websocket_url)
    writer = await wire(hub.websocket_url, token=token("frank"))
    await reader.call("subscribe", {"channel": "chat"})
    await writer.call("publish", {"channel": "chat", "data": {"text": "oh darn"}})
    with pytest.raises(WireError) as caught:
        await writer.call("publish", {"channel": "chat", "data": {"text": "buy spam"}})
    assert caught.value.code == ErrorCode.PERMISSION_DENIED
    await writer.call("publish", {"channel": "chat", "data": {"text": "fine"}})
    first, second = await reader.push("pub"), await reader.push("pub")
    assert first["data"] == {"text": "oh ****"}
    assert second["data"] == {"text": "fine"}
    history = await hub.node.history("chat", limit=10)
    assert [p.data for p in history.publications] == [{"text": "oh ****"}, {"text": "fine"}]


@pytest.mark.parametrize(
    ("hook", "code"), [(boom, ErrorCode.APP_ERROR), (never, ErrorCode.APP_TIMEOUT)]
)
async def test_publish_hook_failure_publishes_nothing(
    start_hub: StartHub, wire: Wire, hook: Callable[..., Awaitable[Any]], code: ErrorCode
) -> None:
    hub = await hub_with(start_hub, on_publish=hook)
    client = await wire(hub.websocket_url)
    with pytest.raises(WireError) as caught:
        await client.call("publish", {"channel": "chat", "data": 1})
    assert caught.value.code == code and caught.value.temporary
    assert (await hub.node.history("chat", limit=10)).publications == []


# ---------------------------------------------------------------------- rpc


async def rpc_handler(request: RpcRequest) -> Any:
    if request.method == "add":
        return {"sum": sum(request.data), "user": request.session.user}
    if request.method == "slow":
        await asyncio.Event().wait()
    if request.method == "crash":
        raise RuntimeError("bug")
    if request.method == "weird":
        return {"not json": {1, 2}}
    raise Refuse(1404, f"no method {request.method}")


async def test_rpc_replies_and_maps_errors_to_codes(start_hub: StartHub, wire: Wire) -> None:
    hub = await hub_with(start_hub, on_rpc=rpc_handler)
    client = await wire(hub.websocket_url, token=token("gina"))
    assert await client.call("rpc", {"method": "add", "data": [1, 2, 3]}) == {
        "data": {"sum": 6, "user": "gina"}
    }
    for method, code in [
        ("nope", 1404),
        ("crash", ErrorCode.APP_ERROR),
        ("slow", ErrorCode.APP_TIMEOUT),
        ("weird", ErrorCode.APP_ERROR),
        ("", ErrorCode.BAD_REQUEST),
    ]:
        with pytest.raises(WireError) as caught:
            await client.call("rpc", {"method": method, "data": None})
        assert caught.value.code == code, method
    # Still connected and served after every failure.
    assert (await client.call("rpc", {"method": "add", "data": [2]}))["data"]["sum"] == 2


async def test_rpc_without_a_handler_is_not_available(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    with pytest.raises(WireError) as caught:
        await client.call("rpc", {"method": "x"})
    assert caught.value.code == ErrorCode.NOT_AVAILABLE


async def test_rpc_from_the_python_client(start_hub: StartHub) -> None:
    hub = await hub_with(start_hub, on_rpc=rpc_handler)
    client = Client(hub.websocket_url, token=token("hank"))
    await client.connect(timeout=GUARD)
    try:
        assert await client.rpc("add", [4, 5]) == {"sum": 9, "user": "hank"}
        with pytest.raises(HubClientError) as caught:
            await client.rpc("missing")
        assert caught.value.code == 1404 and not caught.value.temporary
        with pytest.raises(HubClientError) as caught:
            await client.rpc("slow")
        assert caught.value.code == ErrorCode.APP_TIMEOUT and caught.value.temporary
    finally:
        await client.close()


# --------------------------------------------------------------- disconnect


async def test_disconnect_hook_hears_every_connected_session_leave(
    start_hub: StartHub, wire: Wire
) -> None:
    events: asyncio.Queue[DisconnectEvent] = asyncio.Queue()

    async def on_connect(request: ConnectRequest) -> ConnectResult:
        return ConnectResult(user="ivy", data={"tab": request.data})

    async def on_disconnect(event: DisconnectEvent) -> None:
        events.put_nowait(event)
        raise RuntimeError("a failing disconnect hook is only logged")

    hub = await hub_with(start_hub, on_connect=on_connect, on_disconnect=on_disconnect)
    first = await wire(hub.websocket_url, data=1)
    second = await wire(hub.websocket_url, data=2)
    await first.close()
    event = await asyncio.wait_for(events.get(), GUARD)
    assert (event.session.user, event.session.data, event.code) == ("ivy", {"tab": 1}, 1000)
    await hub.node.users.disconnect("ivy")
    event = await asyncio.wait_for(events.get(), GUARD)
    assert event.session.data == {"tab": 2}
    assert event.code == HubCloseCode.DISCONNECTED
    assert (await second.close_code())[0] == HubCloseCode.DISCONNECTED


async def test_disconnect_hook_that_hangs_does_not_hold_up_shutdown(
    start_hub: StartHub, wire: Wire
) -> None:
    called = asyncio.Event()

    async def hangs(event: DisconnectEvent) -> None:
        called.set()
        await never()

    hub = await hub_with(start_hub, on_disconnect=hangs)
    client = await wire(hub.websocket_url)
    await client.close()
    # The server learns of the close on its own schedule; the hook runs after
    # the session is forgotten.
    await asyncio.wait_for(called.wait(), GUARD)
    # Node.drain waits for background work, the hook included: bounded by its timeout.
    await asyncio.wait_for(hub.node.drain(), GUARD)
    assert hub.node.sessions == {}


async def test_a_hook_answering_the_wrong_type_is_an_application_error(
    start_hub: StartHub, wire: Wire
) -> None:
    async def on_subscribe(request: SubscribeRequest) -> Any:
        return {"data": "a dict, not a SubscribeResult"}

    hub = await hub_with(start_hub, on_subscribe=on_subscribe)
    client = await wire(hub.websocket_url)
    with pytest.raises(WireError) as caught:
        await client.call("subscribe", {"channel": "news"})
    assert caught.value.code == ErrorCode.APP_ERROR
    assert not hub.node.registry.sessions("news")


def test_refusal_codes_are_wire_codes_or_application_codes() -> None:
    assert Refuse(ErrorCode.UNAUTHORIZED).to_error().code == 101
    assert Refuse(1999, "x", temporary=True).to_error().temporary
    for bad in (0, 99, 999, 2000, 4003):
        with pytest.raises(ValueError):
            Refuse(bad)
