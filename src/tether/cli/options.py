"""The argument parser and the argument types shared by the ``tether`` commands.

Each type raises :class:`argparse.ArgumentTypeError` with the bad value in the
message, so :class:`Parser` reports it as one line naming the flag.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from tether.cli.errors import USAGE_ERROR, print_error


class Parser(argparse.ArgumentParser):
    """Bad flags in one line (``tether serve: argument --port: ...``), exit status 2.

    ``lazy_epilog``, when set, makes the epilog at ``--help`` time only, so
    building the parser imports nothing heavy (``tether echo`` never loads the hub).
    """

    lazy_epilog: Callable[[], str] | None = None

    def error(self, message: str) -> NoReturn:
        print_error(self.prog, f"{message} (see {self.prog} --help)")
        raise SystemExit(USAGE_ERROR)

    def format_help(self) -> str:
        if self.lazy_epilog is not None:
            self.epilog = self.lazy_epilog()
        return super().format_help()


_UNITS = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "kb": 1000, "mb": 1000**2, "b": 1}


def parse_size(text: str) -> int | None:
    """A byte count such as ``1048576``, ``16MiB`` or ``none`` (no limit); ValueError if bad."""
    value = text.strip().lower()
    if value in ("none", "0", "unlimited"):
        return None
    for suffix, factor in _UNITS.items():
        if value.endswith(suffix):
            number = float(value[: -len(suffix)])
            if not number >= 0:  # also rejects nan
                raise ValueError(text)
            return int(number * factor)
    count = int(value)
    if count < 0:
        raise ValueError(text)
    return count


def byte_limit(text: str) -> int | None:
    """``--max-size``: bytes with an optional unit, or ``none``."""
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r} (bytes, e.g. 65536, 64KiB, 16MiB, or 'none')"
        ) from None


def byte_count(text: str) -> int:
    """A message size for ``tether bench``: bytes with an optional unit, at least 1."""
    try:
        value = parse_size(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (bytes, e.g. 32, 1KiB, 64KiB)")
    return value


def seconds(text: str) -> float:
    """A duration in seconds, zero or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (seconds, e.g. 5 or 0.5)")
    return value


def _whole_number(text: str, low: int, high: int, what: str, hint: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"invalid {what} {text!r} ({hint})")
    return value


def positive_int(text: str) -> int:
    """A count of one or more."""
    return _whole_number(text, 1, 2**31, "count", "a whole number, 1 or more")


def port(text: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    return _whole_number(text, 0, 65535, "port", "0 to 65535")
