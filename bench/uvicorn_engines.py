"""uvicorn's WebSocket engines against tether's, in one run: round trips, pipelining, server CPU.

usage: python bench/uvicorn_engines.py [--seconds 3] [--repeat 3] [--app raw|starlette]
           [--engines tether,websockets-sansio,websockets,wsproto]

Every engine serves the same echo app (bench/uvicorn_echo_app.py) under the
same uvicorn (``--loop uvloop --http httptools`` when installed, no access
log), each in its own child process started fresh for each repeat, engines
interleaved so a change in the machine's load hits them all alike. The load
generator is one fixed client, picows on uvloop (the client of the shared
harness), in this process:

* ``rtt``: one connection, one 64-byte binary message in flight: round trips/s;
* ``pipe``: one connection, 64 messages of 64 bytes in flight: messages/s;
* ``CPU us/msg``: the server process's user+system CPU time (from /proc)
  over the messages it echoed in that phase.

Prints one Markdown table of medians with the ratio of tether to the best of
uvicorn's own engines, and the machine's load average before and after.
Needs ``pip install -e '.[bench]'`` (uvicorn, httptools, wsproto, Starlette, picows, uvloop).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
ENGINES = {
    "tether": "tether.uvicorn:WebSocketProtocol",
    "websockets-sansio": "websockets-sansio",
    "websockets": "websockets",
    "wsproto": "wsproto",
}
SIZE = 64
DEPTH = 64


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_uvicorn(engine: str, app: str, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "uvicorn", f"uvicorn_echo_app:{app}", "--app-dir", str(HERE)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--ws", ENGINES[engine]]
    cmd += ["--no-access-log", "--log-level", "warning", "--lifespan", "off"]
    for module, option in (("uvloop", "--loop"), ("httptools", "--http")):
        try:
            __import__(module)
        except ImportError:
            continue
        cmd += [option, module]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"uvicorn --ws {ENGINES[engine]} did not start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)


async def measure(port: int, pid: int, depth: int, seconds: float) -> tuple[float, float]:
    """``depth`` messages in flight on one connection: (messages/s, server CPU us/message)."""
    from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

    class Counter(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.n = 0
            self.waiter: asyncio.Future[None] | None = None

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is WSMsgType.BINARY:
                self.n += 1
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)

    transport, listener = await ws_connect(
        Counter, f"ws://127.0.0.1:{port}/", enable_auto_pong=True
    )
    loop = asyncio.get_running_loop()
    payload = os.urandom(SIZE)
    sent = 0

    async def run_for(duration: float) -> None:
        nonlocal sent
        deadline = time.perf_counter() + duration
        while True:
            while sent - listener.n < depth:
                transport.send(WSMsgType.BINARY, payload)
                sent += 1
            listener.waiter = loop.create_future()
            await listener.waiter
            if time.perf_counter() >= deadline:
                return

    await run_for(min(1.0, seconds / 3))  # warm-up
    start, cpu0, done0 = time.perf_counter(), server_cpu(pid), listener.n
    await run_for(seconds)
    elapsed, cpu, done = time.perf_counter() - start, server_cpu(pid) - cpu0, listener.n - done0
    transport.send_close(WSCloseCode.OK)
    transport.disconnect()
    return done / elapsed, cpu * 1e6 / done


def run_engine(engine: str, app: str, seconds: float) -> dict[str, float]:
    import uvloop

    port = free_port()
    proc = start_uvicorn(engine, app, port)
    try:
        rtt, rtt_cpu = uvloop.run(measure(port, proc.pid, 1, seconds))
        pipe, pipe_cpu = uvloop.run(measure(port, proc.pid, DEPTH, seconds))
    finally:
        proc.terminate()
        proc.wait(30)
    return {"rtt": rtt, "rtt_cpu": rtt_cpu, "pipe": pipe, "pipe_cpu": pipe_cpu}


ROWS = (
    ("rtt", "round trips/s (64 B, 1 in flight)", True),
    ("pipe", f"messages/s (64 B, {DEPTH} in flight)", True),
    ("rtt_cpu", "server CPU us/msg, round trips", False),
    ("pipe_cpu", "server CPU us/msg, pipelined", False),
)


def table(medians: dict[str, dict[str, float]], engines: Sequence[str]) -> str:
    peers = [e for e in engines if e != "tether"]
    head = ["workload", *engines]
    if "tether" in engines and peers:
        head += ["best uvicorn engine", "tether / best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, higher_is_better in ROWS:
        cells = [label]
        for engine in engines:
            value = medians[engine][key]
            cells.append(f"{value:,.0f}" if higher_is_better else f"{value:.1f}")
        if "tether" in engines and peers:
            pick = max if higher_is_better else min
            best = pick(peers, key=lambda e: medians[e][key])
            ratio = medians["tether"][key] / medians[best][key]
            cells += [best, f"{ratio:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--app", choices=["raw", "starlette"], default="raw")
    parser.add_argument("--engines", default=",".join(ENGINES))
    args = parser.parse_args(argv)
    engines = args.engines.split(",")
    app = "app" if args.app == "raw" else "starlette_app"
    import uvicorn

    print(f"uvicorn {uvicorn.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(f"load average before: {os.getloadavg()}")
    runs: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    for repeat in range(args.repeat):
        for engine in engines:
            result = run_engine(engine, app, args.seconds)
            runs[engine].append(result)
            cells = " ".join(f"{k}={v:,.1f}" for k, v in result.items())
            print(f"run {repeat + 1} {engine}: {cells}", flush=True)
    print(f"load average after: {os.getloadavg()}")
    medians = {
        e: {k: statistics.median(r[k] for r in runs[e]) for k in runs[e][0]} for e in engines
    }
    print()
    print(table(medians, engines))


if __name__ == "__main__":
    main()
