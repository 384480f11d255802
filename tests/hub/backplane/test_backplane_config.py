"""Choosing backends: flags, environment, file; defaults; what ``tether serve`` says."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from tether.cli import build_parser
from tether.cli import serve as cli_serve
from tether.hub import HubConfig
from tether.hub.backends import backend_kind, resolve
from tether.hub.config import ConfigError

REDIS = "redis://10.1.2.3:6379/2"
NATS = "nats://10.1.2.3:4222"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_kinds() -> None:
    assert backend_kind("") == backend_kind("memory") == "memory"
    assert backend_kind(REDIS) == backend_kind("rediss://h") == backend_kind("unix:///s") == "redis"
    assert backend_kind(NATS) == "nats"
    with pytest.raises(ConfigError, match="unknown backend"):
        backend_kind("kafka://h")


def test_history_and_presence_follow_a_redis_or_nats_broker() -> None:
    urls = resolve(HubConfig(broker=REDIS))
    assert (urls.broker, urls.history, urls.presence) == (REDIS, REDIS, REDIS)
    # NATS alone makes a consistent cluster: JetStream history, KeyValue presence.
    urls = resolve(HubConfig(broker=NATS))
    assert (urls.broker, urls.history, urls.presence) == (NATS, NATS, NATS)
    urls = resolve(HubConfig(broker=NATS, history=REDIS, presence="memory"))
    assert (urls.history, urls.presence) == (REDIS, "memory")
    urls = resolve(HubConfig())
    assert (urls.broker, urls.history, urls.presence) == ("memory",) * 3
    assert resolve(HubConfig(history=NATS)).history == NATS  # JetStream history
    assert resolve(HubConfig(presence=NATS)).presence == NATS  # KeyValue presence
    with pytest.raises(ConfigError, match="presence cannot be SQLite"):
        resolve(HubConfig(presence="sqlite:/tmp/x"))


def test_data_keeps_history_in_sqlite_on_one_node_only(tmp_path: Path) -> None:
    urls = resolve(HubConfig(data=str(tmp_path)))
    assert (urls.broker, urls.history, urls.presence) == ("memory", f"sqlite:{tmp_path}", "memory")
    assert backend_kind(urls.history) == "sqlite"
    with pytest.raises(ConfigError, match="data and history both"):
        resolve(HubConfig(data=str(tmp_path), history=REDIS))
    with pytest.raises(ConfigError, match="makes a cluster"):
        resolve(HubConfig(data=str(tmp_path), broker=NATS))
    # Said explicitly, a networked broker may keep history local anyway.
    local = resolve(HubConfig(broker=REDIS, history=f"sqlite:{tmp_path}"))
    assert (local.history, local.presence) == (f"sqlite:{tmp_path}", REDIS)


def test_banner_says_whether_history_survives_a_restart(tmp_path: Path) -> None:
    quick = cli_serve.plan(parse(), environ={})
    text = cli_serve.banner(quick, "http://h:1/", "ws://h:1/x")
    assert "history   : in memory: lost when this node restarts" in text
    durable = cli_serve.plan(parse("--data", str(tmp_path / "d")), environ={})
    assert durable.config.data == str(tmp_path / "d")
    text = cli_serve.banner(durable, "http://h:1/", "ws://h:1/x")
    assert f"history   : SQLite in {tmp_path / 'd'} (survives restarts)" in text
    path = tmp_path / "hub.toml"
    path.write_text(f'data = "{tmp_path / "f"}"\n')
    from_file = cli_serve.plan(parse("--config", str(path)), environ={})
    assert from_file.backend_urls["history"] == f"sqlite:{tmp_path / 'f'}"
    from_env = cli_serve.plan(parse(), environ={"TETHER_DATA": str(tmp_path / "e")})
    assert from_env.backend_urls["history"] == f"sqlite:{tmp_path / 'e'}"
    shared = cli_serve.plan(parse("--broker", NATS), environ={})
    assert "history   : shared on nats" in cli_serve.banner(shared, "http://h:1/", "ws://h:1/x")


def test_flags_environment_and_file(tmp_path: Path) -> None:
    plan = cli_serve.plan(parse("--broker", NATS, "--history", REDIS), environ={})
    assert (plan.config.broker, plan.config.history, plan.config.presence) == (NATS, REDIS, "")
    text = cli_serve.banner(plan, "http://127.0.0.1:8000/", "ws://127.0.0.1:8000/x")
    assert f"backends  : broker {NATS}, history {REDIS}, presence {NATS}" in text
    from_env = cli_serve.plan(parse(), environ={"TETHER_BROKER": REDIS})
    assert from_env.config.broker == REDIS
    path = tmp_path / "hub.toml"
    path.write_text(f'broker = "{REDIS}"\nbackplane_prefix = "mine"\n')
    from_file = cli_serve.plan(parse("--config", str(path)), environ={})
    assert (from_file.config.broker, from_file.config.backplane_prefix) == (REDIS, "mine")
    flag_wins = cli_serve.plan(parse("--config", str(path), "--broker", NATS), environ={})
    assert flag_wins.config.broker == NATS
    default = cli_serve.plan(parse(), environ={})
    assert "backends" not in cli_serve.banner(default, "http://h:1/", "ws://h:1/x")


def test_bad_urls_are_usage_errors() -> None:
    with pytest.raises(cli_serve.UsageError, match="unknown backend"):
        cli_serve.plan(parse("--broker", "kafka://x"), environ={})
    with pytest.raises(cli_serve.UsageError, match="presence cannot be SQLite"):
        cli_serve.plan(parse("--presence", "sqlite:/tmp/x"), environ={})
    with pytest.raises(cli_serve.UsageError, match="makes a cluster"):
        cli_serve.plan(parse("--broker", NATS, "--data", "/tmp/x"), environ={})


def test_metrics_key_from_flag_environment_and_file(tmp_path: Path) -> None:
    """--metrics-key, TETHER_METRICS_KEY and the file's metrics_key; the banner says so."""
    flag = cli_serve.plan(parse("--metrics-key", "k1"), environ={})
    assert flag.config.metrics_key == "k1"
    assert "(Authorization: Bearer KEY)" in cli_serve.banner(flag, "http://h:1/", "ws://h:1/x")
    env = cli_serve.plan(parse(), environ={"TETHER_METRICS_KEY": "k2"})
    assert env.config.metrics_key == "k2"
    path = tmp_path / "hub.toml"
    path.write_text('metrics_key = "k3"\n')
    assert cli_serve.plan(parse("--config", str(path)), environ={}).config.metrics_key == "k3"
    default = cli_serve.plan(parse(), environ={})
    assert not default.config.metrics_key
    assert "Bearer" not in cli_serve.banner(default, "http://h:1/", "ws://h:1/x")
