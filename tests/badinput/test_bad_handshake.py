"""Malformed opening handshakes over raw TCP sockets.

Each case: the expected HTTP status arrives, the server closes the
connection, quickly, and a healthy client on the same server keeps echoing.
"""

from __future__ import annotations

import asyncio
import os

import pytest

import tether

FAST = 2.0  # an answer to bad input must come at once, not after some timeout


async def echo_ok(ws: tether.ClientConnection) -> None:
    message = os.urandom(8).hex()
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), FAST) == message


def req(*lines: str, method: str = "GET", path: str = "/", version: str = "HTTP/1.1") -> bytes:
    head = [f"{method} {path} {version}", *lines]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")


KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
GOOD = ["Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade", KEY]
V13 = "Sec-WebSocket-Version: 13"

CASES = {
    "missing key": (req(*GOOD[:3], V13), {400}),
    "key not 16 bytes": (req(*GOOD[:3], "Sec-WebSocket-Key: c2hvcnQ=", V13), {400}),
    "key not base64": (req(*GOOD[:3], "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==", V13), {400}),
    "two keys": (req(*GOOD, KEY, V13), {400}),
    "bad version": (req(*GOOD, "Sec-WebSocket-Version: 8"), {426}),
    "missing version": (req(*GOOD), {400, 426}),
    "bad Upgrade": (req(GOOD[0], "Upgrade: h2c", *GOOD[2:], V13), {400}),
    "missing Upgrade": (req(GOOD[0], *GOOD[2:], V13), {426}),
    "missing Connection": (req(*GOOD[:2], KEY, V13), {400}),
    "Connection: close": (req(*GOOD[:2], "Connection: close", KEY, V13), {400}),
    "missing Host": (req(*GOOD[1:], V13), {400}),
    "POST": (req(*GOOD, V13, method="POST"), {405}),
    "HTTP/1.0": (req(*GOOD, V13, version="HTTP/1.0"), {505}),
    "garbage request line": (b"HELLO\r\n\r\n", {400}),
    "non-ASCII request line": (b"GET /\xff HTTP/1.1\r\n\r\n", {400}),
    "header without colon": (req(*GOOD, V13, "NoColonHere"), {400}),
    "space before colon": (req(*GOOD, V13, "X-Bad : value"), {400}),
    "NUL in header value": (req(*GOOD, V13, "X-Bad: a\x00b"), {400}),
    "oversized header line": (req(*GOOD, V13, "X-Big: " + "a" * 9000), {400, 431}),
    "oversized request line": (req(*GOOD, V13, path="/" + "a" * 9000), {400, 414}),
    "2000 headers": (req(*GOOD, V13, *(f"X-H{i}: {i}" for i in range(2000))), {431}),
}


@pytest.fixture
async def target(start_server):
    """A server and a healthy client that echoes before and after each case."""
    srv = await start_server(compression=None, ping_interval=None, open_timeout=5)
    async with tether.connect(srv.url, compression=None) as healthy:
        await echo_ok(healthy)
        yield srv
        await echo_ok(healthy)
        assert healthy.close_code is None


@pytest.mark.parametrize("request_bytes,statuses", CASES.values(), ids=CASES.keys())
async def test_malformed_handshake_is_rejected(target, raw_client, request_bytes, statuses):
    loop = asyncio.get_running_loop()
    client = await raw_client(target.port)
    start = loop.time()
    await client.send(request_bytes)
    status = await asyncio.wait_for(client.read_response(), FAST)
    assert status in statuses, (status, client.headers, client.body)
    assert "sec-websocket-accept" not in client.headers
    assert client.headers.get("connection", "").lower() == "close"
    # The server ends its side (FIN after the response, so no RST can destroy
    # the response), then lets go of the connection once the client closes too.
    assert await client.read_eof(FAST) == b""
    assert loop.time() - start < FAST
    (rejected,) = [
        c
        for c in target.server.connections
        if c.request_headers is None or c.request_headers.get("User-Agent") != "tether"
    ]
    client.writer.close()
    await asyncio.wait_for(rejected.wait_closed(), FAST)
    assert len(target.server.connections) == 1  # only the healthy one


async def test_426_names_the_supported_version(target, raw_client) -> None:
    client = await raw_client(target.port)
    await client.send(CASES["bad version"][0])
    assert await client.read_response() == 426
    assert client.headers["sec-websocket-version"] == "13"


