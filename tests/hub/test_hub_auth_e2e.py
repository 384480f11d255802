"""Authentication and authorization end to end: tokens, grants, hooks, expiry, origins."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from hub_support import GUARD, WireClient, WireError, config, token

import tether
from tether.hub import ChannelOptions, HubServer, Node
from tether.hub.auth import Action
from tether.hub.wire import SUBPROTOCOL

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


async def refused_connect(client: WireClient, **params: object) -> int:
    reply = await client.reply("connect", params)
    return int(reply["error"]["code"])


async def test_token_required_without_anonymous(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub(config=config(allow_anonymous=False))
    client = await wire(hub.websocket_url, connect=False)
    assert await refused_connect(client) == 101
    assert await client.close_code() == (4003, "unauthorized")
    ok = await wire(hub.websocket_url, token=token("alice"))
    assert (await ok.call("ping")) == {}


async def test_expired_token_closes_3000(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, connect=False)
    assert await refused_connect(client, token=token(ttl=-5)) == 109
    disconnect = await client.push("disconnect")
    assert disconnect == {
        "push": "disconnect",
        "code": 3000,
        "reason": "token expired",
        "reconnect": True,
    }
    assert (await client.close_code())[0] == 3000


async def test_wrong_signature(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, connect=False)
    forged = token("admin", secret="not-the-secret-but-long-enough-for-hs256")
    assert await refused_connect(client, token=forged) == 101
    assert (await client.close_code())[0] == 4003


async def test_token_in_subprotocol_or_cookie(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub(config=config(allow_anonymous=False, cookie_name="auth"))
    via_protocol = await wire(
        hub.websocket_url, subprotocols=[SUBPROTOCOL, "tether.auth." + token("p")]
    )
    assert via_protocol.ws.subprotocol == SUBPROTOCOL  # the token is never echoed
    via_cookie = await wire(
        hub.websocket_url, ws={"additional_headers": {"Cookie": f"x=1; auth={token('c')}"}}
    )
    for client, user in ((via_protocol, "p"), (via_cookie, "c")):
        await client.call("subscribe", {"channel": "room"})
        presence = await client.call("presence", {"channel": "room"})
        assert presence["clients"][client.client_id]["user"] == user


async def test_channels_claim(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, token=token("alice", channels=["chat:*"]))
    await client.call("subscribe", {"channel": "chat:lobby"})
    for method, params in (
        ("subscribe", {"channel": "admin:secrets"}),
        ("publish", {"channel": "admin:secrets", "data": 1}),
        ("history", {"channel": "admin:secrets", "limit": 1}),
        ("presence", {"channel": "admin:secrets"}),
    ):
        with pytest.raises(WireError) as caught:
            await client.call(method, params)
        assert caught.value.code == 103


async def test_authorize_hook(start_hub: StartHub, wire: Wire) -> None:
    calls: list[tuple[str, str, str]] = []

    async def authorize(user: str, channel: str, action: Action) -> bool:
        calls.append((user, channel, action))
        return channel != "vip"

    hub = await start_hub(Node(config(), authorize=authorize))
    client = await wire(hub.websocket_url, token=token("eve"))
    await client.call("subscribe", {"channel": "open"})
    await client.call("publish", {"channel": "open", "data": 1})
    await client.call("history", {"channel": "open"})
    await client.call("presence", {"channel": "open"})
    with pytest.raises(WireError) as caught:
        await client.call("subscribe", {"channel": "vip"})
    assert caught.value.code == 103
    assert calls == [
        ("eve", "open", "subscribe"),
        ("eve", "open", "publish"),
        ("eve", "open", "history"),
        ("eve", "open", "presence"),
        ("eve", "vip", "subscribe"),
    ]


async def test_anonymous_per_namespace(start_hub: StartHub, wire: Wire) -> None:
    cfg = config(namespaces={"members": ChannelOptions(anonymous=False)})
    hub = await start_hub(config=cfg)
    anonymous = await wire(hub.websocket_url)
    with pytest.raises(WireError) as caught:
        await anonymous.call("subscribe", {"channel": "members:x"})
    assert caught.value.code == 103
    await anonymous.call("subscribe", {"channel": "public:x"})
    member = await wire(hub.websocket_url, token=token("m"))
    await member.call("subscribe", {"channel": "members:x"})


async def test_token_auth_not_configured(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub(config=config(jwt_secret=None))
    client = await wire(hub.websocket_url, connect=False)
    assert await refused_connect(client, token=token()) == 101


async def test_expiry_without_refresh_closes_3000(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, token=token("short", ttl=1))
    started = time.monotonic()
    disconnect = await client.push("disconnect")
    assert disconnect["code"] == 3000 and disconnect["reconnect"] is True
    assert (await client.close_code())[0] == 3000
    assert time.monotonic() - started < GUARD


async def test_refresh(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, token=token("frank", ttl=2))
    session = hub.node.sessions[client.client_id]
    assert session._expiry is not None
    first_deadline = session._expiry.when()
    result = await client.call("refresh", {"token": token("frank", ttl=3600)})
    assert 3590 <= result["ttl"] <= 3600
    assert session._expiry is not None and session._expiry.when() > first_deadline + 3000
    for bad, code in ((token("other"), 101), (token("frank", ttl=-1), 109), ("junk", 101)):
        with pytest.raises(WireError) as caught:
            await client.call("refresh", {"token": bad})
        assert caught.value.code == code
    no_expiry = await client.call("refresh", {"token": token("frank", ttl=None)})
    assert no_expiry == {} and session._expiry is None


@pytest.mark.parametrize(
    ("origins", "origin", "allowed"),
    [
        (None, "http://127.0.0.1:{port}", True),
        (None, "https://evil.example", False),
        (None, None, True),
        (["https://app.example"], "https://app.example", True),
        (["https://app.example"], "https://evil.example", False),
        (["https://app.example"], None, True),
        (["*"], "https://anything.example", True),
    ],
)
async def test_origin_policy(
    start_hub: StartHub, origins: list[str] | None, origin: str | None, allowed: bool
) -> None:
    hub = await start_hub(config=config(origins=origins))
    if origin is not None:
        origin = origin.format(port=hub.port)
    opening = tether.connect(
        hub.websocket_url,
        subprotocols=[SUBPROTOCOL],
        origin=origin,
    )
    if allowed:
        ws = await asyncio.wait_for(opening.create(), GUARD)
        await ws.close()
    else:
        with pytest.raises(tether.InvalidStatus) as caught:
            await asyncio.wait_for(opening.create(), GUARD)
        assert caught.value.response.status_code == 403


async def test_refresh_with_fewer_channels_drops_those_subscriptions(
    start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, token=token("gina", channels=["news", "sport"]))
    await client.call("subscribe", {"channel": "news"})
    await client.call("subscribe", {"channel": "sport"})
    await client.call("refresh", {"token": token("gina", channels=["news"])})
    push = await client.push("unsubscribe")
    assert push["channel"] == "sport" and push["code"] == 2103
    session = hub.node.sessions[client.client_id]
    assert set(session.channels) == {"news"}
    await hub.node.publish("sport", "not for gina any more")
    await hub.node.publish("news", "still for gina")
    assert (await client.push("pub"))["data"] == "still for gina"
