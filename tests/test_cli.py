"""The ``tether`` command line: ``tether echo`` and ``tether connect``, run as subprocesses.

Servers the CLI talks to run either as a ``tether echo`` subprocess (its port
parsed from the ``listening on`` line) or in-process (``start_server``), in
which case the CLI runs under ``asyncio.create_subprocess_exec`` so the event
loop keeps serving. Every read of subprocess output is guarded by a timeout;
nothing waits by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import tether
from tether.cli.connect import escape_text, format_frame, format_message
from tether.protocol.frames import Opcode
from tether.protocol.handshake import accept_key
from tether_testing import Running, closed_port

GUARD = 10.0
StartServer = Callable[..., Awaitable[Running]]


# -------------------------------------------------------------------- helpers


class Proc:
    """A ``python -m tether ...`` subprocess with line-oriented, guarded reads."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *args: str, stdin: Any = asyncio.subprocess.PIPE) -> Proc:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tether",
            *args,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def readline(self) -> str:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), GUARD)
        assert raw, f"unexpected EOF after {self.lines}"
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def read_until(self, wanted: str) -> list[str]:
        """Read lines up to and including ``wanted``; return them."""
        start = len(self.lines)
        while await self.readline() != wanted:
            pass
        return self.lines[start:]

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())

    async def finish(self, stdin: bytes | None = None) -> tuple[int, list[str], str]:
        """Write ``stdin``, close it, wait for exit: ``(returncode, all stdout lines, stderr)``."""
        if self.proc.stdin is not None:
            if stdin:
                self.proc.stdin.write(stdin)
            self.proc.stdin.close()
        out, err = await asyncio.wait_for(self.proc.communicate(), GUARD)
        self.lines += out.decode().splitlines()
        assert self.proc.returncode is not None
        return self.proc.returncode, self.lines, err.decode()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@pytest.fixture
async def spawn() -> AsyncIterator[Callable[..., Awaitable[Proc]]]:
    """``proc = await spawn("connect", url)``; killed on teardown if still running."""
    procs: list[Proc] = []

    async def start(*args: str, **kwargs: Any) -> Proc:
        proc = await Proc.start(*args, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        await asyncio.wait_for(proc.proc.wait(), GUARD)


@pytest.fixture
async def echo_server(
    spawn: Callable[..., Awaitable[Proc]],
) -> Callable[..., Awaitable[tuple[Proc, str]]]:
    """``proc, url = await echo_server(*extra_args)``: ``tether echo --port 0``."""

    async def start(*args: str) -> tuple[Proc, str]:
        proc = await spawn("echo", "--port", "0", *args, stdin=asyncio.subprocess.DEVNULL)
        line = await proc.readline()
        match = re.fullmatch(r"tether echo listening on (ws://127\.0\.0\.1:\d+/)", line)
        assert match, line
        return proc, match.group(1)

    return start


async def run_cli(*args: str, stdin: bytes = b"") -> tuple[int, list[str], str]:
    proc = await Proc.start(*args)
    try:
        return await proc.finish(stdin)
    finally:
        proc.kill()


# --------------------------------------------------------------- tether echo


async def test_echo_text_through_connect(echo_server: Any, spawn: Any) -> None:
    _, url = await echo_server()
    cli = await spawn("connect", url)
    assert await cli.readline() == f"connected: {url} extensions=permessage-deflate"
    cli.send("hello\n")
    assert await cli.read_until("< text: hello") == ["> text: hello", "< text: hello"]
    cli.send("héllo wörld\r\n")  # CRLF input: the CR is not part of the message
    await cli.read_until("< text: héllo wörld")
    code, lines, err = await cli.finish()
    assert (code, lines[-1], err) == (0, "closed: 1000", "")


async def test_echo_binary_and_text_with_client(echo_server: Any) -> None:
    _, url = await echo_server()
    payload = bytes(range(256)) * 10
    async with tether.connect(url) as ws:
        await ws.send(payload)
        assert await asyncio.wait_for(ws.recv(), GUARD) == payload
        await ws.send("text stays text")
        assert await asyncio.wait_for(ws.recv(), GUARD) == "text stays text"


async def test_echo_max_size_closes_with_1009(echo_server: Any) -> None:
    _, url = await echo_server("--max-size", "100", "--no-compression")
    async with tether.connect(url, compression=None) as ws:
        await ws.send("x" * 100)
        assert await asyncio.wait_for(ws.recv(), GUARD) == "x" * 100
        await ws.send("x" * 101)
        with pytest.raises(tether.ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), GUARD)
    assert info.value.rcvd is not None
    assert info.value.rcvd[0] == 1009


