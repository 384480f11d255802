"""How the ``tether`` commands fail: one line on stderr, a documented exit status.

A :class:`CliError` is a problem the user can fix (a missing optional
dependency, a bad setting, a backend that cannot be reached, a port in use):
``main`` prints its message as one line and exits with status 2. The
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import sys

USAGE_ERROR = 2
"""Exit status for anything the user can fix (argparse uses 2 for bad flags too)."""


class CliError(Exception):
    """A problem the user can fix; its message is the one line printed."""


class MissingDependency(CliError):
    """An optional dependency is not installed: say which extra brings it."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the {module!r} package, which is not installed: "
            f"pip install 'tether[{extra}]' (from a clone: pip install '.[{extra}]')"
        )
        self.module = module
        self.extra = extra


def print_error(prog: str, message: str) -> None:
    """``prog: message`` on stderr, flushed, on one line."""
    one_line = " ".join(str(message).split())
    print(f"{prog}: {one_line}", file=sys.stderr, flush=True)
