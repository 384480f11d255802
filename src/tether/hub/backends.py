"""Broker, History and Presence chosen by URL (``tether serve --broker …``).

``memory`` (the default) keeps everything in the process. ``redis://`` (or
``rediss://``, ``unix://``) selects the Redis implementation, ``nats://`` the
NATS broker, JetStream history and KeyValue presence, ``sqlite:DIR`` a
history file in ``DIR`` (one node's durable history). Any broker works with
any history and presence: when only the broker is given, history and
presence follow it if it is Redis or NATS, so a cluster needs one server
and nothing else. On a node without a networked broker, ``data`` (``--data
DIR``) keeps history in SQLite there; otherwise history stays in memory.

Backends are registered by URL scheme (:func:`register_backend`): the
package registers memory, SQLite, Redis and NATS; another package adds its
own through the ``tether.backends`` entry point group, each entry point named
after its scheme and pointing at a :class:`Backend`::

    [project.entry-points."tether.backends"]
    kafka = "tether_kafka:BACKEND"
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlsplit

from tether.hub.brokers.base import Broker
from tether.hub.brokers.memory import MemoryBroker
from tether.hub.config import ConfigError, HubConfig
from tether.hub.history.base import History
from tether.hub.history.memory import MemoryHistory
from tether.hub.presence.base import Presence
from tether.hub.presence.memory import MemoryPresence

logger = logging.getLogger("tether.hub")

MEMORY = "memory"
SQLITE = "sqlite"
ENTRY_POINT_GROUP = "tether.backends"

# ``factory(url, prefix)``: prefix is the hub's backplane_prefix (config).
BrokerFactory = Callable[[str, str], Broker]
HistoryFactory = Callable[[str, str], History]
PresenceFactory = Callable[[str, str], Presence]


@dataclass(frozen=True, slots=True)
class Backend:
    """What the URLs of one scheme (or a few) can provide; ``None``: not this one."""

    kind: str
    """A short name, shown in errors (``redis``, ``nats`` ...)."""
    broker: BrokerFactory | None = None
    history: HistoryFactory | None = None
    presence: PresenceFactory | None = None
    follows: bool = False
    """History and presence follow a broker of this kind when not given."""
    label: str = ""
    """How errors name it (``NATS``); the kind when empty."""
    local: bool = False
    """Kept on this machine: nothing to reach over the network before starting."""

    @property
    def name(self) -> str:
        return self.label or self.kind


_BACKENDS: dict[str, Backend] = {}
_entry_points_loaded = False


def register_backend(schemes: Iterable[str], backend: Backend) -> None:
    """Make ``scheme://`` URLs select ``backend`` (a later registration replaces one)."""
    for scheme in schemes:
        _BACKENDS[scheme.lower()] = backend


def registered_schemes() -> list[str]:
    _load_entry_points()
    return sorted(_BACKENDS)


def _load_entry_points() -> None:
    """Register the backends other packages declare (once, on first use)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            backend = point.load()
        except Exception:
            logger.exception("cannot load the %s backend (entry point %s)", point.name, point.value)
            continue
        if not isinstance(backend, Backend):
            logger.error("entry point %s of %s is not a Backend", point.name, ENTRY_POINT_GROUP)
            continue
        register_backend([point.name], backend)


def backend_of(url: str) -> Backend:
    """The backend registered for ``url``'s scheme; :class:`ConfigError` if there is none."""
    if not url or url == MEMORY:
        return _MEMORY
    _load_entry_points()
    backend = _BACKENDS.get(urlsplit(url).scheme.lower())
    if backend is None:
        raise ConfigError(
            f"unknown backend {url!r}: use memory, redis://HOST:PORT/DB, nats://HOST:PORT "
            "or sqlite:DIR (history)"
        )
    return backend


def backend_kind(url: str) -> str:
    """``memory``, ``redis``, ``nats`` (or a registered kind) for a backend URL."""
    return backend_of(url).kind


@dataclass(frozen=True, slots=True)
class BackendUrls:
    broker: str
    history: str
    presence: str

    def describe(self) -> str:
        return f"broker {self.broker}, history {self.history}, presence {self.presence}"


def sqlite_url(directory: str) -> str:
    """The history URL of a data directory: ``sqlite:`` and its absolute path."""
    return f"{SQLITE}:{Path(directory).expanduser().absolute()}"