async def test_echo_max_size_seen_from_connect(echo_server: Any) -> None:
    _, url = await echo_server("--max-size", "1KiB")
    code, lines, err = await run_cli("connect", url, stdin=b"y" * 2000 + b"\n")
    assert code == 1
    assert lines[-1].startswith("closed: 1009 ("), lines
    assert err == ""  # the server failed the connection, not us


async def test_echo_sigterm_exits_cleanly(echo_server: Any) -> None:
    proc, url = await echo_server()
    async with tether.connect(url) as ws:
        proc.proc.send_signal(signal.SIGTERM)
        with pytest.raises(tether.ConnectionClosedOK) as info:
            await asyncio.wait_for(ws.recv(), GUARD)  # the server says goodbye first
        assert info.value.rcvd is not None
        assert info.value.rcvd[0] == 1001
    code, _, err = await proc.finish()
    assert code == 0
    assert "Traceback" not in err


# ------------------------------------------------------------- tether connect


async def test_trace_shows_every_frame(echo_server: Any, spawn: Any) -> None:
    _, url = await echo_server()
    cli = await spawn("connect", "--trace", "--no-compression", url)
    assert await cli.readline() == f"connected: {url}"
    cli.send("hi\n")
    assert await cli.read_until("< text: hi") == [
        "> text: hi",
        "frame > TEXT fin=1 rsv=000 len=2 masked=1",
        "frame < TEXT fin=1 rsv=000 len=2 masked=0",
        "< text: hi",
    ]
    code, lines, _ = await cli.finish()
    assert code == 0
    assert lines[-3:] == [
        "frame > CLOSE fin=1 rsv=000 len=2 masked=1 code=1000",
        "frame < CLOSE fin=1 rsv=000 len=2 masked=0 code=1000",
        "closed: 1000",
    ]


async def test_trace_shows_rsv1_of_compressed_frames(echo_server: Any) -> None:
    _, url = await echo_server()
    text = "a" * 2000  # above the compression threshold, and very compressible
    cli = await Proc.start("connect", "--trace", url)
    try:
        assert await cli.readline() == f"connected: {url} extensions=permessage-deflate"
        cli.send(text + "\n")
        lines = await cli.read_until(f"< text: {text}")
    finally:
        await cli.finish()
    sent = [line for line in lines if line.startswith("frame > TEXT")]
    received = [line for line in lines if line.startswith("frame < TEXT")]
    assert len(sent) == len(received) == 1
    assert re.fullmatch(r"frame > TEXT fin=1 rsv=100 len=\d+ masked=1", sent[0])
    assert re.fullmatch(r"frame < TEXT fin=1 rsv=100 len=\d+ masked=0", received[0])
    assert int(received[0].rpartition("len=")[2].split()[0]) < len(text)


async def test_headers_and_origin_reach_the_server(start_server: StartServer) -> None:
    seen: list[tether.Headers] = []

    def capture(ws: tether.ServerConnection, request: tether.Request) -> None:
        seen.append(request.headers)

    srv = await start_server(process_request=capture)
    code, lines, err = await run_cli(
        "connect",
        "--header",
        "X-Token: s3cret",
        "-H",
        "X-Multi:one",
        "-H",
        "X-Multi: two",
        "--origin",
        "https://example.test",
        srv.url,
    )
    assert (code, lines[-1], err) == (0, "closed: 1000", "")
    [headers] = seen
    assert headers.get_all("X-Token") == ["s3cret"]
    assert headers.get_all("X-Multi") == ["one", "two"]
    assert headers.get_all("Origin") == ["https://example.test"]


