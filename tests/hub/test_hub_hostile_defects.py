"""The fifteen defects of issue 12, one test each, named for the defect.

Each was found by probing ``tether serve`` from outside; each test failed
before its fix (run against the unfixed tree) and passes after.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from backplane_services import REDIS_URL, count_prefix, unique
from hostile_support import backend_config, cleanup
from hub_support import GUARD, WireClient, api_headers, config, http

from tether.cli import build_parser
from tether.cli import serve as cli_serve
from tether.hub import HubServer, Node

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]

SURROGATE = "\ud800"  # json.dumps writes it as the escape "\ud800": valid JSON, not Unicode
DEEP = "[" * 100_000  # 100 KB, under every size limit


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = unique("hostile")
    yield prefix
    await cleanup("redis", prefix)


async def api(port: int, path: str, body: Any = None, raw: bytes | None = None) -> Any:
    status, _, payload = await http(port, "POST", path, body, headers=api_headers(), raw_body=raw)
    return status, json.loads(payload)


async def upgrade(port: int, path: str, headers: dict[str, str]) -> tuple[str, bytes]:
    """An upgrade request's answer: its head, and its body unless it is a 101."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
        body = b"" if b" 101 " in head.split(b"\r\n")[0] else await reader.read()
    finally:
        writer.close()
    return head.decode("latin-1"), body


# ------------------------------------------------------ strings that are not Unicode


async def test_defect01_token_with_lone_surrogate_is_101_not_100(
    start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, connect=False)
    reply = await client.reply("connect", {"token": "eyJ" + SURROGATE})
    assert reply["error"]["code"] == 101
    assert reply["error"]["temporary"] is False  # a client must not retry forever
    assert (await client.close_code())[0] == 4003


