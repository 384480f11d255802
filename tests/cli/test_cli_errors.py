"""Errors a user can fix: one line on stderr, exit status 2; ``--debug`` adds the traceback.

Covers: a missing optional dependency (redis-py, nats-py, uvloop), bad flag
values for each command, an unreachable Redis or NATS at start, an unreadable
or invalid configuration file, a port in use, a short JWT secret.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, run_tether

from tether._extras import MissingDependency
from tether.hub.config import HubConfig
from tether_testing import closed_port


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("url", "module", "extra"),
    [("redis://127.0.0.1:6379/0", "redis", "redis"), ("nats://127.0.0.1:4222", "nats-py", "nats")],
)
async def test_missing_backend_package(url: str, module: str, extra: str) -> None:
    hidden = "redis" if extra == "redis" else "nats"
    outcome = await run_tether("serve", "--port", "0", "--broker", url, hide=(hidden,))
    assert_one_line_error(
        outcome,
        "tether serve",
        f"--broker {url}",
        f"'{module}' package",
        f"pip install 'tether[{extra}]'",
        f"pip install '.[{extra}]'",
    )


async def test_missing_history_package_names_the_flag() -> None:
    outcome = await run_tether(
        "serve", "--port", "0", "--history", "redis://127.0.0.1:6379/0", hide=("redis",)
    )
    assert_one_line_error(outcome, "tether serve", "--history redis://", "tether[redis]")


async def test_missing_uvloop_when_asked_for() -> None:
    outcome = await run_tether("serve", "--port", "0", "--loop", "uvloop", hide=("uvloop",))
    assert_one_line_error(outcome, "tether serve", "--loop uvloop", "pip install 'tether[speed]'")


@pytest.mark.skipif(
    not hasattr(HubConfig(), "proxy"), reason="the backend proxy is not on this branch yet"
)
async def test_missing_httpx_for_the_proxy() -> None:
    outcome = await run_tether(
        "serve", "--port", "0", "--proxy-connect", "http://127.0.0.1:1/", hide=("httpx",)
    )
    assert_one_line_error(outcome, "tether serve", "backend proxy", "pip install 'tether[proxy]'")


async def test_missing_pyjwt() -> None:
    outcome = await run_tether("serve", "--port", "0", hide=("jwt",))
    assert_one_line_error(outcome, "tether serve", "PyJWT", "pip install 'tether[hub]'")


@pytest.mark.parametrize(
    ("args", "prog", "fragment"),
    [
        (("serve", "--port", "http"), "tether serve", "argument --port: invalid port 'http'"),
        (("serve", "--port", "70000"), "tether serve", "invalid port '70000'"),
        (("serve", "--loop", "trio"), "tether serve", "argument --loop: invalid choice"),
        (("echo", "--max-size", "lots"), "tether echo", "argument --max-size: invalid size"),
        (("echo", "--ping-interval", "-1"), "tether echo", "invalid duration '-1'"),
        (("connect", "ws://x/", "--open-timeout", "soon"), "tether connect", "invalid duration"),
        (("bench", "ws://x/", "--size", "0"), "tether bench", "invalid size '0'"),
        (("bench", "ws://x/", "--mode", "rtt,ping"), "tether bench", "invalid mode"),
        (("bench", "ws://x/", "--connections", "0"), "tether bench", "invalid count '0'"),
        (("bench", "http://x/"), "tether bench", "invalid URL"),
        (("bench", "ws://x/", "-m", "fanout", "-s", "4"), "tether bench", "size must be >= 8"),
        (("frobnicate",), "tether", "argument COMMAND: invalid choice: 'frobnicate'"),
        ((), "tether", "required: COMMAND"),
    ],
)
async def test_bad_flag_values(args: tuple[str, ...], prog: str, fragment: str) -> None:
    assert_one_line_error(await run_tether(*args), prog, fragment)


async def test_environment_port_that_is_not_a_number() -> None:
    outcome = await run_tether("serve", env={"TETHER_PORT": "eighty"})
    assert_one_line_error(outcome, "tether serve", "the port must be a number")


@pytest.mark.parametrize("role", ["broker", "history", "presence"])
async def test_unreachable_redis_at_start(role: str) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    outcome = await run_tether("serve", "--port", "0", f"--{role}", url)
    assert_one_line_error(outcome, "tether serve", f"cannot reach the {role} at {url}")


async def test_unreachable_nats_at_start() -> None:
    url = f"nats://127.0.0.1:{closed_port()}"
    outcome = await run_tether("serve", "--port", "0", "--broker", url)
    assert_one_line_error(outcome, "tether serve", f"cannot reach the broker at {url}")


async def test_unresolvable_backend_host() -> None:
    outcome = await run_tether("serve", "--port", "0", "--broker", "redis://no-such-host.invalid/0")
    assert_one_line_error(outcome, "tether serve", "cannot reach the broker at redis://no-such")


async def test_password_is_not_printed() -> None:
    url = f"redis://user:hunter2@127.0.0.1:{closed_port()}/0"
    outcome = await run_tether("serve", "--port", "0", "--broker", url)
    assert_one_line_error(outcome, "tether serve", "redis://user:***@127.0.0.1")
    assert "hunter2" not in outcome.stderr


async def test_debug_shows_the_traceback() -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    for args in (("--debug", "serve", "--broker", url), ("serve", "--broker", url, "--debug")):
        outcome = await run_tether(*args, "--port", "0")
        assert outcome.returncode == 2
        # --debug also turns on debug logging (asyncio logs its selector first on 3.12+).
        assert "Traceback (most recent call last):" in outcome.stderr
        assert outcome.error_lines[-1].startswith("tether serve: cannot reach the broker")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(None, "No such file or directory"), ("port = [", "hub.toml: "), ("dir", "Is a directory")],
)
async def test_unreadable_or_invalid_config(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    path = tmp_path / "hub.toml"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    outcome = await run_tether("serve", "--config", str(path))
    assert_one_line_error(outcome, "tether serve", str(path), fragment)


async def test_config_with_a_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text("[limits]\nmax_subscriptions = 'many'\n")
    outcome = await run_tether("serve", "--config", str(path))
    assert outcome.returncode == 2 and len(outcome.error_lines) == 1, outcome


async def test_port_in_use(busy_port: int) -> None:
    outcome = await run_tether("serve", "--port", str(busy_port))
    assert_one_line_error(outcome, "tether serve", f"cannot listen on 127.0.0.1:{busy_port}")
    outcome = await run_tether("echo", "--port", str(busy_port))
    assert_one_line_error(outcome, "tether echo", f"cannot listen on 127.0.0.1:{busy_port}")


async def test_short_jwt_secret_refused_off_loopback() -> None:
    outcome = await run_tether("serve", "--host", "0.0.0.0", "--jwt-secret", "abc")
    assert_one_line_error(
        outcome, "tether serve", "refusing to serve 0.0.0.0", "3 bytes", "RFC 7518"
    )
    outcome = await run_tether("serve", "--host", "0.0.0.0", env={"TETHER_JWT_SECRET": "abc"})
    assert_one_line_error(outcome, "tether serve", "3 bytes")


async def test_bench_unreachable_server_exits_1() -> None:
    outcome = await run_tether("bench", f"ws://127.0.0.1:{closed_port()}/", "-d", "0.2")
    assert_one_line_error(outcome, "tether bench", "cannot connect to 127.0.0.1:", status=1)


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (
            MissingDependency("the hub", "PyJWT", "hub"),
            2,
            "tether echo: the hub needs the 'PyJWT' package, which is not installed: "
            "pip install 'tether[hub]' (from a clone: pip install '.[hub]')",
        ),
        (
            ImportError("cannot import name 'x'"),
            1,
            "tether echo: unexpected error: ImportError: cannot import name 'x' "
            "(run with --debug for the traceback)",
        ),
        (
            RuntimeError("a bug"),
            1,
            "tether echo: unexpected error: RuntimeError: a bug "
            "(run with --debug for the traceback)",
        ),
    ],
)
def test_errors_raised_deep_inside(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    status: int,
    line: str,
) -> None:
    """A missing optional dependency is the user's to fix; any other ImportError is a bug."""
    import tether.cli

    def fail(args: object) -> int:
        raise error

    monkeypatch.setitem(tether.cli.COMMANDS, "echo", fail)
    with pytest.raises(SystemExit) as exited:
        tether.cli.main(["echo"])
    assert exited.value.code == status
    assert capsys.readouterr().err.splitlines() == [line]
