"""The HTTP fallbacks against the WebSocket, same node, same run: fan-out and latency.

usage: python bench/fallbacks.py [SUBSCRIBERS] [MESSAGES] [RATE]

One ``tether serve`` process (memory broker, so the transports are what is
measured); this process holds SUBSCRIBERS subscribers of one transport at a
time in a channel of their own, and one WebSocket publisher. Each publication
carries its send time (``{"t": ns}``), so latency is measured on one clock,
from the ``publish`` command leaving the publisher to the frame reaching a
subscriber.

Transports (docs/wire-protocol.md, "HTTP fallbacks"):

- ``websocket``: ``tether.v1`` over a WebSocket (the reference row);
- ``sse``: unidirectional ``GET /connection/sse?channel=`` (what a plain
  ``EventSource`` or ``curl -N`` reads);
- ``http_stream``: the emulation's NDJSON stream (``POST /connection/stream``,
  subscribe by ``POST /connection/send``);
- ``long_poll``: the emulation by long polling (latency only, with at most
  LONG_POLL_SUBSCRIBERS subscribers: each delivery batch is a request and an
  answer, so its fan-out is bounded by requests per second, not by writes).

Measured per transport:

- fan-out: MESSAGES publications with 64 in flight, as fast as acks come;
  deliveries (publication x subscriber) per second, first publish to last
  delivery;
- latency: MESSAGES publications at RATE per second (well below saturation),
  p50 / p99 over every delivery.

The stream readers here parse raw bytes (find each ``"t":``), so the
bench's own client costs about the same per delivery on every transport.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import tether

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 64
LONG_POLL_SUBSCRIBERS = 20
MARK = b'"t":'
HOST = "127.0.0.1"
KEEP: list[asyncio.StreamWriter] = []  # the streams' writers, alive until the run ends
TASKS: list[asyncio.Task[None]] = []  # the readers, cancelled after each transport
DRAINS: list[asyncio.Task[None]] = []  # reading the node's output, so its pipe never fills


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def spawn(coro: Coroutine[None, None, None]) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(coro)
    TASKS.append(task)
    return task


async def stop_readers() -> None:
    for task in TASKS:
        task.cancel()
    await asyncio.gather(*TASKS, return_exceptions=True)
    TASKS.clear()
    for writer in KEEP:
        writer.close()
    KEEP.clear()


async def start_node(config: Path) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tether",
        "serve",
        "--port",
        str(port),
        "--allow-anonymous",
        "--config",
        str(config),
        *sys_loop_args(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        if not line:
            raise RuntimeError("tether serve exited")
        if "listening on" in line:
            break
    DRAINS.append(asyncio.get_running_loop().create_task(_drain(process.stdout)))
    return process, port


def sys_loop_args() -> list[str]:
    """``--loop`` from TETHER_BENCH_LOOP (default ``auto``: uvloop when installed)."""
    return ["--loop", os.environ.get("TETHER_BENCH_LOOP", "auto")]


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


@dataclass
class Subscriber:
    """Counts deliveries and their latency, whatever carries them."""

    latencies: list[float] = field(default_factory=list)
    received: int = 0
    expect: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    tail: bytes = b""

    def feed(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        data = self.tail + data
        at = data.find(MARK)
        end = 0
        while at >= 0:
            stop = at + len(MARK)
            while stop < len(data) and data[stop : stop + 1].isdigit():
                stop += 1
            if stop == len(data):  # the number may go on in the next read
                break
            self.latencies.append((now - int(data[at + len(MARK) : stop])) / 1e6)
            self.received += 1
            end = stop
            at = data.find(MARK, stop)
        self.tail = data[end:][-64:] if at < 0 else data[at:]
        if self.expect and self.received >= self.expect:
            self.done.set()


async def ws_call(ws: tether.ClientConnection, cid: int, method: str, params: object) -> None:
    await ws.send(json.dumps({"id": cid, "method": method, "params": params}))


async def open_ws(port: int) -> tether.ClientConnection:
    ws = await tether.connect(
        f"ws://{HOST}:{port}/connection/websocket", subprotocols=["tether.v1"], compression=None
    )
    await ws_call(ws, 1, "connect", {})
    await ws.recv()
    return ws


# ------------------------------------------------------------ subscribers


async def sub_websocket(port: int, channel: str, sub: Subscriber, _: httpx.AsyncClient) -> None:
    ws = await open_ws(port)
    await ws_call(ws, 2, "subscribe", {"channel": channel})
    await ws.recv()

    async def read() -> None:
        async for message in ws:
            sub.feed(message.encode() if isinstance(message, str) else message)

    spawn(read())


async def raw_stream(
    port: int, head: str, body: bytes, ready: bytes
) -> tuple[asyncio.StreamReader, bytes]:
    """Send one request; once ``ready`` was seen in the response, the reader and what came."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(head.encode() + body)
    seen = b""
    while ready not in seen:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        if not chunk:
            raise RuntimeError(f"stream closed before {ready!r}: {seen[:300]!r}")
        seen += chunk
    KEEP.append(writer)
    return reader, seen


