"""The demo chat in a real browser against a real ``tether serve``.

Two pages chat and see each other online; a page whose connection is cut by the network
(a TCP proxy aborting it, no close frame) reconnects by itself and shows exactly the
messages it missed, in order, none twice, and its own message written while offline is
delivered once.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from e2e_support import (
    ChatPage,
    DropProxy,
    Hub,
    expect_connected,
    new_room,
    say,
    start_hub,
    stop_hub,
)
from e2e_support import playwright_expect as _expect

pytestmark = pytest.mark.asyncio(loop_scope="module")

OpenChat = Callable[..., Awaitable[ChatPage]]


async def expect_messages(chat: ChatPage, texts: list[str]) -> None:
    """Exactly these messages, in this order (so none is missing or shown twice)."""
    expect = _expect()
    await expect(chat.page.locator("#messages .message .text")).to_have_text(texts)
    offsets = await chat.page.locator("#messages .message").evaluate_all(
        "els => els.map(e => Number(e.dataset.offset))"
    )
    assert offsets == sorted(set(offsets)), offsets
    assert all(o > 0 for o in offsets), offsets


async def expect_online(chat: ChatPage, names: list[str]) -> None:
    expect = _expect()
    await expect(chat.page.locator("#online .user")).to_have_text(sorted(names))


async def test_two_pages_chat_and_see_each_other(hub: Hub, open_chat: OpenChat) -> None:
    room = new_room()
    alice = await open_chat(hub.url, room=room, name="alice")
    bob = await open_chat(hub.url, room=room, name="bob")
    for chat in (alice, bob):
        await expect_connected(chat)
        await expect_online(chat, ["alice", "bob"])
        await expect_messages(chat, [])

    await say(alice, "hello from alice")
    for chat in (alice, bob):
        await expect_messages(chat, ["hello from alice"])
    await say(bob, "hi alice")
    await say(alice, "how are you?")
    for chat in (alice, bob):
        await expect_messages(chat, ["hello from alice", "hi alice", "how are you?"])
    authors = await bob.page.locator("#messages .message .author").all_inner_texts()
    assert authors == ["alice", "bob", "alice"]

    # A third page arrives later: it sees the room's history and everyone online.
    carol = await open_chat(hub.url, room=room, name="carol")
    await expect_connected(carol)
    await expect_messages(carol, ["hello from alice", "hi alice", "how are you?"])
    for chat in (alice, bob, carol):
        await expect_online(chat, ["alice", "bob", "carol"])

    # Leaving is seen too.
    await carol.page.close()
    for chat in (alice, bob):
        await expect_online(chat, ["alice", "bob"])


async def test_network_drop_recovers_missed_messages(
    hub: Hub, open_chat: OpenChat, drop_proxy: Callable[[Hub], Awaitable[DropProxy]]
) -> None:
    expect = _expect()
    room = new_room()
    proxy = await drop_proxy(hub)
    alice = await open_chat(proxy.url, room=room, name="alice")  # through the proxy
    bob = await open_chat(hub.url, room=room, name="bob")
    for chat in (alice, bob):
        await expect_connected(chat)
        await expect_online(chat, ["alice", "bob"])
    await say(bob, "before the drop")
    for chat in (alice, bob):
        await expect_messages(chat, ["before the drop"])
    connections = proxy.accepted

    proxy.cut()  # alice's TCP connection dies; reconnect attempts are refused
    await expect(alice.page.locator("#status")).to_have_attribute("data-state", "connecting")
    await expect_online(bob, ["bob"])  # the hub saw alice go
    missed = ["missed 1", "missed 2", "missed 3"]
    for text in missed:
        await say(bob, text)
    await expect_messages(bob, ["before the drop", *missed])
    await say(alice, "written while offline")
    await expect(alice.page.locator("#pending .pending")).to_have_count(1)
    await expect_messages(alice, ["before the drop"])

    proxy.restore()
    await expect_connected(alice)
    assert proxy.accepted > connections
    everything = ["before the drop", *missed, "written while offline"]
    for chat in (alice, bob):
        await expect_messages(chat, everything)
        await expect_online(chat, ["alice", "bob"])
    await expect(alice.page.locator("#pending .pending")).to_have_count(0)
    recovered = await alice.page.evaluate("window.tetherDemo.lastSubscribed")
    assert recovered["recovered"] is True, recovered

    # Live messages keep flowing after the recovery, still once each.
    await say(bob, "after the drop")
    for chat in (alice, bob):
        await expect_messages(chat, [*everything, "after the drop"])


async def test_room_switch(hub: Hub, open_chat: OpenChat) -> None:
    expect = _expect()
    first, second = new_room(), new_room()
    alice = await open_chat(hub.url, room=first, name="alice")
    bob = await open_chat(hub.url, room=second, name="bob")
    await expect_connected(alice)
    await expect_connected(bob)
    await say(alice, "in the first room")
    await say(bob, "in the second room")
    await expect_messages(alice, ["in the first room"])
    await expect_online(alice, ["alice"])

    await alice.page.fill("#room", second)
    await alice.page.press("#room", "Enter")
    await expect(alice.page).to_have_url(re.compile(f"[?&]room={second}(&|$)"))
    await expect(alice.page.locator("#rooms .room.active")).to_have_text(f"# {second}")
    await expect_messages(alice, ["in the second room"])
    for chat in (alice, bob):
        await expect_online(chat, ["alice", "bob"])
    await say(bob, "welcome")
    await expect_messages(alice, ["in the second room", "welcome"])

    # Back to the first room (from the room list): its history, and bob sees alice leave.
    await alice.page.click(f'#rooms .room[data-room="{first}"]')
    await expect_messages(alice, ["in the first room"])
    await expect_online(alice, ["alice"])
    await expect_online(bob, ["bob"])
    await say(alice, "back again")
    await expect_messages(alice, ["in the first room", "back again"])
    await expect_messages(bob, ["in the second room", "welcome"])


async def test_permessage_deflate_negotiated(open_chat: OpenChat, tmp_path: Path) -> None:
    """With ``compression = true`` the page's WebSocket negotiates permessage-deflate."""
    config = tmp_path / "hub.toml"
    config.write_text("compression = true\n")
    deflate_hub = start_hub("--config", str(config))
    try:
        chat = await open_chat(deflate_hub.url, room=new_room(), name="zip")
        await expect_connected(chat)
        extensions = await chat.page.evaluate("window.tetherDemo.client.transport.extensions")
        protocol = await chat.page.evaluate("window.tetherDemo.client.transport.protocol")
        assert "permessage-deflate" in extensions, deflate_hub.log()
        assert protocol == "tether.v1"
        await say(chat, "squeezed " * 50)
        await expect_messages(chat, ["squeezed " * 49 + "squeezed"])
    finally:
        stop_hub(deflate_hub)
