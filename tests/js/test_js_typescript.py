"""tether.js as an npm package: ``npm pack`` of src/tether/static, checked by TypeScript.

The packed package is unpacked into a throw-away project (tests/js/ts/project) as
``node_modules/tether-client``, exactly what ``npm install tether-client-X.tgz`` lays out,
and ``tsc --noEmit`` must accept a file that uses the whole API (with ``@ts-expect-error``
on misuses the types must refuse) and reject a file of deliberate errors. A runtime check
keeps tether.d.ts and tether.js exporting the same values.

TypeScript comes from npm, pinned by tests/js/ts/package-lock.json; CI (.ci/run) and a
developer install it with::

    cd tests/js/ts && npm ci

Without node, npm or that install the tests skip with the reason, or fail under
``TETHER_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

import tether
from tether_testing import require

HERE = Path(__file__).resolve().parent
TS_DIR = HERE / "ts"
PROJECT = TS_DIR / "project"
STATIC = Path(tether.__file__).resolve().parent / "static"
PACKAGE = "tether-client"
TIMEOUT = 180


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


@pytest.fixture(scope="module")
def node_tools() -> dict[str, str]:
    """Paths of node, npm and tsc (module scoped: the packing is shared by the tests)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    require(node, "node is not installed (apt-get install -y nodejs)")
    require(npm, "npm is not installed (apt-get install -y npm)")
    tsc = TS_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    require(tsc.is_file(), "TypeScript is missing: run `npm ci` in tests/js/ts")
    assert node is not None and npm is not None
    return {"node": node, "npm": npm, "tsc": str(tsc)}


@pytest.fixture(scope="module")
def packed(node_tools: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A consumer project with the ``npm pack``ed package installed; returns its folder."""
    out = tmp_path_factory.mktemp("npm-pack")
    result = _run([node_tools["npm"], "pack", "--json", "--pack-destination", str(out)], STATIC)
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert report["name"] == PACKAGE
    assert sorted(f["path"] for f in report["files"]) == [
        "package.json",
        "tether.d.ts",
        "tether.js",
    ], "the package holds the client, its types and package.json, nothing else"
    project = out / "project"
    shutil.copytree(PROJECT, project)
    target = project / "node_modules" / PACKAGE
    target.mkdir(parents=True)
    with tarfile.open(out / report["filename"]) as archive:
        for member in archive.getmembers():
            # npm puts everything under "package/"; nothing else may be in the archive.
            assert member.isfile() and member.name.startswith("package/"), member.name
            member.name = member.name.removeprefix("package/")
            extracted = archive.extractfile(member)
            assert extracted is not None
            (target / member.name).write_bytes(extracted.read())
    return project


def test_package_version_is_tethers() -> None:
    manifest = json.loads((STATIC / "package.json").read_text())
    assert manifest["version"] == tether.__version__
    exports = manifest["exports"]["."]
    for field in (manifest["main"], manifest["module"], manifest["types"], *exports.values()):
        assert (STATIC / field).is_file(), field
    assert next(iter(exports)) == "types", "TypeScript needs the `types` condition first"


@pytest.mark.parametrize("config", ["tsconfig.json", "tsconfig.node.json"])
def test_typescript_accepts_the_api(node_tools: dict[str, str], packed: Path, config: str) -> None:
    """Bundler and NodeNext module resolution both find the types through `exports`."""
    result = _run([node_tools["node"], node_tools["tsc"], "-p", config], packed)
    assert result.returncode == 0, result.stdout + result.stderr


def test_typescript_rejects_misuse(node_tools: dict[str, str], packed: Path) -> None:
    result = _run([node_tools["node"], node_tools["tsc"], "-p", "tsconfig.misuse.json"], packed)
    assert result.returncode != 0, "tsc accepted code the declarations must refuse"
    errors = re.findall(r"misuses_api\.ts\((\d+),\d+\): error (TS\d+)", result.stdout)
    assert errors == [("6", "TS2554"), ("7", "TS2322"), ("8", "TS2322")], result.stdout


def test_declared_values_are_the_modules_exports(node_tools: dict[str, str], packed: Path) -> None:
    """Every value tether.d.ts declares is exported by tether.js, and nothing more."""
    declarations = (packed / "node_modules" / PACKAGE / "tether.d.ts").read_text()
    declared = set(
        re.findall(r"^export declare (?:const|function|class) (\w+)", declarations, re.M)
    )
    # Imported by its package name, through package.json's `exports`, as a bundler would.
    script = f"import('{PACKAGE}').then((m) => console.log(JSON.stringify(Object.keys(m))))"
    result = _run([node_tools["node"], "--input-type=module", "-e", script], packed)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == declared


def test_node_finds_the_package_without_typescript(
    node_tools: dict[str, str], packed: Path
) -> None:
    """The package works at runtime too: a client made in node, with `ws`-like injection."""
    script = (
        f"const {{ Client, PROTOCOL }} = await import('{PACKAGE}');"
        "class Fake { constructor(url, protocols) { Fake.seen = [url, protocols]; } }"
        "const c = new Client('ws://127.0.0.1:1/connection/websocket', { WebSocket: Fake });"
        "c.connect(); await Promise.resolve();"
        "console.log(JSON.stringify({ state: c.state, seen: Fake.seen, PROTOCOL }));"
        "c.disconnect();"
    )
    result = _run([node_tools["node"], "--input-type=module", "-e", script], packed)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "state": "connecting",
        "seen": ["ws://127.0.0.1:1/connection/websocket", ["tether.v1"]],
        "PROTOCOL": "tether.v1",
    }
