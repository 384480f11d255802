"""Which event loop a command runs on: uvloop when installed (``--loop auto``), else asyncio.

uvloop's transports are faster than asyncio's, and tether works the same on
both (the test suite runs on both), so long-running commands (``serve``,
``bench``) take it whenever it is there; ``--loop asyncio`` opts out and
``--loop uvloop`` insists (a clear error when it is missing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from tether._about import uvloop_version
from tether.cli.errors import MissingDependency

T = TypeVar("T")
CHOICES = ("auto", "asyncio", "uvloop")
TIMEOUTS = (asyncio.TimeoutError, TimeoutError)
"""What ``asyncio.wait_for`` raises on timeout: before Python 3.11 not the built-in TimeoutError."""


def choose(requested: str) -> str:
    """``"uvloop"`` or ``"asyncio"`` for ``--loop auto|asyncio|uvloop``."""
    if requested == "asyncio":
        return "asyncio"
    available = uvloop_version() is not None
    if requested == "uvloop" and not available:
        raise MissingDependency("--loop uvloop", "uvloop", "speed")
    return "uvloop" if available else "asyncio"


def describe(chosen: str) -> str:
    """For banners: ``uvloop 0.21.0`` or ``asyncio``."""
    return f"uvloop {uvloop_version()}" if chosen == "uvloop" else "asyncio"


def running() -> str:
    """``uvloop`` or ``asyncio``: the loop this coroutine really runs on (for the banner)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.split(".")[0] == "uvloop" else "asyncio"


def run(main: Coroutine[Any, Any, T], chosen: str) -> T:
    """Run ``main`` to completion on the chosen loop."""
    if chosen == "uvloop":
        import uvloop

        result: T = uvloop.run(main)
        return result
    return asyncio.run(main)


def add_option(parser: Any) -> None:
    parser.add_argument(
        "--loop",
        choices=CHOICES,
        default="auto",
        help="event loop: uvloop when installed (auto, the default), or force one",
    )
