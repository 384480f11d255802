"""bench/compare.py runs from a clone: starts tether's and websockets' peers, prints medians.

A smoke test with tiny runs: it checks that every peer starts, answers and is
measured, never how fast (performance claims live in bench/README.md).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "compare.py"


async def test_compare_measures_every_peer() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--duration",
        "0.3",
        "--repeat",
        "1",
        "--peers",
        "tether,tether-listener,websockets",
        "--workloads",
        "rtt 4KiB,fanout",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()[-2000:]
    table = json.loads(out)
    assert set(table) >= {"rtt 4KiB", "fanout 200x200 64B"}
    for label in ("rtt 4KiB", "fanout 200x200 64B"):
        assert set(table[label]) == {"tether", "tether-listener", "websockets"}
        assert all(rate > 0 for rate in table[label].values()), table[label]
    # One progress line per run on stderr: 2 workloads x 3 peers.
    assert len([line for line in err.decode().splitlines() if " run 1: " in line]) == 6
