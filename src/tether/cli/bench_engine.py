"""The load generator behind ``tether bench``: drives any WebSocket server, prints nothing.

Three workloads, each needing nothing on the server side but what it says:

``rtt`` (round trips)
    Each of ``connections`` clients keeps one message in flight against an
    echo server: send, wait for the echo, repeat. Latency is one round trip.
``pipeline``
    Each client keeps ``in_flight`` messages outstanding against an echo
    server (a new one leaves as each echo arrives). Latency is from a
    message's send to its echo, so it includes the queue in front of it.
``fanout``
    ``connections`` subscribers and one publisher against a *broadcast*
    server, one that sends every message it receives to every connected
    client (the convention of the bench/ harness's ``fanout`` peers). The
    publisher sends ``burst`` messages back to back, waits until every
    subscriber has them all, and repeats until the duration is up. Each
    message carries its send time, so latency is per delivery. An echo
    server is detected and refused (subscribers would receive nothing).

Rates count messages received in the measured window (echoes, or
deliveries for ``fanout``), divided by the time from the first send to the
last message received. The measured side is the client: a fixed Python client
on the same machine, so compare servers with the same client in one run (as
bench/compare.py does), not with numbers from another load generator.
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tether.asyncio.client import ClientConnection, connect
from tether.cli.loop import TIMEOUTS
from tether.protocol.client import parse_uri
from tether.protocol.exceptions import ConnectionClosed

MODES = ("rtt", "pipeline", "fanout")
_STAMP = struct.Struct("<d")  # a fan-out message starts with its send time
_TEXT_STAMP = 24  # characters of a text fan-out message that hold its send time
ProgressCallback = Callable[["Progress"], None]


class BenchError(Exception):
    """The benchmark could not run (unreachable server, wrong kind of server, lost connection)."""


@dataclass(frozen=True)
class Workload:
    """What to measure. Every field has the default ``tether bench`` uses."""

    mode: str = "rtt"
    size: int = 64
    """Bytes per message (characters for ``text``)."""
    duration: float = 5.0
    """Seconds of measurement."""
    connections: int = 1
    """Clients in parallel (``rtt``, ``pipeline``) or subscribers (``fanout``)."""
    in_flight: int = 64
    """``pipeline``: messages outstanding per connection."""
    burst: int = 200
    """``fanout``: messages the publisher sends back to back per round."""
    text: bool = False
    """Send text messages (ASCII) instead of binary."""
    compression: bool = False
    """Offer permessage-deflate (off by default: the payload is random and would not shrink)."""
    open_timeout: float = 10.0
    """Seconds allowed to open all connections."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.size < 1 or self.connections < 1 or self.in_flight < 1 or self.burst < 1:
            raise ValueError("size, connections, in_flight and burst must be at least 1")
        if self.mode == "fanout" and self.text and self.size < _TEXT_STAMP:
            raise ValueError(
                f"text fan-out messages carry their send time: size must be >= {_TEXT_STAMP}"
            )
        if self.mode == "fanout" and self.size < _STAMP.size:
            raise ValueError(
                f"fanout messages carry their send time: size must be >= {_STAMP.size}"
            )
        if not self.duration > 0:
            raise ValueError("duration must be more than 0 seconds")


@dataclass
class Progress:
    """What the progress line shows, updated while a workload runs."""

    workload: Workload
    elapsed: float = 0.0
    messages: int = 0


