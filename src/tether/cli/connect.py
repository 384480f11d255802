"""``tether connect URL``: an interactive WebSocket client, like wscat.

Every line read from stdin goes out as a text message; every message received
is printed on stdout, one line each, in a format meant to be read by people and
by scripts alike::

    connected: ws://127.0.0.1:8765/ subprotocol=chat extensions=permessage-deflate
    > text: hello                      (a message sent; see below)
    < text: hello                      (a text message received)
    < binary (5 bytes): 68656c6c6f     (a binary message received, hex)
    frame < TEXT fin=1 rsv=000 len=5 masked=0              (--trace)
    frame > CLOSE fin=1 rsv=000 len=2 masked=1 code=1000   (--trace)
    closed: 1000 (bye)                 (the peer's close code and reason; 1006: none)

Control characters in text messages are escaped (``\\n``, ``\\x1b``) so one
message is always one line and a peer cannot drive the terminal. Binary
payloads longer than 32 bytes are shown as their first 32 bytes and ``...``.
Sent messages are echoed as ``> text: ...`` unless both stdin and stdout are a
terminal (where the terminal already shows what was typed).

At the end of stdin (Ctrl-D), on Ctrl-C or on SIGTERM the client closes with
1000 and prints the peer's close code; a second Ctrl-C drops the connection.
Errors are one line on stderr. The exit status is 0 after a normal close
(1000 or 1001 and no local failure), 1 otherwise, 130 when interrupted before
the connection opened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from tether._extras import MissingDependency
from tether.asyncio.client import ClientConnection, connect
from tether.cli.options import byte_limit, seconds
from tether.protocol.client import parse_uri
from tether.protocol.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidProxy,
    InvalidStatus,
    ProxyError,
)
from tether.protocol.frames import Opcode, parse_close_payload

HEX_LIMIT = 32  # bytes of a binary payload shown in hex before "..."

_OPCODE_NAMES = {op.value: op.name for op in Opcode}
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
# Headers the handshake itself sets; adding a second copy only confuses servers.
_RESERVED_HEADERS = frozenset(
    {"host", "upgrade", "connection", "sec-websocket-key", "sec-websocket-version"}
)
# C0 controls, DEL and C1 controls (0x9b is CSI on some terminals); tab is harmless.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0)) if c != 0x09}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r"})


# ------------------------------------------------------------------ arguments


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    if name.lower() in _RESERVED_HEADERS:
        raise argparse.ArgumentTypeError(f"{name} is set by the handshake itself")
    if any(c in value for c in "\r\n\0"):
        raise argparse.ArgumentTypeError(f"header {name} contains a line break or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"header {name} is not Latin-1 text") from None
    return name, value


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "connect",
        parents=parents,
        help="open an interactive WebSocket session (like wscat)",
        description=(
            "Send each line of stdin as a text message and print every message received. "
            "Ctrl-D (end of stdin), Ctrl-C or SIGTERM closes the connection with 1000."
        ),
    )
    p.add_argument("url", help="ws:// or wss:// URL")
    p.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable)",
    )
    p.add_argument(
        "-s",
        "--subprotocol",
        dest="subprotocols",
        action="append",
        default=[],
        metavar="PROTOCOL",
        help="offer this subprotocol (repeatable, in order of preference)",
    )
    p.add_argument("--origin", help="Origin header to send")
    p.add_argument("--no-compression", action="store_true", help="do not offer permessage-deflate")
    p.add_argument(
        "--trace", action="store_true", help="print every frame sent and received (frame > / <)"
    )
    p.add_argument(
        "-k", "--insecure", action="store_true", help="wss://: skip TLS certificate verification"
    )
    via = p.add_mutually_exclusive_group()
    via.add_argument(
        "--proxy",
        metavar="URL",
        help=(
            "connect through this proxy: http://[user:pass@]host:port, https://, "
            "socks5h://, socks5://, socks4a://, socks4://; "
            "default: https_proxy, no_proxy … from the environment"
        ),
    )
    via.add_argument(
        "--no-proxy", action="store_true", help="connect directly, whatever the environment says"
    )
    p.add_argument(
        "--max-size",
        type=byte_limit,
        default=2**20,
        metavar="BYTES",
        help="largest message accepted (e.g. 16MiB, or 'none'); default 1 MiB",
    )
    p.add_argument(
        "--open-timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="give up opening the connection after this long (0: never); default 10",
    )
    p.add_argument(
        "--linger",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help=(
            "after the end of stdin, keep receiving this long before closing (for piped "
            "input whose replies are still on their way); default 0"
        ),
    )


# --------------------------------------------------------------------- output


def escape_text(text: str) -> str:
    """Escape control characters so a message fits on one line and cannot drive the terminal."""
    return text.translate(_ESCAPES)


def format_hex(data: bytes, limit: int = HEX_LIMIT) -> str:
    return data[:limit].hex() + ("..." if len(data) > limit else "")


def format_message(direction: str, message: str | bytes) -> str:
    """``< text: hello`` or ``< binary (5 bytes): 68656c6c6f``."""
    if isinstance(message, str):
        return f"{direction} text: {escape_text(message)}"
    return f"{direction} binary ({len(message)} bytes): {format_hex(message)}"


def format_frame(
    direction: str, opcode: int, fin: bool, rsv: int, length: int, masked: bool, payload: bytes
) -> str:
    """One ``--trace`` line, e.g. ``frame > CLOSE fin=1 rsv=000 len=2 masked=1 code=1000``."""
    name = _OPCODE_NAMES.get(opcode, f"0x{opcode:X}")
    line = f"frame {direction} {name} fin={fin:d} rsv={rsv:03b} len={length} masked={masked:d}"
    if opcode == Opcode.CLOSE and payload:
        try:
            code, reason = parse_close_payload(payload)
        except ValueError:
            line += " code=invalid"
        else:
            line += f" code={code}"
            if reason:
                line += f" reason={json.dumps(reason, ensure_ascii=False)}"
    elif opcode in (Opcode.PING, Opcode.PONG) and payload:
        line += f" data={format_hex(payload)}"
    return line


def format_close(code: int, reason: str) -> str:
    return f"closed: {code} ({escape_text(reason)})" if reason else f"closed: {code}"


class _Output:
    """Line-oriented stdout; trace lines wait until the ``connected:`` line is out."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.broken = False
        self.on_broken: Callable[[], None] | None = None  # stdout went away (EPIPE)
        self._pending: list[str] | None = []

    def line(self, text: str) -> None:
        if self._pending is not None:
            self._pending.append(text)
        else:
            self._write(text)

    def opened(self, text: str) -> None:
        pending, self._pending = self._pending or [], None
        self._write(text)
        for item in pending:
            self._write(item)

    def _write(self, text: str) -> None:
        if self.broken:
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except BrokenPipeError:
            # e.g. `tether connect ... | head -3`: stop quietly, and keep the
            # interpreter from complaining when it flushes stdout at exit.
            self.broken = True
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.stream.fileno())
                os.close(devnull)
            if self.on_broken is not None:
                self.on_broken()

    def frame(
        self,
        direction: str,
        opcode: int,
        fin: bool,
        rsv: int,
        length: int,
        masked: bool,
        payload: bytes,
    ) -> None:
        self.line(format_frame(direction, opcode, fin, rsv, length, masked, payload))