async def test_bad_header_argument_is_a_usage_error() -> None:
    code, _, err = await run_cli("connect", "--header", "no colon here", "ws://127.0.0.1:1/")
    assert code == 2
    assert "expected 'Name: value'" in err
    code, _, err = await run_cli("connect", "-H", "Host: evil", "ws://127.0.0.1:1/")
    assert code == 2
    assert "set by the handshake" in err


async def test_subprotocol_is_negotiated(start_server: StartServer) -> None:
    chosen: list[str | None] = []

    async def handler(ws: tether.ServerConnection) -> None:
        chosen.append(ws.subprotocol)
        await ws.send(f"speaking {ws.subprotocol}")
        await ws.wait_closed()

    srv = await start_server(handler, subprotocols=["chat", "superchat"])
    code, lines, _ = await run_cli(
        "connect", "--no-compression", "-s", "superchat", "--subprotocol", "chat", srv.url
    )
    assert code == 0
    # The server picks the first of its own subprotocols that the client offers (as websockets).
    assert lines[0] == f"connected: {srv.url} subprotocol=chat"
    assert chosen == ["chat"]


async def test_refused_upgrade_shows_http_status_and_why(start_server: StartServer) -> None:
    def refuse(ws: tether.ServerConnection, request: tether.Request) -> tether.Response:
        return ws.respond(403, "go away")

    srv = await start_server(process_request=refuse)
    code, lines, err = await run_cli("connect", srv.url)
    assert (code, lines) == (1, [])
    assert err == "tether: server rejected upgrade: HTTP 403 Forbidden: go away\n"


async def test_connection_refused() -> None:
    port = closed_port()
    code, lines, err = await run_cli("connect", f"ws://127.0.0.1:{port}/")
    assert (code, lines) == (1, [])
    assert err == f"tether: cannot connect to 127.0.0.1:{port}: Connection refused\n"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.test/", "http://example.test/ isn't a valid URI: not a ws:// or wss://"),
        ("ws:///path", "ws:///path isn't a valid URI: no host"),
    ],
)
async def test_invalid_url(url: str, message: str) -> None:
    code, lines, err = await run_cli("connect", url)
    assert (code, lines) == (1, [])
    assert err.startswith("tether: invalid URL: ")
    assert message in err
    assert err.count("\n") == 1


async def test_open_timeout() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, never answer the upgrade request
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        code, lines, err = await run_cli(
            "connect", "--open-timeout", "0.2", f"ws://127.0.0.1:{port}/"
        )
    assert (code, lines) == (1, [])
    assert err == f"tether: timed out opening 127.0.0.1:{port} after 0.2s\n"


async def test_tls_verification_failure_and_insecure(start_server: StartServer) -> None:
    trustme = pytest.importorskip("trustme")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    srv = await start_server(ssl=server_ctx)
    url = srv.url_for("/", scheme="wss")

    code, lines, err = await run_cli("connect", url)
    assert (code, lines) == (1, [])
    assert err.startswith("tether: TLS handshake failed: certificate verify failed: ")
    assert "--insecure" in err
    assert err.count("\n") == 1

    code, lines, err = await run_cli("connect", "--insecure", url, stdin=b"over tls\n")
    assert code == 0
    assert lines[0].startswith(f"connected: {url}")
    assert lines[-1] == "closed: 1000"


