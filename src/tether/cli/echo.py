"""``tether echo``: an echo server for text and binary messages (tests, Autobahn, benchmarks)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

from tether.asyncio.server import ServerConnection, serve
from tether.cli import loop
from tether.cli.errors import CliError
from tether.cli.options import byte_limit, port, seconds

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


async def _echo_handler(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def run_echo(
    host: str,
    port: int,
    max_size: int | None,
    compression: bool,
    ping_interval: float | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop)
    try:
        server = await serve(
            _echo_handler,
            host,
            port,
            max_size=max_size,
            compression="deflate" if compression else None,
            ping_interval=ping_interval,
        )
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        bound = server.sockets[0].getsockname()
        print(f"tether echo listening on ws://{bound[0]}:{bound[1]}/", flush=True)
        await stop
    finally:
        server.close()
        await server.wait_closed()


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    echo = sub.add_parser(
        "echo",
        parents=parents,
        help="run an echo server (text and binary)",
        description=(
            "Run a WebSocket server that sends every message back as it came (text as "
            "text, binary as binary), for trying clients, the Autobahn TestSuite and "
            "`tether bench`. Stops on Ctrl-C or SIGTERM."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    echo.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    echo.add_argument("--port", type=port, default=DEFAULT_PORT, help="port (0: any free port)")
    echo.add_argument(
        "--max-size",
        type=byte_limit,
        default="1MiB",
        metavar="BYTES",
        help="largest message accepted (e.g. 16MiB, or 'none'); larger closes with 1009",
    )
    echo.add_argument("--no-compression", action="store_true", help="disable permessage-deflate")
    echo.add_argument(
        "--ping-interval",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="send keepalive pings this often (0: none, so test suites such as "
        "Autobahn, which count an unexpected Ping as a failure, see only the echo)",
    )
    loop.add_option(echo)


def run(args: argparse.Namespace) -> int:
    chosen = loop.choose(args.loop)
    with contextlib.suppress(KeyboardInterrupt):
        loop.run(
            run_echo(
                args.host,
                args.port,
                args.max_size,
                not args.no_compression,
                args.ping_interval or None,
            ),
            chosen,
        )
    return 0
