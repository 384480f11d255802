"""Shared helpers for tether's tests.

``require(condition, reason)``
    Skip a test (with ``reason`` shown in the summary) when an optional
    service or tool is missing, e.g. Node.js for the interop tests. With
    ``TETHER_REQUIRE_SERVICES=1`` in the environment (CI), the same call
    fails the test instead, so a missing install step cannot hide behind a
    green run. Use it inside a test or fixture (``from tether_testing import
    require``, or the ``require`` fixture); at module level pass
    ``allow_module_level=True``.

``load_native()``, ``require_native()``, ``@needs_native``
    The C extension ``tether._speedups`` (or ``None``); the same, skipping
    where it was not built (failing under ``TETHER_REQUIRE_SERVICES=1``:
    CI builds it, so a broken build cannot pass as skipped tests); a mark for
    tests of the native code only.

Fixtures
    ``start_server``  start a tether server on 127.0.0.1, port 0 (a :class:`Running`);
                      closed on teardown.
    ``raw_client``    open a :class:`RawClient`, a hand-written WebSocket client on
                      a plain ``asyncio.open_connection`` socket for sending
                      arbitrary (also invalid) bytes; closed on teardown.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

import tether

if TYPE_CHECKING:  # tether.hub only where hub tests run (its extra may be missing)
    from tether.hub.client import ClientState, PublicationEvent, StateEvent, SubscribedEvent

REQUIRE_SERVICES = os.environ.get("TETHER_REQUIRE_SERVICES") == "1"

# A guard for awaits that should finish quickly; never a way to wait for something.
GUARD = 10.0


def require(condition: object, reason: str, *, allow_module_level: bool = False) -> None:
    """Skip with ``reason`` unless ``condition`` holds.

    Under ``TETHER_REQUIRE_SERVICES=1`` a missing service fails the test instead.
    """
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"TETHER_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)


@pytest.fixture(name="require")
def require_fixture() -> Callable[..., None]:
    return require


# ----------------------------------------------------------------- native code

NATIVE_MISSING = "tether._speedups is not built (no C compiler at install time?)"


def load_native() -> ModuleType | None:
    """``tether._speedups``, or ``None`` where the C extension was not built."""
    try:
        return importlib.import_module("tether._speedups")
    except ImportError:
        return None


def require_native() -> ModuleType:
    """``tether._speedups``; skip where it is missing (fail under TETHER_REQUIRE_SERVICES=1)."""
    native = load_native()
    require(native is not None, NATIVE_MISSING)
    assert native is not None
    return native


@pytest.fixture(name="native_speedups")
def native_speedups_fixture() -> ModuleType:
    return require_native()


# ``@needs_native`` on a test (or ``pytestmark``) of the native code alone.
needs_native = pytest.mark.usefixtures("native_speedups")


# --------------------------------------------------------------------- servers


async def echo(ws: tether.ServerConnection) -> None:
    """The README's echo handler."""
    async for message in ws:
        await ws.send(message)


