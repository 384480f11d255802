"""The HTTP fallbacks end to end, through a real nginx as a hostile corporate proxy.

- Two headless Chromium pages on the demo chat, behind nginx (round robin, no sticky
  sessions, no ``Upgrade`` passed) in front of two ``tether serve`` nodes on Redis: the
  pages fall back by themselves, see each other and chat; one node is SIGKILLed and both
  pages carry on through the other, nothing lost, nothing doubled. Again with
  ``proxy_buffering on``, where only long polling can work.
- A page with a plain ``EventSource`` and a ``curl -N`` consumer receive a channel's
  publications and, after their connection is cut, resume with exactly the missed ones.

Needs nginx, curl, Redis, Chromium and Playwright: skips without them, fails under
``TETHER_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from e2e_support import ChatPage, DropProxy, Hub, api, expect_connected, new_room, say
from e2e_support import playwright_expect as _expect
from nginx_support import REDIS_URL, Cluster, missing_nginx, start_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

OpenChat = Callable[..., Awaitable[ChatPage]]


def redis_reachable() -> bool:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


@pytest.fixture
def cluster_factory(
    require: Callable[..., None], tmp_path: Path
) -> Iterator[Callable[[bool], Cluster]]:
    require(missing_nginx() is None, missing_nginx())
    require(redis_reachable(), f"Redis is not reachable at {REDIS_URL} (set TETHER_REDIS_URL)")
    clusters: list[Cluster] = []

    def make(buffering: bool) -> Cluster:
        cluster = start_cluster(tmp_path / f"cluster{len(clusters)}", buffering=buffering)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.stop()
        delete_keys(cluster.prefix)


def delete_keys(prefix: str) -> None:
    """Only this test's keys (other engineers' tests share the Redis)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def expect_messages(chat: ChatPage, texts: list[str]) -> None:
    """Exactly these messages, in this order: none missing, none twice."""
    expect = _expect()
    await expect(chat.page.locator("#messages .message .text")).to_have_text(texts)


async def expect_online(chat: ChatPage, names: list[str]) -> None:
    expect = _expect()
    await expect(chat.page.locator("#online .user")).to_have_text(sorted(names))


async def transport_of(chat: ChatPage) -> str:
    expect = _expect()
    status = chat.page.locator("#status")
    await expect(status).to_have_attribute("data-transport", re.compile(r".+"))
    return str(await status.get_attribute("data-transport"))


@pytest.mark.parametrize(
    ("buffering", "expected"),
    [(False, "http_stream"), (True, "long_poll")],
    ids=["streaming-proxy", "buffering-proxy"],
)
async def test_chat_falls_back_and_survives_a_node_killed(
    cluster_factory: Callable[[bool], Cluster],
    open_chat: OpenChat,
    buffering: bool,
    expected: str,
) -> None:
    cluster = cluster_factory(buffering)
    room = new_room()
    try:
        # A short transportTimeout: behind the buffering proxy the streams never open.
        options = {"transportTimeout": 1500, "timeout": 8000}
        alice = await open_chat(cluster.url, room=room, name="alice", **options)
        bob = await open_chat(cluster.url, room=room, name="bob", **options)
        for chat in (alice, bob):
            await expect_connected(chat)
            assert await transport_of(chat) == expected
            await expect_online(chat, ["alice", "bob"])

        await say(alice, "hello from alice")
        await say(bob, "hi alice")
        before = ["hello from alice", "hi alice"]
        for chat in (alice, bob):
            await expect_messages(chat, before)

        # Kill the node that holds the most sessions (both, or one of the pages).
        victim = max(cluster.nodes, key=cluster.sessions)
        assert cluster.sessions(victim) >= 1
        cluster.kill(victim)
        # Both write at once, while their sessions may be gone: sent (again) once.
        await say(alice, "still here?")
        await say(bob, "yes, on the other node")
        after = [*before, "still here?", "yes, on the other node"]
        for chat in (alice, bob):
            await expect_connected(chat)
            await expect_messages_as_set(chat, before, after[2:])
        # Presence as the hub has it, once the killed node's entries expired (the demo's
        # list keeps a dead node's entry until the page loads presence again).
        for chat in (alice, bob):
            await expect_presence(chat, room, ["alice", "bob"])
        await say(alice, "good")
        for chat in (alice, bob):
            await expect_last(chat, "good", total=5)
            assert await transport_of(chat) == expected
            pending = await chat.page.evaluate("window.tetherDemo.client.pendingPublishes")
            assert pending == 0
    except BaseException:
        print(cluster.logs())
        raise


async def expect_presence(chat: ChatPage, room: str, names: list[str]) -> None:
    """``client.presence()`` of the room, through the fallback, names exactly ``names``."""
    await chat.page.wait_for_function(
        """async ([channel, names]) => {
            const res = await window.tetherDemo.client.presence(channel);
            const got = Object.values(res.clients).map((c) => c.info?.name).sort();
            return JSON.stringify(got) === JSON.stringify(names);
        }""",
        arg=[f"chat:{room}", sorted(names)],
        polling=250,
        timeout=15_000,
    )


async def expect_messages_as_set(chat: ChatPage, head: list[str], tail: list[str]) -> None:
    """``head`` in order, then ``tail`` in any order (two writers raced), each once."""
    expect = _expect()
    locator = chat.page.locator("#messages .message .text")
    await expect(locator).to_have_count(len(head) + len(tail))
    texts = await locator.all_inner_texts()
    assert texts[: len(head)] == head, texts
    assert sorted(texts[len(head) :]) == sorted(tail), texts


