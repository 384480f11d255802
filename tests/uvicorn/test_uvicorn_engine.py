"""tether.uvicorn.WebSocketProtocol under the real uvicorn, in a child process.

Every feature of the ASGI WebSocket spec through raw ASGI apps and
Starlette endpoints (asgi_apps.py), each of uvicorn's --ws-* options,
denial responses, app errors, access lines and shutdown.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from uvicorn_support import UvicornProcess
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tether_testing import OP_BINARY, OP_PING, OP_PONG, OP_TEXT, RawClient

pytest.importorskip("uvicorn", reason="uvicorn is in the test extra")
pytest.importorskip("starlette", reason="starlette is in the test extra")


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornProcess]:
    with UvicornProcess("asgi_apps:app", "--root-path", "/base") as running:
        yield running


@pytest.fixture(scope="module")
def starlette_server() -> Iterator[UvicornProcess]:
    with UvicornProcess("asgi_apps:starlette_app") as running:
        yield running


async def closed_with(ws: websockets.ClientConnection) -> tuple[int | None, str | None]:
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code, ws.close_reason


# ----------------------------------------------------------------- messages


async def test_text_and_bytes_both_ways(server: UvicornProcess) -> None:
    async with websockets.connect(server.url("/echo")) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xffbinary")
        assert await ws.recv() == b"\x00\xffbinary"
        await ws.send("")
        assert await ws.recv() == ""
        await ws.send(b"")
        assert await ws.recv() == b""


async def test_burst_of_pipelined_messages_comes_back_in_order(server: UvicornProcess) -> None:
    async with websockets.connect(server.url("/echo"), compression=None) as ws:
        for i in range(500):
            await ws.send(f"m{i}")
        assert [await ws.recv() for _ in range(500)] == [f"m{i}" for i in range(500)]


async def test_large_messages_and_compression(server: UvicornProcess) -> None:
    async with websockets.connect(server.url("/big?size=3000000&count=3"), max_size=2**23) as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        for _ in range(3):
            assert await ws.recv() == b"x" * 3_000_000
        text = "compressible " * 10_000
        await ws.send(text)
        assert await ws.recv() == text


async def test_fragmented_message_is_reassembled(server: UvicornProcess) -> None:
    async with websockets.connect(server.url("/echo"), compression=None) as ws:
        await ws.send(["frag", "mented"])
        assert await ws.recv() == "fragmented"


# -------------------------------------------------------------------- scope


async def test_scope_fields(server: UvicornProcess) -> None:
    url = server.url("/caf%C3%A9/scope?a=1&b=%20")
    headers = {"X-Custom": "Value"}
    async with websockets.connect(url, additional_headers=headers, subprotocols=["p1", "p2"]) as ws:
        scope = json.loads(await ws.recv())
        local = ws.local_address
    assert scope["type"] == "websocket"
    assert scope["asgi"]["spec_version"] == "2.4"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["server"] == ["127.0.0.1", server.port]
    assert scope["client"] == [local[0], local[1]]
    assert scope["root_path"] == "/base"
    assert scope["path"] == "/base/café/scope"
    assert scope["raw_path"] == "/base/caf%C3%A9/scope"
    assert scope["query_string"] == "a=1&b=%20"
    assert ["x-custom", "Value"] in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["subprotocols"] == ["p1", "p2"]
    assert scope["state"] == {"greeting": "hello from lifespan"}
    assert scope["extensions"] == {"websocket.http.response": {}}


# ------------------------------------------------------------------- accept


async def test_accept_with_subprotocol_and_headers(server: UvicornProcess) -> None:
    async with websockets.connect(server.url("/subprotocol"), subprotocols=["a", "b"]) as ws:
        assert ws.subprotocol == "b"
        assert ws.response.headers["x-tether-test"] == "yes"
        assert ws.response.headers["set-cookie"] == "a=b"
        assert ws.response.headers["server"] == "uvicorn"
        assert "date" in ws.response.headers
        await ws.send("after accept")
        assert await ws.recv() == "after accept"
    line = await server.wait_for('"WebSocket /base/subprotocol" [accepted]')
    assert "127.0.0.1:" in line


async def test_close_before_accept_is_403(server: UvicornProcess) -> None:
    with pytest.raises(InvalidStatus) as caught:
        await websockets.connect(server.url("/close-before-accept"))
    assert caught.value.response.status_code == 403
    report = await server.report("close-before-accept")
    assert report == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
    await server.wait_for('"WebSocket /base/close-before-accept" 403')


async def test_denial_response_extension(server: UvicornProcess) -> None:
    with pytest.raises(InvalidStatus) as caught:
        await websockets.connect(server.url("/deny?status=401"))
    response = caught.value.response
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "text/plain"
    assert response.body == b"no token, no entry"
    assert (await server.report("deny"))["code"] == 1006
    await server.wait_for('"WebSocket /base/deny?status=401" 401')


# ------------------------------------------------------------------- close


async def test_app_closes_with_code_and_reason(server: UvicornProcess) -> None:
    async with websockets.connect(server.url("/echo?tag=app-closes")) as ws:
        await ws.send("close-please")
        assert await closed_with(ws) == (4001, "asked to close")
    assert await server.report("app-closes") == {
        "type": "websocket.disconnect",
        "code": 4001,
        "reason": "asked to close",
    }


async def test_client_close_reaches_app_with_code_and_reason(server: UvicornProcess) -> None:
    async with websockets.connect(server.url("/scope?tag=client-closes")) as ws:
        await ws.recv()
        await ws.close(4100, "client says bye")
    assert await server.report("client-closes") == {
        "type": "websocket.disconnect",
        "code": 4100,
        "reason": "client says bye",
    }


async def test_connection_lost_without_close_is_1006(server: UvicornProcess) -> None:
    client = await RawClient.open(server.port)
    try:
        await client.handshake("/send-after-disconnect")
    finally:
        client.close()  # TCP reset, no Close frame
    assert await server.report("send-after-disconnect") == {
        "type": "websocket.disconnect",
        "code": 1006,
        "reason": "",
    }
    # ASGI 2.4: send() on a closed connection raises an OSError subclass.
    assert await server.report("send-after-disconnect", 2) == {
        "error": "ClientDisconnected",
        "is_oserror": True,
    }


async def test_protocol_error_closes_1002_and_tells_app(server: UvicornProcess) -> None:
    client = await RawClient.open(server.port)
    try:
        await client.handshake("/scope?tag=unmasked")
        await client.read_frame()  # the scope
        # RFC 6455 §5.1: a client frame must be masked.
        await client.send_frame(OP_TEXT, b"unmasked", mask=None)
        code, _ = await client.read_close()
    finally:
        client.close()
    assert code == 1002
    report = await server.report("unmasked")
    assert report["code"] == 1002


async def test_invalid_handshake_is_refused_before_the_app(server: UvicornProcess) -> None:
    client = await RawClient.open(server.port)
    try:
        await client.send(RawClient.request("/echo", [("Sec-WebSocket-Version", "8")]))
        status = await client.read_response()
    finally:
        client.close()
    assert status == 426
    assert client.headers["sec-websocket-version"] == "13"


# ------------------------------------------------------------------ errors


async def test_app_raising_before_accept_is_500(server: UvicornProcess) -> None:
    with pytest.raises(InvalidStatus) as caught:
        await websockets.connect(server.url("/raise-before-accept"))
    assert caught.value.response.status_code == 500
    await server.wait_for("RuntimeError: boom before accept")
    assert "Exception in ASGI application" in server.output()


async def test_app_returning_before_accept_is_500(server: UvicornProcess) -> None:
    with pytest.raises(InvalidStatus) as caught:
        await websockets.connect(server.url("/return-before-accept"))
    assert caught.value.response.status_code == 500
    await server.wait_for("ASGI callable returned without completing handshake")


async def test_app_raising_after_accept_closes_1011(server: UvicornProcess) -> None:
    async with websockets.connect(server.url("/raise-after-accept")) as ws:
        await ws.send("trigger")
        assert (await closed_with(ws))[0] == 1011
    await server.wait_for("RuntimeError: boom after accept")


async def test_app_returning_after_accept_closes_1000(server: UvicornProcess) -> None:
    async with websockets.connect(server.url("/return-after-accept")) as ws:
        await ws.send("trigger")
        assert (await closed_with(ws))[0] == 1000


# --------------------------------------------------------------- starlette


async def test_starlette_endpoint(starlette_server: UvicornProcess) -> None:
    async with websockets.connect(starlette_server.url("/ws"), subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        await ws.send("text")
        assert await ws.recv() == "text"
        await ws.send(b"bytes")
        assert await ws.recv() == b"bytes"
        await ws.close(4200, "done")
    assert await starlette_server.report("starlette-echo") == {"code": 4200, "reason": "done"}


async def test_starlette_json_and_close_reason(starlette_server: UvicornProcess) -> None:
    async with websockets.connect(starlette_server.url("/json")) as ws:
        await ws.send(json.dumps({"n": 1}))
        assert json.loads(await ws.recv()) == {"got": {"n": 1}, "path": "/json"}
        assert await closed_with(ws) == (4002, "json done")


async def test_starlette_denial_response(starlette_server: UvicornProcess) -> None:
    with pytest.raises(InvalidStatus) as caught:
        await websockets.connect(starlette_server.url("/deny"))
    assert caught.value.response.status_code == 418
    assert caught.value.response.body == b"go away"


# ----------------------------------------------------------------- options


async def test_ws_max_size() -> None:
    with UvicornProcess("asgi_apps:app", "--ws-max-size", "1000") as server:
        async with websockets.connect(server.url("/echo"), compression=None) as ws:
            await ws.send("a" * 1000)
            assert await ws.recv() == "a" * 1000
            await ws.send("a" * 1001)
            assert (await closed_with(ws))[0] == 1009
        assert (await server.report("echo"))["code"] == 1009


async def test_ws_per_message_deflate_off() -> None:
    with UvicornProcess("asgi_apps:app", "--ws-per-message-deflate", "false") as server:
        async with websockets.connect(server.url("/echo")) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("plain")
            assert await ws.recv() == "plain"


async def test_ws_ping_interval_and_timeout() -> None:
    args = ("--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.5")
    with UvicornProcess("asgi_apps:app", *args) as server:
        # A client that answers keeps its connection through several pings.
        answering = await RawClient.open(server.port)
        silent = await RawClient.open(server.port)
        try:
            await answering.handshake("/echo")
            for _ in range(3):
                _, opcode, payload = await answering.read_frame()
                assert opcode == OP_PING
                await answering.send_frame(OP_PONG, payload)
            await answering.send_frame(OP_BINARY, b"still open")
            frame = await answering.read_frame()
            while frame[1] == OP_PING:
                await answering.send_frame(OP_PONG, frame[2])
                frame = await answering.read_frame()
            assert frame == (True, OP_BINARY, b"still open")
            # One that does not is closed with 1011 once the timeout passes.
            await silent.handshake("/echo")
            code, reason = await silent.read_close()
        finally:
            answering.close()
            silent.close()
        assert (code, reason) == (1011, "keepalive ping timeout")


async def test_shutdown_closes_with_1012() -> None:
    with UvicornProcess("asgi_apps:app") as server:
        pending = await RawClient.open(server.port)
        try:
            async with websockets.connect(server.url("/echo")) as ws:
                await ws.send("hi")
                assert await ws.recv() == "hi"
                # A second connection whose app has not accepted yet.
                await pending.send(RawClient.request("/hold"))
                assert await server.report("hold") == {"waiting": True}
                server.signal(signal.SIGINT)
                assert (await closed_with(ws))[0] == 1012
                assert await pending.read_response() == 503
        finally:
            pending.close()
        assert (await server.report("echo"))["code"] == 1012
        assert (await server.report("hold", 2))["code"] == 1006
        assert await server.exit_code() == 0
        assert "Finished server process" in server.output()
        assert "without completing handshake" not in server.output()


async def test_messages_before_a_protocol_error_reach_the_app(server: UvicornProcess) -> None:
    client = await RawClient.open(server.port)
    try:
        await client.handshake("/echo?tag=before-error")
        # One write: a good message, then a frame with RSV2 set (RFC 6455 §5.2).
        good = RawClient.frame(OP_TEXT, b"answer me first")
        bad = RawClient.frame(OP_TEXT, b"bad", rsv=2)
        await client.send(good + bad)
        assert await client.read_frame() == (True, OP_TEXT, b"answer me first")
        code, _ = await client.read_close()
    finally:
        client.close()
    assert code == 1002
    assert (await server.report("before-error"))["code"] == 1002


@pytest.mark.parametrize("http", ["h11", "httptools"])
async def test_each_http_implementation_hands_over(http: str) -> None:
    with UvicornProcess("asgi_apps:app", "--http", http, "--loop", "asyncio") as server:
        async with websockets.connect(server.url("/echo")) as ws:
            await ws.send("over " + http)
            assert await ws.recv() == "over " + http


async def test_tls_scope_scheme_is_wss(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme", reason="trustme is in the test extra")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    key_file, cert_file = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)
    args = ("--ssl-keyfile", str(key_file), "--ssl-certfile", str(cert_file))
    with UvicornProcess("asgi_apps:app", *args) as server:
        url = server.url("/scope").replace("ws://", "wss://")
        async with websockets.connect(url, ssl=client_ctx) as ws:
            scope = json.loads(await ws.recv())
            await ws.send("over TLS")
            assert await ws.recv() == "over TLS"
    assert scope["scheme"] == "wss"