def pump(reader: asyncio.StreamReader, sub: Subscriber) -> None:
    async def read() -> None:
        while data := await reader.read(65536):
            sub.feed(data)

    spawn(read())


async def sub_sse(port: int, channel: str, sub: Subscriber, _: httpx.AsyncClient) -> None:
    head = (
        f"GET /connection/sse?channel={channel} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    reader, _ = await raw_stream(port, head, b"", b"event: connected")
    pump(reader, sub)


async def sub_http_stream(
    port: int, channel: str, sub: Subscriber, http: httpx.AsyncClient
) -> None:
    body = json.dumps({"id": 1, "method": "connect", "params": {}}).encode()
    head = (
        f"POST /connection/stream HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reader, seen = await raw_stream(port, head, body, b'"id":1')
    match = re.search(rb'"session":\s*"([^"]+)"', seen)  # the session frame, first
    assert match, seen
    session = match.group(1).decode()
    command = {"id": 2, "method": "subscribe", "params": {"channel": channel}}
    response = await http.post(
        f"http://{HOST}:{port}/connection/send",
        json={"session": session, "commands": [command]},
    )
    response.raise_for_status()
    pump(reader, sub)


class RawHttp:
    """One keep-alive HTTP/1.1 connection for JSON POSTs (Content-Length answers), so the
    long-poll readers cost this process about what a stream reader does."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> RawHttp:
        return cls(*await asyncio.open_connection(HOST, port))

    async def post(self, path: str, body: bytes) -> bytes:
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            body = await self.reader.readexactly(int(length.group(1))) if length else b""
            raise RuntimeError((head + body).decode(errors="replace"))
        length = re.search(rb"(?i)content-length:\s*(\d+)", head)
        assert length, head
        return await self.reader.readexactly(int(length.group(1)))


async def sub_long_poll(port: int, channel: str, sub: Subscriber, http: httpx.AsyncClient) -> None:
    conn = await RawHttp.open(port)
    connect = {"id": 1, "method": "connect", "params": {}}
    answer = json.loads(
        await conn.post("/connection/poll", json.dumps({"connect": connect}).encode())
    )
    session = answer["session"]
    ack = answer["seq"] + len(answer["messages"]) - 1
    command = {"id": 2, "method": "subscribe", "params": {"channel": channel}}
    response = await http.post(
        f"http://{HOST}:{port}/connection/send", json={"session": session, "commands": [command]}
    )
    response.raise_for_status()

    async def poll() -> None:
        nonlocal ack
        while True:
            body = await conn.post(
                "/connection/poll", json.dumps({"session": session, "ack": ack}).encode()
            )
            sub.feed(body)
            answer = json.loads(body)
            ack = max(ack, answer["seq"] + len(answer["messages"]) - 1)

    spawn(poll())


Opener = Callable[[int, str, Subscriber, httpx.AsyncClient], Awaitable[None]]
TRANSPORTS: dict[str, tuple[Opener, bool]] = {
    # name: (open one subscriber, measure fan-out too)
    "websocket": (sub_websocket, True),
    "sse": (sub_sse, True),
    "http_stream": (sub_http_stream, True),
    "long_poll": (sub_long_poll, False),
}


# ------------------------------------------------------------- the run


async def measure(
    port: int, name: str, subscribers: int, messages: int, rate: float
) -> dict[str, float]:
    opener, fanout = TRANSPORTS[name]
    if name == "long_poll":
        subscribers = min(subscribers, LONG_POLL_SUBSCRIBERS)
    channel = f"bench:{name}:{uuid.uuid4().hex[:6]}"
    limits = httpx.Limits(max_connections=subscribers + 8, max_keepalive_connections=subscribers)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        subs = [Subscriber() for _ in range(subscribers)]
        for sub in subs:
            await opener(port, channel, sub, http)
        publisher = await open_ws(port)
        acks: asyncio.Queue[None] = asyncio.Queue()

        async def read_acks() -> None:
            async for _ in publisher:
                acks.put_nowait(None)

        acker = spawn(read_acks())
        sent = 0

        async def publish() -> None:
            nonlocal sent
            sent += 1
            data = {"t": time.perf_counter_ns()}
            await ws_call(publisher, 10 + sent, "publish", {"channel": channel, "data": data})

        def expect(n: int) -> None:
            for sub in subs:
                sub.latencies.clear()
                sub.received, sub.expect = 0, n
                sub.done.clear()

        async def delivered(timeout: float) -> None:
            await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in subs)), timeout)

        expect(20)  # warm up
        for _ in range(20):
            await publish()
            await acks.get()
        await delivered(60)

        expect(messages)
        start = time.perf_counter()
        for i in range(messages):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # the publishing schedule itself
            await publish()
        for _ in range(messages):
            await acks.get()
        await delivered(120)
        latencies = sorted(x for sub in subs for x in sub.latencies)
        result = {
            "subscribers": float(subscribers),
            "p50": statistics.median(latencies),
            "p99": latencies[int(len(latencies) * 0.99) - 1],
            "deliveries": float("nan"),
        }

        if fanout:
            expect(messages)
            start = time.perf_counter()
            in_flight = 0
            for _ in range(messages):
                if in_flight >= WINDOW:
                    await acks.get()
                    in_flight -= 1
                await publish()
                in_flight += 1
            while in_flight:
                await acks.get()
                in_flight -= 1
            await delivered(300)
            result["deliveries"] = messages * subscribers / (time.perf_counter() - start)
        acker.cancel()
        await publisher.close()
        await stop_readers()
        return result


async def main() -> None:
    subscribers = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    messages = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 20.0
    print(
        f"{subscribers} subscribers per transport, 1 WebSocket publisher, {messages} messages; "
        f"latency at {rate:.0f} msg/s, fan-out with {WINDOW} in flight; "
        f"load before: {os.getloadavg()[0]:.2f}\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "hub.toml"
        config.write_text(
            "[limits]\npublish_rate = 1000000.0\npublish_burst = 1000000\n"
            "send_queue_size = 67108864\n"
            "[fallbacks]\nmax_streams_per_ip = 100000\nmax_streams = 100000\n"
        )
        node, port = await start_node(config)
        try:
            results = {}
            for name in TRANSPORTS:
                results[name] = await measure(port, name, subscribers, messages, rate)
        finally:
            node.terminate()
            await node.wait()
    ws = results["websocket"]
    print(
        "| transport | subscribers | deliveries/s | vs WebSocket | p50 latency | p99 latency "
        "| p99 vs WebSocket |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        fan = "n/a" if r["deliveries"] != r["deliveries"] else f"{r['deliveries']:,.0f}"
        ratio = "" if fan == "n/a" else f"{r['deliveries'] / ws['deliveries']:.2f}x"
        print(
            f"| {name} | {r['subscribers']:.0f} | {fan} | {ratio} "
            f"| {r['p50']:.1f} ms | {r['p99']:.1f} ms "
            f"| {r['p99'] / ws['p99']:.2f}x |",
            flush=True,
        )
    print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
