"""The ``tether`` command line: ``echo`` and ``connect`` (``serve`` comes with the hub)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from tether.asyncio.server import ServerConnection, serve


def _size(text: str) -> int | None:
    """Parse a byte count such as ``1048576``, ``16MiB`` or ``none``."""
    value = text.strip().lower()
    if value in ("none", "0", "unlimited"):
        return None
    units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "b": 1}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(value)


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
    async with serve(
        _echo_handler,
        host,
        port,
        max_size=max_size,
        compression="deflate" if compression else None,
        ping_interval=ping_interval,
    ) as server:
        bound = server.sockets[0].getsockname()
        print(f"tether echo listening on ws://{bound[0]}:{bound[1]}/", flush=True)
        await stop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tether", description="tether WebSocket toolkit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)

    echo = sub.add_parser("echo", help="run an echo server (text and binary)")
    echo.add_argument("--host", default="127.0.0.1")
    echo.add_argument("--port", type=int, default=8765)
    echo.add_argument(
        "--max-size",
        type=_size,
        default=2**20,
        help="largest message accepted, in bytes (e.g. 16MiB, or 'none'); default 1 MiB",
    )
    echo.add_argument("--no-compression", action="store_true", help="disable permessage-deflate")
    echo.add_argument(
        "--ping-interval",
        type=float,
        default=0,
        metavar="SECONDS",
        help="send keepalive pings this often (default 0: none, so test suites such as "
        "Autobahn, which count an unexpected Ping as a failure, see only the echo)",
    )

    from tether import cli_connect, cli_serve

    cli_connect.add_parser(sub)
    cli_serve.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "echo":
            asyncio.run(
                run_echo(
                    args.host,
                    args.port,
                    args.max_size,
                    not args.no_compression,
                    args.ping_interval or None,
                )
            )
        elif args.command == "serve":
            from tether import cli_serve

            sys.exit(cli_serve.run(args))
        else:
            from tether import cli_connect

            sys.exit(cli_connect.run(args))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"tether: {exc}", file=sys.stderr)
        sys.exit(1)
