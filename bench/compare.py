"""tether against websockets, measured with ``tether bench``'s engine, all from a clone.

usage: python bench/compare.py [--duration S] [--repeat N] [--peers a,b,...]
                              [--workloads word,...] [--json]

Needs nothing outside this repository: ``pip install -e '.[test,speed]'``
brings websockets and uvloop. Each peer is a server process started here
(bench/tether_peer.py, bench/tether_listener_peer.py, bench/websockets_peer.py,
and tether-pure: tether_peer.py with TETHER_NO_SPEEDUPS=1), one workload at a
time, on a free port; the load comes from this process (tether's client,
:func:`tether.cli.bench_engine.run_workload`, on uvloop when installed).

Each cell is the median of ``--repeat`` runs, interleaved across peers (A B C,
A B C, ...) so a machine that slows down for a while slows every peer alike.
Besides messages/s it reports the server's CPU time per message (user +
system, read from /proc on Linux): that figure does not depend on how fast
the one load generator is, which is what limits the small-message rows here.
For the comparison with picows and Node's ws as load generator and peers,
see the shared harness in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
from dataclasses import dataclass

from tether.cli import loop
from tether.cli.bench_engine import Workload, run_workload

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS = {
    "tether": [sys.executable, os.path.join(HERE, "tether_peer.py")],
    "tether-listener": [sys.executable, os.path.join(HERE, "tether_listener_peer.py")],
    "tether-pure": [sys.executable, os.path.join(HERE, "tether_peer.py")],
    "websockets": [sys.executable, os.path.join(HERE, "websockets_peer.py")],
}
PEER_ENV = {"tether-pure": {"TETHER_NO_SPEEDUPS": "1"}}


@dataclass(frozen=True)
class Row:
    label: str
    server_mode: str  # what the peer runs: echo or fanout
    workload: Workload


def rows(duration: float) -> list[Row]:
    return [
        Row("rtt 64B", "echo", Workload("rtt", 64, duration)),
        Row("rtt 4KiB", "echo", Workload("rtt", 4096, duration)),
        Row("rtt 256KiB", "echo", Workload("rtt", 256 * 1024, duration)),
        Row("pipe64 64B", "echo", Workload("pipeline", 64, duration, in_flight=64)),
        Row("rtt 64B x50 conns", "echo", Workload("rtt", 64, duration, connections=50)),
        Row("fanout 200x200 64B", "fanout", Workload("fanout", 64, duration, connections=200)),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_peer(name: str, mode: str, port: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*PEERS[name], mode, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **PEER_ENV.get(name, {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "ready" not in line:
        process.kill()
        raise SystemExit(f"{name} did not start ({line!r})")
    return process


async def measure(name: str, row: Row) -> tuple[float, float | None]:
    """One run: (messages/s, server CPU microseconds per message or None)."""
    port = free_port()
    process = start_peer(name, row.server_mode, port)
    try:
        before = cpu_seconds(process.pid)
        result = await run_workload(f"ws://127.0.0.1:{port}/", row.workload)
        after = cpu_seconds(process.pid)
    finally:
        process.terminate()
        process.wait()
    cpu = None
    if before is not None and after is not None and result.messages:
        cpu = (after - before) * 1e6 / result.messages
    return result.messages_per_second, cpu


async def compare(names: list[str], repeat: int, chosen: list[Row]) -> dict[str, dict[str, float]]:
    samples: dict[tuple[str, str], list[float]] = {}
    for row in chosen:
        for run in range(repeat):
            for name in names:
                rate, cpu = await measure(name, row)
                samples.setdefault((row.label, name), []).append(rate)
                if cpu is not None:
                    samples.setdefault((row.label + " srv CPU us/msg", name), []).append(cpu)
                shown = f"{rate:,.0f} msgs/s" + (f", {cpu:.1f} us server CPU/msg" if cpu else "")
                print(f"{name:16s} {row.label:20s} run {run + 1}: {shown}", file=sys.stderr)
    table: dict[str, dict[str, float]] = {}
    for (label, name), values in samples.items():
        table.setdefault(label, {})[name] = statistics.median(values)
    return table


def markdown(table: dict[str, dict[str, float]], names: list[str]) -> str:
    reference = "websockets" if "websockets" in names else names[-1]
    others = [n for n in names if n != reference]
    head = ["workload", *names, *(f"{n} / {reference}" for n in others)]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    ordered = [label for label in table if "CPU" not in label]
    ordered += [label for label in table if "CPU" in label]
    for label in ordered:
        cells = table[label]
        lower_is_better = "CPU" in label
        values = [f"{cells[n]:,.0f}" if cells[n] >= 100 else f"{cells[n]:.2f}" for n in names]
        ratios = []
        for name in others:
            ratio = (
                cells[reference] / cells[name]
                if lower_is_better
                else cells[name] / cells[reference]
            )
            ratios.append(f"{ratio:.2f}")
        lines.append("| " + " | ".join([label, *values, *ratios]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell (median)")
    parser.add_argument("--peers", default="tether,tether-listener,tether-pure,websockets")
    parser.add_argument(
        "--workloads", default="", help="only rows whose label contains one of these words"
    )
    parser.add_argument("--json", action="store_true", help="the medians as JSON")
    args = parser.parse_args()
    names = [n for n in args.peers.split(",") if n]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}: choose from {', '.join(PEERS)}")
    words = [w for w in args.workloads.split(",") if w]
    chosen = [r for r in rows(args.duration) if not words or any(w in r.label for w in words)]
    table = loop.run(compare(names, args.repeat, chosen), loop.choose("auto"))
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        print(markdown(table, names))


if __name__ == "__main__":
    main()
