"""``tether --version`` and the Python API that says the same (tether.USING_SPEEDUPS ...)."""

from __future__ import annotations

import asyncio
import platform
import sys

import pytest
from cli_support import run_tether

import tether
from tether import _about


@pytest.mark.parametrize("flag", ["--version", "-V", "-v"])
async def test_version_flags(flag: str) -> None:
    outcome = await run_tether(flag)
    assert outcome.returncode == 0, outcome
    lines = outcome.stdout.splitlines()
    assert lines[0] == f"tether {tether.__version__}"
    assert lines[1].startswith(f"python {platform.python_version()} ")
    assert f"native speedups: {tether.speedups_status()}" in lines
    assert any(line.startswith("event loop for tether serve: ") for line in lines)
    assert outcome.stdout.strip() == tether.version_report()


def test_python_api_agrees_with_itself() -> None:
    status = tether.speedups_status()
    assert isinstance(tether.USING_SPEEDUPS, bool)
    assert (status == "on") is tether.USING_SPEEDUPS
    assert "USING_SPEEDUPS" in tether.__all__ and "speedups_status" in dir(tether)


async def test_speedups_turned_off_by_environment() -> None:
    outcome = await run_tether("--version", env={"TETHER_NO_SPEEDUPS": "1"})
    assert "native speedups: off (TETHER_NO_SPEEDUPS=1)" in outcome.stdout.splitlines()


async def test_speedups_that_fail_to_import_say_why() -> None:
    outcome = await run_tether("--version", hide=("tether._speedups",))
    line = next(li for li in outcome.stdout.splitlines() if li.startswith("native speedups:"))
    assert line.startswith("native speedups: off (tether._speedups failed to import: ")
    script = "import sys; sys.modules['tether._speedups'] = None; import tether; "
    script += "print(tether.USING_SPEEDUPS)"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert out.decode().strip() == "False"


async def test_event_loop_line_without_uvloop() -> None:
    outcome = await run_tether("--version", hide=("uvloop",))
    assert "event loop for tether serve: asyncio (uvloop not installed" in outcome.stdout


def test_event_loop_line_with_uvloop() -> None:
    import uvloop  # in the test extra

    assert _about.event_loop_status() == f"uvloop {uvloop.__version__}"
