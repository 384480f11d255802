"""``tether serve``: configuration precedence, the safe default, and SIGTERM -> 1012."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import pytest
from hub_support import GUARD, WireClient, http

from tether.cli import build_parser, main
from tether.cli import serve as cli_serve


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_development_mode_on_loopback() -> None:
    plan = cli_serve.plan(parse(), environ={})
    assert plan.dev_mode and (plan.host, plan.port) == ("127.0.0.1", 8000)
    config = plan.config
    assert config.allow_anonymous and config.jwt_secret and config.api_key
    text = cli_serve.banner(plan, "http://127.0.0.1:8000/", "ws://127.0.0.1:8000/x")
    assert "DEVELOPMENT MODE" in text and config.api_key in text
    assert text.splitlines()[0] == "tether hub listening on http://127.0.0.1:8000/"


def test_refuses_to_serve_anyone_elsewhere() -> None:
    with pytest.raises(cli_serve.UsageError, match="without authentication"):
        cli_serve.plan(parse("--host", "0.0.0.0"), environ={})
    explicit = cli_serve.plan(parse("--host", "0.0.0.0", "--allow-anonymous"), environ={})
    assert not explicit.dev_mode and explicit.config.jwt_secret is None
    secured = cli_serve.plan(parse("--host", "::", "--jwt-secret", "s" * 32), environ={})
    assert not secured.dev_mode and not secured.config.allow_anonymous
    text = cli_serve.banner(secured, "http://[::]:8000/", "ws://[::]:8000/x")
    assert "DEVELOPMENT" not in text and "s" * 32 not in text


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('host = "127.0.0.2"\nport = 7000\napi_key = "file"\njwt_secret = "f"\n')
    env = {"TETHER_API_KEY": "env", "TETHER_PORT": "7001"}
    from_file_and_env = cli_serve.plan(parse("--config", str(path)), environ=env)
    assert from_file_and_env.host == "127.0.0.2"
    assert from_file_and_env.port == 7001
    assert from_file_and_env.config.api_key == "env"
    flags = cli_serve.plan(
        parse("--config", str(path), "--port", "0", "--api-key", "flag", "--origin", "https://a"),
        environ=env,
    )
    assert (flags.port, flags.config.api_key) == (0, "flag")
    assert flags.config.origins == ["https://a"]


def test_public_key_file_and_errors(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----")
    plan = cli_serve.plan(parse("--jwt-public-key", str(key)), environ={})
    assert plan.config.jwt_public_key == "-----BEGIN PUBLIC KEY-----" and not plan.dev_mode
    with pytest.raises(cli_serve.UsageError):
        cli_serve.plan(parse("--jwt-public-key", str(tmp_path / "missing.pem")), environ={})
    with pytest.raises(cli_serve.UsageError):
        cli_serve.plan(parse("--config", str(tmp_path / "missing.toml")), environ={})
    with pytest.raises(cli_serve.UsageError):
        cli_serve.plan(parse(), environ={"TETHER_PORT": "eighty"})


def test_run_reports_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--host", "10.1.2.3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tether serve: refusing") and err.count("\n") == 1


async def test_sigterm_tells_clients_1012() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tether",
        "serve",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), GUARD)).decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, line
        port = int(match.group(1))
        status, _, body = await http(port, "GET", "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        client = await WireClient.open(f"ws://127.0.0.1:{port}/connection/websocket")
        await client.call("subscribe", {"channel": "chat:lobby"})
        process.send_signal(signal.SIGTERM)
        push = await client.push("disconnect")
        assert push == {
            "push": "disconnect",
            "code": 1012,
            "reason": "server restarting",
            "reconnect": True,
        }
        assert (await client.close_code())[0] == 1012
        assert await asyncio.wait_for(process.wait(), GUARD) == 0
        rest = (await process.stdout.read()).decode()
        assert "stopped" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
