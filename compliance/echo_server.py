"""``tether echo`` for the Autobahn server-role runs, with keepalive Pings turned off.

Usage: ``python compliance/echo_server.py --port 0 --max-size 16MiB [--no-compression]``
(the arguments of ``tether echo``).

This is ``tether echo`` itself (same handler, same options) except for one
server option: ``ping_interval=None``. A Ping that the server sends on its own
is an event the Autobahn cases do not expect: the 12.* and 13.* cases end at
the first Ping they receive ("Case did not finish"), and the others count it
as a received event that differs from the expected ones. ``tether echo``
pings every 20 s, and on a busy 2-core machine several 12.* cases (1000
messages of up to 128 KiB of poorly compressible data, compressed on both
sides) take longer than that. ``run_server.py --keepalive`` runs the plain
``tether echo`` instead.
"""

from __future__ import annotations

import sys
from typing import Any

import tether.cli
import tether.cli.echo
from tether.asyncio.server import Handler, Server, serve


def serve_without_pings(
    handler: Handler, host: str | None = None, port: int | None = None, **kwargs: Any
) -> Server:
    kwargs["ping_interval"] = None
    return serve(handler, host, port, **kwargs)


def main(argv: list[str]) -> None:
    namespace = vars(tether.cli.echo)
    if namespace.get("serve") is not serve:
        raise SystemExit(
            "tether.cli.echo no longer calls tether.asyncio.server.serve: "
            "update compliance/echo_server.py"
        )
    namespace["serve"] = serve_without_pings
    tether.cli.main(["echo", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
