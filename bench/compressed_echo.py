"""Compressed echo throughput: tether against websockets, permessage-deflate on both.

usage: python bench/compressed_echo.py [SECONDS] [REPEAT]

Each server runs in its own process with compression on; one fixed load
generator (a websockets client offering permessage-deflate, the same for
every server) keeps one message in flight and counts round trips. The server's
own CPU time per message comes from /proc, so the figure holds even where the
client limits throughput. Payloads are JSON-like (a chat/dashboard shape), so
they compress the way real traffic does. Runs are interleaved across servers
and each cell is the median of REPEAT runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

SERVERS = {
    "tether": """
import asyncio, sys, tether
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with tether.serve(echo, "127.0.0.1", int(sys.argv[1]), max_size=None,
                            ping_interval=None, compression="deflate"):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
""",
    "websockets": """
import asyncio, sys
from websockets.asyncio.server import serve
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with serve(echo, "127.0.0.1", int(sys.argv[1]), max_size=None,
                     ping_interval=None, compression="deflate"):
        print("ready", flush=True)
        await asyncio.Future()
asyncio.run(main())
""",
}


def json_payload(size: int) -> str:
    """A JSON array of chat-like records, about ``size`` bytes."""
    rng = random.Random(size)
    words = ["alpha", "beta", "gamma", "delta", "status", "online", "message", "room", "user"]
    records = []
    text = "[]"
    while len(text) < size:
        records.append(
            {
                "id": rng.randrange(10**9),
                "user": f"user-{rng.randrange(1000)}",
                "room": rng.choice(words),
                "text": " ".join(rng.choice(words) for _ in range(rng.randrange(3, 12))),
                "ts": 1700000000 + rng.randrange(10**6),
            }
        )
        text = json.dumps(records)
    return text[:size] if len(text) > size else text


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(port: int, payload: str, seconds: float, pid: int) -> tuple[float, float]:
    from websockets.asyncio.client import connect

    async with connect(f"ws://127.0.0.1:{port}/", compression="deflate", max_size=None) as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions", "").startswith(
            "permessage-deflate"
        ), "compression was not negotiated"
        for _ in range(20):  # warm up
            await ws.send(payload)
            await ws.recv()
        count = 0
        start, cpu0 = time.perf_counter(), cpu_seconds(pid)
        deadline = start + seconds
        while time.perf_counter() < deadline:
            await ws.send(payload)
            echoed = await ws.recv()
            count += 1
        elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu0
        assert echoed == payload
    return count / elapsed, cpu * 1e6 / count


def run_one(name: str, port: int, payload: str, seconds: float) -> tuple[float, float]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVERS[name], str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "ready" not in line:
            raise RuntimeError(f"{name} did not start: {line!r}")
        return asyncio.run(drive(port, payload, seconds, proc.pid))
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    repeat = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    sizes = [1024, 65536]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    port = 9400
    for size in sizes:
        payload = json_payload(size)
        for _ in range(repeat):
            for name in SERVERS:
                port += 1
                results.setdefault((name, size), []).append(run_one(name, port, payload, seconds))
    print("| workload | tether | websockets | ratio |")
    print("|---|---|---|---|")
    for size in sizes:
        t_rate = statistics.median(r for r, _ in results[("tether", size)])
        w_rate = statistics.median(r for r, _ in results[("websockets", size)])
        t_cpu = statistics.median(c for _, c in results[("tether", size)])
        w_cpu = statistics.median(c for _, c in results[("websockets", size)])
        label = f"{size // 1024} KiB JSON"
        print(f"| round trips/s, {label} | {t_rate:.0f} | {w_rate:.0f} | {t_rate / w_rate:.2f}x |")
        print(
            f"| server CPU us/msg, {label} | {t_cpu:.1f} | {w_cpu:.1f} | "
            f"{w_cpu / t_cpu:.2f}x less |"
        )


if __name__ == "__main__":
    main()
