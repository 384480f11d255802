"""Round trips per second of the sync APIs: tether.sync against websockets.sync, same run.

usage: python bench/sync_rtt.py [--duration S] [--repeat N] [--sizes 64,4096]

Each server (``bench/sync_peer.py``, no compression, no size limit, no
keepalive) runs as its own process on a free port; the client runs in this
process with the same library's sync client, one message in flight. The
pairs are tether client → tether server and websockets client → websockets
server (what a user of either library gets), plus the two crossed pairs,
which say which side the difference comes from. Cells are the median of
``--repeat`` runs, interleaved across pairs. Besides round trips per second
the server's CPU time per round trip is read from ``/proc`` (it holds even
when the machine is busy). The load average is printed with the table:
only ratios within one run count.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PAIRS = [
    ("tether", "tether"),
    ("websockets", "websockets"),
    ("tether", "websockets"),
    ("websockets", "tether"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_connect(library: str) -> Any:
    if library == "tether":
        from tether.sync.client import connect
    else:
        from websockets.sync.client import connect
    return connect


def run_pair(client: str, server: str, size: int, duration: float) -> tuple[float, float]:
    """(round trips per second, server CPU microseconds per round trip)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "sync_peer.py"), server, "echo", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"{server} peer did not start: {line!r}")
        connect = client_connect(client)
        message = b"x" * size
        with connect(
            f"ws://127.0.0.1:{port}/", compression=None, max_size=None, ping_interval=None
        ) as ws:
            for _ in range(200):  # warm up
                ws.send(message)
                ws.recv()
            cpu0 = cpu_seconds(proc.pid)
            count = 0
            start = time.perf_counter()
            end = start + duration
            while True:
                for _ in range(100):
                    ws.send(message)
                    ws.recv()
                count += 100
                now = time.perf_counter()
                if now >= end:
                    break
            cpu = cpu_seconds(proc.pid) - cpu0
        return count / (now - start), cpu / count * 1e6
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="64,4096")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rates: dict[tuple[str, str, int], list[float]] = {}
    cpus: dict[tuple[str, str, int], list[float]] = {}
    loads = [os.getloadavg()[0]]
    for size in sizes:
        for rep in range(args.repeat):
            for client, server in PAIRS:
                rate, cpu = run_pair(client, server, size, args.duration)
                rates.setdefault((client, server, size), []).append(rate)
                cpus.setdefault((client, server, size), []).append(cpu)
                print(
                    f"{client:>10} -> {server:<10} {size:>6} B run {rep + 1}: "
                    f"{rate:8.0f} rt/s, server {cpu:6.1f} us CPU/rt",
                    flush=True,
                )
    loads.append(os.getloadavg()[0])
    print()
    print(f"load average (1 min) {loads[0]:.2f} at start, {loads[1]:.2f} at end")
    header = "| size | " + " | ".join(f"{c} → {s}" for c, s in PAIRS)
    print(header + " | tether/websockets |")
    print("|---" * (len(PAIRS) + 2) + "|")
    for size in sizes:
        med = {pair: statistics.median(rates[(*pair, size)]) for pair in PAIRS}
        ratio = med[("tether", "tether")] / med[("websockets", "websockets")]
        cells = " | ".join(f"{med[pair]:,.0f} rt/s" for pair in PAIRS)
        print(f"| {size} B | {cells} | {ratio:.2f} |")
    for size in sizes:
        med = {pair: statistics.median(cpus[(*pair, size)]) for pair in PAIRS}
        ratio = med[("websockets", "websockets")] / med[("tether", "tether")]
        cells = " | ".join(f"{med[pair]:.1f} us" for pair in PAIRS)
        print(f"| {size} B server CPU/rt | {cells} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
