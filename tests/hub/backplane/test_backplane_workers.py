"""``tether serve --workers 2``: two processes on one port that behave as one hub.

Clients land on either worker (the kernel spreads them, ``SO_REUSEPORT``);
they must see one presence and each other's publications, ``/metrics`` must
answer for both workers whichever one the scrape lands on, and the group must
start again a worker that dies, replace them all on SIGHUP and stop them all
on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from backplane_services import (
    CHANNEL,
    GUARD,
    HubProcess,
    Peer,
    delete_prefix,
    eventually,
    require_redis,
    start_cluster,
    unique,
    write_config,
)
from hub_support import http

WORKERS = 2
PEERS = 12
"""Clients spread by the kernel's 4-tuple hash: all 12 on one worker has odds of 1 in 2,048."""


async def worker_pids(hub: HubProcess) -> list[int]:
    """The pids the group's banner names (its last line may still be on its way)."""

    async def banner_read() -> bool:
        return "  workers   :" in hub.log()

    await eventually(banner_read, timeout=GUARD, what="the banner's workers line")
    match = re.search(r"pids ([\d, ]+);", hub.log())
    assert match, hub.log()
    return [int(pid) for pid in match.group(1).split(", ")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent just has not reaped it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def scrape(port: int) -> str:
    status, _, body = await http(port, "GET", "/metrics")
    assert status == 200, body
    return body.decode()


async def connections_per_worker(port: int) -> dict[str, int]:
    text = await scrape(port)
    assert "tether_workers_unreachable 0" in text, text
    found = re.findall(r'^tether_connections\{worker="(\d+)"\} (\d+)$', text, re.M)
    return {worker: int(count) for worker, count in found}


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[HubProcess]:
    redis_url = require_redis()
    prefix = unique("workers")
    config = write_config(tmp_path / "hub.toml", prefix)
    (hub,) = await start_cluster(1, ["--broker", redis_url, "--workers", str(WORKERS)], config)
    yield hub
    await hub.stop()
    await delete_prefix(redis_url, prefix + ":")


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    made: list[Peer] = []
    yield made
    await asyncio.gather(*(asyncio.wait_for(p.client.close(), GUARD) for p in made))


async def test_clients_on_both_workers_share_presence_and_publications(
    group: HubProcess, peers: list[Peer]
) -> None:
    pids = await worker_pids(group)
    assert len(pids) == WORKERS and all(map(alive, pids))
    for i in range(PEERS):
        peers.append(await Peer(group.ws_url, f"user{i}").start())
    # Both workers got some clients, and any worker's /metrics counts all of them.
    for _ in range(4):  # four scrapes: they land on either worker
        counts = await connections_per_worker(group.port)
        assert set(counts) == {"0", "1"} and sum(counts.values()) == PEERS, counts
        assert min(counts.values()) > 0, counts
    everyone = {p.id for p in peers}
    for peer in (peers[0], peers[-1]):
        assert set(await peer.client.presence(CHANNEL)) == everyone
    for i, peer in enumerate(peers):
        ack = await peer.client.publish(CHANNEL, {"from": i})
        assert ack["offset"] == i + 1
    for peer in peers:
        got = [await peer.next_pub() for _ in range(PEERS)]
        assert [p.data for p in got] == [{"from": i} for i in range(PEERS)]
        assert [p.offset for p in got] == list(range(1, PEERS + 1))
        assert peer.pubs.empty()
    # SIGTERM to the supervisor stops the whole group, cleanly.
    group.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(group.process.wait(), GUARD) == 0
    assert not any(map(alive, pids))
    assert "every worker told its clients to come back" in group.log()


async def test_a_dead_worker_is_replaced_and_sighup_replaces_every_worker(
    group: HubProcess,
) -> None:
    first = await worker_pids(group)
    os.kill(first[0], signal.SIGKILL)

    async def restarted() -> bool:
        died = "died: killed by SIGKILL" in group.log()
        return died and "tether_workers_unreachable 0" in await scrape(group.port)

    await eventually(restarted, timeout=GUARD, what="the killed worker started again")
    assert alive(first[1])
    # SIGHUP: a new worker per index, each listening before its predecessor stops.
    group.process.send_signal(signal.SIGHUP)

    async def replaced() -> bool:
        return "every worker replaced" in group.log()

    await eventually(replaced, timeout=3 * GUARD, what="SIGHUP replaced the workers")
    assert not alive(first[1])
    assert len(await connections_per_worker(group.port)) == WORKERS
    group.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(group.process.wait(), GUARD) == 0


async def test_workers_without_a_shared_backplane_are_refused() -> None:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "tether", "serve", "--workers", "2", "--port", "0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("TETHER_")},
    )
    out, err = await asyncio.wait_for(process.communicate(), GUARD)
    assert process.returncode == 2, (out, err)
    assert b"--workers 2 needs a shared backplane" in err
    assert b"--broker redis://" in err