async def test_tls_to_a_plain_server_fails_cleanly(start_server: StartServer) -> None:
    async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # not a TLS record
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_garbage, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        code, lines, err = await run_cli("connect", f"wss://127.0.0.1:{port}/")
    assert (code, lines) == (1, [])
    assert err.startswith("tether: TLS handshake failed: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("code", "reason", "line", "status"),
    [
        (1000, "done", "closed: 1000 (done)", 0),
        (1001, "", "closed: 1001", 0),
        (4000, "bye\nnow", "closed: 4000 (bye\\nnow)", 1),
    ],
)
async def test_server_close_code_is_printed(
    start_server: StartServer, code: int, reason: str, line: str, status: int
) -> None:
    async def handler(ws: tether.ServerConnection) -> None:
        await ws.send(await ws.recv())
        await ws.close(code, reason)

    srv = await start_server(handler)
    cli = await Proc.start("connect", srv.url)
    try:
        cli.send("ping\n")  # stdin stays open: the server is the one closing
        await cli.read_until(line)
        returncode, lines, err = await cli.finish()
    finally:
        cli.kill()
    assert lines[-2:] == ["< text: ping", line]
    assert (returncode, err) == (status, "")


async def test_binary_and_control_characters_are_displayed(start_server: StartServer) -> None:
    async def handler(ws: tether.ServerConnection) -> None:
        await ws.send(b"hello")
        await ws.send(bytes(range(40)))
        await ws.send(b"")
        await ws.send("two\nlines and \x1b[2J")
        await ws.close()

    srv = await start_server(handler)
    code, lines, _ = await run_cli("connect", srv.url)
    assert code == 0
    assert lines[1:] == [
        "< binary (5 bytes): 68656c6c6f",
        "< binary (40 bytes): " + bytes(range(32)).hex() + "...",
        "< binary (0 bytes): ",
        "< text: two\\nlines and \\x1b[2J",
        "closed: 1000",
    ]


async def test_incoming_message_over_max_size(start_server: StartServer) -> None:
    async def handler(ws: tether.ServerConnection) -> None:
        await ws.send("z" * 200)
        await ws.wait_closed()

    srv = await start_server(handler)
    code, lines, err = await run_cli("connect", "--max-size", "100", "--no-compression", srv.url)
    assert code == 1
    # We failed the connection with 1009 and dropped TCP without waiting for the
    # server's Close: the peer's code is "none" (1006); stderr says what happened.
    assert lines[-1] == "closed: 1006"
    assert err == (
        "tether: connection failed: message of 200 bytes exceeds limit 100 (sent close 1009)\n"
    )


async def test_linger_keeps_receiving_after_end_of_input(start_server: StartServer) -> None:
    async def handler(ws: tether.ServerConnection) -> None:
        message = await ws.recv()
        assert isinstance(message, str)
        await ws.send(f"re: {message}")
        await ws.close(1000, "answered")

    srv = await start_server(handler)
    # Without --linger the Close would follow "question" at once and could
    # overtake the reply; with it the CLI waits, and ends as soon as the server closes.
    code, lines, _ = await run_cli("connect", "--linger", "30", srv.url, stdin=b"question\n")
    assert code == 0
    assert lines[1:] == ["> text: question", "< text: re: question", "closed: 1000 (answered)"]


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
async def test_terminal_stdin_and_ctrl_c(echo_server: Any) -> None:
    _, url = await echo_server()
    master, slave = os.openpty()
    try:
        cli = await Proc.start("connect", url, stdin=slave)
    finally:
        os.close(slave)
    try:
        await cli.readline()  # connected: ...
        os.write(master, b"typed\n")
        # stdout is a pipe, not the terminal: sent lines are still echoed.
        assert await cli.read_until("< text: typed") == ["> text: typed", "< text: typed"]
        cli.proc.send_signal(signal.SIGINT)  # first Ctrl-C: close cleanly
        code, lines, err = await cli.finish()
    finally:
        cli.kill()
        os.close(master)
    assert (code, lines[-1], err) == (0, "closed: 1000", "")


