"""Run tether.js's unit tests (tests/js/*.test.mjs) with node's built-in test runner."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_tether_js_unit(require: Callable[..., None]) -> None:
    node = shutil.which("node")
    require(node, "node is not installed (apt-get install -y nodejs)")
    assert node is not None
    files = sorted(str(p) for p in HERE.glob("*.test.mjs"))
    assert files, "no tests/js/*.test.mjs"
    result = subprocess.run(
        [node, "--test", *files],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
