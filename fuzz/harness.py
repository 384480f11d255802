"""What the atheris harnesses share: running one under libFuzzer, or replaying inputs.

Each harness module defines ``test_one_input(data: bytes) -> None``, which
raises (an AssertionError or any other exception) only when tether breaks
its contract for that input. ``main(test_one_input)`` runs it under
atheris' coverage-guided libFuzzer, taking libFuzzer's own flags
(``-runs=N``, ``-max_total_time=S``, a corpus directory); without atheris
(not installed, or a platform without wheels) it replays the files given on
the command line, so a crash found elsewhere can be reproduced anywhere.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def main(test_one_input: Callable[[bytes], None]) -> None:
    try:
        import atheris
    except ImportError:
        paths = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
        for path in paths:
            test_one_input(path.read_bytes())
        print(f"atheris is not installed: replayed {len(paths)} input(s)")
        return
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def instrumented() -> object:
    """A context manager that instruments tether's modules imported inside it."""
    try:
        import atheris
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return atheris.instrument_imports(include=["tether"])
