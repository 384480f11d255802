"""Idle hub sessions at scale: how many, how fast, how much memory, how responsive.

Starts ``tether serve`` (or uses ``--url``), then opens ``--sessions`` hub
sessions from ``--loaders`` loader processes. Each session does the WebSocket
upgrade and one ``connect`` command that subscribes it to a channel, answers
the server's keepalive Pings, and otherwise idles. Reported:

- accept rate: sessions fully subscribed per second, from the first
  connection attempt to the last subscribe reply (``--in-flight`` attempts at
  a time per loader);
- memory per session: the server's RSS growth (all workers summed) divided
  by the sessions added;
- responsiveness while idle: the server's CPU use and the latency of
  ``GET /metrics`` every second for ``--idle`` seconds;
- ``uptime``'s load at the end (the machine is shared).

A process may hold 20,000 open files here, and one source address gives
about 28,000 ports towards one server port, so the loaders split the sessions
between them and each rotates over loopback source addresses (127.0.0.2, …).
The loader's client is a minimal raw WebSocket client (one unmasked-key
frame out, Pong answers), so the generator costs far less than the server.

    python bench/hub_conns.py --sessions 19900 --loaders 2
    python bench/hub_conns.py --sessions 100000 --loaders 6 --workers 2 --broker redis://...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
PORTS_PER_SOURCE = 25_000  # of the ~28,000 ephemeral ports (32768-60999)
HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tether.v1\r\n\r\n"
)


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame with the all-zero key (the payload is sent as is)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    else:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


class IdleSession(asyncio.Protocol):
    """Upgrade, connect+subscribe, then idle answering Pings."""

    def __init__(self, loader: Loader, channel: str) -> None:
        self.loader = loader
        self.channel = channel
        self.buf = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = loader.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.loader.handshake)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        buf = self.buf + data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self._fail(buf[: buf.find(b"\r\n")].decode(errors="replace"))
                return
            self.upgraded = True
            buf = buf[end + 4 :]
            command = {"id": 1, "method": "connect", "params": {"subs": {self.channel: None}}}
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
            if opcode == 9:
                self.loader.pings += 1
                self.transport.write(client_frame(10, payload))
            elif opcode == 8:
                self.loader.closed_by_server += 1
                self.transport.close()
            elif opcode == 1 and not self.done.done():
                message = json.loads(payload)
                if message.get("id") == 1:
                    sub = message.get("result", {}).get("subs", {}).get(self.channel, {})
                    if "error" in message or "error" in sub:
                        self._fail(json.dumps(message)[:200])
                    else:
                        self.done.set_result(None)
        self.buf = buf

    def _fail(self, why: str) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(why))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.loader.lost += 1
        self._fail(f"connection lost: {exc}")


@dataclass
class Loader:
    loop: asyncio.AbstractEventLoop
    handshake: bytes
    pings: int = 0
    lost: int = 0
    closed_by_server: int = 0
    sessions: list[IdleSession] = field(default_factory=list)


async def run_loader(args: argparse.Namespace) -> None:
    """One loader process: open ``--count`` sessions, report, idle until stdin closes."""
    loop = asyncio.get_running_loop()
    loader = Loader(loop, HANDSHAKE.format(path=args.path, port=args.port).encode())
    sources = args.sources.split(",")
    semaphore = asyncio.Semaphore(args.in_flight)
    errors: list[str] = []

    async def one(i: int) -> None:
        source = sources[(i // PORTS_PER_SOURCE) % len(sources)]
        channel = f"{args.channel_prefix}{(args.first + i) % args.channels}"
        async with semaphore:
            try:
                _, proto = await loop.create_connection(
                    lambda: IdleSession(loader, channel),
                    "127.0.0.1",
                    args.port,
                    local_addr=(source, 0),
                )
                await asyncio.wait_for(proto.done, 60)
                loader.sessions.append(proto)
            except (OSError, RuntimeError, TimeoutError) as exc:
                errors.append(str(exc))

    started = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(args.count)))
    elapsed = time.monotonic() - started
    report = {"ok": len(loader.sessions), "errors": len(errors), "seconds": elapsed}
    if errors:
        report["first_error"] = errors[0][:200]
    print(json.dumps(report), flush=True)
    # Idle until the parent closes our stdin, then say how the idle went.
    await loop.run_in_executor(None, sys.stdin.read)
    print(
        json.dumps({"pings": loader.pings, "lost": loader.lost, "closed": loader.closed_by_server}),
        flush=True,
    )


# ------------------------------------------------------------------ parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_pids(root: int) -> list[int]:
    """``root`` and its descendants (the workers of ``--workers``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            pass
    return total


def get_metrics(port: int, timeout: float = 3.0) -> tuple[float | None, str]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            body = r.read().decode()
    except OSError as exc:
        return None, str(exc)
    return time.monotonic() - started, body


def metric(body: str, name: str) -> float:
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_listening(port: int, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        latency, _ = get_metrics(port, 1.0)
        if latency is not None:
            return
        time.sleep(0.1)
    raise SystemExit("server did not start")


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    tether = shutil.which("tether", path=str(Path(sys.executable).parent)) or "tether"
    command = [tether, "serve", "--allow-anonymous", "--port", str(port)]
    if args.workers != "1":
        command += ["--workers", str(args.workers)]
    if args.broker:
        command += ["--broker", args.broker]
    if args.broker:
        # Our own key prefix on a shared Redis; presence off unless asked for
        # (each session's join would be a write to the shared server).
        config = Path(tempfile.mkdtemp(prefix="hub-conns-")) / "hub.toml"
        config.write_text(
            f'backplane_prefix = "benchconns{port}"\n'
            f"[channels]\npresence = {'true' if args.presence else 'false'}\n"
        )
        command += ["--config", str(config)]
    command += args.server_arg
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=19_900)
    parser.add_argument("--loaders", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=200, help="attempts at a time per loader")
    parser.add_argument("--channels", type=int, default=0, help="distinct channels (0: one each)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds to idle and watch")
    parser.add_argument("--workers", default="1", help="tether serve --workers")
    parser.add_argument("--broker", default="", help="tether serve --broker")
    parser.add_argument(
        "--presence", action="store_true", help="with --broker: keep presence on (default off)"
    )
    parser.add_argument("--server-arg", action="append", default=[], help="extra serve argument")
    parser.add_argument("--port", type=int, default=0, help="use a running server on this port")
    parser.add_argument("--server-pid", type=int, default=0, help="its pid, for RSS and CPU")
    # Loader mode (internal).
    parser.add_argument("--loader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sources", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="/connection/websocket", help=argparse.SUPPRESS)
    parser.add_argument("--channel-prefix", default="idle:", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.loader:
        asyncio.run(run_loader(args))
        return 0
    channels = args.channels or args.sessions
    port = args.port or free_port()
    server = None
    if not args.port:
        server = start_server(args, port)
        wait_listening(port, server)
    root = server.pid if server is not None else args.server_pid
    # Let the workers come up before measuring the baseline.
    time.sleep(1.0)
    pids = group_pids(root) if root else []
    base_rss = rss_bytes(pids)
    base_cpu = cpu_seconds(pids)
    per_loader = -(-args.sessions // args.loaders)
    loaders = []
    for k in range(args.loaders):
        count = min(per_loader, args.sessions - k * per_loader)
        # Each loader gets its own source addresses: 127.0.(k+1).2, .3, ...
        sources = ",".join(f"127.0.{k + 1}.{2 + s}" for s in range(4))
        command = [
            sys.executable,
            __file__,
            "--loader",
            "--count",
            str(count),
            "--first",
            str(k * per_loader),
            "--port",
            str(port),
            "--in-flight",
            str(args.in_flight),
            "--channels",
            str(channels),
            "--sources",
            sources,
        ]
        loaders.append(
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )
    started = time.monotonic()
    reports = []
    for proc in loaders:
        assert proc.stdout is not None
        reports.append(json.loads(proc.stdout.readline()))
    accept_seconds = time.monotonic() - started
    ok = sum(r["ok"] for r in reports)
    errors = sum(r["errors"] for r in reports)
    pids = group_pids(root) if root else []
    rss = rss_bytes(pids)
    accept_cpu = cpu_seconds(pids) - base_cpu
    print(f"sessions: {ok} of {args.sessions} ({errors} failed)", flush=True)
    for r in reports:
        if "first_error" in r:
            print(f"  first error: {r['first_error']}")
    print(
        f"accept: {accept_seconds:.1f} s, {ok / accept_seconds:,.0f} sessions/s; server CPU "
        f"{accept_cpu / max(ok, 1) * 1e6:.0f} us per session "
        f"(= {ok / max(accept_cpu, 1e-9):,.0f} sessions/s per busy core)"
    )
    if pids:
        print(
            f"server RSS: {base_rss / 2**20:.1f} -> {rss / 2**20:.1f} MiB, "
            f"{(rss - base_rss) / max(ok, 1) / 1024:.1f} KiB per session"
        )
    # Idle: watch CPU and /metrics.
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    latencies: list[float] = []
    failures = 0
    sessions_seen = 0.0
    while time.monotonic() - t0 < args.idle:
        tick = time.monotonic()
        latency, body = get_metrics(port)
        if latency is None:
            failures += 1
        else:
            latencies.append(latency)
            sessions_seen = metric(body, "tether_connections")
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    idle_seconds = time.monotonic() - t0
    cpu = (cpu_seconds(pids) - cpu0) / idle_seconds * 100
    for proc in loaders:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
    idle_reports = []
    for proc in loaders:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        idle_reports.append(json.loads(line) if line else {})
        proc.wait()
    lat = sorted(latencies)
    print(
        f"idle {idle_seconds:.0f} s: server CPU {cpu:.0f}%, /metrics "
        + (
            f"p50 {lat[len(lat) // 2] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"
            if lat
            else "never answered"
        )
        + f", {failures} failed; tether_connections {sessions_seen:.0f}"
    )
    print(
        "loaders during idle: "
        f"pings {sum(r.get('pings', 0) for r in idle_reports)}, "
        f"lost {sum(r.get('lost', 0) for r in idle_reports)}"
    )
    print("load:", Path("/proc/loadavg").read_text().split()[:3], flush=True)
    if server is not None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    return 0 if ok == args.sessions and failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
