"""What ``--help`` and the ``tether serve`` banner tell a new user."""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
from pathlib import Path

import pytest
from cli_support import run_tether

import tether
from tether.cli import build_parser
from tether.cli import serve as cli_serve

SRC = Path(tether.__file__).parent


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


async def test_echo_help_has_a_description_and_defaults() -> None:
    outcome = await run_tether("echo", "--help")
    assert outcome.returncode == 0
    text = " ".join(outcome.stdout.split())
    assert "sends every message back" in text
    for default in ("(default: 127.0.0.1)", "(default: 8765)", "(default: 1MiB)"):
        assert default in text


async def test_serve_help_lists_every_environment_variable() -> None:
    outcome = await run_tether("serve", "--help")
    assert outcome.returncode == 0
    read_by_serve = set()
    for path in [SRC / "hub" / "config.py", SRC / "_native.py", *(SRC / "cli").glob("*.py")]:
        read_by_serve |= set(re.findall(r"\bTETHER_[A-Z][A-Z_]*[A-Z]\b", path.read_text()))
    assert {"TETHER_HOST", "TETHER_PORT", "TETHER_ORIGINS", "TETHER_COOKIE_NAME"} <= read_by_serve
    missing = sorted(name for name in read_by_serve if name not in outcome.stdout)
    assert not missing, f"serve --help does not mention {missing}"


async def test_bench_help_explains_the_modes() -> None:
    outcome = await run_tether("bench", "--help")
    text = " ".join(outcome.stdout.split())
    assert outcome.returncode == 0
    assert "needs an echo server" in text and "every message to every client" in text
    assert "(default: 5.0)" in text


def test_banner_names_the_loop_and_the_speedups() -> None:
    plan = cli_serve.plan(parse("--loop", "asyncio"), environ={})
    text = cli_serve.banner(plan, "http://127.0.0.1:8000/", "ws://127.0.0.1:8000/x")
    assert f"  runtime   : asyncio, native speedups {tether.speedups_status()}" in text


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_wildcard_host_offers_reachable_urls(host: str) -> None:
    plan = cli_serve.plan(parse("--host", host, "--allow-anonymous"), environ={})
    bracketed = f"[{host}]" if ":" in host else host
    text = cli_serve.banner(
        plan, f"http://{bracketed}:8000/", f"ws://{bracketed}:8000/connection/websocket"
    )
    assert "0.0.0.0" not in text and "[::]" not in text
    first = text.splitlines()[0]
    assert first.startswith("tether hub listening on http://127.0.0.1:8000/ (all addresses; also")
    assert f"http://{socket.gethostname()}:8000/" in first
    assert "  websocket : ws://127.0.0.1:8000/connection/websocket" in text


def test_specific_host_is_shown_as_is() -> None:
    assert cli_serve.reachable_urls("192.0.2.7", 80) == ["http://192.0.2.7:80/"]
    assert cli_serve.reachable_urls("::1", 80) == ["http://[::1]:80/"]


def test_short_jwt_secret_on_loopback_is_a_warning() -> None:
    plan = cli_serve.plan(parse("--jwt-secret", "abc"), environ={})
    (warning,) = plan.warnings
    assert "3 bytes" in warning and "RFC 7518" in warning and "secrets.token_urlsafe" in warning
    assert not cli_serve.plan(parse("--jwt-secret", "k" * 32), environ={}).warnings


async def _serve_banner(*args: str) -> tuple[list[str], str]:
    """Start ``tether serve``, read its banner up to the runtime line, stop it with SIGINT."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tether",
        "serve",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    lines: list[str] = []
    try:
        while not lines or not lines[-1].startswith("  runtime   :"):
            raw = await asyncio.wait_for(process.stdout.readline(), 30)
            assert raw, lines
            lines.append(raw.decode().rstrip("\n"))
    finally:
        process.send_signal(2)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    return lines, err.decode()


async def test_serve_runs_on_uvloop_when_installed() -> None:
    import uvloop  # in the test extra

    lines, _ = await _serve_banner()
    runtime = next(line for line in lines if line.startswith("  runtime   :"))
    assert runtime.startswith(f"  runtime   : uvloop {uvloop.__version__}, native speedups ")
    lines, _ = await _serve_banner("--loop", "asyncio")
    assert any(line.startswith("  runtime   : asyncio, native speedups ") for line in lines)


async def test_short_secret_warning_reaches_stderr() -> None:
    lines, err = await _serve_banner("--jwt-secret", "abc")
    assert lines[0].startswith("tether hub listening on http://127.0.0.1:")
    assert err.startswith("tether serve: warning: the JWT secret is 3 bytes")
