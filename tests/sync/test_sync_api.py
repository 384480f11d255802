"""tether.sync against itself: the API websockets' sync users write, call by call."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sync_testing import GUARD, accept_upgrade, read_request

from tether.protocol.connection import State
from tether.protocol.exceptions import (
    ConcurrencyError,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
)
from tether.protocol.handshake import Request, Response
from tether.sync.client import ClientConnection, connect, unix_connect
from tether.sync.server import ServerConnection, basic_auth, broadcast, unix_serve


def test_echo_text_binary_and_iteration(sync_server: Any) -> None:
    srv = sync_server()
    with connect(srv.url) as ws:
        assert isinstance(ws, ClientConnection)
        ws.send("héllo ☃")
        assert ws.recv() == "héllo ☃"
        ws.send(b"\x00\xff")
        assert ws.recv() == b"\x00\xff"
        ws.send(bytearray(b"ba"))
        assert ws.recv() == b"ba"
        ws.send(memoryview(b"mv"))
        assert ws.recv() == b"mv"
        ws.send("as bytes", text=False)
        assert ws.recv() == b"as bytes"
        ws.send(b"as text", text=True)
        assert ws.recv() == "as text"
        assert ws.state is State.OPEN
    assert ws.state is State.CLOSED
    assert ws.close_code == 1000


def test_iterating_ends_on_a_clean_close(sync_server: Any) -> None:
    def handler(ws: ServerConnection) -> None:
        for i in range(3):
            ws.send(str(i))
        ws.close(1000, "done")

    srv = sync_server(handler)
    with connect(srv.url) as ws:
        assert list(ws) == ["0", "1", "2"]
        assert ws.close_code == 1000
        assert ws.close_reason == "done"


def test_fragmented_send_arrives_whole_and_streams(sync_server: Any) -> None:
    def relay(ws: ServerConnection) -> None:
        while True:
            # Each fragment goes back out as it arrives: one frame per frame.
            ws.send(ws.recv_streaming())

    srv = sync_server(relay, stream_fragments=True)
    with connect(srv.url, stream_fragments=True) as ws:
        ws.send(["frag", "ment", "ed"])
        assert ws.recv() == "fragmented"
        ws.send([b"a", bytearray(b"b"), memoryview(b"c")])
        assert list(ws.recv_streaming()) == [b"a", b"b", b"c"]
        ws.send(iter(["x", "y"]))
        assert list(ws.recv_streaming(decode=False)) == [b"x", b"y"]
        ws.send([])  # nothing to send: no frame at all
        ws.send("after")  # one frame, one piece
        assert ws.recv() == "after"


def test_mixed_fragment_types_fail_the_connection(sync_server: Any) -> None:
    srv = sync_server()
    ws = connect(srv.url)
    with pytest.raises(TypeError):
        ws.send(["text", b"bytes"])
    ws.wait_closed()
    with pytest.raises(ConnectionClosedError) as caught:
        ws.recv()
    assert caught.value.sent is not None and caught.value.sent[0] == 1011


def test_send_refuses_dicts_and_other_types(sync_server: Any) -> None:
    srv = sync_server()
    with connect(srv.url) as ws:
        with pytest.raises(TypeError):
            ws.send({"a": 1})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            ws.send(42)  # type: ignore[arg-type]
        ws.send("still open")
        assert ws.recv() == "still open"


def test_recv_decode_and_timeout(sync_server: Any) -> None:
    srv = sync_server()
    with connect(srv.url) as ws:
        ws.send("text")
        assert ws.recv(decode=False) == b"text"
        ws.send(b"bin\xc3\xa9")
        assert ws.recv(decode=True) == "biné"
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.2)
        assert 0.15 <= time.monotonic() - started < GUARD
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0)
        ws.send("late")
        assert ws.recv(timeout=GUARD) == "late"
        ws.send("whole")  # not streaming fragments: the message is one piece
        assert list(ws.recv_streaming()) == ["whole"]


def test_two_threads_receiving_is_a_concurrency_error(sync_server: Any) -> None:
    srv = sync_server()
    with connect(srv.url) as ws:
        received: list[Any] = []
        reader = threading.Thread(target=lambda: received.append(ws.recv()))
        reader.start()
        deadline = time.monotonic() + GUARD
        while not ws.recv_messages.waiting:
            assert time.monotonic() < deadline, "the first recv never started waiting"
            time.sleep(0.005)
        with pytest.raises(ConcurrencyError):
            ws.recv()
        ws.send("for the first")
        reader.join(GUARD)
        assert received == ["for the first"]


def test_recv_in_one_thread_send_in_another(sync_server: Any) -> None:
    srv = sync_server()
    count = 2000
    with connect(srv.url) as ws:
        got: list[Any] = []

        def receive() -> None:
            for _ in range(count):
                got.append(ws.recv(timeout=GUARD))

        reader = threading.Thread(target=receive)
        reader.start()
        senders = [
            threading.Thread(target=lambda k=k: [ws.send(f"{k}:{i}") for i in range(count // 4)])
            for k in range(4)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(GUARD)
        reader.join(GUARD)
    assert len(got) == count
    for k in range(4):
        # Each sender's messages come back in the order it sent them.
        mine = [m for m in got if m.startswith(f"{k}:")]
        assert mine == [f"{k}:{i}" for i in range(count // 4)]


def test_ping_event_latency_and_pong(sync_server: Any) -> None:
    srv = sync_server()
    with connect(srv.url) as ws:
        waiter = ws.ping()
        assert waiter.wait(GUARD)
        assert 0 < ws.latency < GUARD
        assert ws.ping("payload").wait(GUARD)
        ws.pong(b"unsolicited")  # ignored by the peer, RFC 6455 §5.5.3
        ws.send("still fine")
        assert ws.recv() == "still fine"


def test_ping_ack_on_close(raw_server: Any) -> None:
    pinged = threading.Event()

    def script(sock: socket.socket) -> None:
        accept_upgrade(sock)
        pinged.wait(GUARD)  # the Pings are never answered
        sock.sendall(build(0x8, close_payload(1000)))
        while sock.recv(1024):
            pass

    port = raw_server(script)
    ws = connect(f"ws://127.0.0.1:{port}/", compression=None, close_timeout=2)
    waiter = ws.ping(b"same", ack_on_close=True)
    with pytest.raises(ConcurrencyError):
        ws.ping(b"same")  # its Pong is still awaited
    other = ws.ping()
    pinged.set()
    assert waiter.wait(GUARD)
    ws.wait_closed()
    assert ws.state is State.CLOSED
    assert not other.is_set()


def test_close_code_and_reason_reach_the_peer(sync_server: Any) -> None:
    seen: list[Any] = []
    done = threading.Event()

    def handler(ws: ServerConnection) -> None:
        try:
            ws.recv()
        except ConnectionClosedOK as exc:
            seen.append((exc.rcvd, exc.sent, ws.close_code, ws.close_reason))
        done.set()

    srv = sync_server(handler)
    ws = connect(srv.url)
    ws.close(1001, "going away now")
    assert done.wait(GUARD)
    # The peer echoes the code and the reason (RFC 6455 §5.5.1).
    assert seen == [((1001, "going away now"), (1001, "going away now"), 1001, "going away now")]
    with pytest.raises(ConnectionClosedOK):
        ws.send("closed")
    with pytest.raises(ConnectionClosedOK):
        ws.recv()
    ws.close()  # idempotent


def test_error_close_code_raises_connection_closed_error(sync_server: Any) -> None:
    def handler(ws: ServerConnection) -> None:
        ws.close(4000, "app error")

    srv = sync_server(handler)
    with connect(srv.url) as ws:
        with pytest.raises(ConnectionClosedError) as caught:
            ws.recv()
        assert caught.value.rcvd == (4000, "app error")
        assert caught.value.code == 4000


def test_handler_exception_closes_with_1011_and_is_logged(
    sync_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ids: list[Any] = []

    def handler(ws: ServerConnection) -> None:
        ids.append(ws.id)
        raise RuntimeError("boom")

    srv = sync_server(handler, logger=logging.getLogger("my.app"))
    with caplog.at_level(logging.ERROR, logger="my.app"), connect(srv.url) as ws:
        with pytest.raises(ConnectionClosedError) as caught:
            ws.recv()
        assert caught.value.rcvd is not None and caught.value.rcvd[0] == 1011
    failures = [r for r in caplog.records if r.name == "my.app"]
    assert failures and failures[0].exc_info is not None
    assert failures[0].websocket.id == ids[0]  # type: ignore[attr-defined]


def test_oversized_message_closes_with_1009(sync_server: Any) -> None:
    closed: list[Any] = []
    handled = threading.Event()

    def handler(ws: ServerConnection) -> None:
        try:
            ws.recv()
        except ConnectionClosedError as exc:
            closed.append(exc.sent)
        handled.set()

    srv = sync_server(handler, max_size=1000)
    with connect(srv.url) as ws:
        ws.send(b"x" * 1001)
        with pytest.raises(ConnectionClosedError) as caught:
            ws.recv()
    assert caught.value.rcvd is not None and caught.value.rcvd[0] == 1009
    assert handled.wait(GUARD)
    assert closed and closed[0][0] == 1009


def test_client_max_size_tuple_limits_frames(sync_server: Any) -> None:
    def handler(ws: ServerConnection) -> None:
        ws.send(["a" * 10] * 10)  # 100 bytes in frames of 10
        ws.send(["b" * 50] * 2)  # a frame of 50 is past the limit
        ws.recv()

    srv = sync_server(handler)
    with connect(srv.url, max_size=(200, 20)) as ws:
        assert ws.recv() == "a" * 100
        with pytest.raises(ConnectionClosedError) as caught:
            ws.recv()
    assert caught.value.sent is not None and caught.value.sent[0] == 1009


def test_invalid_utf8_closes_with_1007(sync_server: Any) -> None:
    srv = sync_server()
    with socket.create_connection(("127.0.0.1", srv.port), GUARD) as sock:
        sock.settimeout(GUARD)
        sock.sendall(upgrade_request())
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(build(0x1, b"\xff\xfe", masked=True))
        frame = sock.recv(1024)
        assert frame[0] == 0x88
        assert int.from_bytes(frame[2:4], "big") == 1007


def test_bad_handshake_gets_an_http_error(sync_server: Any) -> None:
    srv = sync_server()
    with socket.create_connection(("127.0.0.1", srv.port), GUARD) as sock:
        sock.settimeout(GUARD)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 426") or answer.startswith(b"HTTP/1.1 400")


def test_process_request_and_response(sync_server: Any) -> None:
    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        if request.path == "/health":
            return ws.respond(200, "OK\n")
        return None

    def process_response(ws: ServerConnection, request: Request, response: Response) -> None:
        response.headers["X-Seen"] = request.path

    srv = sync_server(process_request=process_request, process_response=process_response)
    with pytest.raises(InvalidStatus) as caught:
        connect(srv.url + "health")
    assert caught.value.response.status_code == 200
    assert caught.value.response.body == b"OK\n"  # as given: no newline added
    with connect(srv.url + "ws") as ws:
        assert ws.response is not None
        assert ws.response.headers["X-Seen"] == "/ws"
        assert ws.response.headers["Server"] == "tether"


def test_process_request_exception_is_500(sync_server: Any) -> None:
    def process_request(ws: ServerConnection, request: Request) -> None:
        raise RuntimeError("hook bug")

    srv = sync_server(process_request=process_request)
    with pytest.raises(InvalidStatus) as caught:
        connect(srv.url)
    assert caught.value.response.status_code == 500


def test_subprotocols_and_select_subprotocol(sync_server: Any) -> None:
    srv = sync_server(subprotocols=["chat", "superchat"])
    with connect(srv.url, subprotocols=["superchat", "other"]) as ws:
        assert ws.subprotocol == "superchat"
    calls: list[Any] = []

    def select(ws: ServerConnection, offered: Any) -> str | None:
        calls.append((type(ws).__name__, list(offered)))
        return offered[-1] if offered else None

    srv = sync_server(select_subprotocol=select)
    with connect(srv.url, subprotocols=["a", "b"]) as ws:
        assert ws.subprotocol == "b"
    assert calls == [("ServerConnection", ["a", "b"])]


def test_origins_exact_regex_and_none(sync_server: Any) -> None:
    srv = sync_server(origins=["https://a.example", re.compile(r"https://.*\.b\.example"), None])
    for origin in ("https://a.example", "https://x.b.example", None):
        with connect(srv.url, origin=origin) as ws:
            ws.send("ok")
            assert ws.recv() == "ok"
    with pytest.raises(InvalidStatus) as caught:
        connect(srv.url, origin="https://evil.example")
    assert caught.value.response.status_code == 403
    strict = sync_server(origins=["https://a.example"])
    with pytest.raises(InvalidStatus):
        connect(strict.url)


def test_headers_user_agent_and_credentials(sync_server: Any) -> None:
    seen: list[Any] = []

    def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.append(ws.request.headers)

    srv = sync_server(handler)
    with connect(srv.url, additional_headers={"X-Token": "t1"}, user_agent_header="agent/1") as ws:
        ws.wait_closed()
    with connect(srv.url, user_agent_header=None) as ws:
        ws.wait_closed()
    assert seen[0]["X-Token"] == "t1"
    assert seen[0]["User-Agent"] == "agent/1"
    assert "User-Agent" not in seen[1]


def test_basic_auth(sync_server: Any) -> None:
    names: list[Any] = []

    def handler(ws: ServerConnection) -> None:
        names.append(ws.username)

    srv = sync_server(handler, process_request=basic_auth("realm", ("alice", "s3cret")))
    with connect(srv.url.replace("ws://", "ws://alice:s3cret@")) as ws:
        ws.wait_closed()
    assert names == ["alice"]
    with pytest.raises(InvalidStatus) as caught:
        connect(srv.url.replace("ws://", "ws://alice:wrong@"))
    assert caught.value.response.status_code == 401
    assert "Basic" in caught.value.response.headers["WWW-Authenticate"]
    with pytest.raises(InvalidStatus):
        connect(srv.url)
    checker = sync_server(process_request=basic_auth(check_credentials=lambda u, p: u == p))
    with connect(checker.url, additional_headers={"Authorization": "Basic Ym9iOmJvYg=="}) as ws:
        ws.send("in")
        assert ws.recv() == "in"


def test_compression_is_negotiated_by_default(sync_server: Any) -> None:
    srv = sync_server()
    with connect(srv.url) as ws:
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        big = "compress me " * 10000
        ws.send(big)
        assert ws.recv() == big
    with connect(srv.url, compression=None) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers


def test_max_queue_pushes_back_then_resumes(sync_server: Any) -> None:
    release = threading.Event()
    received: list[Any] = []

    def handler(ws: ServerConnection) -> None:
        release.wait(GUARD)
        received.extend(ws.recv(timeout=GUARD) for _ in range(200))

    srv = sync_server(handler, max_queue=4)
    with connect(srv.url, compression=None) as ws:
        for i in range(200):
            ws.send(f"m{i}")
        deadline = time.monotonic() + GUARD
        while not srv.server.connections:  # registered by the server's thread
            assert time.monotonic() < deadline
            time.sleep(0.01)
        conn = next(iter(srv.server.connections))
        while len(conn.recv_messages) < 4:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Paused past the high-water mark: the queue holds what the read that
        # crossed it carried, and no more arrives while nobody takes any.
        assert not conn.recv_messages.room.is_set()
        held = len(conn.recv_messages)
        assert 4 <= held < 200
        time.sleep(0.2)  # asserting that nothing happens: no event to wait for
        assert len(conn.recv_messages) == held
        release.set()
        ws.wait_closed()
    assert received == [f"m{i}" for i in range(200)]


def test_sock_argument_and_unix_sockets(sync_server: Any, tmp_path: Path) -> None:
    srv = sync_server()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    with connect("ws://example.invalid/", sock=sock) as ws:
        ws.send("via sock")
        assert ws.recv() == "via sock"

    def echo(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    path = str(tmp_path / "ws.sock")
    server = unix_serve(echo, path, ping_interval=None)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with unix_connect(path) as ws:
            ws.send("over unix")
            assert ws.recv() == "over unix"
    finally:
        server.shutdown()
        thread.join(GUARD)
    assert not thread.is_alive()


def test_shutdown_closes_connections_with_1001(sync_server: Any) -> None:
    srv = sync_server()
    ws = connect(srv.url)
    ws.send("hi")
    assert ws.recv() == "hi"
    srv.stop()
    with pytest.raises(ConnectionClosedOK) as caught:
        ws.recv()
    assert caught.value.rcvd is not None and caught.value.rcvd[0] == 1001
    with pytest.raises(OSError):
        connect(srv.url, open_timeout=2)


def test_open_timeout_when_the_server_never_answers(raw_server: Any) -> None:
    done = threading.Event()
    port = raw_server(lambda sock: (read_request(sock), done.wait(GUARD)))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connect(f"ws://127.0.0.1:{port}/", open_timeout=0.3)
    assert time.monotonic() - started < 3
    done.set()


def test_server_open_timeout_drops_silent_clients(sync_server: Any) -> None:
    srv = sync_server(open_timeout=0.3)
    with socket.create_connection(("127.0.0.1", srv.port), GUARD) as sock:
        sock.settimeout(GUARD)
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert time.monotonic() - started < 3


def test_close_timeout_when_the_peer_never_answers(raw_server: Any) -> None:
    done = threading.Event()

    def script(sock: socket.socket) -> None:
        accept_upgrade(sock)
        done.wait(GUARD)  # reads nothing and never closes

    port = raw_server(script)
    ws = connect(f"ws://127.0.0.1:{port}/", compression=None, close_timeout=0.3)
    started = time.monotonic()
    ws.close()
    assert time.monotonic() - started < 3
    assert ws.state is State.CLOSED
    assert ws.close_code == 1006
    done.set()


def test_keepalive_timeout_fails_with_1011(raw_server: Any) -> None:
    done = threading.Event()

    def script(sock: socket.socket) -> None:
        accept_upgrade(sock)
        done.wait(GUARD)  # never answers the Pings

    port = raw_server(script)
    ws = connect(
        f"ws://127.0.0.1:{port}/",
        compression=None,
        ping_interval=0.1,
        ping_timeout=0.2,
        close_timeout=0.3,
    )
    with pytest.raises(ConnectionClosedError) as caught:
        ws.recv(timeout=GUARD)
    assert caught.value.sent is not None and caught.value.sent[0] == 1011
    done.set()


def test_keepalive_pings_keep_a_healthy_connection_open(sync_server: Any) -> None:
    srv = sync_server(ping_interval=0.05, ping_timeout=1)
    with connect(srv.url, ping_interval=0.05, ping_timeout=1) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.4)  # several keepalive rounds, both sides
        assert ws.latency > 0
        ws.send("alive")
        assert ws.recv() == "alive"


def test_refused_and_invalid_uris() -> None:
    with pytest.raises(ValueError):
        connect("http://example.com/")
    with pytest.raises(ValueError):
        connect("ws://127.0.0.1:1/", ssl=__import__("ssl").create_default_context())
    with pytest.raises(ValueError):
        connect("ws://127.0.0.1:1/", max_queue=0)


def test_connection_refused_is_an_oserror() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        connect(f"ws://127.0.0.1:{port}/", open_timeout=2)


def test_handshake_refused_by_a_non_websocket_server(raw_server: Any) -> None:
    def script(sock: socket.socket) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope")

    port = raw_server(script)
    with pytest.raises(InvalidStatus) as caught:
        connect(f"ws://127.0.0.1:{port}/")
    assert caught.value.response.status_code == 404
    assert caught.value.response.body == b"nope"

    port = raw_server(lambda sock: (read_request(sock), sock.sendall(b"garbage\r\n\r\n")))
    with pytest.raises(InvalidHandshake):
        connect(f"ws://127.0.0.1:{port}/")


# ------------------------------------------------------------------ helpers


def build(opcode: int, payload: bytes, *, masked: bool = False) -> bytes:
    from tether_testing import build_frame

    return build_frame(opcode, payload, mask=b"\x01\x02\x03\x04" if masked else None)


def close_payload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode()


def upgrade_request() -> bytes:
    return (
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_broadcast_reaches_every_open_connection(sync_server: Any) -> None:
    joined = threading.Barrier(4)

    def handler(ws: ServerConnection) -> None:
        joined.wait(GUARD)
        ws.recv()  # until the client closes

    srv = sync_server(handler)
    clients = [connect(srv.url) for _ in range(3)]
    joined.wait(GUARD)
    broadcast(srv.server.connections, "to all")
    broadcast(srv.server.connections, b"as text", text=True, max_workers=2)
    for ws in clients:
        assert ws.recv(timeout=GUARD) == "to all"
        assert ws.recv(timeout=GUARD) == "as text"
        ws.close()
    broadcast(srv.server.connections, "nobody left")  # closed ones are skipped
    with pytest.raises(TypeError):
        broadcast([], ["fragments"])  # type: ignore[arg-type]


def test_reconnect_retries_transient_errors_and_raises_fatal_ones(sync_server: Any) -> None:
    from tether.sync.client import reconnect

    answers = iter([503, 502, None, None, 403])

    def process_request(ws: ServerConnection, request: Request) -> Response | None:
        status = next(answers)
        return None if status is None else ws.respond(status, "not now")

    srv = sync_server(process_request=process_request)
    delays: list[float] = []

    def quick() -> Iterator[float]:
        while True:
            delays.append(0.01)
            yield 0.01

    opened: list[ClientConnection] = []
    with pytest.raises(InvalidStatus) as caught:
        for ws in reconnect(srv.url, reconnect_delays=quick):
            ws.send("ping")
            assert ws.recv(timeout=GUARD) == "ping"
            opened.append(ws)
    assert caught.value.response.status_code == 403  # fatal: raised, no retry
    assert len(opened) == 2  # a new connection per iteration
    assert all(ws.state is State.CLOSED for ws in opened)  # closed after each
    assert delays == [0.01, 0.01]  # one delay per transient failure


def test_process_exception_defaults() -> None:
    from tether.protocol.reconnect import backoff, process_exception

    assert process_exception(ConnectionRefusedError()) is None
    assert process_exception(TimeoutError()) is None
    refused = ValueError("bad uri")
    assert process_exception(refused) is refused
    delays = backoff(initial_delay=1, min_delay=2, max_delay=5, factor=2)
    assert 0 <= next(delays) <= 1
    assert [next(delays) for _ in range(4)] == [2, 4, 5, 5]


def test_route_dispatches_by_path_with_404_and_redirects() -> None:
    pytest.importorskip("werkzeug", reason="werkzeug is in the test extra")
    from werkzeug.routing import Map, Rule

    from tether.sync.router import route

    def channel(ws: ServerConnection, channel_id: int) -> None:
        ws.send(f"channel {channel_id} ({type(channel_id).__name__})")

    def lobby(ws: ServerConnection) -> None:
        ws.send("lobby")

    url_map = Map(
        [
            Rule("/channel/<int:channel_id>", endpoint=channel),
            Rule("/lobby/", endpoint=lobby),
            Rule("/old", redirect_to="/lobby/", endpoint=lobby),
        ]
    )
    server = route(url_map, "127.0.0.1", 0, ping_interval=None)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        base = f"ws://127.0.0.1:{server.socket.getsockname()[1]}"
        with connect(f"{base}/channel/42") as ws:
            assert ws.recv(timeout=GUARD) == "channel 42 (int)"
        with connect(f"{base}/lobby/?x=1") as ws:
            assert ws.recv(timeout=GUARD) == "lobby"
        with pytest.raises(InvalidStatus) as caught:
            connect(f"{base}/nowhere")
        assert caught.value.response.status_code == 404
        # werkzeug's strict slashes: a 302 to /lobby/, which the client follows.
        with connect(f"{base}/lobby") as ws:
            assert ws.recv(timeout=GUARD) == "lobby"
            assert ws.request is not None and ws.request.path == "/lobby/"
    finally:
        server.shutdown()
        thread.join(GUARD)


def test_peer_dropping_tcp_is_a_1006_connection_closed_error(raw_server: Any) -> None:
    def script(sock: socket.socket) -> None:
        accept_upgrade(sock)
        sock.sendall(build(0x1, b"half a mess")[:5])  # a frame cut short, then gone

    port = raw_server(script)
    ws = connect(f"ws://127.0.0.1:{port}/", compression=None)
    with pytest.raises(ConnectionClosedError) as caught:
        ws.recv(timeout=GUARD)
    assert caught.value.rcvd is None and caught.value.code == 1006
    assert ws.close_code == 1006
    with pytest.raises(ConnectionClosedError):
        ws.send("too late")


def test_handler_sees_a_client_that_vanished(sync_server: Any) -> None:
    outcome: list[Any] = []
    handled = threading.Event()

    def handler(ws: ServerConnection) -> None:
        try:
            ws.recv()
        except ConnectionClosedError as exc:
            outcome.append(exc.code)
        handled.set()

    srv = sync_server(handler)
    ws = connect(srv.url)
    ws.abort()  # TCP gone without a closing handshake
    assert handled.wait(GUARD)
    assert outcome == [1006]
    ws.wait_closed()


def test_shutdown_can_leave_connections_open_and_serve_takes_a_socket() -> None:
    from tether.sync.server import serve

    def echo(ws: ServerConnection) -> None:
        for message in ws:
            ws.send(message)

    listener = socket.create_server(("127.0.0.1", 0))
    server = serve(echo, sock=listener, ping_interval=None)
    assert server.fileno() == listener.fileno()
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    ws = connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/")
    server.shutdown(close_connections=False)
    thread.join(GUARD)
    assert not thread.is_alive()
    ws.send("still here")  # the connection outlives the listener
    assert ws.recv(timeout=GUARD) == "still here"
    ws.close()
    assert ws.close_code == 1000


def test_redirects_are_followed_within_bounds(sync_server: Any) -> None:
    from tether.protocol.exceptions import InvalidURI, SecurityError

    target = sync_server()

    def redirect_to(location: str) -> Any:
        def process_request(ws: ServerConnection, request: Request) -> Response:
            response = ws.respond(302, "moved")
            response.headers["Location"] = location
            return response

        return process_request

    hop = sync_server(process_request=redirect_to(target.url + "here"))
    with connect(hop.url, additional_headers={"Authorization": "Basic eDp5"}) as ws:
        ws.send("followed")
        assert ws.recv(timeout=GUARD) == "followed"
        assert ws.request is not None
        assert ws.request.path == "/here"
        # Another server (another port): the credentials stayed behind.
        assert "Authorization" not in ws.request.headers

    loop = sync_server()
    loop.server.shutdown()  # its port, now free, is only used for the URL
    looping = sync_server(process_request=redirect_to("/again"))
    started = time.monotonic()
    with pytest.raises(SecurityError):
        connect(looping.url)  # a redirect to itself, forever
    assert time.monotonic() - started < GUARD

    to_http = sync_server(process_request=redirect_to("http://127.0.0.1/"))
    with pytest.raises(InvalidURI):
        connect(to_http.url)
