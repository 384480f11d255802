"""The public asyncio API end to end over real sockets: tether server, tether client."""

from __future__ import annotations

import asyncio
import logging

import pytest

import tether
from tether import (
    ConcurrencyError,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidStatus,
    connect,
    serve,
)
from tether.protocol.frames import Opcode

GUARD = 10.0


async def test_readme_example() -> None:
    async def handler(ws: tether.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            await ws.send("Hello world!")
            assert await ws.recv() == "Hello world!"
    assert server.connections == set()


async def test_text_is_str_and_binary_is_bytes(start_server) -> None:
    received: list[object] = []

    async def handler(ws):
        async for message in ws:
            received.append(message)
            await ws.send(message)

    srv = await start_server(handler)
    async with connect(srv.url) as ws:
        for message in ("", "héllo ☃", b"", b"\x00\xff", bytearray(b"ba"), memoryview(b"mv")):
            await ws.send(message)
            echoed = await ws.recv()
            if isinstance(message, str):
                assert type(echoed) is str
                assert echoed == message
            else:
                assert type(echoed) is bytes
                assert echoed == bytes(message)
    assert [type(m) for m in received] == [str, str, bytes, bytes, bytes, bytes]


async def test_send_rejects_other_types(start_server) -> None:
    srv = await start_server()
    async with connect(srv.url) as ws:
        with pytest.raises(TypeError):
            await ws.send(42)  # type: ignore[arg-type]
        await ws.send("still open")
        assert await ws.recv() == "still open"


async def test_recv_after_normal_close_raises_closed_ok(start_server) -> None:
    srv = await start_server()
    async with connect(srv.url) as ws:
        await ws.send("last")
        assert await ws.recv() == "last"
        await ws.close()
        with pytest.raises(ConnectionClosedOK) as info:
            await ws.recv()
        assert info.value.code == 1000
        with pytest.raises(ConnectionClosedOK):
            await ws.send("too late")


async def test_messages_received_before_close_are_still_delivered(start_server) -> None:
    async def handler(ws):
        await ws.send("one")
        await ws.send("two")
        await ws.close()

    srv = await start_server(handler)
    async with connect(srv.url) as ws:
        await ws.wait_closed()
        assert await ws.recv() == "one"
        assert await ws.recv() == "two"
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()


async def test_recv_after_error_close_raises_closed_error(start_server) -> None:
    async def handler(ws):
        await ws.close(4000, "custom")

    srv = await start_server(handler)
    async with connect(srv.url) as ws:
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv()
        assert info.value.code == 4000
        assert info.value.reason == "custom"


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (1001, "bye"), (4000, "app ☃ reason")])
async def test_client_close_code_and_reason_seen_by_server(start_server, code, reason) -> None:
    seen: asyncio.Future[tuple[int | None, str | None]] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        try:
            async for _ in ws:
                pass
        except ConnectionClosedError:
            pass
        await ws.wait_closed()
        seen.set_result((ws.close_code, ws.close_reason))

    srv = await start_server(handler)
    ws = await connect(srv.url)
    assert ws.close_code is None and ws.close_reason is None
    await ws.close(code, reason)
    assert await asyncio.wait_for(seen, GUARD) == (code, reason)
    # The server echoes the code (RFC 6455 §5.5.1) and the reason, as websockets does.
    assert (ws.close_code, ws.close_reason) == (code, reason)


async def test_server_close_code_and_reason_seen_by_client(start_server) -> None:
    async def handler(ws):
        await ws.recv()
        await ws.close(4321, "server says bye")
        assert ws.close_code == 4321  # the client echoed it

    srv = await start_server(handler)
    async with connect(srv.url) as ws:
        await ws.send("go")
        await asyncio.wait_for(ws.wait_closed(), GUARD)
        assert ws.close_code == 4321
        assert ws.close_reason == "server says bye"


