"""Helpers for the permessage-deflate integration tests (tests/deflate/).

``DeflateRawClient``
    A hand-written client on ``asyncio.open_connection`` that offers whatever
    ``Sec-WebSocket-Extensions`` it is told to, builds masked frames with any
    RSV bits, and reads the server's frames *with* their RSV bits, so the wire
    itself is checked rather than a peer's interpretation of it.
``deflate_stream`` / ``bomb``
    Raw DEFLATE data as permessage-deflate carries it (RFC 7692 §7.2.1).
``ServerProcess``
    A tether server in a child process, so its resident memory (``VmRSS`` and
    the peak ``VmHWM`` from ``/proc/PID/status``) measures the server alone.
``RttProbe``
    Back-to-back round trips (echo and ping) on a healthy connection while
    something else happens, recording each one's start and end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

GUARD = 10.0  # bounds awaits that should finish quickly; never a way to wait for something
MiB = 1 << 20
KiB = 1 << 10

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1
_TAIL = b"\x00\x00\xff\xff"

# DEFLATE's best case is a 258-byte match coded in 2 bits: 1032 bytes out per byte in.
MAX_DEFLATE_RATIO = 1032


# ---------------------------------------------------------------------- data


def deflate_stream(data: bytes, *, wbits: int = 9, level: int = 9) -> bytes:
    """``data`` compressed as one permessage-deflate message (sync flush, tail removed)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -wbits, 9)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(_TAIL)
    return out[:-4]


