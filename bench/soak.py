"""Fault and soak run: steady publishing over 3 nodes while Redis, NATS and a node fail.

Not run in CI (it takes minutes). It starts, all private to this run:

- a ``redis-server`` on a free port (append-only file, fsync always, in a
  temporary directory) for history and presence,
- a ``nats-server`` on a free port as the broker,
- ``--nodes`` ``tether serve`` processes sharing them,
- ``--loaders`` loader processes holding ``--subscribers`` hub sessions spread
  over the nodes and ``--channels`` channels. Each session records every
  publication it gets (live, or in a recovery after reconnecting) and, when
  its connection drops, reconnects to the next node and asks to recover from
  the last offset it saw.

A publisher posts ``--rate`` publications a second to ``/api/publish`` on
the nodes in turn and keeps every acknowledged one (channel, offset, epoch).
In the middle of the run, at fixed fractions of ``--minutes``: Redis is
restarted (SIGTERM, then started again on its port and data), the nats-server
is restarted, and one node is SIGKILLed (and started again ``--down``
seconds later). After publishing stops and the sessions had ``--drain``
seconds to catch up, each session's record is checked against the
acknowledged publications of its channel since it first subscribed:

- lost: acknowledged, never delivered (must be 0),
- duplicated: delivered twice (must be 0),
- recovery outcomes: reconnections that recovered everything, and those
  that could not (history gone, or an epoch change),
- RSS of each node over time.

Exit status 1 on any loss or duplicate, or if the run could not be set up.

    python bench/soak.py                       # 10 minutes, 10,000 subscribers
    python bench/soak.py --minutes 1 --subscribers 2000   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from hub_conns import HANDSHAKE, client_frame, free_port, rss_bytes

API_KEY = "soak-api-key"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"

# ------------------------------------------------------------------ loader


class SoakSession(asyncio.Protocol):
    """One subscriber: connect (recovering after the first time), record pubs, reconnect."""

    def __init__(self, loader: SoakLoader, channel: str) -> None:
        self.loader = loader
        self.channel = channel
        self.start: tuple[int, str] | None = None  # position at the first subscribe
        self.last: tuple[int, str] | None = None  # last offset seen, its epoch
        self.received: Counter[tuple[str, int]] = Counter()  # (epoch, offset) -> times
        self.buf = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.node = 0
        self.handshake = b""
        self.connected: asyncio.Future[None] | None = None

    # ---- connection management (the loader's task calls these)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.buf, self.upgraded = transport, b"", False
        transport.write(self.handshake)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        pending = self.connected
        if pending is not None and not pending.done():
            # open() is waiting for this attempt: it tries again itself.
            pending.set_exception(ConnectionError(f"lost before subscribing: {exc}"))
            return
        if not self.loader.stopping:
            self.loader.drops += 1
            self.loader.loop.create_task(self.loader.reconnect(self))

    # ---- protocol

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.buf = b""
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            buf = buf[end + 4 :]
            sub: dict[str, object] | None = None  # the first time: no position to recover
            if self.last is not None:
                sub = {"offset": self.last[0], "epoch": self.last[1]}
            command = {"id": 1, "method": "connect", "params": {"subs": {self.channel: sub}}}
            assert self.transport is not None
            self.transport.write(client_frame(1, json.dumps(command).encode()))
        while len(buf) >= 2:
            opcode, n = buf[0] & 0x0F, buf[1] & 0x7F
            start = 2
            if n == 126:
                n, start = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                n, start = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < start + n:
                break
            payload, buf = buf[start : start + n], buf[start + n :]
            if opcode == 9 and self.transport is not None:
                self.transport.write(client_frame(10, payload))
            elif opcode == 8 and self.transport is not None:
                self.transport.close()
            elif opcode == 1:
                self._message(json.loads(payload))
        self.buf = buf

    def _message(self, message: dict[str, object]) -> None:
        if message.get("push") == "pub":
            self._pub(int(message["offset"]), str(message["epoch"]))  # type: ignore[call-overload]
            return
        if message.get("id") != 1:
            return
        result = message.get("result")
        sub = result.get("subs", {}).get(self.channel) if isinstance(result, dict) else None
        if not isinstance(sub, dict) or "error" in sub:
            self.loader.subscribe_errors += 1
            if self.transport is not None:
                self.transport.close()
            return
        position = (int(sub["offset"]), str(sub["epoch"]))
        if self.last is None:
            self.start = self.last = position
        else:
            outcome = "recovered" if sub.get("recovered") else "not recovered"
            if position[1] != self.last[1]:
                outcome = "epoch changed"
            self.loader.outcomes[outcome] += 1
            for pub in sub.get("publications", []):
                self._pub(int(pub["offset"]), position[1], "recovery")
            if not sub.get("recovered"):
                self.last = position
        if self.connected is not None and not self.connected.done():
            self.connected.set_result(None)

    def _pub(self, offset: int, epoch: str, via: str = "live") -> None:
        self.received[(epoch, offset)] += 1
        if self.received[(epoch, offset)] > 1 and len(self.loader.duplicate_examples) < 10:
            self.loader.duplicate_examples.append(
                f"{time.strftime('%H:%M:%S')} {self.channel} offset {offset} again ({via}), "
                f"node port {self.loader.ports[self.node % len(self.loader.ports)]}"
            )
        if self.last is None or offset > self.last[0] or epoch != self.last[1]:
            self.last = (offset, epoch)


@dataclass
class SoakLoader:
    loop: asyncio.AbstractEventLoop
    handshake_for: dict[int, bytes]
    ports: list[int]
    source: str
    stopping: bool = False
    drops: int = 0
    subscribe_errors: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    duplicate_examples: list[str] = field(default_factory=list)

    async def open(self, session: SoakSession) -> None:
        """Connect ``session`` to its node, or the next ones, until subscribed."""
        for attempt in range(200):
            port = self.ports[session.node % len(self.ports)]
            session.handshake = self.handshake_for[port]
            session.connected = self.loop.create_future()
            try:
                await self.loop.create_connection(
                    lambda: session, "127.0.0.1", port, local_addr=(self.source, 0)
                )
                await asyncio.wait_for(session.connected, 30)
                return
            except (OSError, ConnectionError, TimeoutError):
                session.node += 1  # the load balancer's next pick
                if session.transport is not None:
                    session.transport.abort()
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0) * random.random())
        raise RuntimeError("could not connect after 200 attempts")

    async def reconnect(self, session: SoakSession) -> None:
        await asyncio.sleep(random.random() * 0.5)  # jittered, as clients do
        with contextlib.suppress(RuntimeError):
            await self.open(session)


async def run_loader(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    ports = [int(p) for p in args.ports.split(",")]
    handshakes = {p: HANDSHAKE.format(path="/connection/websocket", port=p).encode() for p in ports}
    loader = SoakLoader(loop, handshakes, ports, args.source)
    sessions = [
        SoakSession(loader, f"soak:{(args.first + i) % args.channels}") for i in range(args.count)
    ]
    for i, session in enumerate(sessions):
        session.node = args.first + i
    semaphore = asyncio.Semaphore(100)

    async def first(session: SoakSession) -> None:
        async with semaphore:
            with contextlib.suppress(RuntimeError):  # counted as never subscribed
                await loader.open(session)

    await asyncio.gather(*(first(s) for s in sessions))
    print(json.dumps({"ready": len(sessions)}), flush=True)
    # The parent sends the acknowledged publications once publishing and draining are over.
    line = await loop.run_in_executor(None, sys.stdin.readline)
    loader.stopping = True
    acked: dict[str, list[list[object]]] = json.loads(line)
    lost = duplicated = delivered = unsubscribed = 0
    for session in sessions:
        if session.start is None:
            unsubscribed += 1
            continue
        start_offset, start_epoch = session.start
        delivered += sum(session.received.values())
        duplicated += sum(n - 1 for n in session.received.values() if n > 1)
        for offset, epoch in acked.get(session.channel, []):
            assert isinstance(offset, int) and isinstance(epoch, str)
            if epoch == start_epoch and offset <= start_offset:
                continue  # published before this session subscribed
            if (epoch, offset) not in session.received:
                lost += 1
    report = {
        "delivered": delivered,
        "lost": lost,
        "duplicated": duplicated,
        "drops": loader.drops,
        "subscribe_errors": loader.subscribe_errors,
        "unsubscribed": unsubscribed,
        "outcomes": dict(loader.outcomes),
        "duplicate_examples": loader.duplicate_examples,
    }
    print(json.dumps(report), flush=True)
    for session in sessions:
        if session.transport is not None:
            session.transport.close()


# ------------------------------------------------------------------ parent


@dataclass
class Services:
    workdir: Path
    redis_port: int = field(default_factory=free_port)
    nats_port: int = field(default_factory=free_port)
    redis: subprocess.Popen[bytes] | None = None
    nats: subprocess.Popen[bytes] | None = None

    def start_redis(self) -> None:
        redis_server = shutil.which("redis-server")
        if redis_server is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.redis = subprocess.Popen(
            [
                redis_server,
                *("--port", str(self.redis_port), "--bind", "127.0.0.1"),
                *("--dir", str(self.workdir), "--save", ""),
                *("--appendonly", "yes", "--appendfsync", "always"),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_port(self.redis_port)

    def start_nats(self) -> None:
        self.nats = subprocess.Popen(
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.nats_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.nats_port)

    @staticmethod
    def stop(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_port(port: int, seconds: float = 20) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def start_node(port: int, services: Services, config: Path) -> subprocess.Popen[bytes]:
    redis_url = f"redis://127.0.0.1:{services.redis_port}/0"
    command = [
        sys.executable,
        *("-m", "tether", "serve", "--port", str(port), "--allow-anonymous"),
        *("--api-key", API_KEY, "--config", str(config)),
        *("--broker", f"nats://127.0.0.1:{services.nats_port}"),
        *("--history", redis_url, "--presence", redis_url),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
    wait_port(port, 30)
    return proc


async def publish(port: int, channel: str, seq: int) -> tuple[int, str] | None:
    """POST /api/publish; the acknowledged (offset, epoch), or None if refused or failed."""
    body = json.dumps({"channel": channel, "data": {"seq": seq}}).encode()
    head = (
        f"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: apikey {API_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(head + body)
        response = await asyncio.wait_for(reader.read(), 10)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    status_line, _, rest = response.partition(b"\r\n")
    if b" 200 " not in status_line + b" ":
        return None
    answer = json.loads(rest.partition(b"\r\n\r\n")[2] or b"{}")
    return int(answer["offset"]), str(answer["epoch"])


@dataclass
class Run:
    acked: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    refused: int = 0
    events: list[str] = field(default_factory=list)
    rss: list[tuple[float, list[float]]] = field(default_factory=list)


async def publisher(args: argparse.Namespace, ports: list[int], run: Run, until: float) -> None:
    seq = 0
    pending: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        channel = f"soak:{n % args.channels}"
        answer = await publish(ports[n % len(ports)], channel, n)
        if answer is None:
            run.refused += 1
        else:
            run.acked.setdefault(channel, []).append(answer)

    started = time.monotonic()
    while time.monotonic() < until:
        task = asyncio.get_running_loop().create_task(one(seq))
        pending.add(task)
        task.add_done_callback(pending.discard)
        seq += 1
        # Steady rate: the n-th publication starts at n / rate seconds.
        await asyncio.sleep(max(0.0, started + seq / args.rate - time.monotonic()))
    if pending:
        await asyncio.wait(pending)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="publications per second")
    parser.add_argument("--loaders", type=int, default=2)
    parser.add_argument(
        "--down", type=float, default=5.0, help="seconds the killed node stays down"
    )
    parser.add_argument("--drain", type=float, default=15.0, help="seconds to catch up at the end")
    parser.add_argument("--loader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ports", default="", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--source", default="127.0.0.1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.loader:
        asyncio.run(run_loader(args))
        return 0
    return asyncio.run(soak(args))


async def soak(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="tether-soak-"))
    services = Services(workdir)
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        return await soak_in(args, workdir, services, nodes)
    finally:  # whatever happened, leave no server of ours running
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
        services.stop(services.redis)
        services.stop(services.nats)
        shutil.rmtree(workdir, ignore_errors=True)


async def soak_in(
    args: argparse.Namespace,
    workdir: Path,
    services: Services,
    nodes: list[subprocess.Popen[bytes]],
) -> int:
    services.start_redis()
    services.start_nats()
    config = workdir / "hub.toml"
    config.write_text(
        f'backplane_prefix = "soak{os.getpid()}"\n'
        "[channels]\nhistory_size = 100000\nhistory_ttl = 7200.0\npresence = false\n"
    )
    ports = [free_port() for _ in range(args.nodes)]
    for port in ports:
        nodes.append(start_node(port, services, config))
    run = Run()
    began = time.monotonic()

    def event(what: str) -> None:
        line = f"{time.monotonic() - began:7.1f} s  {what}"
        run.events.append(line)
        print(line, flush=True)

    event(f"redis :{services.redis_port}, nats :{services.nats_port}, nodes {ports}")
    per = -(-args.subscribers // args.loaders)
    loaders = []
    for k in range(args.loaders):
        count = min(per, args.subscribers - k * per)
        command = [
            sys.executable,
            __file__,
            *("--loader", "--ports", ",".join(map(str, ports))),
            *("--count", str(count), "--first", str(k * per)),
            *("--channels", str(args.channels), "--source", f"127.0.{k + 1}.2"),
        ]
        loaders.append(
            await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
        )
    for proc in loaders:
        assert proc.stdout is not None
        await proc.stdout.readline()
    event(f"{args.subscribers} subscribers on {args.channels} channels over {args.nodes} nodes")
    seconds = args.minutes * 60
    start = time.monotonic()
    until = start + seconds
    pub_task = asyncio.get_running_loop().create_task(publisher(args, ports, run, until))
    victim = len(nodes) - 1

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(0.0, start + fraction * seconds - time.monotonic()))

    async def sample_rss() -> None:
        while time.monotonic() < until + args.drain:
            run.rss.append((time.monotonic() - start, [rss_bytes([n.pid]) / 2**20 for n in nodes]))
            await asyncio.sleep(max(seconds / 10, 5.0))

    rss_task = asyncio.get_running_loop().create_task(sample_rss())
    await at(0.25)
    event("restarting redis-server (SIGTERM, same port and data)")
    await asyncio.to_thread(services.stop, services.redis)
    await asyncio.to_thread(services.start_redis)
    event("redis-server is back")
    await at(0.45)
    event("restarting nats-server (SIGTERM)")
    await asyncio.to_thread(services.stop, services.nats)
    await asyncio.to_thread(services.start_nats)
    event("nats-server is back")
    await at(0.65)
    event(f"SIGKILL node {victim} (port {ports[victim]})")
    nodes[victim].kill()
    await asyncio.to_thread(nodes[victim].wait)
    await asyncio.sleep(args.down)
    nodes[victim] = await asyncio.to_thread(start_node, ports[victim], services, config)
    event(f"node {victim} started again")
    await pub_task
    event(f"publishing stopped; {args.drain:g} s to catch up")
    await asyncio.sleep(args.drain)
    rss_task.cancel()
    acked_json = json.dumps(run.acked) + "\n"
    reports = []
    for proc in loaders:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(acked_json.encode())
        await proc.stdin.drain()
    for proc in loaders:
        assert proc.stdout is not None
        reports.append(json.loads(await proc.stdout.readline()))
        await proc.wait()
    for node in nodes:
        node.terminate()
    for node in nodes:
        node.wait()
    return report(args, run, reports)


def report(args: argparse.Namespace, run: Run, reports: list[dict[str, object]]) -> int:
    acked = sum(map(len, run.acked.values()))

    def total(key: str) -> int:
        return sum(int(r[key]) for r in reports)  # type: ignore[call-overload]

    outcomes: Counter[str] = Counter()
    for r in reports:
        outcomes.update(r["outcomes"])  # type: ignore[arg-type]
    lost, duplicated = total("lost"), total("duplicated")
    print()
    print(f"publications: {acked} acknowledged, {run.refused} refused or failed (not counted)")
    print(f"deliveries: {total('delivered')}; lost {lost}; duplicated {duplicated}")
    print(
        f"connections dropped by faults: {total('drops')}; reconnections: "
        + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
        + f"; subscribe errors {total('subscribe_errors')}; "
        f"never subscribed {total('unsubscribed')}"
    )
    for r in reports:
        for example in r.get("duplicate_examples", []):  # type: ignore[attr-defined]
            print(f"  duplicate: {example}")
    print("RSS of the nodes over time (MiB):")
    for t, values in run.rss:
        print(f"  {t:7.0f} s  " + "  ".join(f"{v:6.1f}" for v in values))
    print("load:", " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    ok = lost == 0 and duplicated == 0 and acked > 0
    print("PASS" if ok else "FAIL: publications were lost or duplicated")
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