@dataclass
class Result:
    """One workload's numbers (``--json`` prints ``as_dict()`` of each)."""

    url: str
    mode: str
    size: int
    connections: int
    in_flight: int
    text: bool
    seconds: float
    messages: int
    messages_per_second: float
    mib_per_second: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    """``p50``, ``p90``, ``p99``, ``max`` and ``mean`` over every message measured."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Latencies:
    """Every latency of a run, in seconds, in a flat array (8 bytes each)."""

    def __init__(self) -> None:
        self.values = array("d")

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    def summary(self) -> dict[str, float]:
        if not self.values:
            return {}
        ordered = sorted(self.values)

        def rank(p: float) -> float:  # nearest-rank percentile
            return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000

        return {
            "p50": rank(50),
            "p90": rank(90),
            "p99": rank(99),
            "max": ordered[-1] * 1000,
            "mean": sum(ordered) / len(ordered) * 1000,
        }


def _payload(workload: Workload) -> str | bytes:
    if workload.text:
        return "x" * workload.size
    return os.urandom(workload.size)


def _describe_close(ws: ClientConnection) -> str:
    code, reason = ws.close_code, ws.close_reason
    if code is None:
        return "connection lost"
    return f"closed with {code}" + (f" ({reason})" if reason else "")


async def _open(url: str, workload: Workload, count: int) -> list[ClientConnection]:
    """``count`` connections, opened a few at a time, within ``open_timeout``."""
    queue = max(16, workload.in_flight * 2, workload.burst * 2)

    async def one() -> ClientConnection:
        return await connect(
            url,
            compression="deflate" if workload.compression else None,
            max_size=None,
            max_queue=queue,
            ping_interval=None,
            open_timeout=None,  # the whole batch has one deadline, below
            write_limit=2**20,
        )

    opened: list[ClientConnection] = []

    async def open_all() -> None:
        for start in range(0, count, 100):
            batch = await asyncio.gather(
                *(one() for _ in range(min(100, count - start))), return_exceptions=True
            )
            for item in batch:
                if isinstance(item, BaseException):
                    raise item
                opened.append(item)

    try:
        await asyncio.wait_for(open_all(), workload.open_timeout)
    except BaseException as exc:
        await _close_all(opened)
        if isinstance(exc, TIMEOUTS):
            raise BenchError(
                f"opened {len(opened)} of {count} connections to {url} "
                f"in {workload.open_timeout:g} s"
            ) from None
        if isinstance(exc, Exception):
            from tether.cli.connect import describe_open_error, host_port

            try:
                uri = parse_uri(url)
            except ValueError as bad:
                raise BenchError(f"invalid URL: {bad}") from None
            address = host_port(uri.host, uri.port)
            raise BenchError(describe_open_error(exc, address, workload.open_timeout)) from exc
        raise
    return opened


async def _close_all(connections: list[ClientConnection]) -> None:
    async def close(ws: ClientConnection) -> None:
        try:
            await asyncio.wait_for(ws.close(), 2.0)
        except (*TIMEOUTS, OSError, ConnectionClosed):
            ws.close_nowait()

    await asyncio.gather(*(close(ws) for ws in connections), return_exceptions=True)


class _Run:
    """Counters shared by the tasks of one workload."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.latencies = _Latencies()
        self.received = 0
        self.start = 0.0
        self.last = 0.0
        self.stop_at = 0.0

    def begin(self) -> None:
        self.start = self.last = time.perf_counter()
        self.stop_at = self.start + self.workload.duration

    def got(self, sent_at: float) -> None:
        now = time.perf_counter()
        self.latencies.add(now - sent_at)
        self.received += 1
        self.last = now


def _check_echo(reply: str | bytes, payload: str | bytes) -> None:
    if type(reply) is not type(payload) or len(reply) != len(payload):
        sent = "text" if isinstance(payload, str) else "binary"
        got = "text" if isinstance(reply, str) else "binary"
        raise BenchError(
            f"the server answered a {len(payload)}-byte {sent} message with "
            f"{len(reply)} bytes of {got}: rtt and pipeline need an echo server"
        )


async def _rtt(ws: ClientConnection, run: _Run, payload: str | bytes) -> None:
    while True:
        sent_at = time.perf_counter()
        if sent_at >= run.stop_at:
            return
        await ws.send(payload)
        reply = await ws.recv()
        _check_echo(reply, payload)
        run.got(sent_at)


async def _pipeline(ws: ClientConnection, run: _Run, payload: str | bytes) -> None:
    """One sender keeping ``in_flight`` messages outstanding; replies matched in order."""
    credit = asyncio.Semaphore(run.workload.in_flight)
    sent: collections.deque[float] = collections.deque()
    sending_done = asyncio.Event()

    async def receive() -> None:
        # Every reply answers the oldest message still out (an echo keeps the order).
        while True:
            reply = await ws.recv()
            _check_echo(reply, payload)
            run.got(sent.popleft())
            credit.release()
            if sending_done.is_set() and not sent:
                return

    receiver = asyncio.create_task(receive())
    try:
        while time.perf_counter() < run.stop_at and not receiver.done():
            await credit.acquire()
            sent.append(time.perf_counter())
            await ws.send(payload)
        sending_done.set()
        if sent or receiver.done():
            await receiver  # the last replies (or the receiver's error)
    finally:
        receiver.cancel()


def _stamped(workload: Workload) -> Callable[[], str | bytes]:
    """Fan-out messages: the send time first, so any receiver can compute its latency."""
    if workload.text:
        tail = "x" * (workload.size - _TEXT_STAMP)
        return lambda: f"{time.perf_counter():<{_TEXT_STAMP}.9f}"[:_TEXT_STAMP] + tail
    rest = os.urandom(workload.size - _STAMP.size)
    return lambda: _STAMP.pack(time.perf_counter()) + rest


