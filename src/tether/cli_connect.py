"""``tether connect URL``: an interactive client like wscat (placeholder until finished)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("connect", help="open an interactive WebSocket session")
    p.add_argument("url")


def run(args: argparse.Namespace) -> int:
    raise SystemExit("tether connect: not implemented yet")
