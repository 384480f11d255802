"""The ``tether`` command: ``serve``, ``echo``, ``connect`` and ``bench``, one module each.

``main`` is the console-script entry point (``tether``, ``python -m tether``).
Errors the user can fix are one line on stderr with exit status 2 (see
:mod:`tether.cli.errors`); ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from tether.cli import bench, connect, echo, serve
from tether.cli.errors import USAGE_ERROR, CliError, MissingDependency, print_error
from tether.cli.options import Parser


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from tether._about import version_report

        print(version_report(), flush=True)
        parser.exit()


def _common_options() -> argparse.ArgumentParser:
    """``--debug`` and ``--verbose``, accepted before or after the command name."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's default must not overwrite a value given before it.
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of an error, and debug logging",
    )
    common.add_argument(
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more logging (repeatable)",
    )
    return common


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": serve.run,
    "echo": echo.run,
    "connect": connect.run,
    "bench": bench.run,
}


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = Parser(
        prog="tether",
        description="tether WebSocket toolkit: a realtime hub, an echo server, "
        "an interactive client and a load generator.",
        parents=[common],
    )
    parser.add_argument(
        "-V",
        "-v",
        "--version",
        action=_VersionAction,
        help="print the version, Python, native speedups on or off (and why), and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(sub, [common])
    echo.add_parser(sub, [common])
    connect.add_parser(sub, [common])
    bench.add_parser(sub, [common])
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](args)
    except MissingDependency as exc:
        # An optional dependency found missing deep inside (e.g. by tether.hub):
        # it names the extra to install, so it is the user's to fix.
        raise CliError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    level = logging.DEBUG if debug else logging.WARNING - 10 * getattr(args, "verbose", 0)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prog = f"tether {args.command}"
    try:
        status = _run(args)
    except CliError as exc:
        if debug:
            traceback.print_exc()
        print_error(prog, str(exc))
        sys.exit(USAGE_ERROR)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug, or something not foreseen: still one line
        if debug:
            traceback.print_exc()
        print_error(
            prog,
            f"unexpected error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
        )
        sys.exit(1)
    sys.exit(status)