def bomb(inflated: int) -> bytes:
    """A permessage-deflate payload inflating to ``inflated`` zero bytes, built in O(output/MiB).

    zlib compresses 1 MiB of zeros to about 1 KiB of non-final blocks ending with
    a sync flush (byte-aligned), whose matches all reach back 1 byte within the
    same piece. Such pieces concatenate into one valid stream, so a 100 MiB bomb
    costs 100 copies of a 1 KiB piece instead of compressing 100 MiB.
    """
    if inflated <= 8 * MiB:
        return deflate_stream(bytes(inflated))
    whole, rest = divmod(inflated, MiB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -9, 9)
    piece = compressor.compress(bytes(MiB)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    stream = piece * whole
    if rest:
        stream += deflate_stream(bytes(rest)) + _TAIL
    assert stream.endswith(_TAIL)
    return stream[:-4]


def inflate(payload: bytes, wbits: int = 15) -> bytes:
    """Undo :func:`deflate_stream` (RFC 7692 §7.2.2), for checking what a server sent."""
    decoder = zlib.decompressobj(-wbits)
    return decoder.decompress(payload + _TAIL)


def json_text(size: int, seed: int = 0) -> str:
    """About ``size`` characters of chat-like JSON (compresses like real traffic), non-ASCII too."""
    words = ["alpha", "beta", "gamma", "status", "online", "message", "room", "user", "naïve", "ü€"]
    records = []
    total = 2
    i = seed
    while total < size:
        record = json.dumps(
            {"id": i * 7919 % 100003, "user": f"user-{i % 97}", "text": " ".join(words[i % 7 :])},
            ensure_ascii=False,
        )
        records.append(record)
        total += len(record) + 1
        i += 1
    return ("[" + ",".join(records) + "]")[:size] if size else ""


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` (RFC 6455 §5.3), fast for large payloads."""
    n = len(payload)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    key: bytes | None = b"\x5a\x13\xc4\x7e",
) -> bytes:
    """A frame as a client sends it (masked unless ``key`` is None); ``rsv``: RSV1..3 = 4, 2, 1."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    bit = 0x80 if key is not None else 0
    if n < 126:
        head = bytes((b0, bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, bit | 127, n)
    if key is None:
        return head + payload
    return head + key + mask_bytes(payload, key)


def fragments(opcode: int, payload: bytes, count: int, *, rsv1: bool = True) -> bytes:
    """``payload`` split into ``count`` frames: RSV1 (if asked) on the first only (RFC 7692 §6)."""
    assert count >= 1
    step = -(-len(payload) // count) if payload else 0
    out = []
    for i in range(count):
        piece = payload[i * step : (i + 1) * step] if step else b""
        out.append(
            frame(
                opcode if i == 0 else OP_CONT,
                piece,
                fin=i == count - 1,
                rsv=RSV1 if (rsv1 and i == 0) else 0,
            )
        )
    return b"".join(out)


# ---------------------------------------------------------------- raw client


@dataclass
class WireFrame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes
    at: float = 0.0  # time.perf_counter() when the frame was complete

    @property
    def rsv1(self) -> bool:
        return bool(self.rsv & RSV1)


class DeflateRawClient:
    """A WebSocket client written by hand, for offering and sending anything."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status: int | None = None
        self.headers: dict[str, list[str]] = {}

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> DeflateRawClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), GUARD)
        return cls(reader, writer)

    async def handshake(self, offer: str | None = "permessage-deflate", path: str = "/") -> int:
        """Send an upgrade request offering ``offer`` (None: no extension header); read the head."""
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        if offer is not None:
            lines.append(f"Sec-WebSocket-Extensions: {offer}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), GUARD)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split(" ")[1])
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                self.headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = int(self.headers.get("content-length", ["0"])[0])
        if length:
            await asyncio.wait_for(self.reader.readexactly(length), GUARD)
        return self.status

    @property
    def extensions(self) -> str | None:
        values = self.headers.get("sec-websocket-extensions")
        return ", ".join(values) if values else None

    async def send(self, data: bytes) -> float:
        """Write ``data``; return ``time.perf_counter()`` once the kernel took the last byte."""
        self.writer.write(data)
        await asyncio.wait_for(self.writer.drain(), GUARD)
        return time.perf_counter()

    async def read_frame(self, timeout: float = GUARD) -> WireFrame:
        async def read() -> WireFrame:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            assert not b1 & 0x80, "a server must not mask its frames"
            payload = await self.reader.readexactly(n)
            at = time.perf_counter()
            return WireFrame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload, at)

        return await asyncio.wait_for(read(), timeout)

    async def read_close(self, timeout: float = GUARD) -> WireFrame | None:
        """Skip frames up to the server's Close; ``None`` if TCP ends without one."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = await self.read_frame(timeout=max(deadline - time.monotonic(), 0.001))
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            if got.opcode == OP_CLOSE:
                return got

    async def read_eof(self, timeout: float = GUARD) -> None:
        """Read (and drop) until the server closes TCP."""
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except ConnectionError:
            pass

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.transport.abort()


def close_code(close: WireFrame | None) -> int | None:
    if close is None:
        return None
    if len(close.payload) < 2:
        return 1005
    return int(struct.unpack("!H", close.payload[:2])[0])


# ------------------------------------------------------------ server process

_SERVER_SCRIPT = """
import asyncio, json, sys, tether

async def echo(ws):
    async for message in ws:
        await ws.send(message)

async def main():
    kwargs = json.loads(sys.argv[1])
    async with tether.serve(echo, "127.0.0.1", 0, ping_interval=None, **kwargs) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        # Run until the test closes our stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@dataclass
class ServerProcess:
    """A tether echo server in a child process (``serve`` keyword arguments as JSON)."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    stderr_path: str = os.devnull
    proc: subprocess.Popen[str] | None = None
    port: int = 0

    def start(self) -> ServerProcess:
        with open(self.stderr_path, "w") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER_SCRIPT, json.dumps(self.kwargs)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the server listens (or dies)
        if not line.strip().isdigit():
            self.stop()
            with open(self.stderr_path) as f:
                raise RuntimeError(f"server process did not start: {line!r} {f.read()}")
        self.port = int(line)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(GUARD)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def memory(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (peak) of the server process, in bytes."""
        result = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    result[name] = int(value.split()[0]) * 1024
        return result

    def reset_peak(self) -> None:
        """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` value 5)."""
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")


def peak_reset_unsupported() -> str | None:
    """Why :meth:`ServerProcess.reset_peak` cannot work here, or None."""
    if not sys.platform.startswith("linux"):
        return f"resident memory is read from /proc (Linux only), not on {sys.platform}"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as exc:
        return f"cannot reset the peak RSS through /proc/PID/clear_refs: {exc}"
    return None


# ------------------------------------------------------------------ RTT probe


class RttProbe:
    """Round trips on ``conn`` back to back (alternately echo and ping) until stopped."""

    def __init__(self, conn: Any, message: str) -> None:
        self.conn = conn
        self.message = message
        self.spans: list[tuple[float, float]] = []
        self._stop = asyncio.Event()
        self._going = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            start = time.perf_counter()
            if i % 2:
                await asyncio.wait_for(await self.conn.ping(), GUARD)
            else:
                await self.conn.send(self.message)
                echoed = await asyncio.wait_for(self.conn.recv(), GUARD)
                assert echoed == self.message
            self.spans.append((start, time.perf_counter()))
            self._going.set()
            i += 1

    async def __aenter__(self) -> RttProbe:
        task = self._task = asyncio.create_task(self._run())
        # The probe is going (one round trip done) before the caller starts.
        going = asyncio.create_task(self._going.wait())
        await asyncio.wait({task, going}, timeout=GUARD, return_when=asyncio.FIRST_COMPLETED)
        going.cancel()
        if task.done():
            task.result()  # the probe failed: raise why
        assert self.spans, "the probe made no round trip"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, GUARD)

    def overlapping(self, start: float, end: float) -> list[float]:
        """Durations of the round trips that overlapped ``[start, end]``."""
        return [b - a for a, b in self.spans if a <= end and b >= start]

    @property
    def worst(self) -> float:
        return max(b - a for a, b in self.spans)
