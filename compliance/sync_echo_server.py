"""A ``tether.sync`` echo server for the Autobahn server-role runs (``run_server.py --sync``).

Usage: ``python compliance/sync_echo_server.py --port 0 --max-size 16MiB [--no-compression]``
(the arguments ``ab_harness.echo_server`` passes). Prints ``listening on
ws://HOST:PORT`` once listening, as ``tether echo`` does, then serves until
terminated. Keepalive Pings are off, as in echo_server.py (the cases do not
expect them). A thread per connection: the sync API's design.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tether.sync.server import ServerConnection, serve


def echo(ws: ServerConnection) -> None:
    for message in ws:
        ws.send(message)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-size", default="16MiB")
    parser.add_argument("--no-compression", action="store_true")
    args = parser.parse_args(argv)
    size = args.max_size.removesuffix("MiB")
    max_size = int(size) * 2**20 if size != args.max_size else int(args.max_size)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with serve(
        echo,
        args.host,
        args.port,
        max_size=max_size,
        compression=None if args.no_compression else "deflate",
        ping_interval=None,
    ) as server:
        host, port = server.socket.getsockname()[:2]
        print(f"listening on ws://{host}:{port}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
