"""Running ``python -m tether ...`` (optionally with some modules made unimportable) in tests."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass

GUARD = 60.0  # seconds any one command may take on a busy machine


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.splitlines()


def _command(args: tuple[str, ...], hide: tuple[str, ...]) -> list[str]:
    if not hide:
        return [sys.executable, "-m", "tether", *args]
    # A module set to None in sys.modules fails to import, as if not installed.
    script = (
        "import sys\n"
        f"for name in {list(hide)!r}: sys.modules[name] = None\n"
        "from tether.cli import main\n"
        f"main({list(args)!r})\n"
    )
    return [sys.executable, "-c", script]


async def run_tether(
    *args: str,
    hide: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = GUARD,
) -> Outcome:
    """Run the CLI to completion; ``hide`` names modules that must look uninstalled."""
    process = await asyncio.create_subprocess_exec(
        *_command(args, hide),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Outcome(process.returncode, out.decode(), err.decode())


def assert_one_line_error(outcome: Outcome, prog: str, *fragments: str, status: int = 2) -> None:
    """Exit ``status``, exactly one line on stderr, starting ``prog:``, no traceback."""
    assert outcome.returncode == status, outcome
    assert len(outcome.error_lines) == 1, outcome.stderr
    line = outcome.error_lines[0]
    assert line.startswith(f"{prog}: "), line
    assert "Traceback" not in outcome.stderr
    for fragment in fragments:
        assert fragment in line, (fragment, line)
