"""Presence at scale: many clients joining one channel at once, then leaving at once.

usage: python bench/presence.py [CLIENTS] [BROKER_URL]   (TETHER_BENCH_SINGLE=1: no batches)

One ``tether serve`` process (in memory, or on BROKER_URL: Redis for broker,
history and presence); this process opens CLIENTS WebSocket clients and a
watcher, then for each of three namespaces:

- ``full``: presence with join/leave pushes (the default),
- ``count``: ``presence_count_only = true`` (no pushes, ``presence_stats`` only),
- ``off``: ``presence = false``,

subscribes every client at once and reports the time until the last reply
and until the watcher (subscribed first) has seen every join; then every
client disconnects at once, and it reports the time until the watcher has
seen every leave, the leaves missing after 30 s, and the node's "could not
remove presence" warnings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from backplane import cleanup, start_node

import tether

# TETHER_BENCH_NAMESPACES=full,off picks some (an older tether has no count-only mode).
NAMESPACES = (os.environ.get("TETHER_BENCH_NAMESPACES") or "full,count,off").split(",")
# Clients take ``presence`` pushes (as tether's clients do); TETHER_BENCH_SINGLE=1: one
# join or leave push each, as older clients.
BATCHES = not os.environ.get("TETHER_BENCH_SINGLE")


async def client(port: int) -> tether.ClientConnection:
    ws = await tether.connect(
        f"ws://127.0.0.1:{port}/connection/websocket", subprotocols=["tether.v1"], compression=None
    )
    params = {"presence_batches": BATCHES}
    await ws.send(json.dumps({"id": 1, "method": "connect", "params": params}))
    await ws.recv()
    return ws


async def subscribe(ws: tether.ClientConnection, channel: str) -> None:
    await ws.send(json.dumps({"id": 2, "method": "subscribe", "params": {"channel": channel}}))
    while '"id":2' not in str(await ws.recv()):
        pass


async def count_pushes(ws: tether.ClientConnection, kind: str, n: int, seen: list[int]) -> None:
    marker = f'{{"push":"{kind}"'
    while seen[0] < n:
        message = str(await ws.recv())
        if message.startswith(marker):
            seen[0] += 1
        elif message.startswith('{"push":"presence"'):
            seen[0] += sum(change == kind for change, _ in json.loads(message)["changes"])


async def one_namespace(port: int, clients: int, namespace: str) -> dict[str, float]:
    channel = f"{namespace}:room-{uuid.uuid4().hex[:6]}"
    watcher = await client(port)
    await subscribe(watcher, channel)
    members = await asyncio.gather(*(client(port) for _ in range(clients)))
    expect = clients if namespace == "full" else 0
    joins = [0]
    counting = asyncio.ensure_future(count_pushes(watcher, "join", expect, joins))
    start = time.perf_counter()
    await asyncio.gather(*(subscribe(ws, channel) for ws in members))
    replied = time.perf_counter() - start
    await asyncio.wait_for(counting, 60)
    joined = time.perf_counter() - start
    leaves = [0]
    counting = asyncio.ensure_future(count_pushes(watcher, "leave", expect, leaves))
    start = time.perf_counter()
    for ws in members:
        ws.transport.abort()  # type: ignore[union-attr]  # every client gone in one go
    with contextlib.suppress(asyncio.TimeoutError):  # counted as missing below
        await asyncio.wait_for(counting, 30)
    left = time.perf_counter() - start
    await watcher.close()
    return {"replied": replied, "joined": joined, "left": left, "missing": expect - leaves[0]}


async def main() -> None:
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    broker = sys.argv[2] if len(sys.argv) > 2 else ""
    prefix = "bench" + uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "hub.toml"
        config.write_text(
            f'backplane_prefix = "{prefix}"\n'
            "[limits]\nmax_subscriptions = 8\n"
            "[namespaces.full]\npresence = true\n"
            "[namespaces.off]\npresence = false\n"
            + ("[namespaces.count]\npresence_count_only = true\n" if "count" in NAMESPACES else "")
        )
        args = ["--broker", broker] if broker else []
        log: list[str] = []
        process, port = await start_node(args, config, log)
        try:
            print(
                f"{clients} clients, {'one node on ' + broker if broker else 'one node in memory'}"
            )
            print(
                "| presence | all subscribed | watcher saw every join | watcher saw every leave "
                "| leaves missing |"
            )
            print("|---|---|---|---|---|")
            for namespace in NAMESPACES:
                r = await one_namespace(port, clients, namespace)
                print(
                    f"| {namespace} | {r['replied']:.2f} s | {r['joined']:.2f} s "
                    f"| {r['left']:.2f} s | {r['missing']:.0f} |",
                    flush=True,
                )
        finally:
            process.terminate()
            await process.wait()
            if broker:
                await cleanup(prefix)
    warnings = sum("could not remove presence" in line for line in log)
    print(f'\nnode log: {warnings} "could not remove presence" warning(s)')


if __name__ == "__main__":
    asyncio.run(main())