async def test_defect02_publish_data_with_lone_surrogate_is_118_not_100(
    start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    reply = await client.reply("publish", {"channel": "chat", "data": {"text": SURROGATE}})
    assert reply["error"]["code"] == 118
    assert await client.call("ping") == {}  # the connection stays usable


async def test_defect03_presence_info_with_lone_surrogate_is_118_not_100(
    start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, connect=False)
    reply = await client.reply("connect", {"info": {"name": "x" + SURROGATE}})
    assert reply["error"]["code"] == 118
    assert (await client.connect(info={"name": "x"}))["client"]  # fixed in place


async def test_defect04_redis_idempotency_key_with_lone_surrogate_is_118_not_100(
    start_hub: StartHub, wire: Wire, redis_prefix: str
) -> None:
    hub = await start_hub(config=backend_config("redis", redis_prefix))
    client = await wire(hub.websocket_url)
    params = {"channel": "chat", "data": 1, "idempotency_key": SURROGATE}
    reply = await client.reply("publish", params)
    assert reply["error"]["code"] == 118
    history = await client.call("history", {"channel": "chat", "limit": 10})
    assert history["publications"] == [] and history["offset"] == 0


async def test_defect05_api_publish_with_lone_surrogate_is_400_and_never_stored(
    start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub()
    port = hub.port
    assert port is not None
    reader = await wire(hub.websocket_url)
    before = await reader.call("subscribe", {"channel": "chat"})
    status, body = await api(port, "/api/publish", {"channel": "chat", "data": SURROGATE})
    assert (status, body["error"]["code"]) == (400, 118)
    # Nothing stored: the offset did not move, history answers, recovery works.
    status, history = await api(port, "/api/history", {"channel": "chat"})
    assert status == 200 and history["offset"] == before["offset"] == 0
    recovering = await wire(hub.websocket_url)
    since = {"recover": True, "offset": 0, "epoch": before["epoch"]}
    result = await recovering.call("subscribe", {"channel": "chat", **since})
    assert result["recovered"] is True and result["publications"] == []
    assert not recovering.closed.done()


# ------------------------------------------------------------- deep nesting


async def test_defect06_deeply_nested_command_closes_4001_not_1011(
    start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    await client.ws.send(DEEP)
    assert (await client.close_code())[0] == 4001
    other = await wire(hub.websocket_url)
    assert await other.call("ping") == {}


async def test_defect07_deeply_nested_api_body_is_400_without_traceback(
    start_hub: StartHub, caplog: pytest.LogCaptureFixture
) -> None:
    hub = await start_hub()
    assert hub.port is not None
    raw = b'{"channel":"chat","data":' + DEEP.encode() + b"}"
    with caplog.at_level(logging.INFO, logger="tether"):
        status, body = await api(hub.port, "/api/publish", raw=raw)
    assert (status, body["error"]["code"]) == (400, 119)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# ----------------------------------------------------- state from reads


async def test_defect08_history_reads_create_no_memory_state() -> None:
    node = Node(config())
    await node.start()
    try:
        await node.history("warmup", limit=0)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for i in range(3000):
                result = await node.history(f"never-published-{i}", limit=0)
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        # Before the fix, each read kept a stream for a day (~35 MB per 30,000 reads).
        assert grown < 200_000, f"{grown} bytes kept by 3000 reads"
        assert result.position.offset == 0 and result.position.epoch == ""
    finally:
        await node.close()


async def test_defect09_history_reads_create_no_redis_keys(
    start_hub: StartHub, wire: Wire, redis_prefix: str
) -> None:
    hub = await start_hub(config=backend_config("redis", redis_prefix))
    client = await wire(hub.websocket_url)
    for i in range(300):
        result = await client.call("history", {"channel": f"never-{i}"})
        assert result == {"publications": [], "offset": 0, "epoch": ""}
    assert await count_prefix(REDIS_URL, redis_prefix) == 0


# ---------------------------------------------------------- the Redis pool


async def test_defect10_redis_api_publish_burst_is_not_backplane_unavailable(
    start_hub: StartHub, redis_prefix: str
) -> None:
    hub = await start_hub(config=backend_config("redis", redis_prefix))
    assert hub.port is not None
    port = hub.port
    replies = await asyncio.gather(
        *(api(port, "/api/publish", {"channel": f"burst{i % 7}", "data": i}) for i in range(300))
    )
    statuses = [status for status, _ in replies]
    codes = [body.get("error", {}).get("code") for _, body in replies]
    assert 112 not in codes, f"{codes.count(112)} of 300 got 112 'backplane unavailable'"
    # Every publish succeeded, or (only under real overload) got 503 with code 116.
    assert all(s == 200 or (s, c) == (503, 116) for s, c in zip(statuses, codes, strict=True))
    assert statuses.count(200) == 300
    status, _, _ = await http(port, "GET", "/healthz")
    assert status == 200


async def test_defect11_redis_mass_disconnect_sends_every_presence_leave(
    start_hub: StartHub, wire: Wire, redis_prefix: str
) -> None:
    hub = await start_hub(config=backend_config("redis", redis_prefix))
    watcher = await wire(hub.websocket_url)
    await watcher.call("subscribe", {"channel": "room"})
    assert (await watcher.push("join"))["info"]["client"] == watcher.client_id
    n = 200  # more than redis-py's default pool of 100 connections
    leavers = await asyncio.gather(*(wire(hub.websocket_url) for _ in range(n)))
    for i in range(0, n, 50):  # joining is not what this test is about: in batches
        await asyncio.gather(
            *(c.call("subscribe", {"channel": "room"}) for c in leavers[i : i + 50])
        )
    joined = {(await watcher.push("join"))["info"]["client"] for _ in range(n)}
    assert len(joined) == n and watcher.client_id not in joined
    for client in leavers:  # all vanish at once, as a crashed network would do it
        assert client.ws.transport is not None
        client.ws.transport.abort()
    left = {(await watcher.push("leave"))["info"]["client"] for _ in range(n)}
    assert left == joined
    stats = await watcher.call("presence_stats", {"channel": "room"})
    assert stats["num_clients"] == 1


# ----------------------------------------------------- numbers at the edges


async def test_defect12_redis_history_since_huge_offsets_is_answered_or_120(
    start_hub: StartHub, wire: Wire, redis_prefix: str
) -> None:
    hub = await start_hub(config=backend_config("redis", redis_prefix))
    client = await wire(hub.websocket_url)
    published = await client.call("publish", {"channel": "chat", "data": 1})
    epoch = published["epoch"]
    for offset in (10**14, 2**53 - 1):
        since = {"offset": offset, "epoch": epoch}
        for reverse in (False, True):
            params = {"channel": "chat", "limit": 10, "since": since, "reverse": reverse}
            result = await client.call("history", params)
            expected = [] if not reverse else [{"data": 1, "offset": 1}]
            assert [{k: p[k] for k in ("data", "offset")} for p in result["publications"]] == (
                expected
            ), (offset, reverse)
            assert result["offset"] == 1
    for offset in (2**53 + 1, 2**63):
        params = {"channel": "chat", "limit": 10, "since": {"offset": offset, "epoch": epoch}}
        reply = await client.reply("history", params)
        assert reply["error"]["code"] == 120, offset


# ------------------------------------------------------ connect with subs


async def test_defect13_connect_with_100_subs_subscribes_all_100(
    start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, connect=False)
    subs = {f"room{i}": None for i in range(100)}
    result = await client.connect(subs=subs)
    refused = {ch: r["error"] for ch, r in result["subs"].items() if "error" in r}
    assert refused == {}
    assert len(result["subs"]) == 100


# ------------------------------------------------- dev mode and DNS rebinding


async def test_defect14_dev_mode_refuses_a_dns_rebinding_host(start_hub: StartHub) -> None:
    plan = cli_serve.plan(build_parser().parse_args(["serve"]), environ={})
    assert plan.dev_mode
    hub = await start_hub(config=plan.config)
    assert hub.port is not None
    port = hub.port
    evil = f"rebind.evil.example:{port}"
    upgrade_headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Protocol": "tether.v1",
    }
    path = plan.config.websocket_path
    head, body = await upgrade(
        port, path, {**upgrade_headers, "Host": evil, "Origin": f"http://{evil}"}
    )
    assert head.startswith("HTTP/1.1 403 ") and json.loads(body)["error"]["code"] == 123
    # The same request from this machine's own names is upgraded.
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        head, _ = await upgrade(
            port, path, {**upgrade_headers, "Host": host, "Origin": f"http://{host}"}
        )
        assert head.startswith("HTTP/1.1 101 "), (host, head)


# -------------------------------------------------------------------- HEAD


async def test_defect15_head_responses_have_no_body(start_hub: StartHub) -> None:
    hub = await start_hub()
    assert hub.port is not None
    for path in ("/", "/healthz", "/tether.js", "/nope", hub.node.config.websocket_path):
        status, headers, body = await http(hub.port, "HEAD", path)
        assert body == b"", (path, status, body[:80])
        assert "content-length" in headers, path
    status, headers, _ = await http(hub.port, "HEAD", "/healthz")
    get_status, get_headers, get_body = await http(hub.port, "GET", "/healthz")
    assert status == get_status == 200
    assert int(headers["content-length"]) == len(get_body) == int(get_headers["content-length"])