def _error(message: str) -> None:
    print(f"tether: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- stdin


class _StdinReader:
    """Lines from a file descriptor, read in a daemon thread (never blocks the loop).

    A thread works the same for pipes, regular files and terminals, on every
    platform, and leaves the descriptor in blocking mode (``connect_read_pipe``
    would make a terminal shared with the shell non-blocking, and rejects
    regular files). At most a few chunks are read ahead of the sender.
    """

    def __init__(self, fd: int | None, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._slots = threading.Semaphore(4)
        self._buf = bytearray()
        self._eof = fd is None  # no stdin at all (started with `<&-`)
        if fd is not None:
            threading.Thread(target=self._run, args=(fd,), name="tether-stdin", daemon=True).start()

    def _run(self, fd: int) -> None:
        while True:
            self._slots.acquire()
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            try:
                self._loop.call_soon_threadsafe(self._chunks.put_nowait, data)
            except RuntimeError:  # the event loop is closed: we are exiting
                return
            if not data:
                return

    async def readline(self) -> str | None:
        """The next line without its line ending; ``None`` at the end of input."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end])
                del self._buf[: end + 1]
            elif self._eof:
                if not self._buf:
                    return None
                line = bytes(self._buf)
                self._buf.clear()
            else:
                data = await self._chunks.get()
                self._slots.release()
                if data:
                    self._buf += data
                else:
                    self._eof = True
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            return line.decode("utf-8", "replace")


# -------------------------------------------------------------------- session


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # sys.stdin is None or closed
        return None


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_error_text(exc: OSError) -> str:
    if exc.errno is not None:
        # asyncio's "Connect call failed (addr)" is in strerror: use the errno's text.
        return os.strerror(exc.errno)
    # Several addresses tried (e.g. localhost as ::1 and 127.0.0.1): asyncio
    # joins the messages; report the error once if it is the same everywhere.
    errnos = set(re.findall(r"\[Errno (\d+)\]", str(exc)))
    if len(errnos) == 1:
        return os.strerror(int(errnos.pop()))
    return str(exc) or type(exc).__name__


def _tls_error_text(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message} (--insecure skips the check)"
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc))
    return text or type(exc).__name__


def describe_open_error(exc: Exception, address: str, timeout: float | None) -> str:
    """The one-line explanation of why the connection did not open."""
    if isinstance(exc, InvalidStatus):
        response = exc.response
        text = f"server rejected upgrade: HTTP {response.status_code} {response.reason_phrase}"
        # The body usually says why ("token expired"): its first line, shortened.
        why = response.body.decode("utf-8", "replace").strip().splitlines()
        return f"{text}: {why[0][:200]}" if why else text
    if isinstance(exc, ProxyError | InvalidProxy):
        return f"proxy failed: {exc}"
    if isinstance(exc, InvalidHandshake):
        return f"handshake failed: {exc}"
    if isinstance(exc, MissingDependency):
        return str(exc)
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return f"TLS handshake failed: {_tls_error_text(exc)}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {address.rpartition(':')[0]}: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return f"timed out opening {address} after {timeout or 0:g}s"
    if isinstance(exc, OSError):
        return f"cannot connect to {address}: {_os_error_text(exc)}"
    return f"cannot connect to {address}: {type(exc).__name__}: {exc}"


def _ssl_context(insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _pump_stdin(
    ws: ClientConnection, out: _Output, echo: bool, linger: float, stop: asyncio.Event
) -> None:
    """Send stdin line by line; at its end (after ``linger``), ask to close."""
    stdin = _StdinReader(_stdin_fd(), asyncio.get_running_loop())
    try:
        while (line := await stdin.readline()) is not None:
            if echo:
                out.line(format_message(">", line))
            await ws.send(line)
            # A buffered burst of lines must not starve the receiving side.
            await asyncio.sleep(0)
    except ConnectionClosed:
        return
    if linger > 0:
        with contextlib.suppress(asyncio.TimeoutError):  # built-in TimeoutError from 3.11
            await asyncio.wait_for(ws.wait_closed(), linger)
    stop.set()


async def _receive(ws: ClientConnection, out: _Output) -> None:
    while True:
        try:
            message = await ws.recv()
        except ConnectionClosed:
            return
        out.line(format_message("<", message))


def _install_signals(
    loop: asyncio.AbstractEventLoop,
    stop: asyncio.Event,
    aborted: asyncio.Event,
    ws: ClientConnection,
) -> None:
    signals = 0

    def interrupted() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            stop.set()  # first Ctrl-C: close cleanly (stdin may have ended already)
        elif ws.transport is not None:  # second one: drop the connection
            aborted.set()
            ws.transport.abort()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, interrupted)


async def session(args: argparse.Namespace, out: _Output) -> int:
    try:
        uri = parse_uri(args.url)
    except ValueError as exc:
        _error(f"invalid URL: {exc}")
        return 1
    address = host_port(uri.host, uri.port)
    try:
        opener = connect(
            args.url,
            origin=args.origin,
            subprotocols=args.subprotocols or None,
            compression=None if args.no_compression else "deflate",
            additional_headers=args.headers or None,
            open_timeout=args.open_timeout or None,
            max_size=args.max_size,
            ssl=_ssl_context(args.insecure) if uri.secure else None,
            frame_observer=out.frame if args.trace else None,
            proxy=None if args.no_proxy else args.proxy or True,
        )
        ws = await opener
    except Exception as exc:
        _error(describe_open_error(exc, address, args.open_timeout))
        return 1

    loop = asyncio.get_running_loop()
    stop, aborted = asyncio.Event(), asyncio.Event()
    _install_signals(loop, stop, aborted, ws)
    out.on_broken = stop.set

    details = [str(args.url)]
    if ws.subprotocol is not None:
        details.append(f"subprotocol={ws.subprotocol}")
    if ws.protocol.extensions:
        details.append("extensions=" + ",".join(e.name for e in ws.protocol.extensions))
    out.opened("connected: " + " ".join(details))

    fd = _stdin_fd()
    echo = not (fd is not None and os.isatty(fd) and out.stream.isatty())
    receiver = asyncio.create_task(_receive(ws, out))
    sender = asyncio.create_task(_pump_stdin(ws, out, echo, args.linger, stop))

    def sender_done(task: asyncio.Task[None]) -> None:
        # A bug in the sender must not leave the session waiting for the server.
        if not task.cancelled() and task.exception() is not None:
            stop.set()

    sender.add_done_callback(sender_done)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not receiver.done():
            sender.cancel()
            await ws.close(1000)
        await receiver
        await ws.wait_closed()
    finally:
        for task in (sender, stopper, receiver):
            task.cancel()
        await asyncio.gather(sender, stopper, receiver, return_exceptions=True)
    for task in (sender, receiver):
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error

    proto = ws.protocol
    code, reason = proto.close_code, proto.close_reason
    out.line(format_close(code, reason))
    failure = proto.failure
    if failure is not None:
        _error(f"connection failed: {failure.reason} (sent close {failure.code})")
    elif aborted.is_set():
        _error("interrupted: dropped the connection without waiting for the server's close")
    elif proto.close_rcvd is None:
        lost = ws.lost_exception
        _error(f"connection lost: {lost}" if lost else "connection closed without a close frame")
    return 0 if failure is None and code in (1000, 1001) else 1


def run(args: argparse.Namespace) -> int:
    stdout = sys.stdout
    if isinstance(stdout, io.TextIOWrapper):
        # A peer's text must never make printing fail (e.g. LANG=C on a pipe).
        stdout.reconfigure(errors="backslashreplace")
    out = _Output(stdout)
    try:
        return asyncio.run(session(args, out))
    except KeyboardInterrupt:
        return 130