def _sent_time(message: str | bytes) -> float:
    if isinstance(message, bytes):
        return float(_STAMP.unpack_from(message)[0])
    return float(message[:_TEXT_STAMP])


async def _fanout(
    publisher: ClientConnection, subscribers: list[ClientConnection], run: _Run
) -> None:
    workload = run.workload
    make = _stamped(workload)
    remaining = [0] * len(subscribers)
    round_done = asyncio.Event()
    pending = [len(subscribers)]

    async def subscriber(index: int, ws: ClientConnection) -> None:
        while True:
            message = await ws.recv()
            if run.start and remaining[index] > 0:
                run.got(_sent_time(message))
                remaining[index] -= 1
                if remaining[index] == 0:
                    pending[0] -= 1
                    if pending[0] == 0:
                        round_done.set()

    async def drain(ws: ClientConnection) -> None:
        while True:  # the publisher's own copies, when the server sends them back
            await ws.recv()

    # One message first: a broadcast server delivers it to every subscriber,
    # an echo server only back to the publisher.
    await publisher.send(make())
    try:
        await asyncio.wait_for(
            asyncio.gather(*(ws.recv() for ws in subscribers)), min(5.0, workload.duration + 2)
        )
    except TIMEOUTS:
        raise BenchError(
            "fanout needs a broadcast server (one that sends each message to every client); "
            "this one did not deliver a message to the other connections. Against an echo "
            "server, measure many clients with: --mode rtt --connections N"
        ) from None
    tasks = [asyncio.create_task(subscriber(i, ws)) for i, ws in enumerate(subscribers)]
    tasks.append(asyncio.create_task(drain(publisher)))
    try:
        run.begin()
        while time.perf_counter() < run.stop_at:
            remaining[:] = [workload.burst] * len(subscribers)
            pending[0] = len(subscribers)
            round_done.clear()
            for _ in range(workload.burst):
                await publisher.send(make())
            waiter = asyncio.create_task(round_done.wait())
            done, _ = await asyncio.wait(
                [waiter, *tasks], return_when=asyncio.FIRST_COMPLETED, timeout=60
            )
            if waiter not in done:
                waiter.cancel()
                for task in done:
                    task.result()  # a subscriber's error (a lost connection)
                raise BenchError("fan-out round did not complete within 60 s")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _ticker(run: _Run, progress: Progress, on_progress: ProgressCallback) -> None:
    while True:
        await asyncio.sleep(0.25)
        if run.start:
            progress.elapsed = min(time.perf_counter() - run.start, run.workload.duration)
            progress.messages = run.received
            on_progress(progress)


async def run_workload(
    url: str, workload: Workload, on_progress: ProgressCallback | None = None
) -> Result:
    """Measure ``workload`` against the server at ``url``; :class:`BenchError` if it cannot."""
    count = workload.connections + (1 if workload.mode == "fanout" else 0)
    connections = await _open(url, workload, count)
    run = _Run(workload)
    progress = Progress(workload)
    ticker = (
        asyncio.create_task(_ticker(run, progress, on_progress))
        if on_progress is not None
        else None
    )
    try:
        if workload.mode == "fanout":
            await _fanout(connections[-1], connections[:-1], run)
        else:
            payload = _payload(workload)
            work = _rtt if workload.mode == "rtt" else _pipeline
            run.begin()
            await asyncio.gather(*(work(ws, run, payload) for ws in connections))
    except ConnectionClosed as exc:
        # The exception carries the server's Close frame even while the closing
        # handshake is still under way (close_code is set only once it is done).
        if exc.rcvd is not None:
            code, reason = exc.rcvd
            how = f"closed with {code}" + (f" ({reason})" if reason else "")
        else:
            lost = next((ws for ws in connections if ws.close_code is not None), connections[0])
            how = _describe_close(lost)
        raise BenchError(f"the server ended a connection during the run: {how}") from None
    finally:
        if ticker is not None:
            ticker.cancel()
        await _close_all(connections)
    seconds = max(run.last - run.start, 1e-9)
    if on_progress is not None:
        progress.elapsed, progress.messages = seconds, run.received
        on_progress(progress)
    rate = run.received / seconds
    return Result(
        url=url,
        mode=workload.mode,
        size=workload.size,
        connections=workload.connections,
        in_flight=workload.in_flight if workload.mode == "pipeline" else 1,
        text=workload.text,
        seconds=round(seconds, 6),
        messages=run.received,
        messages_per_second=rate,
        mib_per_second=rate * workload.size / 2**20,
        latency_ms=run.latencies.summary(),
    )