async def test_rejection_body_explains_the_reason(target, raw_client) -> None:
    client = await raw_client(target.port)
    await client.send(CASES["missing key"][0])
    assert await client.read_response() == 400
    assert b"Sec-WebSocket-Key" in client.body


async def test_header_line_exactly_at_the_limit_is_accepted(start_server, raw_client) -> None:
    srv = await start_server(compression=None, max_header_line=200)
    client = await raw_client(srv.port)
    line = "X-Pad: " + "p" * (200 - len("X-Pad: "))
    await client.handshake(headers=[("X-Pad", line.split(": ", 1)[1])])
    await client.send_frame(0x1, b"fits")
    assert await client.read_frame() == (True, 0x1, b"fits")


async def test_header_count_at_the_limit_is_accepted(start_server, raw_client) -> None:
    srv = await start_server(compression=None, max_headers=20)
    client = await raw_client(srv.port)
    extra = [(f"X-H{i}", str(i)) for i in range(20 - 5)]  # 5 standard headers
    await client.handshake(headers=extra)
    client2 = await raw_client(srv.port)
    await client2.send(client2.request(headers=[*extra, ("X-One-More", "1")]))
    assert await client2.read_response() == 431


async def test_plain_http_request_gets_an_error_not_a_hang(target, raw_client) -> None:
    client = await raw_client(target.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert await asyncio.wait_for(client.read_response(), FAST) == 426
    assert await client.read_eof(FAST) == b""


async def test_eof_in_the_middle_of_the_request(target, raw_client) -> None:
    client = await raw_client(target.port)
    await client.send(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    client.writer.write_eof()
    assert await client.read_eof(FAST) == b""


async def test_tls_client_hello_on_a_plain_port_is_answered(target, raw_client) -> None:
    client = await raw_client(target.port)
    await client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(500))
    assert await asyncio.wait_for(client.read_response(), FAST) == 400
    assert b"TLS" in client.body
    assert await client.read_eof(FAST) == b""


async def test_binary_garbage_without_line_end_is_dropped(start_server, raw_client) -> None:
    """Dropped by open_timeout, never buffered forever."""
    srv = await start_server(compression=None, open_timeout=0.3)
    async with tether.connect(srv.url, compression=None) as healthy:
        client = await raw_client(srv.port)
        await client.send(b"\x00\x01" + os.urandom(500).replace(b"\r", b"").replace(b"\n", b""))
        await echo_ok(healthy)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await client.read_eof(FAST + 0.3) == b""
        assert loop.time() - start < 0.3 + FAST
        await echo_ok(healthy)


async def test_slowloris_handshake_is_dropped_by_open_timeout(start_server, raw_client) -> None:
    open_timeout = 0.4
    srv = await start_server(compression=None, open_timeout=open_timeout, ping_interval=None)
    loop = asyncio.get_running_loop()
    async with tether.connect(srv.url, compression=None) as healthy:
        slow = await raw_client(srv.port)
        request = slow.request()
        start = loop.time()
        dropped = loop.create_future()

        async def drip() -> None:
            try:
                for byte in request[:-2]:
                    await slow.send(bytes([byte]))
                    # The attacker's pace, not a wait for a condition.
                    await asyncio.sleep(0.01)
                    if slow.reader.at_eof():
                        break
            except ConnectionError:
                pass
            await slow.read_eof(FAST + open_timeout)
            dropped.set_result(loop.time() - start)

        dripping = asyncio.ensure_future(drip())
        await echo_ok(healthy)  # served while the slow client is still connected
        assert not dropped.done()
        elapsed = await asyncio.wait_for(dropped, FAST + open_timeout)
        await dripping
        assert open_timeout - 0.05 <= elapsed < open_timeout + FAST
        await echo_ok(healthy)


async def test_many_idle_half_open_handshakes_do_not_block_others(start_server, raw_client) -> None:
    srv = await start_server(compression=None, open_timeout=5)
    idle = [await raw_client(srv.port) for _ in range(50)]
    for client in idle:
        await client.send(b"GET / HTTP/1.1\r\n")
    async with tether.connect(srv.url, compression=None) as healthy:
        await echo_ok(healthy)
    assert len(srv.server.connections) >= 50
