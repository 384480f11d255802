"""Session.state: connecting, connected, closed, and nothing else (issue 11)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from hub_support import WireClient, token

from tether.hub import HubServer
from tether.hub.session import SessionState

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


async def test_a_session_moves_through_its_states(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, connect=False)
    while not hub.node.sessions:
        await asyncio.sleep(0.01)
    (session,) = hub.node.sessions.values()
    assert session.state is SessionState.CONNECTING and not session.connected
    await client.connect(token=token("alice"))
    assert session.state is SessionState.CONNECTED and session.connected
    await hub.node.disconnect("alice")
    assert (await client.close_code())[0] == 4005
    assert session.state is SessionState.CLOSED and session.closed
    # Transitions the state machine does not have are bugs, refused loudly.
    with pytest.raises(RuntimeError, match="closed -> connected"):
        session._to(SessionState.CONNECTED)


async def test_a_refused_connect_goes_straight_to_closed(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, connect=False)
    while not hub.node.sessions:
        await asyncio.sleep(0.01)
    (session,) = hub.node.sessions.values()
    reply = await client.reply("connect", {"token": "not-a-token"})
    assert reply["error"]["code"] == 101
    assert (await client.close_code())[0] == 4003
    assert session.state is SessionState.CLOSED