async def expect_last(chat: ChatPage, text: str, *, total: int) -> None:
    expect = _expect()
    locator = chat.page.locator("#messages .message .text")
    await expect(locator).to_have_count(total)
    await expect(locator.last).to_have_text(text)
    texts = await locator.all_inner_texts()
    assert len(set(texts)) == len(texts), texts  # nothing doubled


async def test_each_transport_carries_the_chat_when_forced(hub: Hub, open_chat: OpenChat) -> None:
    """``?transports=`` forces one: the SSE emulation (an ``EventSource`` downstream) and
    the others each carry a chat that sees itself in presence and gets its messages."""
    for transport in ("sse", "http_stream", "long_poll"):
        room = new_room()
        chat = await open_chat(hub.url, room=room, name=f"via-{transport}", transports=transport)
        await expect_connected(chat)
        assert await transport_of(chat) == transport
        await expect_online(chat, [f"via-{transport}"])
        await say(chat, f"over {transport}")
        await expect_messages(chat, [f"over {transport}"])
        await chat.page.close()


# -------------------------------------------------------- plain SSE consumers


@pytest_asyncio.fixture(loop_scope="module")
async def sse_cluster(
    cluster_factory: Callable[[bool], Cluster],
) -> AsyncIterator[tuple[Cluster, DropProxy]]:
    cluster = cluster_factory(False)
    proxy = await DropProxy("127.0.0.1", cluster.nginx.port).start()
    try:
        yield cluster, proxy
    finally:
        await proxy.close()


async def publish(cluster: Cluster, channel: str, n: int) -> None:
    node = next(n for n in cluster.nodes if n not in cluster.killed)
    await api(node, "publish", {"channel": channel, "data": {"n": n}})


async def test_plain_eventsource_resumes_exactly_what_it_missed(
    sse_cluster: tuple[Cluster, DropProxy], browser: Any, require: Callable[..., None]
) -> None:
    require(browser is not None, "Chromium or Playwright is missing")
    cluster, proxy = sse_cluster
    channel = f"ticker:{uuid.uuid4().hex[:8]}"
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{proxy.url}/favicon.svg")  # any page of that origin
        await page.evaluate(
            """(channel) => {
                window.got = []; window.opened = 0;
                const source = new EventSource(`/connection/sse?channel=${channel}`);
                source.onopen = () => { window.opened += 1; };
                source.onmessage = (event) => window.got.push(JSON.parse(event.data).n);
            }""",
            channel,
        )
        await page.wait_for_function("window.opened === 1")
        for n in range(3):
            await publish(cluster, channel, n)
        await page.wait_for_function("window.got.length === 3")
        proxy.cut()  # no close, no goodbye: EventSource sees an error and retries
        for n in range(3, 6):
            await publish(cluster, channel, n)
        proxy.restore()
        await page.wait_for_function("window.opened === 2", timeout=15_000)
        await publish(cluster, channel, 6)
        await page.wait_for_function("window.got.length >= 7")
        assert await page.evaluate("window.got") == list(range(7))
    finally:
        await context.close()


async def read_events(
    process: asyncio.subprocess.Process, count: int
) -> list[tuple[str | None, str, str]]:
    """``count`` events (id, event name, data) from curl's output (comments skipped)."""
    assert process.stdout is not None
    events: list[tuple[str | None, str, str]] = []
    event_id: str | None = None
    name, data = "message", ""
    while len(events) < count:
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode().rstrip("\r\n")
        if line.startswith(":") or line.startswith("retry:"):
            continue
        if line == "":
            if data:
                events.append((event_id, name, data))
            event_id, name, data = None, "message", ""
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "id":
            event_id = value
        elif key == "event":
            name = value
        elif key == "data":
            data = value
    return events


async def test_curl_resumes_with_last_event_id(
    sse_cluster: tuple[Cluster, DropProxy], require: Callable[..., None]
) -> None:
    curl = shutil.which("curl")
    require(curl, "curl is not installed (apt-get install -y curl)")
    assert curl is not None
    cluster, proxy = sse_cluster
    channel = f"ticker:{uuid.uuid4().hex[:8]}"
    url = f"{proxy.url}/connection/sse?channel={channel}"

    first = await asyncio.create_subprocess_exec(
        curl, "-N", "-s", url, stdout=asyncio.subprocess.PIPE
    )
    try:
        (connected,) = await read_events(first, 1)
        assert connected[1] == "connected"
        for n in range(3):
            await publish(cluster, channel, n)
        got = await read_events(first, 3)
        assert [json.loads(data)["n"] for _, _, data in got] == [0, 1, 2]
        last_id = got[-1][0]
        assert last_id
        proxy.cut()  # curl's connection dies mid-stream
        assert await asyncio.wait_for(first.wait(), 15) != 0
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    for n in range(3, 6):
        await publish(cluster, channel, n)
    proxy.restore()

    second = await asyncio.create_subprocess_exec(
        curl, "-N", "-s", "-H", f"Last-Event-ID: {last_id}", url, stdout=asyncio.subprocess.PIPE
    )
    try:
        (resumed,) = await read_events(second, 1)
        assert resumed[1] == "connected"
        assert json.loads(resumed[2])["channels"][channel]["recovered"] is True
        missed = await read_events(second, 3)
        assert [json.loads(data)["n"] for _, _, data in missed] == [3, 4, 5]
        await publish(cluster, channel, 6)
        (live,) = await read_events(second, 1)
        assert json.loads(live[2]) == {"n": 6}
    finally:
        second.kill()
        await second.wait()
