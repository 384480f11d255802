"""``async for ws in connect(...)``: reconnect forever, with backoff, per ``process_exception``."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Generator

import pytest

import tether
from tether import ConnectionClosed, connect, serve
from tether.protocol import reconnect
from tether.protocol.exceptions import (
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    ProxyError,
)
from tether.protocol.handshake import Request, Response
from tether.protocol.headers import Headers

GUARD = 10.0


def quick_delays() -> Generator[float, None, None]:
    return itertools.repeat(0.01)


def test_backoff_bounds() -> None:
    for _ in range(20):
        delays = reconnect.backoff(initial_delay=5, min_delay=3.1, max_delay=90, factor=1.618)
        first = next(delays)
        assert 0 <= first < 5  # jitter
        rest = list(itertools.islice(delays, 12))
        assert rest[0] == 3.1
        assert all(
            b == pytest.approx(min(a * 1.618, 90)) or b == 90 for a, b in itertools.pairwise(rest)
        )
        assert all(a <= b <= 90 for a, b in itertools.pairwise(rest))
        assert rest[-1] == 90
    # The jitter spreads clients out: twenty first delays are not all alike.
    assert len({next(reconnect.backoff()) for _ in range(20)}) > 1


def test_backoff_defaults_are_websockets() -> None:
    assert (reconnect.BACKOFF_INITIAL_DELAY, reconnect.BACKOFF_MIN_DELAY) == (5.0, 3.1)
    assert (reconnect.BACKOFF_MAX_DELAY, reconnect.BACKOFF_FACTOR) == (90.0, 1.618)


def _status(code: int) -> InvalidStatus:
    return InvalidStatus(Response(code, "", Headers()))


def _eof_message() -> InvalidMessage:
    exc = InvalidMessage("connection closed during handshake")
    exc.__cause__ = EOFError()
    return exc


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (ConnectionRefusedError(), True),
        (OSError("unreachable"), True),
        (TimeoutError(), True),
        (_eof_message(), True),
        (InvalidMessage("garbage"), False),
        (_status(503), True),
        (_status(500), True),
        (_status(403), False),
        (_status(404), False),
        (InvalidHandshake("bad accept"), False),
        (ProxyError("refused"), False),
        (InvalidURI("http://x", "not ws"), False),
    ],
)
def test_process_exception_defaults(exc: Exception, retried: bool) -> None:
    assert reconnect.process_exception(exc) is (None if retried else exc)


async def test_server_goes_away_and_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    async def greet(ws: tether.ServerConnection) -> None:
        await ws.send("hello")
        await ws.wait_closed()

    server = await serve(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    failures: list[Exception] = []
    refused_twice = asyncio.Event()

    def counting(exc: Exception) -> Exception | None:
        failures.append(exc)
        if len(failures) == 2:
            refused_twice.set()
        return reconnect.process_exception(exc)

    async def restart_when_refused() -> tether.Server:
        await refused_twice.wait()
        return await serve(greet, "127.0.0.1", port)

    caplog.set_level(logging.INFO, logger="tether.client")
    connections = 0
    restarted: asyncio.Task[tether.Server] | None = None

    async def client() -> None:
        nonlocal connections, restarted
        async for ws in connect(
            f"ws://127.0.0.1:{port}/", process_exception=counting, reconnect_delays=quick_delays
        ):
            assert await ws.recv() == "hello"
            connections += 1
            if connections == 2:
                break
            # The server goes away: its connections close, its port refuses.
            server.close()
            await server.wait_closed()
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            restarted = asyncio.create_task(restart_when_refused())

    await asyncio.wait_for(client(), GUARD)
    assert restarted is not None
    server = await restarted
    server.close()
    await server.wait_closed()
    assert connections == 2
    assert len(failures) >= 2 and all(isinstance(f, OSError) for f in failures)
    assert "reconnecting in 0.0 seconds" in caplog.text


async def test_a_fatal_error_ends_the_loop(start_server) -> None:
    def forbid(conn: tether.ServerConnection, request: Request) -> Response:
        return conn.respond(403, "go away")

    srv = await start_server(process_request=forbid)
    with pytest.raises(InvalidStatus) as caught:
        async for _ws in connect(srv.url, reconnect_delays=quick_delays):
            pytest.fail("a refused connection was yielded")
    assert caught.value.response.status_code == 403


async def test_retryable_status_is_retried_until_it_passes(start_server) -> None:
    attempts: list[str] = []

    def busy_twice(conn: tether.ServerConnection, request: Request) -> Response | None:
        attempts.append(request.path)
        return conn.respond(503, "busy") if len(attempts) <= 2 else None

    srv = await start_server(process_request=busy_twice)

    async def client() -> None:
        async for ws in connect(srv.url, reconnect_delays=quick_delays):
            await ws.send("finally")
            assert await ws.recv() == "finally"
            break

    await asyncio.wait_for(client(), GUARD)
    assert len(attempts) == 3


async def test_process_exception_may_replace_or_raise() -> None:
    with socket_closed_port() as port:

        def replace(exc: Exception) -> Exception | None:
            return RuntimeError(f"gave up: {exc.__class__.__name__}")

        with pytest.raises(RuntimeError, match="gave up") as replaced:
            async for _ws in connect(f"ws://127.0.0.1:{port}/", process_exception=replace):
                pass
        assert isinstance(replaced.value.__cause__, OSError)

        def raise_instead(exc: Exception) -> Exception | None:
            raise LookupError("raised, not returned")

        with pytest.raises(LookupError):
            async for _ws in connect(f"ws://127.0.0.1:{port}/", process_exception=raise_instead):
                pass


async def test_backoff_grows_between_failures() -> None:
    delays_used: list[float] = []

    def recorded() -> Generator[float, None, None]:
        for delay in reconnect.backoff(
            initial_delay=0.001, min_delay=0.002, max_delay=0.008, factor=2
        ):
            delays_used.append(delay)
            yield delay

    tries = 0

    def stop_after_six(exc: Exception) -> Exception | None:
        nonlocal tries
        tries += 1
        return exc if tries == 6 else None

    with socket_closed_port() as port, pytest.raises(OSError):
        async for _ws in connect(
            f"ws://127.0.0.1:{port}/", process_exception=stop_after_six, reconnect_delays=recorded
        ):
            pass
    assert delays_used[0] < 0.001
    assert delays_used[1:] == [0.002, 0.004, 0.008, 0.008]


class socket_closed_port:
    """A port that refuses connections: bound, then released."""

    def __enter__(self) -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None
