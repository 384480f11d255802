"""Configuration (namespaces, TOML, environment) and the small parts: rate limit, registry,
metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.hub import ChannelOptions, ConfigError, HubConfig, load_config
from tether.hub.config import config_from_mapping
from tether.hub.metrics import Metrics
from tether.hub.ratelimit import TokenBucket
from tether.hub.registry import ChannelRegistry


def test_documented_defaults() -> None:
    options = ChannelOptions()
    assert (options.history_size, options.history_ttl) == (100, 300.0)
    assert options.presence and options.publish and options.anonymous
    config = HubConfig()
    assert not config.allow_anonymous
    assert config.cookie_name == "tether_token"
    limits = config.limits
    assert limits.max_channel_length == 255
    assert limits.max_payload_size == 64 * 1024
    assert limits.max_subscriptions == 128
    assert limits.max_presence_info_size == 1024


def test_namespaces() -> None:
    chat = ChannelOptions(history_size=5)
    config = HubConfig(namespaces={"chat": chat})
    assert config.channel_options("chat:lobby") is chat
    assert config.channel_options("lobby") is config.channels
    assert config.channel_options("other:x") is config.channels
    config.strict_namespaces = True
    assert config.channel_options("other:x") is None
    assert config.channel_options("plain") is config.channels


def test_toml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    key = tmp_path / "key.pem"
    key.write_text("PEM")
    path.write_text(
        f"""
host = "0.0.0.0"
port = 9000
api_key = "from-file"
allow_anonymous = false
origins = ["https://example.com"]
strict_namespaces = true
jwt_public_key_file = "{key}"
ping_interval = 10

[channels]
history_size = 10

[namespaces.chat]
history_ttl = 60
presence = false

[limits]
max_payload_size = 1000
publish_rate = 5
"""
    )
    config = load_config(path, {"TETHER_API_KEY": "from-env", "TETHER_ALLOW_ANONYMOUS": "yes"})
    assert config.api_key == "from-env"
    assert config.allow_anonymous
    assert config.origins == ["https://example.com"]
    assert config.jwt_public_key == "PEM"
    assert config.ping_interval == 10.0
    assert config.channels.history_size == 10
    chat = config.namespaces["chat"]
    assert (chat.history_size, chat.history_ttl, chat.presence) == (10, 60.0, False)
    assert config.limits.max_payload_size == 1000
    assert config.limits.publish_rate == 5.0
    env = load_config(None, {"TETHER_ORIGINS": "https://a, https://b", "TETHER_JWT_SECRET": "s"})
    assert env.origins == ["https://a", "https://b"]
    assert env.jwt_secret == "s"


@pytest.mark.parametrize(
    "data",
    [
        {"nonsense": 1},
        {"channels": {"history_size": "big"}},
        {"channels": {"presence": 1}},
        {"namespaces": {"chat": {"unknown": True}}},
        {"limits": {"max_payload_size": 1.5}},
        {"allow_anonymous": "yes"},
        {"ping_interval": True},
        {"origins": "https://example.com"},
        {"channels": 5},
        {"jwt_public_key_file": "/does/not/exist.pem"},
    ],
)
def test_bad_configuration_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        config_from_mapping(data)


def test_bad_toml_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("this is = = not toml")
    with pytest.raises(ConfigError):
        load_config(path, {})


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert bucket.take() and not bucket.take()
    now[0] += 100  # capped at capacity
    assert sum(bucket.take() for _ in range(10)) == 3


def test_registry() -> None:
    registry: ChannelRegistry[str] = ChannelRegistry()
    assert registry.add("ch", "s1") is True
    assert registry.add("ch", "s2") is False
    assert registry.add("ch", "s2") is False
    assert registry.subscriptions == 2 and len(registry) == 1 and "ch" in registry
    assert registry.remove("ch", "s1") is False
    assert registry.remove("ch", "nobody") is False
    assert registry.remove("ch", "s2") is True
    assert registry.sessions("ch") == set() and registry.subscriptions == 0


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.sent(3, 10)
    metrics.close_codes[4010] += 2
    metrics.publish_errors[111] += 1
    text = metrics.render({"connections": ("Open connections.", 4)})
    assert "# TYPE tether_connections gauge\ntether_connections 4\n" in text
    assert "tether_messages_out_total 3\n" in text
    assert "tether_bytes_out_total 30\n" in text
    assert 'tether_close_codes_total{code="4010"} 2\n' in text
    assert 'tether_publish_errors_total{code="111"} 1\n' in text
    assert text.endswith("\n")
