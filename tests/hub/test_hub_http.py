"""The HTTP side: API with keys and bodies, health, metrics and static files."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hub_support import API_KEY, GUARD, WireClient, api_headers, config, http, token

from tether.hub import HubServer, Limits

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


async def api(hub: HubServer, path: str, body: object, **kwargs: object) -> tuple[int, object]:
    status, _, payload = await http(hub.port, "POST", path, body, headers=api_headers(), **kwargs)  # type: ignore[arg-type]
    return status, json.loads(payload)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "apikey wrong"},
        {"Authorization": f"Bearer {API_KEY}"},
        {"Authorization": "apikey"},
    ],
)
async def test_api_key_required(start_hub: StartHub, headers: dict[str, str]) -> None:
    hub = await start_hub()
    status, response_headers, body = await http(
        hub.port, "POST", "/api/publish", {"channel": "c", "data": 1}, headers=headers
    )
    assert status == 401
    assert response_headers["content-type"] == "application/json"
    assert "API key" in json.loads(body)["error"]["message"]
    assert hub.node.metrics.publications == 0


async def test_api_off_without_a_key(start_hub: StartHub) -> None:
    hub = await start_hub(config=config(api_key=None))
    status, _, body = await http(
        hub.port, "POST", "/api/publish", {"channel": "c", "data": 1}, headers=api_headers()
    )
    assert status == 401 and "off" in json.loads(body)["error"]["message"]


async def test_publish_is_delivered(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    sub = await client.call("subscribe", {"channel": "news"})
    status, body = await api(hub, "/api/publish", {"channel": "news", "data": {"h": "hi"}})
    assert status == 200 and body == {"offset": 1, "epoch": sub["epoch"]}
    push = await client.push("pub")
    assert push == {
        "push": "pub",
        "channel": "news",
        "data": {"h": "hi"},
        "offset": 1,
        "epoch": sub["epoch"],
    }
    again = {"channel": "news", "data": 2, "idempotency_key": "once"}
    assert (await api(hub, "/api/publish", again))[1] == (await api(hub, "/api/publish", again))[1]


async def test_broadcast(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    await client.call("subscribe", {"channel": "a"})
    await client.call("subscribe", {"channel": "b"})
    status, body = await api(
        hub, "/api/broadcast", {"channels": ["a", "b", "x" * 300], "data": "all"}
    )
    assert status == 200
    results = body["results"]  # type: ignore[index]
    assert [r["channel"] for r in results[:2]] == ["a", "b"]
    assert results[2]["error"]["code"] == 106
    assert {(await client.push("pub"))["channel"] for _ in range(2)} == {"a", "b"}


async def test_history_and_presence(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url, token=token("alice"))
    await client.call("subscribe", {"channel": "room"})
    for i in range(4):
        await hub.node.publish("room", i)
    status, history = await api(hub, "/api/history", {"channel": "room", "limit": 2})
    assert status == 200
    assert [p["data"] for p in history["publications"]] == [0, 1]  # type: ignore[index]
    epoch = history["epoch"]  # type: ignore[index]
    since = {"channel": "room", "limit": 10, "since": {"offset": 2, "epoch": epoch}}
    _, after = await api(hub, "/api/history", since)
    assert [p["offset"] for p in after["publications"]] == [3, 4]  # type: ignore[index]
    _, presence = await api(hub, "/api/presence", {"channel": "room"})
    assert presence == {
        "clients": {client.client_id: {"client": client.client_id, "user": "alice"}}
    }
    _, stats = await api(hub, "/api/presence_stats", {"channel": "room"})
    assert stats == {"num_clients": 1, "num_users": 1}


async def test_disconnect_user(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    victim = await wire(hub.websocket_url, token=token("bob"))
    second_tab = await wire(hub.websocket_url, token=token("bob"))
    bystander = await wire(hub.websocket_url, token=token("carl"))
    status, body = await api(hub, "/api/disconnect", {"user": "bob"})
    assert (status, body) == (200, {})
    for client in (victim, second_tab):
        push = await client.push("disconnect")
        assert push == {
            "push": "disconnect",
            "code": 4005,
            "reason": "disconnected",
            "reconnect": False,
        }
        assert (await client.close_code())[0] == 4005
    assert await bystander.call("ping") == {}


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/publish", b"{not json", 400),
        ("/api/publish", b"[1, 2]", 400),
        ("/api/publish", b'{"channel": "c"}', 400),
        ("/api/publish", b'{"channel": 5, "data": 1}', 400),
        ("/api/publish", b'{"channel": "c", "data": NaN}', 400),
        ("/api/broadcast", b'{"channels": "c", "data": 1}', 400),
        ("/api/history", b'{"channel": "c", "limit": "ten"}', 400),
        ("/api/disconnect", b"{}", 400),
        ("/api/publish", b"\xff\xfe", 400),
    ],
)
async def test_bad_requests(start_hub: StartHub, path: str, body: bytes, status: int) -> None:
    hub = await start_hub()
    got, _, payload = await http(hub.port, "POST", path, raw_body=body, headers=api_headers())
    assert got == status
    assert "error" in json.loads(payload)


async def test_body_limits(start_hub: StartHub) -> None:
    hub = await start_hub(config=config(limits=Limits(api_body_size=100)))
    big = {"channel": "c", "data": "x" * 200}
    status, _, payload = await http(hub.port, "POST", "/api/publish", big, headers=api_headers())
    assert status == 413 and "larger" in json.loads(payload)["error"]["message"]
    chunked = {**api_headers(), "Transfer-Encoding": "chunked"}
    status, _, _ = await http(hub.port, "POST", "/api/publish", raw_body=b"", headers=chunked)
    assert status == 411
    bad_length = {**api_headers(), "Content-Length": "12x"}
    status, _, _ = await http(hub.port, "POST", "/api/publish", raw_body=b"", headers=bad_length)
    assert status == 400


async def test_body_sent_after_100_continue(start_hub: StartHub) -> None:
    hub = await start_hub()
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    body = json.dumps({"channel": "c", "data": "late"}).encode()
    head = (
        f"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {API_KEY}\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    )
    writer.write(head.encode())
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body[:5])
    await writer.drain()
    writer.write(body[5:])
    response = await asyncio.wait_for(reader.read(), GUARD)
    writer.close()
    assert response.startswith(b"HTTP/1.1 200 ")
    assert json.loads(response.partition(b"\r\n\r\n")[2])["offset"] == 1


async def test_api_needs_post(start_hub: StartHub) -> None:
    hub = await start_hub()
    status, _, _ = await http(hub.port, "GET", "/api/publish", headers=api_headers())
    assert status == 405
    status, _, _ = await http(hub.port, "POST", "/healthz")
    assert status == 405


async def test_healthz_and_not_found(start_hub: StartHub) -> None:
    hub = await start_hub()
    status, headers, body = await http(hub.port, "GET", "/healthz")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "node": hub.node.id}
    status, _, _ = await http(hub.port, "GET", "/nothing-here")
    assert status == 404


async def test_metrics(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    client = await wire(hub.websocket_url)
    await client.call("subscribe", {"channel": "m"})
    await client.call("publish", {"channel": "m", "data": "x"})
    await client.push("pub")
    gone = await wire(hub.websocket_url)
    await gone.close()
    await http(hub.port, "POST", "/api/publish", {}, headers={})
    status, headers, body = await http(hub.port, "GET", "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert samples["tether_connections"] == "1"
    assert samples["tether_subscriptions"] == "1"
    assert samples["tether_connections_total"] == "2"
    assert int(samples["tether_messages_in_total"]) >= 4
    assert int(samples["tether_messages_out_total"]) >= 5
    assert int(samples["tether_bytes_in_total"]) > 50
    assert int(samples["tether_bytes_out_total"]) > 50
    assert samples["tether_publications_total"] == "1"
    assert samples['tether_close_codes_total{code="1000"}'] == "1"
    assert samples["tether_slow_consumer_disconnects_total"] == "0"
    assert samples['tether_api_requests_total{path="/api/publish"}'] == "1"
    assert "# TYPE tether_publish_errors_total counter" in text


async def test_static_files(start_hub: StartHub, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>chat</title>")
    (tmp_path / "tether.js").write_text("export const PROTOCOL = 'tether.v1';")
    hub = await start_hub(config=config(static_dir=tmp_path))
    status, headers, body = await http(hub.port, "GET", "/")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert body == b"<!doctype html><title>chat</title>"
    status, headers, body = await http(hub.port, "GET", "/tether.js?v=1")
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    (tmp_path / "tether.js").unlink()
    status, _, _ = await http(hub.port, "GET", "/tether.js")
    assert status == 404


async def test_packaged_static_files_are_served(start_hub: StartHub) -> None:
    hub = await start_hub()
    static = hub.node.config.static_dir
    assert static is not None
    for path, name in (("/", "index.html"), ("/tether.js", "tether.js")):
        status, _, body = await http(hub.port, "GET", path)
        if (static / name).exists():
            assert status == 200 and body == (static / name).read_bytes()
        else:
            assert status == 404


async def test_favicon_is_served(start_hub: StartHub) -> None:
    """The demo's icon, also at /favicon.ico: a first page load logs no 404."""
    hub = await start_hub()
    static = hub.node.config.static_dir
    assert static is not None
    for path in ("/favicon.svg", "/favicon.ico"):
        status, headers, body = await http(hub.port, "GET", path)
        assert status == 200 and headers["content-type"] == "image/svg+xml"
        assert body == (static / "favicon.svg").read_bytes() and body.startswith(b"<svg")


async def test_broadcast_is_capped(start_hub: StartHub) -> None:
    hub = await start_hub()
    status, body = await api(
        hub, "/api/broadcast", {"channels": [f"c{i}" for i in range(1001)], "data": 1}
    )
    assert status == 400
    assert body["error"]["code"] == 106  # type: ignore[index]


async def test_metrics_key(start_hub: StartHub) -> None:
    """With metrics_key, /metrics answers only its Bearer token; /healthz stays open."""
    hub = await start_hub(config=config(metrics_key="scrape-me"))
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "apikey scrape-me"},  # another scheme
        api_headers(),  # the API key is not the metrics key
    ):
        status, answer, body = await http(hub.port, "GET", "/metrics", headers=headers)
        assert status == 401, headers
        assert answer["www-authenticate"] == 'Bearer realm="metrics"'
        assert "metrics key" in json.loads(body)["error"]["message"]
        assert b"tether_connections" not in body
    status, _, body = await http(
        hub.port, "GET", "/metrics", headers={"Authorization": "Bearer scrape-me"}
    )
    assert status == 200 and b"tether_connections " in body
    status, _, _ = await http(hub.port, "GET", "/healthz")
    assert status == 200