async def test_close_rejects_unsendable_codes(start_server) -> None:
    srv = await start_server()
    async with connect(srv.url) as ws:
        for code in (999, 1004, 1006, 1015, 2999, 5000):
            with pytest.raises(ValueError):
                await ws.close(code)
        with pytest.raises(ValueError):
            await ws.close(1000, "x" * 124)  # the reason must fit in 123 bytes
        await ws.send("still open")
        assert await ws.recv() == "still open"


async def test_close_without_status(start_server) -> None:
    seen: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        await ws.wait_closed()
        seen.set_result(ws.close_code)

    srv = await start_server(handler)
    async with connect(srv.url) as ws:
        await ws.close(1005)  # an empty Close frame
        assert await asyncio.wait_for(seen, GUARD) == 1005
        assert ws.close_code == 1005


async def test_ping_returns_latency_both_ways(start_server) -> None:
    server_latency: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        async for message in ws:
            if message == "ping me":
                server_latency.set_result(await (await ws.ping()))
            await ws.send(message)

    srv = await start_server(handler, compression=None)
    async with connect(srv.url, compression=None) as ws:
        # websockets' idiom: the waiter comes back at once, its Pong later.
        pong_waiter = await ws.ping()
        assert isinstance(pong_waiter, asyncio.Future)
        latency = await asyncio.wait_for(pong_waiter, GUARD)
        assert isinstance(latency, float)
        assert 0 <= latency < GUARD
        assert ws.latency == latency
        assert await asyncio.wait_for(await ws.ping("custom payload"), GUARD) >= 0
        await ws.send("ping me")
        assert await ws.recv() == "ping me"
        latency = await asyncio.wait_for(server_latency, GUARD)
        assert isinstance(latency, float) and latency >= 0


async def test_ping_with_same_payload_twice_is_a_concurrency_error(start_server) -> None:
    srv = await start_server()
    async with connect(srv.url) as ws:
        first = await ws.ping("same")
        with pytest.raises(ConcurrencyError):
            await ws.ping("same")
        await asyncio.wait_for(first, GUARD)


async def test_pending_ping_fails_when_connection_closes(start_server, raw_client) -> None:
    """A server ping that the peer never answers is failed by the close."""
    pings: asyncio.Future[asyncio.Future[float]] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        pings.set_result(await ws.ping())
        await ws.wait_closed()

    srv = await start_server(handler, ping_interval=None)
    client = await raw_client(srv.port)
    await client.handshake()
    ping = await asyncio.wait_for(pings, GUARD)
    _, opcode, _ = await client.read_frame()
    assert opcode == Opcode.PING
    client.close()
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(ping, GUARD)


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        # As websockets: the first of the server's subprotocols that the client offers.
        (["superchat", "chat"], ["chat", "superchat"], "chat"),
        (["v1"], None, None),
        (None, None, None),
    ],
)
async def test_subprotocol_negotiation(start_server, offered, supported, chosen) -> None:
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        seen.set_result(ws.subprotocol)
        await ws.wait_closed()

    srv = await start_server(handler, subprotocols=supported)
    async with connect(srv.url, subprotocols=offered) as ws:
        assert ws.subprotocol == chosen
        assert await asyncio.wait_for(seen, GUARD) == chosen
        assert ws.response_headers.get("Sec-WebSocket-Protocol") == chosen


@pytest.mark.parametrize(("offered", "supported"), [(["v2"], ["v1"]), (None, ["v1"])])
async def test_subprotocol_required_by_the_server(start_server, offered, supported) -> None:
    """A server with subprotocols refuses a client offering none of them (400, as websockets)."""
    srv = await start_server(subprotocols=supported)
    with pytest.raises(tether.InvalidStatus) as caught:
        await connect(srv.url, subprotocols=offered)
    assert caught.value.response.status_code == 400
    assert b"subprotocol" in caught.value.response.body


async def test_select_subprotocol_hook(start_server) -> None:
    """websockets' signature: select_subprotocol(connection, offered)."""
    seen: list[object] = []

    def select(connection, offered):
        seen.append(connection)
        return offered[-1]

    srv = await start_server(subprotocols=["a", "b"], select_subprotocol=select)
    async with connect(srv.url, subprotocols=["x", "y"]) as ws:
        assert ws.subprotocol == "y"
    assert isinstance(seen[0], tether.ServerConnection)


