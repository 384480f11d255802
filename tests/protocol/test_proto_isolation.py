"""The protocol core stays sans-I/O, and works with the pure-Python masking."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tether.protocol

PROTOCOL_DIR = Path(tether.protocol.__file__).parent
SRC_DIR = PROTOCOL_DIR.parent.parent
FORBIDDEN = {"asyncio", "socket", "threading", "selectors", "ssl", "concurrent", "multiprocessing"}


def _python_files() -> list[Path]:
    files = sorted(PROTOCOL_DIR.rglob("*.py"))
    assert len(files) >= 10
    return files


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(PROTOCOL_DIR)))
def test_no_io_imports_statically(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            pytest.fail(f"{path.name}: dynamic __import__")
    roots = {name.split(".")[0] for name in imported}
    assert not roots & FORBIDDEN, f"{path.name} imports {sorted(roots & FORBIDDEN)}"
    # Inside tether, the core may only use itself and the masking/UTF-8 helpers.
    for name in imported:
        if name.startswith("tether."):
            assert name.startswith(
                (
                    "tether.protocol",
                    "tether._native",
                    "tether._mask",
                    "tether._utf8",
                    "tether._lengths",
                )
            ), name


# ``tether/__init__.py`` loads the asyncio layer only when one of its names is
# first used, so importing the core, through the real package, loads no I/O.
_PROBE = """
import importlib, json, pkgutil, sys

import tether.protocol
names = [m.name for m in pkgutil.walk_packages(tether.protocol.__path__, "tether.protocol.")]
for name in names:
    importlib.import_module(name)
import tether
from tether import CloseCode, ProtocolError  # the core's names stay eager
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""

_LAZY_PROBE = """
import sys
import tether
assert "tether.asyncio" not in sys.modules
from tether import serve, Listener
assert "tether.asyncio.server" in sys.modules
assert tether.connect.__module__ == "tether.asyncio.client"
assert {"serve", "connect", "broadcast"} <= set(dir(tether))
assert set(tether.__all__) <= set(dir(tether))
try:
    tether.no_such_name
except AttributeError as exc:
    assert "no_such_name" in str(exc)
else:
    raise AssertionError("no AttributeError")
print("ok")
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **env}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC_DIR), environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=60
    )


def test_no_io_modules_loaded_at_runtime() -> None:
    """A fresh interpreter importing the core loads no event loop and no thread.

    Checked with nothing exempt: not ``threading`` (so not ``logging``, which
    imports it: the core logs through a logger it imports on first use), not
    the asyncio layer's native read path.
    """
    result = _run(_PROBE)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "tether.protocol.connection" in report["imported"]
    assert "tether.protocol.extensions.base" in report["imported"]
    loaded = set(report["modules"])
    for name in ("asyncio", "threading", "socket", "selectors", "ssl", "concurrent.futures"):
        assert name not in loaded, f"{name} imported by tether.protocol"
    assert not {name for name in loaded if name.startswith("tether.asyncio")}


_SMOKE = """
import tether._native as native
assert not native.USING_SPEEDUPS, "TETHER_NO_SPEEDUPS=1 was ignored"
from tether import _mask
assert native.apply_mask is _mask.apply_mask
from tether.protocol import Connection, Side, Ping
client, server = Connection(Side.CLIENT), Connection(Side.SERVER, max_size=None)
messages = ["", "é" * 1000, b"\\x00" * 70000, "x" * 125]
for m in messages:
    (client.send_text if isinstance(m, str) else client.send_binary)(m)
client.send_ping(b"abc")
for chunk in client.data_to_send():
    for i in range(0, len(chunk), 1000):
        server.receive_data(chunk[i : i + 1000])
assert server.events_received() == [*messages, Ping(b"abc")], "round trip"
for chunk in server.data_to_send():
    client.receive_data(chunk)
print("ok")
"""


def test_asyncio_layer_loads_on_first_use() -> None:
    result = _run(_LAZY_PROBE)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_pure_python_masking_round_trip() -> None:
    result = _run(_SMOKE, TETHER_NO_SPEEDUPS="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
