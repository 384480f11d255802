"""The demo chat with token authentication and the hub's HTTP API, in a real browser.

A page disconnected through ``POST /api/disconnect`` (close code 4005, "stop") stays
disconnected; a refused token (4003) never reconnects; ``POST /api/publish`` reaches pages.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Iterator

import jwt
import pytest
from e2e_support import ChatPage, Hub, api, start_hub, stop_hub
from e2e_support import playwright_expect as _expect

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "e2e-secret-" + "x" * 32
TIMEOUT = 15_000  # ms; a guard for expectations, never a wait by itself

OpenChat = Callable[..., Awaitable[ChatPage]]


@pytest.fixture(scope="module")
def auth_hub() -> Iterator[Hub]:
    """A hub that requires tokens (no development mode, no anonymous clients)."""
    running = start_hub("--jwt-secret", SECRET)
    yield running
    stop_hub(running)


def token(user: str, secret: str = SECRET, ttl: float = 3600) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time() + ttl)}, secret, algorithm="HS256")


async def test_api_disconnect_stops_the_page(auth_hub: Hub, open_chat: OpenChat) -> None:
    expect = _expect()
    room = f"e2e-{uuid.uuid4().hex[:10]}"
    alice = await open_chat(auth_hub.url, room=room, name="Alice", token=token("alice"))
    bob = await open_chat(auth_hub.url, room=room, name="Bob", token=token("bob"))
    for chat in (alice, bob):
        await expect(chat.page.locator("#status")).to_have_text("connected")
        await expect(chat.page.locator("#online .user")).to_have_text(["Alice", "Bob"])
    users = await alice.page.evaluate("window.tetherDemo.client.user")
    assert users == "alice"

    await api(auth_hub, "publish", {"channel": f"chat:{room}", "data": {"text": "from the API"}})
    for chat in (alice, bob):
        await expect(chat.page.locator("#messages .message .text")).to_have_text(["from the API"])

    assert await api(auth_hub, "disconnect", {"user": "alice"}) == {}
    status = alice.page.locator("#status")
    await expect(status).to_have_attribute("data-state", "disconnected")
    await expect(alice.page.locator("#status-detail")).to_contain_text("4005")
    await expect(bob.page.locator("#online .user")).to_have_text(["Bob"])
    # "Stop" is final: no reconnect is scheduled, and bob is unaffected.
    state = await alice.page.evaluate(
        "({state: tetherDemo.client.state, timer: tetherDemo.client._reconnectTimer})"
    )
    assert state == {"state": "disconnected", "timer": None}
    await expect(bob.page.locator("#status")).to_have_text("connected")


async def test_refused_token_is_final(auth_hub: Hub, open_chat: OpenChat) -> None:
    expect = _expect()
    forged = token("mallory", secret="not-the-hub-secret-" + "y" * 32)
    chat = await open_chat(auth_hub.url, room="lobby", name="mallory", token=forged)
    await expect(chat.page.locator("#status")).to_have_attribute("data-state", "disconnected")
    await expect(chat.page.locator("#status-detail")).to_contain_text("4003")
    assert await chat.page.evaluate("tetherDemo.client._reconnectTimer") is None


async def test_token_refresh_keeps_the_connection(auth_hub: Hub, open_chat: OpenChat) -> None:
    """Short-lived tokens: the client refreshes them in place, the hub never closes with 3000."""
    chat = await open_chat(auth_hub.url, room="lobby", name="Rita", token=token("rita"))
    page = chat.page
    await page.expose_function("mintToken", lambda: token("rita", ttl=4))
    client_id = await page.evaluate(
        """async () => {
            const { Client } = await import("/tether.js");
            window.minted = 0;
            window.events = [];
            const getToken = async () => { window.minted += 1; return window.mintToken(); };
            const client = new Client("/connection/websocket", { getToken });
            client.on("state", ({ state }) => window.events.push(state));
            client.on("error", ({ type, error }) => window.events.push(`${type}: ${error}`));
            window.refreshing = client;
            client.connect();
            await client.ready();
            return client.clientId;
        }"""
    )
    # The first token and two refreshes: the second one comes after the first token expired.
    await page.wait_for_function("window.minted >= 3", timeout=TIMEOUT)
    state = await page.evaluate(
        "({id: refreshing.clientId, state: refreshing.state, events: window.events})"
    )
    assert state == {"id": client_id, "state": "connected", "events": ["connecting", "connected"]}
    await page.evaluate("refreshing.disconnect()")
