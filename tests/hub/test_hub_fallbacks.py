"""The HTTP fallbacks on one node: SSE with resume, streaming and long-poll emulation, limits.

Every request is made as docs/wire-protocol.md ("HTTP fallbacks") says, with
httpx, raw sockets or curl; the hub is tether's own server on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fallback_support import NdjsonReader, SseReader, connect_command, post
from hub_support import GUARD, WireClient, config, token

from tether.hub import HubServer, Limits
from tether.hub.config import ChannelOptions, FallbackConfig

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]


def fb_config(**fallbacks: Any) -> Any:
    cfg = config()
    cfg.fallbacks = replace(cfg.fallbacks, **fallbacks)
    return cfg


@asynccontextmanager
async def sse(
    client: httpx.AsyncClient, query: str, **headers: str
) -> AsyncIterator[tuple[httpx.Response, SseReader]]:
    async with client.stream("GET", "/connection/sse?" + query, headers=headers) as response:
        yield response, SseReader(response.aiter_lines())


def http_client(hub: HubServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=hub.url.rstrip("/"), timeout=GUARD)


# ------------------------------------------------------------------ SSE


async def test_sse_delivers_and_resumes_exactly_what_was_missed(start_hub: StartHub) -> None:
    hub = await start_hub()
    node = hub.node
    async with http_client(hub) as client:
        async with sse(client, "channel=news") as (response, events):
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["x-accel-buffering"] == "no"
            connected = await events.next()
            assert connected.name == "connected" and connected.id
            assert connected.json()["channels"]["news"]["recoverable"] is True
            assert events.retry == 2000
            for n in range(3):
                await node.publish("news", {"n": n})
            got = [await events.next() for _ in range(3)]
            assert [e.json() for e in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
            assert all(e.name == "message" and e.id for e in got)
        # Cut after the first publication: the two after it were "missed", then two more.
        for n in range(3, 5):
            await node.publish("news", {"n": n})
        async with sse(client, "channel=news", **{"Last-Event-ID": got[0].id or ""}) as (
            _,
            events,
        ):
            resumed = await events.next()
            assert resumed.name == "connected"
            assert resumed.json()["channels"]["news"]["recovered"] is True
            missed = [(await events.next()).json() for _ in range(4)]
            assert missed == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]
            await node.publish("news", {"n": 5})
            live = await events.next()
            assert live.json() == {"n": 5}
        # Resuming from the last id gets nothing twice: the next event is the next publication.
        async with sse(client, "channel=news", **{"Last-Event-ID": live.id or ""}) as (_, events):
            assert (await events.next()).name == "connected"
            await node.publish("news", {"n": 6})
            assert (await events.next()).json() == {"n": 6}


async def test_sse_resume_id_covers_every_channel(start_hub: StartHub) -> None:
    hub = await start_hub()
    node = hub.node
    async with http_client(hub) as client:
        async with sse(client, "channel=a&channel=b&envelope=1") as (_, events):
            await events.next()
            await node.publish("a", 1)
            await node.publish("b", 2)
            first, second = await events.next(), await events.next()
            assert first.json() == {
                "channel": "a",
                "data": 1,
                "offset": 1,
                "epoch": first.json()["epoch"],
            }
            assert second.json()["channel"] == "b"
        await node.publish("a", 3)
        await node.publish("b", 4)
        async with sse(client, "channel=a&channel=b", **{"Last-Event-ID": second.id or ""}) as (
            _,
            events,
        ):
            await events.next()
            assert sorted([(await events.next()).json() for _ in range(2)]) == [3, 4]


async def test_sse_recovery_failed_when_the_epoch_changed(start_hub: StartHub) -> None:
    hub = await start_hub()
    await hub.node.publish("news", "x")
    async with http_client(hub) as client:
        async with sse(client, "channel=news") as (_, events):
            await events.next()
        import base64

        stale = "v1." + base64.urlsafe_b64encode(b'{"news":[1,"old-epoch"]}').decode().rstrip("=")
        async with sse(client, "channel=news", **{"Last-Event-ID": stale}) as (_, events):
            connected = await events.next()
            assert connected.json()["channels"]["news"]["recovered"] is False
            failed = await events.next()
            assert failed.name == "recovery-failed"
            assert failed.json()["channel"] == "news" and failed.json()["epoch"] != "old-epoch"
            await hub.node.publish("news", "y")
            assert (await events.next()).json() == "y"


async def test_sse_presence_events_when_asked(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    async with http_client(hub) as client, sse(client, "channel=room&presence=1") as (_, events):
        await events.next()
        own = await events.until("join")  # a client receives its own join
        assert own.json() == {"channel": "room", "info": own.json()["info"]}
        other = await wire(hub.websocket_url, token=token("bob"))
        await other.call("subscribe", {"channel": "room"})
        join = await events.until("join")
        assert join.json()["info"]["user"] == "bob"
        await other.call("unsubscribe", {"channel": "room"})
        leave = await events.until("leave")
        assert leave.json()["channel"] == "room"


async def test_sse_credentials_and_refusals(start_hub: StartHub) -> None:
    cfg = fb_config()
    cfg.allow_anonymous = False
    cfg.strict_namespaces = True
    cfg.namespaces = {"chat": ChannelOptions()}
    hub = await start_hub(config=cfg)
    alice = token("alice")
    async with http_client(hub) as client:
        for query, headers, status, code in [
            ("", {}, 400, 117),
            ("channel=chat:x", {}, 401, 101),
            ("channel=chat:x", {"Authorization": "Bearer garbage"}, 401, 101),
            ("channel=chat:x", {"Authorization": f"Bearer {token('alice', ttl=-10)}"}, 401, 109),
            ("channel=other:x", {"Authorization": f"Bearer {alice}"}, 404, 102),
            # ?token= only where the operator opted in.
            (f"channel=chat:x&token={alice}", {}, 401, 101),
        ]:
            response = await client.get("/connection/sse?" + query, headers=headers)
            assert (response.status_code, response.json()["error"]["code"]) == (status, code)
        for headers in ({"Authorization": f"Bearer {alice}"}, {"Cookie": f"tether_token={alice}"}):
            async with sse(client, "channel=chat:x", **headers) as (response, events):
                assert response.status_code == 200
                assert (await events.next()).json()["user"] == "alice"
        response = await client.post("/connection/sse?channel=chat:x")
        assert response.status_code == 405 and response.json()["error"]["code"] == 121
        cross = {"Origin": "http://evil.example", "Authorization": f"Bearer {alice}"}
        response = await client.get("/connection/sse?channel=chat:x", headers=cross)
        assert response.status_code == 403


async def test_sse_query_token_when_opted_in(start_hub: StartHub) -> None:
    hub = await start_hub(config=fb_config(query_token=True))
    query = f"channel=c&token={token('carol')}"
    async with http_client(hub) as client, sse(client, query) as (_, events):
        assert (await events.next()).json()["user"] == "carol"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_consumer_receives_and_resumes(start_hub: StartHub) -> None:
    hub = await start_hub()
    url = hub.url + "connection/sse?channel=ticker"

    async def curl(*extra: str) -> tuple[asyncio.subprocess.Process, SseReader]:
        proc = await asyncio.create_subprocess_exec(
            "curl", "-sN", *extra, url, stdout=asyncio.subprocess.PIPE
        )

        async def lines() -> AsyncIterator[str]:
            assert proc.stdout is not None
            while raw := await proc.stdout.readline():
                yield raw.decode().rstrip("\n")

        return proc, SseReader(lines())

    proc, events = await curl()
    try:
        assert (await events.next()).name == "connected"
        await hub.node.publish("ticker", {"price": 1})
        first = await events.next()
        assert first.json() == {"price": 1}
    finally:
        proc.kill()
        await proc.wait()
    for price in (2, 3):
        await hub.node.publish("ticker", {"price": price})
    proc, events = await curl("-H", f"Last-Event-ID: {first.id}")
    try:
        await events.next()
        assert [(await events.next()).json() for _ in range(2)] == [{"price": 2}, {"price": 3}]
    finally:
        proc.kill()
        await proc.wait()


# ----------------------------------------------------------- emulation


async def test_stream_emulation_round_trip(start_hub: StartHub, wire: Wire) -> None:
    hub = await start_hub()
    async with http_client(hub) as client:
        body = connect_command(token=token("alice"))
        async with client.stream("POST", "/connection/stream", json=body) as response:
            assert response.headers["content-type"] == "application/x-ndjson"
            frames = NdjsonReader(response.aiter_lines())
            hello = await frames.next()
            assert hello["seq"] == 0 and hello["transport"] == "http_stream"
            key = hello["session"]
            connected = await frames.reply(1)
            assert connected["result"]["user"] == "alice"
            commands = [
                {"id": 2, "method": "subscribe", "params": {"channel": "chat"}},
                {"id": 3, "method": "publish", "params": {"channel": "chat", "data": "hi"}},
            ]
            status, answer = await post(
                client, "/connection/send", {"session": key, "commands": commands}
            )
            assert (status, answer) == (200, {})
            assert (await frames.reply(2))["result"]["recoverable"] is True
            # The publication may overtake the publish reply (as on a WebSocket).
            got = [await frames.next()]
            while sum(f.get("push") == "pub" or f.get("id") == 3 for f in got) < 2:
                got.append(await frames.next())
            pub = next(f for f in got if f.get("push") == "pub")
            assert pub["data"] == "hi" and pub["offset"] == 1
            assert next(f for f in got if f.get("id") == 3)["result"]["offset"] == 1
            # A WebSocket client sees the emulated one in presence, under its public id.
            ws = await wire(hub.websocket_url, token=token("bob"))
            presence = await ws.call("presence", {"channel": "chat"})
            assert connected["result"]["client"] in presence["clients"]
            assert key.split(".")[1] not in json.dumps(presence)
            await ws.call("publish", {"channel": "chat", "data": "from ws"})
            assert (await frames.push("pub"))["data"] == "from ws"
            # Disconnected by the app: a disconnect push, then the stream ends.
            await hub.node.disconnect("alice")
            push = await frames.push("disconnect")
            assert push["code"] == 4005 and push["reconnect"] is False
            with pytest.raises(EOFError):
                await frames.next()
        status, answer = await post(client, "/connection/send", {"session": key, "commands": []})
        assert (status, answer["error"]["code"]) == (404, 125)
    assert hub.node.metrics.transport_sessions["http_stream"] == 1


async def test_eventsource_emulation(start_hub: StartHub) -> None:
    hub = await start_hub()
    connect = json.dumps(connect_command())
    async with (
        http_client(hub) as client,
        client.stream("GET", "/connection/eventsource", params={"connect": connect}) as response,
    ):
        events = SseReader(response.aiter_lines())
        hello = (await events.next()).json()
        assert hello["transport"] == "eventsource"
        assert "result" in (await events.next()).json()
        command = {"id": 2, "method": "subscribe", "params": {"channel": "c"}}
        await post(client, "/connection/send", {"session": hello["session"], "commands": [command]})
        assert (await events.next()).json()["id"] == 2
        await hub.node.publish("c", 7)
        frame = (await events.next()).json()
        while frame.get("push") != "pub":  # its own join comes first
            frame = (await events.next()).json()
        assert frame["data"] == 7


async def test_long_poll_redelivers_a_lost_answer(start_hub: StartHub) -> None:
    hub = await start_hub(config=config(channels=ChannelOptions(presence=False)))
    async with http_client(hub) as client:
        status, first = await post(client, "/connection/poll", {"connect": connect_command()})
        assert status == 200 and first["seq"] == 1
        key = first["session"]
        assert first["messages"][0]["id"] == 1
        command = {"id": 2, "method": "subscribe", "params": {"channel": "c"}}
        await post(client, "/connection/send", {"session": key, "commands": [command]})
        await hub.node.publish("c", "one")
        await asyncio.sleep(0)
        _, batch = await post(client, "/connection/poll", {"session": key, "ack": 1})
        assert batch["seq"] == 2
        assert [m.get("id") or m.get("data") for m in batch["messages"]] == [2, "one"]
        # That answer was "lost": the same ack gets the same messages, and what came since.
        await hub.node.publish("c", "two")
        _, again = await post(client, "/connection/poll", {"session": key, "ack": 1})
        assert again["seq"] == 2
        assert [m.get("id") or m.get("data") for m in again["messages"]] == [2, "one", "two"]
        # Acknowledged: a poll waits for the next message.
        waiting = asyncio.ensure_future(
            post(client, "/connection/poll", {"session": key, "ack": 4})
        )
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await hub.node.publish("c", "three")
        _, later = await waiting
        assert later["seq"] == 5 and later["messages"][0]["data"] == "three"
        _, empty = await post(client, "/connection/poll", {"session": key, "ack": 5, "wait": 0.05})
        assert empty == {"session": key, "seq": 6, "messages": []}


async def test_long_poll_session_ends_without_polls(start_hub: StartHub) -> None:
    hub = await start_hub(config=fb_config(session_timeout=0.2))
    async with http_client(hub) as client:
        _, first = await post(client, "/connection/poll", {"connect": connect_command()})
        key = first["session"]
        while hub.node.sessions:
            await asyncio.sleep(0.02)
        _, last = await post(client, "/connection/poll", {"session": key, "ack": 1})
        assert last["messages"][-1]["push"] == "disconnect" and last["messages"][-1]["code"] == 4012
        status, gone = await post(client, "/connection/poll", {"session": key, "ack": last["seq"]})
        assert (status, gone["error"]["code"]) == (404, 125)


# -------------------------------------------------------------- refusals


async def test_forged_foreign_and_malformed_session_keys(start_hub: StartHub) -> None:
    hub = await start_hub()
    async with http_client(hub) as client:
        alice = token("alice")
        _, first = await post(client, "/connection/poll", {"connect": connect_command(token=alice)})
        key = first["session"]
        node_id, _, secret = key.partition(".")
        assert node_id == hub.node.id and len(secret) >= 32
        forged = [f"{node_id}.{'A' * len(secret)}", f"{'0' * 32}.{secret}", "nodot", ""]
        for bad in forged:
            status, answer = await post(
                client, "/connection/send", {"session": bad, "commands": []}
            )
            assert (status, answer["error"]["code"]) == (404, 125), bad
        # Another user's credentials on alice's session key.
        bob = {"Authorization": f"Bearer {token('bob')}"}
        body = {"session": key, "commands": [{"id": 2, "method": "ping", "params": {}}]}
        status, answer = await post(client, "/connection/send", body, headers=bob)
        assert (status, answer["error"]["code"]) == (403, 103)
        status, answer = await post(
            client, "/connection/poll", {"session": key, "ack": 1}, headers=bob
        )
        assert (status, answer["error"]["code"]) == (403, 103)
        # Her own credentials, or none (the key is the credential), are fine.
        status, _ = await post(
            client, "/connection/send", body, headers={"Authorization": f"Bearer {alice}"}
        )
        assert status == 200
        for bad_body, code in [
            ({"session": key}, 107),
            ({"session": key, "commands": "x"}, 107),
            ({"session": key, "commands": [{}] * 101}, 106),
        ]:
            status, answer = await post(client, "/connection/send", bad_body)
            assert (status, answer["error"]["code"]) == (400, code)
        for bad_body in ({"session": key, "ack": -1}, {"session": key, "ack": "1"}, {"ack": 1}):
            status, answer = await post(client, "/connection/poll", bad_body)
            assert (status, answer["error"]["code"]) == (400, 107)
        response = await client.post("/connection/send", content=b"\xff\xfe")
        assert (response.status_code, response.json()["error"]["code"]) == (400, 119)
        response = await client.post("/connection/stream", json={"id": 1, "method": "ping"})
        assert (response.status_code, response.json()["error"]["code"]) == (400, 107)
        response = await client.get("/connection/send")
        assert response.status_code == 405 and response.headers["allow"] == "POST"


async def test_body_too_large(start_hub: StartHub) -> None:
    hub = await start_hub(config=fb_config(max_body_size=1000))
    async with http_client(hub) as client:
        big = {
            "session": "x.y",
            "commands": [{"id": 1, "method": "ping", "params": {"p": "x" * 2000}}],
        }
        status, answer = await post(client, "/connection/send", big)
        assert (status, answer["error"]["code"]) == (413, 110)
        status, answer = await post(
            client, "/connection/poll", {"connect": connect_command(data="x" * 2000)}
        )
        assert (status, answer["error"]["code"]) == (413, 110)


async def test_too_many_streams_from_one_ip(start_hub: StartHub) -> None:
    hub = await start_hub(config=fb_config(max_streams_per_ip=2))
    async with http_client(hub) as client:
        async with sse(client, "channel=a") as (r1, _), sse(client, "channel=b") as (r2, _):
            assert r1.status_code == r2.status_code == 200
            response = await client.get("/connection/sse?channel=c")
            assert (response.status_code, response.json()["error"]["code"]) == (429, 126)
            _, first = await post(client, "/connection/poll", {"connect": connect_command()})
            status, answer = await post(
                client, "/connection/poll", {"session": first["session"], "ack": 1}
            )
            assert (status, answer["error"]["code"]) == (429, 126)
        # Closed streams free their places.
        async with sse(client, "channel=c") as (response, events):
            assert response.status_code == 200
            await events.next()


async def test_slow_reader_is_cut_and_memory_stays_bounded(start_hub: StartHub) -> None:
    cfg = config(limits=Limits(send_queue_size=64 * 1024))
    hub = await start_hub(config=cfg)
    node = hub.node
    sock = socket.create_connection(("127.0.0.1", hub.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"GET /connection/sse?channel=firehose HTTP/1.1\r\nHost: x\r\n\r\n")
    reader, writer = await asyncio.open_connection(sock=sock)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    assert head.startswith(b"HTTP/1.1 200")
    while not node.sessions:
        await asyncio.sleep(0.01)
    (session,) = node.sessions.values()
    payload = "x" * 4000
    peak_queue = peak_buffer = 0
    # The reader reads nothing more: the kernel's buffers fill, then the socket's
    # write buffer (256 KiB), then the session's queue (64 KiB), then it is cut.
    for _ in range(5000):
        await node.publish("firehose", payload)
        if session.closed:
            break
        peak_queue = max(peak_queue, session.writer.queued_bytes)
        buffers = [conn.write_buffer_size() for conn in hub.http.connections]
        peak_buffer = max([peak_buffer, *buffers])
        await asyncio.sleep(0)
    assert session.closed and session.close_code == 4010
    assert 0 < peak_queue <= 64 * 1024
    assert peak_buffer <= 256 * 1024 + 5000
    assert node.metrics.slow_consumer_disconnects == 1
    while hub.http.connections:  # the server dropped the connection
        await asyncio.sleep(0.01)
    writer.transport.abort()
    assert not node.sessions


async def test_a_client_that_stops_polling_is_cut_with_bounded_memory(start_hub: StartHub) -> None:
    hub = await start_hub(config=config(limits=Limits(send_queue_size=32 * 1024)))
    node = hub.node
    async with http_client(hub) as client:
        _, first = await post(client, "/connection/poll", {"connect": connect_command()})
        key = first["session"]
        command = {"id": 2, "method": "subscribe", "params": {"channel": "firehose"}}
        await post(client, "/connection/send", {"session": key, "commands": [command]})
        (session,) = node.sessions.values()
        transport = session.transport
        peak = 0
        for _ in range(200):
            await node.publish("firehose", "x" * 1000)
            if session.closed:
                break
            peak = max(peak, transport.buffered_bytes + session.writer.queued_bytes)  # type: ignore[attr-defined]
        assert session.closed and session.close_code == 4010
        assert peak <= 2 * 32 * 1024 + 2000
        # The client comes back: what it had not acknowledged (no room was left for a
        # disconnect push), then "session not found": it reconnects and recovers.
        _, batch = await post(client, "/connection/poll", {"session": key, "ack": 1})
        assert batch["messages"][-1]["push"] == "pub"
        last = batch["seq"] + len(batch["messages"]) - 1
        status, gone = await post(client, "/connection/poll", {"session": key, "ack": last})
        assert (status, gone["error"]["code"]) == (404, 125)


# ---------------------------------------------------------------- HTTP/1.1


async def test_keep_alive_serves_many_requests_on_one_connection(start_hub: StartHub) -> None:
    hub = await start_hub()
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    body = json.dumps({"connect": connect_command()}).encode()
    request = (
        b"POST /connection/poll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    key = json.loads(await reader.readexactly(length))["session"]
    # Then the health check and a poll on the same connection.
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    assert head.startswith(b"HTTP/1.1 200")
    await reader.readexactly(int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]))
    poll = json.dumps({"session": key, "ack": 1, "wait": 0}).encode()
    writer.write(
        b"POST /connection/poll HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b"
        % (len(poll), poll)
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD)
    assert head.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_slow_and_oversized_request_heads_are_cut(start_hub: StartHub) -> None:
    hub = await start_hub(config=fb_config(request_timeout=0.2))
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(b"POST /connection/poll HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    answer = await asyncio.wait_for(reader.read(), GUARD)
    assert answer.startswith(b"HTTP/1.1 408")
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(
        b"POST /connection/poll HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    )
    answer = await asyncio.wait_for(reader.read(), GUARD)
    assert answer.startswith(b"HTTP/1.1 431")
    writer.close()


async def test_closing_the_hub_drops_silent_and_idle_connections(start_hub: StartHub) -> None:
    hub = await start_hub()
    silent = await asyncio.open_connection("127.0.0.1", hub.port)  # no request line yet
    idle = await asyncio.open_connection("127.0.0.1", hub.port)
    poll = json.dumps({"connect": connect_command()}).encode()
    idle[1].write(
        b"POST /connection/poll HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b"
        % (len(poll), poll)
    )
    await asyncio.wait_for(idle[0].readuntil(b"\r\n\r\n"), GUARD)  # kept alive after it
    await asyncio.wait_for(hub.close(), GUARD)
    for reader, writer in (silent, idle):
        with contextlib.suppress(ConnectionError):
            while await asyncio.wait_for(reader.read(65536), 2.0):
                pass
        writer.close()


async def test_metrics_count_fallback_transports(start_hub: StartHub) -> None:
    hub = await start_hub()
    async with http_client(hub) as client:
        async with sse(client, "channel=m") as (_, events):
            await events.next()
            await post(client, "/connection/poll", {"connect": connect_command()})
            live = (await client.get("/metrics")).text
            assert 'tether_transport_sessions{transport="sse"} 1' in live
            assert 'tether_transport_sessions{transport="long_poll"} 1' in live
        text = (await client.get("/metrics")).text
    assert 'tether_transport_sessions_total{transport="sse"} 1' in text
    assert 'tether_transport_sessions_total{transport="long_poll"} 1' in text
    assert 'tether_transport_bytes_total{transport="sse"}' in text


def test_fallbacks_can_be_switched_off() -> None:
    assert FallbackConfig(enabled=False).enabled is False