async def test_select_subprotocol_hook_refuses_with_negotiation_error(start_server) -> None:
    def select(connection, offered):
        raise tether.NegotiationError("no chat for you")

    srv = await start_server(select_subprotocol=select)
    with pytest.raises(tether.InvalidStatus) as caught:
        await connect(srv.url, subprotocols=["chat"])
    assert caught.value.response.status_code == 400
    assert b"no chat for you" in caught.value.response.body


async def test_request_and_response_headers(start_server) -> None:
    seen: asyncio.Future[tether.ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        seen.set_result(ws)
        await ws.wait_closed()

    srv = await start_server(handler)
    headers = {"X-Token": "s3cret", "X-Trace": "abc"}
    async with connect(srv.url_for("/room/7?x=1"), additional_headers=headers) as ws:
        server_ws = await asyncio.wait_for(seen, GUARD)
        assert server_ws.request.path == "/room/7?x=1"
        assert server_ws.request_headers["X-Token"] == "s3cret"
        assert server_ws.request_headers["x-trace"] == "abc"
        assert server_ws.request_headers["User-Agent"] == "tether"
        assert server_ws.request_headers["Host"] == f"127.0.0.1:{srv.port}"
        assert ws.request_headers["X-Token"] == "s3cret"
        assert ws.response_headers["Server"] == "tether"
        assert ws.response_headers["Upgrade"].lower() == "websocket"
        assert server_ws.response_headers["Sec-WebSocket-Accept"]
        # Addresses match from both ends.
        assert server_ws.remote_address == ws.local_address
        assert ws.remote_address == ("127.0.0.1", srv.port)
        assert server_ws.local_address == ("127.0.0.1", srv.port)


async def test_additional_headers_as_list_and_custom_user_agent(start_server) -> None:
    seen: asyncio.Future[tether.ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        seen.set_result(ws)
        await ws.wait_closed()

    srv = await start_server(handler, server_header=None)
    extra = [("X-Multi", "1"), ("X-Multi", "2")]
    async with connect(srv.url, additional_headers=extra, user_agent_header="probe/1") as ws:
        server_ws = await asyncio.wait_for(seen, GUARD)
        assert server_ws.request_headers.get_all("X-Multi") == ["1", "2"]
        assert server_ws.request_headers["User-Agent"] == "probe/1"
        assert "Server" not in ws.response_headers


async def test_process_request_health_check_and_401(start_server, raw_client) -> None:
    def process_request(conn, request):
        if request.path == "/health":
            return conn.respond(200, "OK\n")  # websockets' health check: the body is exact
        if request.headers.get("Authorization") != "Bearer good":
            return conn.respond(401, "unauthorized", {"WWW-Authenticate": "Bearer"})
        return None

    srv = await start_server(process_request=process_request)

    # A plain HTTP health check (no upgrade headers at all).
    client = await raw_client(srv.port)
    await client.send(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert await client.read_response() == 200
    assert client.body == b"OK\n"
    assert await client.read_eof() == b""

    with pytest.raises(InvalidStatus) as info:
        await connect(srv.url)
    assert info.value.response.status_code == 401
    assert info.value.response.headers["WWW-Authenticate"] == "Bearer"
    assert info.value.response.body == b"unauthorized"  # the refusal says why

    async with connect(srv.url, additional_headers={"Authorization": "Bearer good"}) as ws:
        await ws.send("in")
        assert await ws.recv() == "in"


async def test_async_process_request(start_server) -> None:
    lookups: list[str] = []

    async def process_request(conn, request):
        await asyncio.sleep(0)  # stands for an awaited token lookup
        lookups.append(request.path)
        if request.path != "/ok":
            return conn.respond(404, "no such room")
        return None

    srv = await start_server(process_request=process_request)
    with pytest.raises(InvalidStatus) as info:
        await connect(srv.url_for("/missing"))
    assert info.value.response.status_code == 404
    assert info.value.response.body == b"no such room"
    async with connect(srv.url_for("/ok")) as ws:
        await ws.send(b"bin")
        assert await ws.recv() == b"bin"
    assert lookups == ["/missing", "/ok"]


async def test_process_request_exception_gives_500(start_server, caplog) -> None:
    def process_request(conn, request):
        raise RuntimeError("boom")

    srv = await start_server(process_request=process_request)
    with (
        caplog.at_level(logging.ERROR, logger="tether.server"),
        pytest.raises(InvalidStatus) as info,
    ):
        await connect(srv.url)
    assert info.value.response.status_code == 500
    assert "boom" not in info.value.response.body.decode()


async def test_process_response_can_add_headers(start_server) -> None:
    def process_response(conn, request, response):
        response.headers["X-Served-By"] = "test"
        return None

    srv = await start_server(process_response=process_response)
    async with connect(srv.url) as ws:
        assert ws.response_headers["X-Served-By"] == "test"
        await ws.send("x")
        assert await ws.recv() == "x"


async def test_origins_allow_list(start_server) -> None:
    srv = await start_server(origins=["https://good.example", None])
    for origin in ("https://evil.example", "https://good.example.evil", "null"):
        with pytest.raises(InvalidStatus) as info:
            await connect(srv.url, origin=origin)
        assert info.value.response.status_code == 403
    async with connect(srv.url, origin="https://good.example") as ws:
        await ws.send("ok")
        assert await ws.recv() == "ok"
    async with connect(srv.url) as ws:  # no Origin header: allowed by None
        await ws.send("ok")
        assert await ws.recv() == "ok"


async def test_origin_403_is_sent_before_any_upgrade(start_server, raw_client) -> None:
    handler_calls: list[object] = []

    async def handler(ws):
        handler_calls.append(ws)

    srv = await start_server(handler, origins=["https://good.example"])
    client = await raw_client(srv.port)
    await client.send(client.request(headers=[("Origin", "https://evil.example")]))
    assert await client.read_response() == 403
    assert "sec-websocket-accept" not in client.headers
    assert await client.read_eof() == b""
    assert handler_calls == []


async def test_server_close_closes_clients_with_1001(start_server) -> None:
    srv = await start_server()
    clients = [await connect(srv.url) for _ in range(3)]
    for ws in clients:
        await ws.send("hi")
        assert await ws.recv() == "hi"
    srv.server.close()
    await asyncio.wait_for(srv.server.wait_closed(), GUARD)
    for ws in clients:
        await asyncio.wait_for(ws.wait_closed(), GUARD)
        assert ws.close_code == 1001
        with pytest.raises(ConnectionClosedOK) as info:
            await ws.recv()
        assert info.value.code == 1001
    with pytest.raises(OSError):
        await connect(srv.url)


async def test_handler_exception_closes_with_1011(start_server, caplog) -> None:
    async def handler(ws):
        await ws.recv()
        raise RuntimeError("handler bug")

    srv = await start_server(handler)
    with caplog.at_level(logging.ERROR, logger="tether.server"):
        async with connect(srv.url) as ws:
            await ws.send("trigger")
            with pytest.raises(ConnectionClosedError) as info:
                await ws.recv()
    assert info.value.code == 1011
    assert any("handler failed" in r.getMessage() for r in caplog.records)


async def test_handler_returning_closes_with_1000(start_server) -> None:
    async def handler(ws):
        await ws.send("bye")

    srv = await start_server(handler)
    async with connect(srv.url) as ws:
        assert await ws.recv() == "bye"
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        assert ws.close_code == 1000


async def test_two_concurrent_recv_raise_concurrency_error(start_server) -> None:
    srv = await start_server()
    async with connect(srv.url) as ws:
        first = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)  # let the first recv start waiting
        with pytest.raises(ConcurrencyError):
            await ws.recv()
        await ws.send("for the first")
        assert await asyncio.wait_for(first, GUARD) == "for the first"
        # The connection is still usable afterwards.
        await ws.send("again")
        assert await ws.recv() == "again"


async def test_async_iteration_ends_on_normal_close(start_server) -> None:
    async def handler(ws):
        for i in range(3):
            await ws.send(str(i))

    srv = await start_server(handler)
    async with connect(srv.url) as ws:
        assert [message async for message in ws] == ["0", "1", "2"]


async def test_send_iterable_is_one_fragmented_message(start_server, raw_client) -> None:
    """Server side: fragments go out as TEXT/CONT frames with FIN only on the last."""

    async def handler(ws):
        await ws.send(["frag", "men", "ted"])
        await ws.send([b"\x01", b"\x02"])
        await ws.send([])  # an empty iterable sends nothing
        await ws.send("after")

    srv = await start_server(handler, compression=None)
    client = await raw_client(srv.port)
    await client.handshake()
    frames = [await client.read_frame() for _ in range(6)]
    assert frames == [
        (False, Opcode.TEXT, b"frag"),
        (False, Opcode.CONT, b"men"),
        (True, Opcode.CONT, b"ted"),
        (False, Opcode.BINARY, b"\x01"),
        (True, Opcode.CONT, b"\x02"),
        (True, Opcode.TEXT, b"after"),
    ]


async def test_send_async_iterable_and_recv_reassembles(start_server) -> None:
    async def chunks():
        for part in (b"ab", b"", b"cd"):
            await asyncio.sleep(0)
            yield part

    srv = await start_server(compression=None)
    async with connect(srv.url, compression=None) as ws:
        await ws.send(chunks())
        assert await ws.recv() == b"abcd"
        await ws.send(iter(["x", "y", "☃"]))
        assert await ws.recv() == "xy☃"


async def test_send_iterable_of_mixed_types_is_rejected(start_server) -> None:
    srv = await start_server(compression=None)
    async with connect(srv.url, compression=None) as ws:
        with pytest.raises(TypeError):
            await ws.send(["text", b"bytes"])


async def test_recv_streaming_yields_fragments(start_server) -> None:
    streamed: asyncio.Queue[list[object]] = asyncio.Queue()

    async def handler(ws):
        while True:
            streamed.put_nowait([piece async for piece in ws.recv_streaming()])

    srv = await start_server(handler, compression=None, stream_fragments=True)
    async with connect(srv.url, compression=None) as ws:
        await ws.send(["ab", "cd", "e☃"])
        assert await asyncio.wait_for(streamed.get(), GUARD) == ["ab", "cd", "e☃"]
        await ws.send([b"\x00", b"\x01\x02"])
        assert await asyncio.wait_for(streamed.get(), GUARD) == [b"\x00", b"\x01\x02"]
        await ws.send("whole")
        assert await asyncio.wait_for(streamed.get(), GUARD) == ["whole"]


async def test_recv_streaming_without_stream_fragments_yields_one_piece(start_server) -> None:
    srv = await start_server(compression=None)
    async with connect(srv.url, compression=None) as ws:
        await ws.send(["a", "b"])
        assert [piece async for piece in ws.recv_streaming()] == ["ab"]


async def test_recv_reassembles_streamed_fragments(start_server) -> None:
    """A client with stream_fragments=True still gets whole messages from recv()."""
    srv = await start_server(compression=None)
    async with connect(srv.url, compression=None, stream_fragments=True) as ws:
        await ws.send(["a", "b", "c"])
        assert await ws.recv() == "abc"


async def test_connect_refused_and_bad_uri() -> None:
    with pytest.raises(ValueError):
        connect("http://127.0.0.1/")
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await connect(f"ws://127.0.0.1:{port}/")


async def test_await_serve_and_connect_without_context_managers() -> None:
    server = await serve(lambda ws: ws.send("hello"), "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        ws = await connect(f"ws://127.0.0.1:{port}/")
        assert await ws.recv() == "hello"
        await ws.close()
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), GUARD)
