"""The demo chat as a new user meets it, in Chromium against a real ``tether serve``.

- a phone (360 px) and a desktop (1280 px): nothing scrolls sideways, the name field
  and the Send button are on screen, the console stays clean (no 404 for the favicon);
  screenshots are kept as artefacts (see ``artifacts_dir``);
- a hub restart with memory history: the page keeps what it showed and says that the
  rest could not be recovered, instead of going blank;
- presence goes grey and says so while the page is offline;
- a token's name is on its user's messages; HTTP API publications have a sender and a time.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from e2e_support import (
    ROOT,
    ChatPage,
    DropProxy,
    Hub,
    api,
    expect_connected,
    new_room,
    say,
    start_hub,
    stop_hub,
)
from e2e_support import playwright_expect as _expect

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "e2e-demo-secret-" + "x" * 32
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}

OpenChat = Callable[..., Awaitable[ChatPage]]


def artifacts_dir() -> Path:
    """Where screenshots go: ``$TETHER_ARTIFACTS/e2e``, else ``test-artifacts/e2e``.

    (test-artifacts/ is in .gitignore; CI may keep the folder as the run's artefact.)
    """
    base = os.environ.get("TETHER_ARTIFACTS") or str(ROOT / "test-artifacts")
    folder = Path(base) / "e2e"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def screenshot(chat: ChatPage, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    await chat.page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")  # shown with -s or -rA, and in the report of a failure
    return path


def token(user: str, **claims: Any) -> str:
    payload = {"sub": user, "exp": int(time.time() + 3600), **claims}
    return jwt.encode(payload, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def auth_hub() -> Iterator[Hub]:
    running = start_hub("--jwt-secret", SECRET)
    yield running
    stop_hub(running)


# ---------------------------------------------------------------------- layout


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["360px", "1280px"])
async def test_layout_fits_and_console_is_clean(
    hub: Hub, open_chat: OpenChat, viewport: dict[str, int]
) -> None:
    expect = _expect()
    room = new_room()
    width = viewport["width"]
    long_name = "a-rather-long-name-32-characters"
    chat = await open_chat(hub.url, room=room, name=long_name, viewport=viewport)
    other = await open_chat(hub.url, room=room, name="bob", viewport=viewport)
    await expect_connected(chat)
    await expect(chat.page.locator("#online .user")).to_have_count(2)
    await say(chat, "hello from a small screen")
    await say(other, "a-very-long-word-" * 12)  # long words must wrap, not widen the page
    await expect(chat.page.locator("#messages .message")).to_have_count(2)

    overflow = await chat.page.evaluate(
        """({scroll: document.documentElement.scrollWidth,
            client: document.documentElement.clientWidth,
            body: document.body.scrollWidth})"""
    )
    assert overflow["scroll"] <= overflow["client"] == width, overflow
    assert overflow["body"] <= width, overflow
    # Everything a user needs is on screen, whole (the name field and Send were cut off).
    controls = ("#name", "#send", "#input", "#status", "#rooms .room.active", "#room-form button")
    for selector in controls:
        box = await chat.page.locator(selector).bounding_box()
        assert box is not None, selector
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], (selector, box)
    await screenshot(chat, f"demo-{width}px")

    # The favicon is there (the page's <link> and /favicon.ico), and nothing logged an error.
    icons = await chat.page.evaluate(
        """async () => Promise.all(
            [document.querySelector("link[rel=icon]").href, "/favicon.ico"].map(async (url) => {
                const r = await fetch(url);
                return [r.status, r.headers.get("content-type")];
            }))"""
    )
    assert icons == [[200, "image/svg+xml"], [200, "image/svg+xml"]]
    assert chat.console == [] and other.console == []


# ----------------------------------------------------------- hub restart notice


async def test_restart_notice_keeps_what_was_shown(open_chat: OpenChat) -> None:
    """A hub restart with memory history: a new epoch, nothing to recover from."""
    expect = _expect()
    room = new_room()
    first = start_hub()
    port = first.port
    second: Hub | None = None
    try:
        chat = await open_chat(first.url, room=room, name="alice")
        await expect_connected(chat)
        await say(chat, "before the restart")
        messages = chat.page.locator("#messages .message .text")
        await expect(messages).to_have_text(["before the restart"])
        epoch = await chat.page.evaluate("tetherDemo.messagesEpoch")
        assert epoch

        stop_hub(first)
        await expect(chat.page.locator("#status")).to_have_attribute("data-state", "connecting")
        second = start_hub("--port", str(port))  # the same address, an empty memory history
        await expect_connected(chat)

        notice = chat.page.locator("#messages .notice.lost")
        await expect(notice).to_have_count(1)
        await expect(notice).to_contain_text("The server restarted")
        await expect(notice).to_contain_text("could not be recovered")
        # What the page showed is still there, marked as from before the restart.
        await expect(messages).to_have_text(["before the restart"])
        await expect(chat.page.locator("#messages .message.earlier")).to_have_count(1)
        subscribed = await chat.page.evaluate("tetherDemo.lastSubscribed")
        assert subscribed["wasRecovering"] is True and subscribed["recovered"] is False
        assert subscribed["epoch"] != epoch
        assert await chat.page.evaluate("tetherDemo.messagesEpoch") == subscribed["epoch"]

        # Life goes on in the new epoch, below the notice.
        await say(chat, "after the restart")
        await expect(messages).to_have_text(["before the restart", "after the restart"])
        order = await chat.page.locator("#messages > *").evaluate_all(
            "els => els.map(e => e.classList.contains('notice') ? 'notice'"
            " : e.querySelector('.text').textContent)"
        )
        assert order == ["before the restart", "notice", "after the restart"]
        await screenshot(chat, "demo-restart-notice")
    finally:
        stop_hub(first)
        if second is not None:
            stop_hub(second)


# -------------------------------------------------------------- stale presence


async def test_presence_is_grey_while_offline(
    hub: Hub, open_chat: OpenChat, drop_proxy: Callable[[Hub], Awaitable[DropProxy]]
) -> None:
    expect = _expect()
    room = new_room()
    proxy = await drop_proxy(hub)
    alice = await open_chat(proxy.url, room=room, name="alice")
    bob = await open_chat(hub.url, room=room, name="bob")
    online = alice.page.locator("#online")
    await expect(online.locator(".user")).to_have_text(["alice", "bob"])
    await expect(online).not_to_have_class(re.compile(r"\bstale\b"))
    live_dot = await dot_color(alice)

    proxy.cut()
    await expect(online).to_have_class(re.compile(r"\bstale\b"))
    await expect(alice.page.locator("#online-state")).to_contain_text("offline — reconnecting")
    assert await dot_color(alice) != live_dot  # not green any more
    await screenshot(alice, "demo-presence-offline")

    # Meanwhile bob left and carol came: the page learns it once it is back.
    await bob.page.close()
    carol = await open_chat(hub.url, room=room, name="carol")
    await expect(carol.page.locator("#online .user")).to_have_text(["carol"])
    proxy.restore()
    await expect_connected(alice)
    await expect(online.locator(".user")).to_have_text(["alice", "carol"])
    await expect(online).not_to_have_class(re.compile(r"\bstale\b"))
    await expect(alice.page.locator("#online-state")).to_have_text("")
    assert await dot_color(alice) == live_dot


async def dot_color(chat: ChatPage) -> str:
    color = await chat.page.locator("#online .user").first.evaluate(
        "el => getComputedStyle(el, '::before').color"
    )
    return str(color)


# --------------------------------------------------------------------- senders


async def test_token_name_is_on_the_messages(auth_hub: Hub, open_chat: OpenChat) -> None:
    """The token's ``info`` claim names its user everywhere, whatever the page calls itself."""
    expect = _expect()
    room = new_room()
    bob_token = token("bob", info={"name": "Bob (token)"})
    bob = await open_chat(auth_hub.url, room=room, name="guest-7529", token=bob_token)
    alice = await open_chat(auth_hub.url, room=room, name="Alice", token=token("alice"))
    for chat in (alice, bob):
        await expect(chat.page.locator("#online .user")).to_have_text(["Alice", "Bob (token)"])
    name = bob.page.locator("#name")
    await expect(name).to_have_value("Bob (token)")
    assert await name.evaluate("el => el.readOnly") is True

    await say(bob, "hello, it is Bob")
    await say(alice, "hi Bob")
    for chat in (alice, bob):
        await expect(chat.page.locator("#messages .message .text")).to_have_text(
            ["hello, it is Bob", "hi Bob"]
        )
        await expect(chat.page.locator("#messages .message .author")).to_have_text(
            ["Bob (token)", "Alice"]
        )
    # A page that comes later reads the same names from history.
    carol = await open_chat(auth_hub.url, room=room, name="Carol", token=token("carol"))
    await expect(carol.page.locator("#messages .message .author")).to_have_text(
        ["Bob (token)", "Alice"]
    )


async def test_api_publications_have_a_sender_and_a_time(hub: Hub, open_chat: OpenChat) -> None:
    expect = _expect()
    room = new_room()
    chat = await open_chat(hub.url, room=room, name="alice")
    await expect_connected(chat)
    await expect(chat.page.locator("#online .user")).to_have_text(["alice"])
    await api(hub, "publish", {"channel": f"chat:{room}", "data": {"text": "deploy finished"}})
    stamped = "2026-01-02T03:04:05Z"
    data = {"text": "with its own time", "ts": stamped}
    await api(hub, "publish", {"channel": f"chat:{room}", "data": data})

    message = chat.page.locator("#messages .message")
    await expect(message.locator(".text")).to_have_text(["deploy finished", "with its own time"])
    await expect(message.locator(".author")).to_have_text(["API", "API"])
    await expect(message.nth(0)).to_have_class(re.compile(r"\bapi\b"))
    times = await message.locator(".time").evaluate_all(
        "els => els.map(e => [e.textContent, e.dateTime])"
    )
    # No time of its own: the time the page received it (a moment ago).
    received = times[0][1]
    assert times[0][0] and received, times
    age = time.time() - _parse_iso(received)
    assert 0 <= age < 60, (received, age)
    assert times[1][0] and _parse_iso(times[1][1]) == _parse_iso(stamped), times


def _parse_iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
