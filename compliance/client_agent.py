"""The tether client that kosoku's fuzzing server tests (the Autobahn client role).

The protocol of the fuzzing server: ``GET /getCaseCount`` answers with one
text message, the number of selected cases; ``/runCase?case=N&agent=A``
(N from 1) runs one case, for which the client echoes every message it
receives, text and binary; ``/updateReports?agent=A`` ends the run. Each is a
WebSocket connection of its own.

Usage: ``python compliance/client_agent.py --url ws://127.0.0.1:9001 [--agent tether]
[--no-compression] [--cases 1,5,7]``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import tether
from tether.protocol.extensions.permessage_deflate import ClientPerMessageDeflateFactory

MAX_SIZE = 16 * 2**20

logger = logging.getLogger("client_agent")


def connect_options(compression: bool) -> dict[str, Any]:
    """Options for every connection: large messages, no keepalive Pings.

    A keepalive Ping during a case is an event the case did not expect (and a
    12.*/13.* case ends early on any Ping), so it is turned off. The
    permessage-deflate offer includes ``client_no_context_takeover``, so that
    the 13.* cases, whose servers accept only offers that allow it, can run.
    """
    options: dict[str, Any] = {
        "max_size": MAX_SIZE,
        "ping_interval": None,
        "user_agent_header": "tether-compliance-agent",
        "compression": None,
    }
    if compression:
        options["extensions"] = [ClientPerMessageDeflateFactory(client_no_context_takeover=True)]
    return options


async def get_case_count(url: str, options: dict[str, Any]) -> int:
    async with tether.connect(f"{url}/getCaseCount", **options) as ws:
        message = await ws.recv()
    return int(message)


async def run_case(url: str, case: int, agent: str, options: dict[str, Any]) -> None:
    """Echo every message of one case until the fuzzing server closes."""
    uri = f"{url}/runCase?case={case}&agent={quote(agent)}"
    try:
        async with tether.connect(uri, **options) as ws:
            async for message in ws:
                await ws.send(message)
    except tether.ConnectionClosed as exc:
        # The failing cases end like this; the verdict is the server's.
        logger.debug("case %d: %s", case, exc)
    except (OSError, tether.InvalidHandshake, TimeoutError) as exc:
        logger.warning("case %d: %s: %s", case, type(exc).__name__, exc)


async def update_reports(url: str, agent: str, options: dict[str, Any]) -> None:
    uri = f"{url}/updateReports?agent={quote(agent)}"
    async with tether.connect(uri, **options) as ws:
        try:
            async for _ in ws:
                pass
        except tether.ConnectionClosed:
            pass


async def main_async(url: str, agent: str, compression: bool, cases: Sequence[int] | None) -> int:
    options = connect_options(compression)
    count = await get_case_count(url, options)
    todo = list(cases) if cases else list(range(1, count + 1))
    logger.info("running %d of %d cases as agent %r", len(todo), count, agent)
    for case in todo:
        started = time.monotonic()
        await run_case(url, case, agent, options)
        logger.info("case %d/%d done in %.3f s", case, count, time.monotonic() - started)
    await update_reports(url, agent, options)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:9001", help="the fuzzing server")
    parser.add_argument("--agent", default="tether", help="agent name in the reports")
    parser.add_argument("--no-compression", action="store_true", help="do not offer deflate")
    parser.add_argument(
        "--cases", default="", help="comma-separated case numbers (from 1) to run; default all"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    cases = [int(c) for c in args.cases.split(",") if c.strip()]
    return asyncio.run(main_async(args.url.rstrip("/"), args.agent, not args.no_compression, cases))


if __name__ == "__main__":
    sys.exit(main())
