"""Cross-node fan-out over a backplane: throughput and publish-to-delivery latency.

usage: python bench/backplane.py [SUBSCRIBERS] [MESSAGES] [RATE] [PUBLISHERS] [ROWS]

Two ``tether serve`` processes (node A and node B) share a backplane; this
process holds SUBSCRIBERS WebSocket clients on node B and PUBLISHERS
connections on node A, all in one channel with history. The ``one node``
row is the reference of the same run: one process with in-memory broker and
history, the publishers and subscribers on it. ROWS picks rows by name
(comma-separated: memory, redis, nats; all by default). Each
publication carries the publisher's send time, so latency is measured on one
clock, from the ``publish`` command leaving the publisher to the ``pub`` push
reaching a subscriber on the other node.

- latency: MESSAGES publications at RATE per second (well below saturation);
  p50 / p99 over every delivery.
- throughput: MESSAGES publications with 64 in flight (spread over the
  publisher connections: a session handles its commands one at a time, so
  one connection waits a backplane round trip per publish), as fast as acks come;
  publications per second and deliveries (publication x subscriber) per
  second, from the first publish to the last delivery.

Backplanes: Redis for broker, history and presence; NATS as the broker with
Redis history and presence. Needs the servers of TETHER_REDIS_URL and
TETHER_NATS_URL (defaults: the local ones). Each run uses prefixes of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import tether

REDIS_URL = os.environ.get("TETHER_REDIS_URL") or "redis://127.0.0.1:6379/0"
NATS_URL = os.environ.get("TETHER_NATS_URL") or "nats://127.0.0.1:4222"
ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "bench:fanout"
# Publishes in flight in the throughput run (TETHER_BENCH_WINDOW to change it).
WINDOW = int(os.environ.get("TETHER_BENCH_WINDOW") or 64)

BACKPLANES: dict[str, tuple[str, list[str] | None]] = {
    "memory": ("one node, in memory", None),
    "redis": ("two nodes, Redis", ["--broker", REDIS_URL]),
    "nats": (
        "two nodes, NATS + Redis history",
        ["--broker", NATS_URL, "--history", REDIS_URL, "--presence", REDIS_URL],
    ),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_node(
    args: list[str], config: Path, log: list[str] | None = None
) -> tuple[asyncio.subprocess.Process, int]:
    """A ``tether serve`` on a free port; its output lines go to ``log`` if given."""
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
        *args,
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
    # Keep reading its output so the pipe never fills.
    asyncio.get_running_loop().create_task(_drain(process.stdout, log))
    return process, port


async def _drain(stream: asyncio.StreamReader, log: list[str] | None) -> None:
    while line := await stream.readline():
        if log is not None:
            log.append(line.decode(errors="replace"))


@dataclass
class Subscriber:
    ws: tether.ClientConnection
    latencies: list[float] = field(default_factory=list)
    received: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expect: int = 0

    async def read(self) -> None:
        async for message in self.ws:
            assert isinstance(message, str)
            if not message.startswith('{"push":"pub"'):
                continue
            now = time.perf_counter_ns()
            at = message.find('"t":')
            sent = int(message[at + 4 : message.index("}", at)])
            self.latencies.append((now - sent) / 1e6)
            self.received += 1
            if self.received >= self.expect:
                self.done.set()


async def call(
    ws: tether.ClientConnection, cid: int, method: str, params: dict[str, object]
) -> None:
    await ws.send(json.dumps({"id": cid, "method": method, "params": params}))


async def open_client(port: int) -> tether.ClientConnection:
    # No compression: the bench process should spend its CPU on reading, not
    # inflating, so it disturbs the nodes it measures as little as it can.
    ws = await tether.connect(
        f"ws://127.0.0.1:{port}/connection/websocket", subprotocols=["tether.v1"], compression=None
    )
    await call(ws, 1, "connect", {})
    await ws.recv()
    return ws


async def run(
    args: list[str] | None, subscribers: int, messages: int, rate: float, publishers: int
) -> dict[str, float]:
    prefix = "bench" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "hub.toml"
        config.write_text(
            f'backplane_prefix = "{prefix}"\n'
            "[limits]\npublish_rate = 1000000.0\npublish_burst = 1000000\n"
            "send_queue_size = 67108864\n"
        )
        nodes = [await start_node(args or [], config)]
        if args is not None:
            nodes.append(await start_node(args, config))
        try:
            port_a, port_b = nodes[0][1], nodes[-1][1]
            pids = [nodes[0][0].pid, nodes[-1][0].pid]
            return await measure(port_a, port_b, subscribers, messages, rate, publishers, pids)
        finally:
            for node, _ in nodes:
                node.terminate()
                await node.wait()
            await cleanup(prefix)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    port_a: int,
    port_b: int,
    subscribers: int,
    messages: int,
    rate: float,
    publishers: int,
    pids: list[int],
) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    subs = [Subscriber(await open_client(port_b)) for _ in range(subscribers)]
    for sub in subs:
        await call(sub.ws, 2, "subscribe", {"channel": CHANNEL})
        await sub.ws.recv()
    readers = [loop.create_task(sub.read()) for sub in subs]
    pubs = [await open_client(port_a) for _ in range(publishers)]
    acks: asyncio.Queue[None] = asyncio.Queue()

    async def read_acks(ws: tether.ClientConnection) -> None:
        async for _ in ws:
            acks.put_nowait(None)

    ack_readers = [loop.create_task(read_acks(ws)) for ws in pubs]
    sent = 0

    async def publish() -> None:
        nonlocal sent
        sent += 1
        data = {"t": time.perf_counter_ns()}
        await call(
            pubs[sent % publishers], 10 + sent, "publish", {"channel": CHANNEL, "data": data}
        )

    def expect(n: int) -> None:
        for sub in subs:
            sub.latencies.clear()
            sub.received = 0
            sub.expect = n
            sub.done.clear()

    async def delivered(timeout: float) -> None:
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in subs)), timeout)

    # Warm up: connections, scripts, caches.
    expect(50)
    for _ in range(50):
        await publish()
        await acks.get()
    await delivered(60)

    # Latency at a fixed rate.
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
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]

    # Throughput with a window of publishes in flight.
    expect(messages)
    cpu_before = [cpu_seconds(pid) for pid in pids]
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
    await delivered(600)
    elapsed = time.perf_counter() - start
    cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
    loaded = sorted(x for sub in subs for x in sub.latencies)

    for task in [*ack_readers, *readers]:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in [*pubs, *(s.ws for s in subs)]))
    return {
        "p50": p50,
        "p99": p99,
        "pubs": messages / elapsed,
        "deliveries": messages * subscribers / elapsed,
        "loaded_p50": statistics.median(loaded),
        # CPU per publication of the publishers' node (node A), per delivery of
        # the subscribers' node (node B); one node does both in the memory row.
        "cpu_a": cpu[0] / messages * 1e6,
        "cpu_b": cpu[1] / (messages * subscribers) * 1e6,
    }


async def cleanup(prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + ":*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def main() -> None:
    subscribers = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    messages = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    rate = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    publishers = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    rows = sys.argv[5].split(",") if len(sys.argv) > 5 else list(BACKPLANES)
    print(
        f"{subscribers} subscribers on node B, {publishers} publisher connections on node A, "
        f"{messages} messages; latency at {rate:.0f} msg/s, throughput with {WINDOW} in flight\n"
    )
    print(
        "| backplane | p50 latency | p99 latency | publications/s | deliveries/s "
        "| p50 latency at full load | node A CPU/publication | node B CPU/delivery |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        name, args = BACKPLANES[row]
        r = await run(args, subscribers, messages, rate, publishers)
        print(
            f"| {name} | {r['p50']:.1f} ms | {r['p99']:.1f} ms | {r['pubs']:.0f} "
            f"| {r['deliveries']:.0f} | {r['loaded_p50']:.0f} ms "
            f"| {r['cpu_a']:.0f} us | {r['cpu_b']:.1f} us |",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
