"""``tether bench URL``: measure any WebSocket server (tether's or not) from this machine.

The measuring is :mod:`tether.cli.bench_engine`; this module parses the
options, shows a live progress line on a terminal and prints a summary table
(or ``--json`` for scripts). Exit status 0 after a complete run, 1 when the
benchmark could not run (one line on stderr says why), 2 for bad options.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from tether.cli import loop
from tether.cli.bench_engine import MODES, BenchError, Progress, Result, Workload, run_workload
from tether.cli.errors import CliError, print_error
from tether.cli.options import byte_count, positive_int, seconds
from tether.protocol.client import parse_uri


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(
            f"invalid mode {text!r}: one or more of {', '.join(MODES)}, comma-separated"
        )
    return modes


def _sizes(text: str) -> list[int]:
    return [byte_count(part) for part in text.split(",") if part.strip()] or [byte_count(text)]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench",
        parents=parents,
        help="measure a WebSocket server: round trips, pipelining, fan-out",
        description=(
            "Measure the WebSocket server at URL with tether's client. Modes: rtt (each "
            "connection keeps one message in flight; needs an echo server), pipeline (N "
            "messages in flight per connection; echo server), fanout (N subscribers and one "
            "publisher; needs a server that sends every message to every client). Prints "
            "messages/s and latency percentiles per mode and size; --json for scripts."
        ),
        epilog=(
            "examples:\n"
            "  tether echo &  tether bench ws://127.0.0.1:8765/\n"
            "  tether bench ws://127.0.0.1:8765/ --mode rtt,pipeline --size 64,4KiB -d 3\n"
            "  tether bench ws://127.0.0.1:9000/ --mode fanout --connections 100 --json\n"
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("url", help="ws:// or wss:// URL of the server")
    p.add_argument(
        "-m",
        "--mode",
        type=_modes,
        default="rtt",
        metavar="MODES",
        help=f"comma-separated: {', '.join(MODES)}",
    )
    p.add_argument(
        "-s",
        "--size",
        type=_sizes,
        default="64",
        metavar="BYTES",
        help="message size(s), comma-separated, e.g. 64,4KiB,256KiB",
    )
    p.add_argument(
        "-d", "--duration", type=seconds, default=5.0, metavar="SECONDS", help="per mode and size"
    )
    p.add_argument(
        "-c",
        "--connections",
        type=positive_int,
        default=None,
        metavar="N",
        help="clients in parallel (rtt, pipeline; default 1) or subscribers (fanout; default 100)",
    )
    p.add_argument(
        "-n",
        "--in-flight",
        type=positive_int,
        default=64,
        metavar="N",
        help="pipeline: messages outstanding per connection",
    )
    p.add_argument(
        "--burst",
        type=positive_int,
        default=200,
        metavar="N",
        help="fanout: messages the publisher sends back to back per round",
    )
    p.add_argument("--text", action="store_true", help="send text (ASCII) instead of binary")
    p.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    p.add_argument(
        "--open-timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="allowed to open all connections",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document, no table")
    loop.add_option(p)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


# ------------------------------------------------------------------ output


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _ms(result: Result, key: str) -> str:
    value = result.latency_ms.get(key)
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _label(result: Result) -> str:
    size = _size_text(result.size) + (" text" if result.text else "")
    if result.mode == "pipeline":
        return f"pipeline x{result.in_flight} {size}"
    return f"{result.mode} {size}"


def _size_text(size: int) -> str:
    for unit, factor in (("MiB", 2**20), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


COLUMNS = ("workload", "conns", "messages", "msgs/s", "MiB/s", "p50 ms", "p99 ms", "max ms")


def table(results: list[Result]) -> str:
    """The summary: one row per workload, aligned columns."""
    rows = [
        (
            _label(r),
            str(r.connections),
            _count(r.messages),
            _count(r.messages_per_second),
            f"{r.mib_per_second:.2f}",
            _ms(r, "p50"),
            _ms(r, "p99"),
            _ms(r, "max"),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return "\n".join([line(COLUMNS), *(line(row) for row in rows)])


class _ProgressLine:
    """``\\r``-rewritten status on a terminal; nothing when stderr is not one."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.width = 0

    def update(self, progress: Progress) -> None:
        if not self.enabled:
            return
        w = progress.workload
        rate = progress.messages / progress.elapsed if progress.elapsed else 0.0
        text = (
            f"{w.mode} {_size_text(w.size)}: {progress.elapsed:4.1f}/{w.duration:g} s  "
            f"{_count(progress.messages)} messages  {_count(rate)} msgs/s"
        )
        self.width = max(self.width, len(text))
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


# --------------------------------------------------------------------- run


def workloads(args: argparse.Namespace) -> list[Workload]:
    """One workload per mode and size, in the order given."""
    modes: list[str] = args.mode if isinstance(args.mode, list) else _modes(args.mode)
    sizes: list[int] = args.size if isinstance(args.size, list) else _sizes(args.size)
    out = []
    for mode in modes:
        for size in sizes:
            connections = args.connections or (100 if mode == "fanout" else 1)
            out.append(
                Workload(
                    mode=mode,
                    size=size,
                    duration=args.duration,
                    connections=connections,
                    in_flight=args.in_flight,
                    burst=args.burst,
                    text=args.text,
                    compression=args.compression,
                    open_timeout=args.open_timeout,
                )
            )
    return out


async def run_all(
    url: str, plan: list[Workload], progress: _ProgressLine | None = None
) -> list[Result]:
    results = []
    for workload in plan:
        try:
            result = await run_workload(url, workload, progress.update if progress else None)
        finally:
            if progress is not None:
                progress.clear()
        results.append(result)
    return results


def run(args: argparse.Namespace) -> int:
    try:
        parse_uri(args.url)
    except ValueError as exc:
        raise CliError(f"invalid URL: {exc}") from None
    try:
        plan = workloads(args)
    except ValueError as exc:  # e.g. fanout with messages too small to carry a time
        raise CliError(str(exc)) from None
    chosen = loop.choose(args.loop)
    progress = None if args.json else _ProgressLine(sys.stderr)
    try:
        results = loop.run(run_all(args.url, plan, progress), chosen)
    except BenchError as exc:
        print_error("tether bench", str(exc))
        return 1
    if args.json:
        document = {
            "url": args.url,
            "loop": loop.describe(chosen),
            "results": [r.as_dict() for r in results],
        }
        print(json.dumps(document, indent=2), flush=True)
    else:
        print(f"tether bench {args.url}  ({loop.describe(chosen)}, {plan[0].duration:g} s each)")
        print(table(results), flush=True)
    return 0
