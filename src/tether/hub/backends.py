"""Broker, History and Presence chosen by URL (``tether serve --broker …``).

``memory`` (the default) keeps everything in the process. ``redis://`` (or
``rediss://``, ``unix://``) selects the Redis implementation, ``nats://``
the NATS broker or JetStream history. Any broker works with any history and
presence: when only the broker is given, history and presence follow it if
it is Redis, and stay in memory otherwise (NATS keeps no presence: pair it
with ``--history nats://…`` or ``redis://…`` and ``--presence redis://…``
for several nodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from tether.hub.brokers.base import Broker
from tether.hub.brokers.memory import MemoryBroker
from tether.hub.config import ConfigError, HubConfig
from tether.hub.history.base import History
from tether.hub.history.memory import MemoryHistory
from tether.hub.presence.base import Presence
from tether.hub.presence.memory import MemoryPresence

MEMORY = "memory"
_REDIS_SCHEMES = ("redis", "rediss", "unix")


def backend_kind(url: str) -> str:
    """``memory``, ``redis`` or ``nats`` for a backend URL; :class:`ConfigError` otherwise."""
    if not url or url == MEMORY:
        return MEMORY
    scheme = urlsplit(url).scheme.lower()
    if scheme in _REDIS_SCHEMES:
        return "redis"
    if scheme in ("nats", "tls"):
        return "nats"
    raise ConfigError(
        f"unknown backend {url!r}: use memory, redis://HOST:PORT/DB or nats://HOST:PORT"
    )


@dataclass(frozen=True, slots=True)
class BackendUrls:
    broker: str
    history: str
    presence: str

    def describe(self) -> str:
        return f"broker {self.broker}, history {self.history}, presence {self.presence}"


def resolve(config: HubConfig) -> BackendUrls:
    """The URL of each backend, with the defaults of the module doc applied."""
    broker = config.broker or MEMORY
    kind = backend_kind(broker)
    follow = broker if kind == "redis" else MEMORY
    history = config.history or follow
    presence = config.presence or follow
    if backend_kind(presence) == "nats":
        raise ConfigError("presence cannot be NATS: use memory or redis://")
    return BackendUrls(broker, history, presence)


def make_broker(url: str, prefix: str) -> Broker:
    kind = backend_kind(url)
    if kind == "redis":
        from tether.hub.brokers.redis import RedisBroker

        return RedisBroker(url, prefix=prefix + ":")
    if kind == "nats":
        from tether.hub.brokers.nats import NatsBroker

        return NatsBroker(url, prefix=prefix)
    return MemoryBroker()


def make_history(url: str, prefix: str) -> History:
    kind = backend_kind(url)
    if kind == "redis":
        from tether.hub.history.redis import RedisHistory

        return RedisHistory(url, prefix=prefix + ":")
    if kind == "nats":
        from tether.hub.history.nats import NatsHistory

        return NatsHistory(url, prefix=prefix)
    return MemoryHistory()


def make_presence(url: str, prefix: str) -> Presence:
    if backend_kind(url) == "redis":
        from tether.hub.presence.redis import RedisPresence

        return RedisPresence(url, prefix=prefix + ":")
    return MemoryPresence()


def backends_for(
    config: HubConfig,
    broker: Broker | None = None,
    history: History | None = None,
    presence: Presence | None = None,
) -> tuple[Broker, History, Presence]:
    """The backends given, and the others made from ``config``."""
    if broker is not None and history is not None and presence is not None:
        return broker, history, presence
    urls = resolve(config)
    prefix = config.backplane_prefix
    return (
        broker if broker is not None else make_broker(urls.broker, prefix),
        history if history is not None else make_history(urls.history, prefix),
        presence if presence is not None else make_presence(urls.presence, prefix),
    )
