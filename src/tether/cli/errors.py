"""How the ``tether`` commands fail: one line on stderr, a documented exit status.

A :class:`CliError` is a problem the user can fix (a bad setting, a backend
that cannot be reached, a port in use): ``main`` prints its message as one
line and exits with status 2. The traceback is shown only with ``--debug``.
A missing optional dependency (:class:`MissingDependency`, from anywhere in
tether) is reported the same way.
"""

from __future__ import annotations

import sys

from tether._extras import MissingDependency

__all__ = ["USAGE_ERROR", "CliError", "MissingDependency", "print_error"]

USAGE_ERROR = 2
"""Exit status for anything the user can fix (argparse uses 2 for bad flags too)."""


class CliError(Exception):
    """A problem the user can fix; its message is the one line printed."""


def print_error(prog: str, message: str) -> None:
    """``prog: message`` on stderr, flushed, on one line."""
    one_line = " ".join(str(message).split())
    print(f"{prog}: {one_line}", file=sys.stderr, flush=True)