@dataclass
class Running:
    """A started server: ``.server``, ``.port``, ``.url`` (``ws://127.0.0.1:PORT/``)."""

    server: tether.Server
    port: int

    @property
    def url(self) -> str:
        return self.url_for("/")

    def url_for(self, path: str, scheme: str = "ws", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


@pytest.fixture
async def start_server() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    """``srv = await start_server(handler=echo, **serve_kwargs)`` on 127.0.0.1 port 0.

    Every server is closed (connections with 1001) and awaited on teardown.
    """
    servers: list[tether.Server] = []

    async def start(handler: Any = echo, **kwargs: Any) -> Running:
        server = await tether.serve(handler, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        return Running(server, int(server.sockets[0].getsockname()[1]))

    yield start
    for server in servers:
        server.close()
    for server in servers:
        await asyncio.wait_for(server.wait_closed(), GUARD)


# ------------------------------------------------------------------ raw client

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MASK = b"\x37\xfa\x21\x3d"


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length: int | None = None,
) -> bytes:
    """Serialize a frame by hand; ``length`` overrides the declared payload length."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    declared = len(payload) if length is None else length
    mask_bit = 0x80 if mask is not None else 0
    if declared < 126:
        head = bytes((b0, mask_bit | declared))
    elif declared < 65536:
        head = struct.pack("!BBH", b0, mask_bit | 126, declared)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, declared)
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode("utf-8")


class RawClient:
    """A WebSocket client written by hand on an asyncio stream, for sending anything."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1", **kwargs: Any) -> RawClient:
        opening = asyncio.open_connection(host, port, **kwargs)
        reader, writer = await asyncio.wait_for(opening, GUARD)
        return cls(reader, writer)

    @staticmethod
    def request(
        path: str = "/",
        headers: list[tuple[str, str]] | None = None,
        *,
        drop: tuple[str, ...] = (),
    ) -> bytes:
        """An upgrade request; ``headers`` replace defaults of the same name, ``drop`` removes."""
        base = {
            "Host": "127.0.0.1",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Version": "13",
        }
        extra = headers or []
        names = {name.lower() for name, _ in extra} | {name.lower() for name in drop}
        lines = [f"GET {path} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in base.items() if k.lower() not in names]
        lines += [f"{k}: {v}" for k, v in extra]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    frame = staticmethod(build_frame)
    close_payload = staticmethod(close_payload)

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), GUARD)

    async def read_response(self) -> int:
        """Read the HTTP response head (and a Content-Length body); return the status."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), GUARD)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        length = int(self.headers.get("content-length", "0"))
        if length:
            self.body = await asyncio.wait_for(self.reader.readexactly(length), GUARD)
        return self.status

    async def handshake(
        self, path: str = "/", headers: list[tuple[str, str]] | None = None
    ) -> None:
        await self.send(self.request(path, headers))
        status = await self.read_response()
        assert status == 101, (status, self.headers, self.body)

    async def send_frame(self, opcode: int, payload: bytes = b"", **kwargs: Any) -> None:
        await self.send(build_frame(opcode, payload, **kwargs))

    async def read_frame(self, timeout: float = GUARD) -> tuple[bool, int, bytes]:
        """Read one (unmasked, server-sent) frame: ``(fin, opcode, payload)``."""

        async def read() -> tuple[bool, int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            assert not b1 & 0x80, "server frames must not be masked"
            return bool(b0 & 0x80), b0 & 0x0F, await self.reader.readexactly(length)

        return await asyncio.wait_for(read(), timeout)

    async def read_close(self, timeout: float = GUARD) -> tuple[int | None, str]:
        """Skip data and ping frames up to the server's Close frame; return its code and reason.

        Pings are not answered. ``(None, "")`` if the connection ends without a Close frame.
        """

        async def read() -> tuple[int | None, str]:
            while True:
                try:
                    _, opcode, payload = await self.read_frame(timeout=timeout)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return None, ""
                if opcode == OP_CLOSE:
                    if len(payload) < 2:
                        return 1005, ""
                    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

        return await asyncio.wait_for(read(), timeout)

    async def read_eof(self, timeout: float = GUARD) -> bytes:
        """Read until the server closes TCP; return what arrived meanwhile."""
        try:
            return await asyncio.wait_for(self.reader.read(), timeout)
        except ConnectionError:
            return b""

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.transport.abort()


@pytest.fixture
async def raw_client() -> AsyncIterator[Callable[..., Awaitable[RawClient]]]:
    """``client = await raw_client(port)``; aborted on teardown."""
    clients: list[RawClient] = []

    async def open_client(port: int, **kwargs: Any) -> RawClient:
        client = await RawClient.open(port, **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()
    await asyncio.sleep(0)  # let the transports run connection_lost before the loop closes


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def answer_upgrade(reader: asyncio.StreamReader, extra_headers: bytes = b"") -> bytes:
    """A hand-written server's side of the opening handshake: read the request, return a 101.

    ``extra_headers``: more header lines, each ending with CRLF (say an
    extension the server accepts). Computes Sec-WebSocket-Accept itself
    (RFC 6455 §4.2.2), independently of tether. The caller writes the answer,
    with whatever should arrive in the same read.
    """
    head = await reader.readuntil(b"\r\n\r\n")
    key = next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n" + extra_headers + b"\r\n"
    )


# ------------------------------------------------------------- hub client events


class Recorder:
    """Collects a :class:`tether.hub.Client`'s events, and lets a test await them (never sleep)."""

    def __init__(self) -> None:
        self.pubs: asyncio.Queue[PublicationEvent] = asyncio.Queue()
        self.subscribed: asyncio.Queue[SubscribedEvent] = asyncio.Queue()
        self.states: asyncio.Queue[StateEvent] = asyncio.Queue()

    async def data(self, n: int) -> list[Any]:
        return [(await asyncio.wait_for(self.pubs.get(), GUARD)).data for _ in range(n)]

    async def state(self, state: ClientState) -> StateEvent:
        while True:
            event = await asyncio.wait_for(self.states.get(), GUARD)
            if event.state is state:
                return event
