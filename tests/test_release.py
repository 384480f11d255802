"""What a release promises beyond the code: one version, and a library without the hub's deps.

The WebSocket library must install and import without PyJWT and
``cryptography`` (they come with the ``hub`` extra); these tests hide them
from a fresh interpreter instead of uninstalling them, so they run in the
same environment as the rest of the suite.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import tether

# A meta-path finder that refuses the hub's dependencies, as if not installed.
HIDE_HUB_DEPS = textwrap.dedent(
    """
    import sys

    class RefuseHubDeps:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"jwt", "cryptography", "h11"}:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, RefuseHubDeps())
    """
)


def run_without_hub_deps(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", HIDE_HUB_DEPS + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_version_is_the_installed_metadata() -> None:
    assert tether.__version__ == importlib.metadata.version("tether")


def test_jwt_is_required_only_by_the_hub_extra() -> None:
    requirements = importlib.metadata.requires("tether") or []
    jwt = [r for r in requirements if r.lower().startswith("pyjwt")]
    assert jwt, requirements
    assert all('extra == "hub"' in r for r in jwt), jwt


def test_library_imports_without_jwt_or_cryptography() -> None:
    result = run_without_hub_deps(
        """
        import tether, tether.asyncio, tether.protocol, tether.hub
        tether.serve, tether.connect  # the lazily imported asyncio API
        try:
            import jwt
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("the finder did not hide jwt")
        assert "jwt" not in sys.modules and "cryptography" not in sys.modules
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_serve_without_jwt_says_which_extra_to_install() -> None:
    result = run_without_hub_deps(
        """
        from tether.cli import main
        main(["serve", "--port", "0"])
        """
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'tether[hub]'" in lines[0]
    assert result.stdout == ""


def test_hub_token_checks_without_jwt_say_which_extra_to_install() -> None:
    result = run_without_hub_deps(
        """
        from tether.hub import TokenVerifier
        from tether.hub.auth import MissingDependency
        TokenVerifier()  # no keys: nothing to check, no PyJWT needed
        try:
            TokenVerifier(secret="s")
        except MissingDependency as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'tether[hub]'" in result.stdout