async def test_sigterm_closes_with_1000(start_server: StartServer) -> None:
    codes: list[int | None] = []

    async def handler(ws: tether.ServerConnection) -> None:
        await ws.send("ready")
        await ws.wait_closed()
        codes.append(ws.close_code)

    srv = await start_server(handler)
    cli = await Proc.start("connect", srv.url)
    try:
        await cli.read_until("< text: ready")
        cli.proc.send_signal(signal.SIGTERM)
        code, lines, _ = await cli.finish()
    finally:
        cli.kill()
    assert (code, lines[-1], codes) == (0, "closed: 1000", [1000])


async def test_second_interrupt_drops_a_stuck_close() -> None:
    """A server that never answers the Close: the second Ctrl-C does not wait for it."""
    got_close = asyncio.Event()

    async def deaf(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = re.search(rb"(?i)sec-websocket-key: *(\S+)", head)
        assert key is not None
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept_key(key.group(1).decode()).encode()
            + b"\r\n\r\n"
        )
        frame = await reader.readexactly(8)  # masked Close, code only: 2 + 4 + 2 bytes
        assert frame[0] == 0x88
        got_close.set()
        await reader.read()  # never answer
        # Python 3.12's Server.wait_closed (run by `async with server`) waits
        # for every connection's transport to close, not just its handler.
        writer.close()

    server = await asyncio.start_server(deaf, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        cli = await Proc.start("connect", f"ws://127.0.0.1:{port}/")
        try:
            await cli.readline()  # connected: ...
            cli.proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(got_close.wait(), GUARD)
            cli.proc.send_signal(signal.SIGINT)
            code, lines, err = await cli.finish()
        finally:
            cli.kill()
    assert (code, lines[-1]) == (1, "closed: 1006")
    assert (
        err
        == "tether: interrupted: dropped the connection without waiting for the server's close\n"
    )


# ------------------------------------------------------ formatting, core hook


def test_format_frame() -> None:
    assert format_frame(">", Opcode.CLOSE, True, 0, 5, True, b"\x03\xe8bye") == (
        'frame > CLOSE fin=1 rsv=000 len=5 masked=1 code=1000 reason="bye"'
    )
    assert format_frame("<", Opcode.CLOSE, True, 0, 0, False, b"") == (
        "frame < CLOSE fin=1 rsv=000 len=0 masked=0"
    )
    assert format_frame("<", Opcode.CLOSE, True, 0, 1, False, b"\x03").endswith(" code=invalid")
    assert format_frame("<", Opcode.PING, True, 0, 2, False, b"\x01\x02") == (
        "frame < PING fin=1 rsv=000 len=2 masked=0 data=0102"
    )
    assert format_frame("<", Opcode.CONT, False, 0b101, 3, False, b"abc") == (
        "frame < CONT fin=0 rsv=101 len=3 masked=0"
    )
    assert format_frame("<", 0x3, True, 0, 0, False, b"").startswith("frame < 0x3 ")


def test_format_message() -> None:
    assert format_message("<", "tab\tstays, \u2603 too") == "< text: tab\tstays, \u2603 too"
    assert format_message(">", b"\xff" * 33) == "> binary (33 bytes): " + "ff" * 32 + "..."
    assert escape_text("\r\n\x00\x7f\x9b") == "\\r\\n\\x00\\x7f\\x9b"


async def test_frame_observer_hook(start_server: StartServer) -> None:
    frames: list[tuple[str, int, bool, int, int, bool, bytes]] = []

    def observe(*frame: Any) -> None:
        frames.append(frame)

    srv = await start_server()
    async with tether.connect(srv.url, frame_observer=observe) as ws:
        await ws.send(b"\x01\x02")
        await asyncio.wait_for(ws.recv(), GUARD)
        ws.protocol.frame_observer = None  # unhooking stops the calls
        await ws.send("quiet")
        await asyncio.wait_for(ws.recv(), GUARD)
    assert frames == [
        (">", Opcode.BINARY, True, 0, 2, True, b"\x01\x02"),
        ("<", Opcode.BINARY, True, 0, 2, False, b"\x01\x02"),
    ]
