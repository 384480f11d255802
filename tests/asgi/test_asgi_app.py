"""HubApp driven scope by scope: HTTP answers, the WebSocket session, lifespan events.

The real servers (uvicorn, hypercorn) and host apps are in tests/e2e/test_e2e_asgi_*.py;
here a test plays the server (tests/asgi/asgi_driver.py) to reach each branch.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from asgi_driver import Driver, http_request, http_scope, next_push, websocket_scope, wire

from tether.asgi import HubApp
from tether.hub import HubConfig, Limits, Node

API_KEY = "unit-api-key"


def make_hub(**config: Any) -> HubApp:
    options: dict[str, Any] = {"allow_anonymous": True, "api_key": API_KEY, **config}
    return HubApp(Node(HubConfig(**options)))


async def open_session(hub: HubApp, **scope: Any) -> Driver:
    """A WebSocket through the hub, accepted and connected (anonymous)."""
    driver = Driver(hub, websocket_scope(**scope)).start()
    driver.inbox.put_nowait({"type": "websocket.connect"})
    accepted = await driver.next()
    assert accepted == {"type": "websocket.accept", "subprotocol": "tether.v1"}
    command = {"id": 1, "method": "connect", "params": {}}
    driver.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(command)})
    reply = wire(await driver.next())
    assert reply["id"] == 1 and "client" in reply["result"], reply
    return driver


async def test_http_answers_under_a_root_path() -> None:
    hub = make_hub()
    try:
        status, headers, body = await http_request(hub, http_scope("/healthz", root_path="/rt"))
        assert status == 200
        assert json.loads(body)["status"] == "ok"
        # ASGI servers own the connection: no hop-by-hop header leaks out.
        assert "connection" not in headers
        assert headers["content-length"] == str(len(body))
        status, _, _ = await http_request(hub, http_scope("/nope", root_path="/rt"))
        assert status == 404
    finally:
        await hub.shutdown()


async def test_api_body_in_chunks_and_over_the_limit() -> None:
    hub = make_hub(limits=Limits(api_body_size=200))
    auth = [("authorization", f"apikey {API_KEY}")]
    try:
        body = json.dumps({"channel": "c", "data": "x" * 50}).encode()
        scope = http_scope("/api/publish", method="POST", headers=auth)
        status, _, answer = await http_request(hub, scope, body, chunks=4)
        assert status == 200, answer
        assert json.loads(answer)["offset"] == 1
        big = json.dumps({"channel": "c", "data": "x" * 500}).encode()
        status, _, answer = await http_request(hub, scope, big, chunks=3)
        assert status == 413, answer
    finally:
        await hub.shutdown()


async def test_api_request_abandoned_mid_body() -> None:
    hub = make_hub()
    scope = http_scope(
        "/api/publish", method="POST", headers=[("authorization", f"apikey {API_KEY}")]
    )
    driver = Driver(hub, scope)
    driver.inbox.put_nowait({"type": "http.request", "body": b'{"chan', "more_body": True})
    driver.inbox.put_nowait({"type": "http.disconnect"})
    driver.start()
    start = await driver.next("http.response.start")
    assert start["status"] == 400
    await driver.finished()
    await hub.shutdown()


async def test_demo_page_only_with_the_flag_and_relocated_under_the_mount() -> None:
    for demo, expected in ((False, 404), (True, 200)):
        hub = HubApp(Node(HubConfig()), demo=demo)
        status, headers, body = await http_request(hub, http_scope("/", root_path="/rt"))
        assert status == expected
        if demo:
            assert headers["content-type"].startswith("text/html")
            assert headers["content-length"] == str(len(body))
            # Its hub URLs point under the mount, not at the site's root.
            assert b'"/rt/tether.js"' in body and b'"/tether.js"' not in body
            assert b'"/rt/connection/websocket"' in body
        await hub.shutdown()


async def test_websocket_session_publish_and_receive() -> None:
    hub = make_hub()
    driver = await open_session(hub, root_path="/realtime")
    subscribe = {"id": 2, "method": "subscribe", "params": {"channel": "room"}}
    driver.inbox.put_nowait({"type": "websocket.receive", "text": json.dumps(subscribe)})
    assert wire(await driver.next())["id"] == 2
    await hub.node.publish("room", {"text": "hi"})
    assert (await next_push(driver, "pub"))["data"] == {"text": "hi"}
    # The client leaves: the session is cleaned up and the handler returns.
    driver.inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await driver.finished()
    assert hub.node.sessions == {}
    assert hub.node.metrics.close_codes[1000] == 1
    await hub.shutdown()


async def test_binary_message_closes_with_1003() -> None:
    hub = make_hub()
    driver = await open_session(hub)
    driver.inbox.put_nowait({"type": "websocket.receive", "bytes": b"\x00\x01"})
    push = wire(await driver.next())
    assert push["push"] == "disconnect" and push["reconnect"] is False
    closed = await driver.next()
    assert closed == {"type": "websocket.close", "code": 1003, "reason": push["reason"]}
    # The handler stays for the closing handshake: the server's websocket.disconnect.
    assert driver.task is not None and not driver.task.done()
    driver.inbox.put_nowait({"type": "websocket.receive", "text": "ignored after the close"})
    driver.inbox.put_nowait({"type": "websocket.disconnect", "code": 1003})
    await driver.finished()
    assert hub.node.sessions == {}
    assert hub.node.metrics.close_codes[1003] == 1
    await hub.shutdown()


async def test_closing_handshake_wait_is_bounded() -> None:
    hub = make_hub(close_timeout=0.05)
    driver = await open_session(hub)
    driver.inbox.put_nowait({"type": "websocket.receive", "bytes": b"\x00"})
    assert (await driver.next("websocket.close"))["code"] == 1003
    await driver.finished()  # no websocket.disconnect ever comes: close_timeout ends it
    assert hub.node.sessions == {}
    await hub.shutdown()


async def test_message_over_the_limit_closes_with_1009() -> None:
    hub = make_hub(limits=Limits(max_message_size=100))
    driver = await open_session(hub)
    driver.inbox.put_nowait({"type": "websocket.receive", "text": "x" * 101})
    closed = await driver.next("websocket.close")
    assert closed["code"] == 1009
    driver.inbox.put_nowait({"type": "websocket.disconnect", "code": 1009})
    await driver.finished()
    await hub.shutdown()


async def test_refusals_with_and_without_the_response_extension() -> None:
    hub = make_hub()
    # No tether.v1 offered: the hub's 400 with its JSON reason, as an HTTP response.
    driver = Driver(hub, websocket_scope(subprotocols=())).start()
    driver.inbox.put_nowait({"type": "websocket.connect"})
    start = await driver.next()
    assert start["type"] == "websocket.http.response.start" and start["status"] == 400
    body = await driver.next()
    assert "tether.v1" in json.loads(body["body"])["error"]["message"]
    await driver.finished()
    # A server without the extension: a close before accept (it answers 403).
    scope = websocket_scope(headers=[("origin", "http://evil.example")], response_extension=False)
    driver = Driver(hub, scope).start()
    driver.inbox.put_nowait({"type": "websocket.connect"})
    assert (await driver.next())["type"] == "websocket.close"
    await driver.finished()
    # Another path under the mount: 404.
    driver = Driver(hub, websocket_scope("/elsewhere")).start()
    driver.inbox.put_nowait({"type": "websocket.connect"})
    assert (await driver.next())["status"] == 404
    await driver.finished()
    await hub.shutdown()


async def test_lifespan_events_when_the_hub_is_the_app() -> None:
    hub = make_hub()
    driver = Driver(hub, {"type": "lifespan", "asgi": {"version": "3.0"}}).start()
    driver.inbox.put_nowait({"type": "lifespan.startup"})
    assert (await driver.next())["type"] == "lifespan.startup.complete"
    assert hub.node.started
    session = await open_session(hub)
    driver.inbox.put_nowait({"type": "lifespan.shutdown"})
    # Connected clients are told to reconnect elsewhere (1001) before the node stops.
    push = wire(await session.next())
    assert push["push"] == "disconnect" and push["reconnect"] is True
    assert (await session.next())["code"] == 1001
    assert (await driver.next())["type"] == "lifespan.shutdown.complete"
    await driver.finished()
    assert not hub.node.started
    session.inbox.put_nowait({"type": "websocket.disconnect", "code": 1001})
    await session.finished()


async def test_lifespan_startup_failure_is_reported() -> None:
    class FailingNode(Node):
        async def start(self) -> None:
            raise ConnectionError("broker unreachable")

    hub = HubApp(FailingNode(HubConfig()))
    driver = Driver(hub, {"type": "lifespan", "asgi": {"version": "3.0"}}).start()
    driver.inbox.put_nowait({"type": "lifespan.startup"})
    failed = await driver.next()
    assert failed == {"type": "lifespan.startup.failed", "message": "broker unreachable"}
    await driver.finished()
    # Requests get a clear 503 instead of a crash while the node cannot start.
    status, _, body = await http_request(hub, http_scope("/healthz"))
    assert status == 503
    assert json.loads(body)["error"]["code"] == 112


async def test_lifespan_context_for_starlette_and_async_with() -> None:
    hub = make_hub()
    async with hub.lifespan(object()):
        assert hub.node.started
    assert not hub.node.started
    async with hub as entered:
        assert entered is hub and hub.node.started
    assert not hub.node.started


async def test_concurrent_first_requests_start_the_node_once() -> None:
    hub = make_hub()
    starts = 0
    real_start = hub.node.broker.start

    async def counting_start(*args: Any) -> None:
        nonlocal starts
        starts += 1
        await asyncio.sleep(0)  # let the other requests arrive while starting
        await real_start(*args)

    hub.node.broker.start = counting_start  # type: ignore[method-assign]
    answers = await asyncio.gather(*(http_request(hub, http_scope("/healthz")) for _ in range(5)))
    assert [status for status, _, _ in answers] == [200] * 5
    assert starts == 1
    await hub.shutdown()
