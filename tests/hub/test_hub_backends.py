"""Backends registered by URL scheme, and the ``tether.backends`` entry point group."""

from __future__ import annotations

import types
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from tether.hub import HubConfig, MemoryBroker, MemoryHistory, MemoryPresence, backends
from tether.hub.backends import Backend, backend_kind, make_broker, make_history, resolve
from tether.hub.config import ConfigError


class FakeBroker(MemoryBroker):
    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self.url, self.prefix = url, prefix


FAKE = Backend(
    "fake",
    broker=FakeBroker,
    history=lambda url, prefix: MemoryHistory(),
    presence=lambda url, prefix: MemoryPresence(),
    follows=True,
)


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> list[EntryPoint]:
    """A fresh registry whose entry points are the returned list (fill it before use)."""
    module = types.ModuleType("fake_tether_backend")
    module.BACKEND = FAKE  # type: ignore[attr-defined]
    module.NOT_A_BACKEND = object()  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "fake_tether_backend", module)
    points: list[EntryPoint] = []

    def entry_points(*, group: str) -> list[EntryPoint]:
        assert group == "tether.backends"
        return [p for p in points if p.group == group]

    monkeypatch.setattr(backends, "entry_points", entry_points)
    monkeypatch.setattr(backends, "_BACKENDS", dict(backends._BACKENDS))
    monkeypatch.setattr(backends, "_entry_points_loaded", False)
    return points


def point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group="tether.backends")


def test_builtin_schemes() -> None:
    assert {"memory", "redis", "rediss", "unix", "nats", "tls"} <= set(
        backends.registered_schemes()
    )
    assert backend_kind("rediss://h") == "redis" and backend_kind("tls://h:4222") == "nats"


def test_a_third_party_backend_through_an_entry_point(fake_entry_points: list[EntryPoint]) -> None:
    with pytest.raises(ConfigError, match="unknown backend"):
        backend_kind("fake://h")  # loads the (empty) entry points once
    fake_entry_points.append(point("fake", "fake_tether_backend:BACKEND"))
    backends._entry_points_loaded = False  # as in a new process with the package installed
    assert backend_kind("fake://h") == "fake"
    urls = resolve(HubConfig(broker="fake://h/1"))
    assert (urls.history, urls.presence) == ("fake://h/1", "fake://h/1")  # follows=True
    broker: Any = make_broker("fake://h/1", "hub")
    assert isinstance(broker, FakeBroker) and (broker.url, broker.prefix) == ("fake://h/1", "hub")
    assert isinstance(make_history("fake://h/1", "hub"), MemoryHistory)


def test_a_broken_entry_point_is_skipped_with_a_log(
    fake_entry_points: list[EntryPoint], caplog: pytest.LogCaptureFixture
) -> None:
    fake_entry_points.append(point("nope", "fake_tether_backend:NOT_A_BACKEND"))
    fake_entry_points.append(point("gone", "no_such_module_anywhere:BACKEND"))
    with pytest.raises(ConfigError, match="unknown backend"):
        backend_kind("nope://h")
    with pytest.raises(ConfigError, match="unknown backend"):
        backend_kind("gone://h")
    assert "is not a Backend" in caplog.text
    assert "cannot load the gone backend" in caplog.text


def test_a_backend_without_presence_is_refused_for_presence(
    fake_entry_points: list[EntryPoint],
) -> None:
    backends.register_backend(["brokeronly"], Backend("brokeronly", broker=FakeBroker))
    with pytest.raises(ConfigError, match="presence cannot be brokeronly"):
        resolve(HubConfig(presence="brokeronly://h"))
    with pytest.raises(ConfigError, match="history cannot be brokeronly"):
        make_history("brokeronly://h", "hub")
