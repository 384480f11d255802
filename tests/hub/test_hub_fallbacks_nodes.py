"""No sticky sessions: fallback requests that land on another node are answered by the owner.

Two hubs share a backplane (Redis, and NATS with Redis history): a session
made on node A is polled and sent commands through node B, as a round-robin
load balancer would spread them; a gone node's sessions answer 404, code 125.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fallback_support import NdjsonReader, connect_command, post
from hub_support import GUARD, config, token

from tether.hub import HubServer
from tether.hub.config import FallbackConfig
from tether.hub.control import CONTROL_CHANNEL, Hello
from tether.hub.envelope import Control

StartHub = Callable[..., Awaitable[HubServer]]


async def two_nodes(
    start_hub: StartHub, backplane: dict[str, str], **overrides: Any
) -> tuple[HubServer, HubServer]:
    a = await start_hub(config=config(**backplane, **overrides))
    b = await start_hub(config=config(**backplane, **overrides))
    while a.node.id not in b.node.users.live_peers() or b.node.id not in a.node.users.live_peers():
        await asyncio.sleep(0.01)
    return a, b


def client(hub: HubServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=hub.url.rstrip("/"), timeout=GUARD)


async def test_poll_and_send_through_the_other_node(
    start_hub: StartHub, backplane: dict[str, str]
) -> None:
    a, b = await two_nodes(start_hub, backplane)
    async with client(a) as via_a, client(b) as via_b:
        alice = token("alice")
        _, first = await post(via_a, "/connection/poll", {"connect": connect_command(token=alice)})
        key = first["session"]
        assert key.startswith(a.node.id + ".")
        commands = [
            {"id": 2, "method": "subscribe", "params": {"channel": "room"}},
            {"id": 3, "method": "publish", "params": {"channel": "room", "data": "via b"}},
        ]
        status, answer = await post(
            via_b, "/connection/send", {"session": key, "commands": commands}
        )
        assert (status, answer) == (200, {})
        seen: list[dict[str, Any]] = []
        ack = 1
        while not any(m.get("push") == "pub" for m in seen) or not any(
            m.get("id") == 3 for m in seen
        ):
            status, batch = await post(via_b, "/connection/poll", {"session": key, "ack": ack})
            assert status == 200 and batch["session"] == key
            seen += batch["messages"]
            ack = batch["seq"] + len(batch["messages"]) - 1
        pub = next(m for m in seen if m.get("push") == "pub")
        assert pub["data"] == "via b"
        # Another user's credentials are refused by the owner, through the relay too.
        bob = {"Authorization": f"Bearer {token('bob')}"}
        status, answer = await post(
            via_b, "/connection/poll", {"session": key, "ack": ack}, headers=bob
        )
        assert (status, answer["error"]["code"]) == (403, 103)
        # Node A goes away: its sessions are not found, anywhere.
        await a.close()
        status, answer = await post(via_b, "/connection/poll", {"session": key, "ack": ack})
        assert (status, answer["error"]["code"]) == (404, 125)


async def test_stream_session_takes_commands_posted_to_the_other_node(
    start_hub: StartHub, backplane: dict[str, str]
) -> None:
    a, b = await two_nodes(start_hub, backplane)
    async with (
        client(a) as via_a,
        client(b) as via_b,
        via_a.stream("POST", "/connection/stream", json=connect_command()) as response,
    ):
        frames = NdjsonReader(response.aiter_lines())
        key = (await frames.next())["session"]
        await frames.reply(1)
        ping = {"id": 2, "method": "ping", "params": {}}
        status, _ = await post(via_b, "/connection/send", {"session": key, "commands": [ping]})
        assert status == 200
        assert (await frames.reply(2))["result"] == {}


async def test_a_silent_node_answers_session_not_found(
    start_hub: StartHub, backplane: dict[str, str]
) -> None:
    a, b = await two_nodes(start_hub, backplane, fallbacks=FallbackConfig(relay_timeout=0.2))
    # A node that said hello and then died without a goodbye (SIGKILL).
    await a.node.broker.publish(CONTROL_CHANNEL, Control(Hello("deadbeef")))
    while "deadbeef" not in b.node.users.live_peers():
        await asyncio.sleep(0.01)
    async with client(b) as via_b:
        body = {"session": "deadbeef.x", "ack": 0, "wait": 0}
        status, answer = await post(via_b, "/connection/poll", body)
        assert (status, answer["error"]["code"]) == (404, 125)
        # Counted as gone: the next request does not wait for it again.
        assert "deadbeef" not in b.node.users.live_peers()
        body = {"session": "deadbeef.y", "commands": []}
        status, answer = await post(via_b, "/connection/send", body)
        assert (status, answer["error"]["code"]) == (404, 125)