def sqlite_directory(url: str) -> Path:
    """The directory of a ``sqlite:DIR`` (or ``sqlite:///DIR``) history URL."""
    parts = urlsplit(url)
    path = parts.netloc + parts.path if parts.netloc else parts.path
    if not path:
        raise ConfigError(f"{url!r} names no directory: use sqlite:/path/to/dir")
    return Path(path)


def resolve(config: HubConfig) -> BackendUrls:
    """The URL of each backend, with the defaults of the module doc applied."""
    broker = config.broker or MEMORY
    follows = backend_of(broker).follows
    follow = broker if follows else MEMORY
    history = config.history or follow
    if config.data:
        if config.history:
            raise ConfigError(
                "data and history both say where history lives: give one "
                "(--data keeps it in SQLite on this node)"
            )
        if follows:
            raise ConfigError(
                f"data keeps history on this node only, but the broker {broker} "
                "makes a cluster, whose nodes share history on that server: drop "
                "--data (or pass --history sqlite:DIR to keep it local anyway)"
            )
        history = sqlite_url(config.data)
    presence = config.presence or follow
    for url, role in ((history, "history"), (presence, "presence")):
        backend = backend_of(url)
        if getattr(backend, role) is None:
            raise ConfigError(
                f"{role} cannot be {backend.name}: use memory, redis:// or nats://"
                + (" or sqlite:DIR" if role == "history" else "")
            )
    return BackendUrls(broker, history, presence)


def make_broker(url: str, prefix: str) -> Broker:
    backend = backend_of(url)
    if backend.broker is None:
        raise ConfigError(f"broker cannot be {backend.name}")
    return backend.broker(url, prefix)


def make_history(url: str, prefix: str) -> History:
    backend = backend_of(url)
    if backend.history is None:
        raise ConfigError(f"history cannot be {backend.name}")
    return backend.history(url, prefix)


def make_presence(url: str, prefix: str) -> Presence:
    backend = backend_of(url)
    if backend.presence is None:
        raise ConfigError(f"presence cannot be {backend.name}: use memory, redis:// or nats://")
    return backend.presence(url, prefix)


# The package's own backends. Redis and NATS import their client libraries
# only when a backend is made (they are optional extras).


def _redis_broker(url: str, prefix: str) -> Broker:
    from tether.hub.brokers.redis import RedisBroker

    return RedisBroker(url, prefix=prefix + ":")


def _redis_history(url: str, prefix: str) -> History:
    from tether.hub.history.redis import RedisHistory

    return RedisHistory(url, prefix=prefix + ":")


def _redis_presence(url: str, prefix: str) -> Presence:
    from tether.hub.presence.redis import RedisPresence

    return RedisPresence(url, prefix=prefix + ":")


def _nats_broker(url: str, prefix: str) -> Broker:
    from tether.hub.brokers.nats import NatsBroker

    return NatsBroker(url, prefix=prefix)


def _nats_history(url: str, prefix: str) -> History:
    from tether.hub.history.nats import NatsHistory

    return NatsHistory(url, prefix=prefix)


def _nats_presence(url: str, prefix: str) -> Presence:
    from tether.hub.presence.nats import NatsPresence

    return NatsPresence(url, prefix=prefix)


def _sqlite_history(url: str, prefix: str) -> History:
    from tether.hub.history.sqlite import SqliteHistory

    return SqliteHistory(sqlite_directory(url))


_MEMORY = Backend(
    MEMORY,
    broker=lambda url, prefix: MemoryBroker(),
    history=lambda url, prefix: MemoryHistory(),
    presence=lambda url, prefix: MemoryPresence(),
    local=True,
)
REDIS = Backend(
    "redis", broker=_redis_broker, history=_redis_history, presence=_redis_presence, follows=True
)
NATS = Backend(
    "nats",
    broker=_nats_broker,
    history=_nats_history,
    presence=_nats_presence,
    follows=True,
    label="NATS",
)
SQLITE_BACKEND = Backend(SQLITE, history=_sqlite_history, label="SQLite", local=True)

register_backend([MEMORY], _MEMORY)
register_backend(["redis", "rediss", "unix"], REDIS)
register_backend(["nats", "tls"], NATS)
register_backend([SQLITE], SQLITE_BACKEND)


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
