"""The atheris harnesses of fuzz/, run briefly: a few thousand coverage-guided inputs each.

Each harness (frame parser, handshake parser, hub command decoder) starts
from its seeds in fuzz/seeds/ and runs ``RUNS`` inputs under libFuzzer with
a fixed seed; any contract violation is a crash, printed with the input
that caused it. Longer runs: ``fuzz/run.sh SECONDS``. atheris installs from
wheels on Linux (the ``test`` extra); elsewhere these tests skip, or fail
under ``TETHER_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tether_testing import require

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
RUNS = 3000


@pytest.mark.parametrize("harness", ["frames", "handshake", "commands"])
def test_atheris_harness_runs_clean(harness: str, tmp_path: Path) -> None:
    require(importlib.util.find_spec("atheris"), "atheris is not installed (Linux wheels only)")
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ / "seeds" / harness, corpus)
    done = subprocess.run(
        [
            sys.executable,
            str(FUZZ / f"fuzz_{harness}.py"),
            f"-runs={RUNS}",
            "-seed=1",
            "-timeout=20",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
            *([f"-dict={FUZZ / (harness + '.dict')}"] if harness == "commands" else []),
            str(corpus),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    ran = re.search(r"Done (\d+) runs in (\d+) second", output)
    assert ran is not None and int(ran.group(1)) >= RUNS, output[-2000:]
    # libFuzzer saw coverage grow from the seeds: the harness reaches the code it fuzzes.
    features = re.search(r"stat::new_units_added:\s+(\d+)", output)
    assert features is not None and int(features.group(1)) > 0, output[-2000:]
