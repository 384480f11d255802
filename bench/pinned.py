"""The shared harness's load generator against a few peers, with the CPUs pinned.

usage: N=5 VENV/bin/python bench/pinned.py "rtt 4096 2" echo picows,tether,tether-listener

The shared run.py lets the scheduler place the server and the load generator;
on a 2-vCPU VM whether they share a CPU moves a round-trip cell by 10-20%.
Here the server runs on CPU 1 and the load generator on CPU 0 (``taskset``),
runs are interleaved across peers, and each peer's median of N runs is printed
with every run's value, so the spread is visible. Same peers and load
generator as ``bench/run_harness.py`` (``../shared/bench``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.abspath(
    os.environ.get("TETHER_SHARED_BENCH", os.path.join(HERE, "..", "..", "shared", "bench"))
)
PY = sys.executable
PEERS = {
    "picows": [PY, f"{SHARED}/peers/picows_peer.py"],
    "websockets": [PY, f"{SHARED}/peers/websockets_peer.py"],
    "aiohttp": [PY, f"{SHARED}/peers/aiohttp_peer.py"],
    "node-ws": ["node", f"{SHARED}/peers/node_ws_peer.js"],
    "tether": [PY, f"{HERE}/tether_peer.py"],
    "tether-listener": [PY, f"{HERE}/tether_listener_peer.py"],
    "tether-pure": ["env", "TETHER_NO_SPEEDUPS=1", PY, f"{HERE}/tether_peer.py"],
}


def measure(cmd: list[str], mode: str, port: int, args: list[str]) -> tuple[float, float]:
    """One run: (rate, server CPU µs per message)."""
    server = subprocess.Popen(
        ["taskset", "-c", "1", *cmd, mode, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        if "ready" not in server.stdout.readline():
            raise RuntimeError(f"{cmd} did not start")
        out = subprocess.run(
            ["taskset", "-c", "0", PY, f"{SHARED}/load.py", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "PORT": str(port), "SERVER_PID": str(server.pid)},
            timeout=600,
        )
        fields = out.stdout.split()
        return float(fields[0]), float(fields[1]) if len(fields) > 1 else 0.0
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    args, mode, names = sys.argv[1].split(), sys.argv[2], sys.argv[3].split(",")
    runs = int(os.environ.get("N", "5"))
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    port = 9300
    for _ in range(runs):
        for name in names:
            port += 1
            results[name].append(measure(PEERS[name], mode, port, args))
    print(f"{' '.join(args)} ({mode}), median of {runs}, server on CPU 1, load on CPU 0")
    for name in names:
        rates = [rate for rate, _ in results[name]]
        cpus = [cpu for _, cpu in results[name]]
        print(
            f"{name:16s} rate {statistics.median(rates):10.1f}  "
            f"cpu {statistics.median(cpus):8.2f} us/msg   "
            f"rates {[round(r) for r in rates]} cpus {[round(c, 1) for c in cpus]}"
        )


if __name__ == "__main__":
    main()
