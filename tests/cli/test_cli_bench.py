"""``tether bench URL`` against tether's and websockets' echo servers and a broadcast server.

The bench runs as a subprocess (``--json``); servers either run as a ``tether
echo`` subprocess or in this test's event loop. Durations are short: these
tests check that the numbers are sane and consistent, never how fast anything is.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cli_support import assert_one_line_error, run_tether

import tether
from tether.cli.bench import _ProgressLine, table
from tether.cli.bench_engine import Progress, Result, Workload

DURATION = "0.5"


@pytest.fixture
async def tether_echo() -> AsyncIterator[str]:
    """A ``tether echo`` subprocess on a free port; yields its URL."""
    async with _tether_echo() as url:
        yield url


@contextlib.asynccontextmanager
async def _tether_echo() -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tether", "echo", "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    match = re.search(r"(ws://\S+)", line)
    assert match, line
    try:
        yield match.group(1)
    finally:
        process.terminate()
        await process.wait()


@pytest.fixture(params=["tether", "websockets"])
async def any_echo(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """tether's echo server (a subprocess), then websockets' (in this loop)."""
    server = _tether_echo() if request.param == "tether" else _websockets_echo()
    async with server as url:
        yield url


@contextlib.asynccontextmanager
async def _websockets_echo() -> AsyncIterator[str]:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


@pytest.fixture
async def broadcaster() -> AsyncIterator[str]:
    """A server that sends each message it receives to every client (the harness's fanout)."""
    clients: set[tether.ServerConnection] = set()

    async def fanout(ws: tether.ServerConnection) -> None:
        clients.add(ws)
        try:
            async for message in ws:
                tether.broadcast(clients, message)
        finally:
            clients.discard(ws)

    async with tether.serve(fanout, "127.0.0.1", 0, compression=None) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def bench_json(url: str, *args: str) -> dict[str, Any]:
    outcome = await run_tether("bench", url, "--json", "-d", DURATION, *args)
    assert outcome.returncode == 0, outcome
    assert outcome.stderr == ""  # no progress line in --json mode
    document: dict[str, Any] = json.loads(outcome.stdout)
    assert document["url"] == url
    return document


def assert_sane(result: dict[str, Any], mode: str, size: int) -> None:
    assert (result["mode"], result["size"]) == (mode, size)
    assert result["messages"] > 0
    assert 0.3 <= result["seconds"] < 30
    rate = result["messages"] / result["seconds"]
    assert result["messages_per_second"] == pytest.approx(rate)
    assert result["mib_per_second"] == pytest.approx(rate * size / 2**20)
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert 0 < latency["mean"] <= latency["max"]


async def test_rtt_and_pipeline(any_echo: str) -> None:
    document = await bench_json(any_echo, "--mode", "rtt,pipeline", "--size", "64,4KiB", "-n", "8")
    results = document["results"]
    assert [(r["mode"], r["size"]) for r in results] == [
        ("rtt", 64),
        ("rtt", 4096),
        ("pipeline", 64),
        ("pipeline", 4096),
    ]
    for r in results:
        assert_sane(r, r["mode"], r["size"])
    assert [r["in_flight"] for r in results] == [1, 1, 8, 8]
    assert document["loop"].startswith(("uvloop", "asyncio"))


async def test_many_connections_and_text(tether_echo: str) -> None:
    document = await bench_json(tether_echo, "-c", "4", "--text", "-s", "100", "--loop", "asyncio")
    (result,) = document["results"]
    assert_sane(result, "rtt", 100)
    assert result["connections"] == 4 and result["text"] is True
    assert document["loop"] == "asyncio"


async def test_fanout_counts_every_delivery(broadcaster: str) -> None:
    document = await bench_json(broadcaster, "-m", "fanout", "-c", "5", "--burst", "20")
    (result,) = document["results"]
    assert_sane(result, "fanout", 64)
    # Whole rounds only: each of the 5 subscribers gets all 20 messages of each round.
    assert result["messages"] % (5 * 20) == 0


async def test_fanout_against_an_echo_server_explains(tether_echo: str) -> None:
    outcome = await run_tether("bench", tether_echo, "-m", "fanout", "-c", "2", "-d", "0.2")
    assert_one_line_error(outcome, "tether bench", "fanout needs a broadcast server", status=1)


async def test_a_server_that_does_not_echo(broadcaster: str) -> None:
    # With two rtt clients on a broadcast server, each receives the other's messages too;
    # a lone client gets its own back. A server that answers differently is reported:
    async def answer_short(ws: tether.ServerConnection) -> None:
        async for _ in ws:
            await ws.send(b"?")

    async with tether.serve(answer_short, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        outcome = await run_tether("bench", url, "-d", "0.2")
    assert_one_line_error(outcome, "tether bench", "need an echo server", status=1)


async def test_server_closing_mid_run_is_one_line() -> None:
    async def close_after_three(ws: tether.ServerConnection) -> None:
        for _ in range(3):
            await ws.send(await ws.recv())
        await ws.close(1011, "enough")

    async with tether.serve(close_after_three, "127.0.0.1", 0) as server:
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        outcome = await run_tether("bench", url, "-d", "5")
    assert_one_line_error(outcome, "tether bench", "closed with 1011 (enough)", status=1)


async def test_table_output(tether_echo: str) -> None:
    outcome = await run_tether("bench", tether_echo, "-d", "0.3", "-s", "1KiB")
    assert outcome.returncode == 0, outcome
    header, columns, row = outcome.stdout.splitlines()
    assert header.startswith(f"tether bench {tether_echo}")
    assert " ".join(columns.split()) == "workload conns messages msgs/s MiB/s p50 ms p99 ms max ms"
    assert row.startswith("rtt 1 KiB ")
    assert outcome.stderr == ""  # not a terminal: no progress line


def test_table_and_progress_formatting() -> None:
    result = Result(
        url="ws://h/",
        mode="pipeline",
        size=4096,
        connections=2,
        in_flight=64,
        text=False,
        seconds=2.0,
        messages=20000,
        messages_per_second=10000.0,
        mib_per_second=39.0625,
        latency_ms={"p50": 1.5, "p90": 2.0, "p99": 12.25, "max": 20.0, "mean": 1.7},
    )
    lines = table([result]).splitlines()
    assert " ".join(lines[1].split()) == "pipeline x64 4 KiB 2 20,000 10,000 39.06 1.500 12.2 20.0"

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    line = _ProgressLine(stream)
    progress = Progress(Workload(mode="rtt", size=64, duration=5), elapsed=2.0, messages=5000)
    line.update(progress)
    shown = "rtt 64 B:  2.0/5 s  5,000 messages  2,500 msgs/s"
    assert stream.getvalue() == "\r" + shown
    line.clear()
    assert stream.getvalue().endswith("\r" + " " * len(shown) + "\r")
    quiet = io.StringIO()
    _ProgressLine(quiet).update(progress)
    assert quiet.getvalue() == ""
