"""Programs written for websockets run on tether with only their import lines changed.

websockets' own ``example/`` folder is not in its sdist (and CI cannot
reach GitHub), so ``programs/`` holds programs of our own that use the same
API surface as those examples and the snippets of its documentation: an
echo server run forever, a health check, a broadcast counter, graceful
shutdown on SIGTERM, TLS, Unix sockets, HTTP Basic auth, URL routing and
the everyday idioms (pong waiters, ``text=``/``decode=``, close frames,
headers, subprotocols, origins, loggers). Each runs twice, in a
subprocess: once as written, on websockets, and once with ``websockets``
replaced by ``tether`` in its imports. Both runs must succeed and print the
same lines. (``tests/compat/upstream_examples.py`` runs websockets' real
examples from a checkout, by hand.)
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

PROGRAMS = sorted((Path(__file__).parent / "programs").glob("*.py"))
TIMEOUT = 30.0


def port_to_tether(source: str) -> str:
    """Change the import lines, and nothing else."""
    source = re.sub(r"^from websockets(\.|\s)", r"from tether\1", source, flags=re.M)
    return re.sub(r"^import websockets$", "import tether as websockets", source, flags=re.M)


async def run(source: str, tmp_path: Path) -> str:
    tmp_path.mkdir()
    program = tmp_path / "program.py"
    program.write_text(source)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(program),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except asyncio.TimeoutError:  # not the built-in TimeoutError on Python 3.10
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.stem for p in PROGRAMS])
async def test_program_runs_on_tether_as_on_websockets(program: Path, tmp_path: Path) -> None:
    source = program.read_text()
    ported = port_to_tether(source)
    assert ported != source
    original, on_tether = await asyncio.gather(
        run(source, tmp_path / "original"), run(ported, tmp_path / "ported")
    )
    assert original.strip(), "the program printed nothing"
    assert on_tether == original


def test_port_changes_only_imports() -> None:
    source = "from websockets.asyncio.server import serve\nimport websockets\nprint('websockets')"
    assert port_to_tether(source) == (
        "from tether.asyncio.server import serve\nimport tether as websockets\nprint('websockets')"
    )
