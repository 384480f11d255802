"""Hub configuration: limits, auth settings and per-namespace channel options.

Every option has a documented default (docs/hub.md). A configuration comes
from Python (:class:`HubConfig`), or from a TOML file and environment
variables through :func:`load_config` (used by ``tether serve``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

NAMESPACE_SEPARATOR = ":"


@dataclass(frozen=True, slots=True)
class ChannelOptions:
    """What a namespace's channels do; the namespace is the part before ':'."""

    history_size: int = 100
    """Publications kept per channel for recovery and ``history``; 0 keeps none."""
    history_ttl: float = 300.0
    """Seconds a channel's history (and its idempotency keys) lives after its last publish."""
    presence: bool = True
    """Track who is subscribed, answer ``presence`` and send join/leave pushes."""
    presence_count_only: bool = False
    """With ``presence``: track members for ``presence_stats`` only, for large
    channels: no join/leave pushes, and ``presence`` (the member list) answers 108."""
    publish: bool = True
    """Clients may publish (the HTTP API always may)."""
    anonymous: bool = True
    """Anonymous clients may use the namespace (only when the hub allows anonymous at all)."""
    proxy_subscribe: str = ""
    """Backend URL asked about subscribes to this namespace (docs/proxy.md); empty: the
    hub-wide ``[proxy] subscribe``."""
    proxy_publish: str = ""
    """Backend URL asked about client publishes here; empty: the hub-wide ``[proxy] publish``."""

    @property
    def has_history(self) -> bool:
        return self.history_size > 0 and self.history_ttl > 0


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-session limits; a violation answers with the spec's error code."""

    max_channel_length: int = 255
    max_payload_size: int = 64 * 1024
    """Bytes of a publication's ``data`` as JSON (error 110)."""
    max_subscriptions: int = 128
    max_presence_info_size: int = 1024
    max_message_size: int = 1024 * 1024
    """Largest WebSocket message accepted at all; larger closes with 1009."""
    send_queue_size: int = 1024 * 1024
    """Bytes waiting for a slow client before it is disconnected with 4010."""
    publish_rate: float = 20.0
    """Client publishes per second (token bucket refill rate)."""
    publish_burst: int = 40
    """Client publishes allowed at once (token bucket capacity)."""
    flood_strikes: int = 20
    """Rate-limited publishes tolerated (refilling one per second) before closing with 4011."""
    connect_timeout: float = 10.0
    """Seconds a client has to send ``connect`` after the upgrade."""
    api_body_size: int = 1024 * 1024
    """Largest HTTP API request body (413 beyond)."""


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    """The HTTP fallbacks (docs/wire-protocol.md, "HTTP fallbacks"): limits and switches."""

    enabled: bool = True
    """Serve SSE, HTTP streaming and long polling beside the WebSocket."""
    query_token: bool = False
    """Accept ``?token=`` on ``/connection/sse`` (URLs end up in logs: see the spec)."""
    max_streams_per_ip: int = 64
    """Open streams plus waiting polls per client IP (429, code 126)."""
    max_streams: int = 10000
    """Open streams plus waiting polls on this node (429, code 126)."""
    max_body_size: int = 1024 * 1024
    """Largest ``stream``/``poll``/``send`` request body (413, code 110)."""
    max_commands: int = 100
    """Commands in one ``send`` (400, code 106)."""
    poll_timeout: float = 25.0
    """Longest wait of one long poll."""
    session_timeout: float = 50.0
    """A long-poll session without a waiting poll ends after this many seconds (4012)."""
    relay_timeout: float = 5.0
    """Seconds to wait for the node holding a session (then 404, code 125)."""
    request_timeout: float = 10.0
    """Seconds to receive a request's head, then its body."""
    keepalive_timeout: float = 15.0
    """Seconds an idle keep-alive connection is kept."""


DEFAULT_PROXY_HEADERS = (
    "Authorization",
    "User-Agent",
    "Origin",
    "Accept-Language",
    "X-Forwarded-For",
    "X-Real-IP",
)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The backend proxy: URLs the hub POSTs hook requests to (docs/proxy.md)."""

    connect: str = ""
    subscribe: str = ""
    publish: str = ""
    rpc: str = ""
    disconnect: str = ""
    timeout: float = 5.0
    """Seconds for one backend call, waiting for a free slot included (then error 113)."""
    max_concurrency: int = 64
    """Calls in flight per backend URL; more wait for a slot (within ``timeout``)."""
    headers: list[str] = field(default_factory=lambda: list(DEFAULT_PROXY_HEADERS))
    """Request headers forwarded to the backend (an allow-list; cookies always go)."""
    max_response_size: int = 1024 * 1024
    """Largest backend answer read, in bytes (larger: error 114)."""
    key: str = ""
    """Sent as ``X-Tether-Proxy-Key`` with every call, so the backend can tell the
    hub's calls from anyone else's (its URLs are reachable by others too)."""

    @property
    def enabled(self) -> bool:
        return any((self.connect, self.subscribe, self.publish, self.rpc, self.disconnect))


@dataclass(slots=True)
class HubConfig:
    """Everything a :class:`~tether.hub.Node` and its server need to know."""

    allow_anonymous: bool = False
    jwt_secret: str | None = None
    """HS256 key; tokens signed with it are accepted."""
    jwt_public_key: str | None = None
    """RS256 public key (PEM text); tokens signed with its private key are accepted."""
    api_key: str | None = None
    """Key for the HTTP API (``Authorization: apikey KEY``); the API is off without one."""
    metrics_key: str | None = None
    """With it, ``/metrics`` answers only ``Authorization: Bearer KEY`` (Prometheus'
    ``authorization`` scrape setting); without it, ``/metrics`` is open."""
    origins: list[str] | None = None
    """Allowed browser origins; ``None`` allows only same-origin pages, ``["*"]`` any."""
    allowed_hosts: list[str] | None = None
    """Host names (any port) that requests may name in ``Host`` and ``Origin``; ``None``
    accepts any. Development mode sets the loopback names: a DNS-rebinding page
    (``rebind.evil.example`` resolving to 127.0.0.1) is refused with 403, code 123."""
    cookie_name: str = "tether_token"
    channels: ChannelOptions = field(default_factory=ChannelOptions)
    """Options of the default namespace and of namespaces not listed in ``namespaces``."""
    namespaces: dict[str, ChannelOptions] = field(default_factory=dict)
    strict_namespaces: bool = False
    """Reject channels of namespaces not listed in ``namespaces`` (error 102)."""
    limits: Limits = field(default_factory=Limits)
    fallbacks: FallbackConfig = field(default_factory=FallbackConfig)
    ping_interval: float = 25.0
    ping_timeout: float = 20.0
    close_timeout: float = 5.0
    """Seconds to wait for a client to finish closing; a dead one is cleaned up after this."""
    presence_ttl: float = 60.0
    """Seconds a presence entry lives unless its node refreshes it (a third of it)."""
    websocket_path: str = "/connection/websocket"
    static_dir: Path | None = field(default_factory=lambda: Path(__file__).parent.parent / "static")
    compression: bool = True
    """permessage-deflate for hub connections, without server context takeover, so a
    publication is compressed once for every subscriber with the same parameters."""
    broker: str = "memory"
    """Where publications travel between nodes: ``memory``, ``redis://…`` or ``nats://…``."""
    history: str = ""
    """``memory``, ``redis://…``, ``nats://…`` (JetStream) or ``sqlite:DIR``; empty: the
    broker's server if it is Redis or NATS, else SQLite in ``data`` if set, else memory."""
    presence: str = ""
    """``memory``, ``redis://…`` or ``nats://…`` (a KeyValue bucket); empty: the broker's
    server if it is Redis or NATS, else memory."""
    data: str = ""
    """Directory where this node keeps history, epochs and idempotency keys (SQLite), so
    a restart loses nothing; empty: in memory (lost at restart). One node only: a
    cluster keeps history in its broker's server (docs/hub.md, "Durable history")."""
    backplane_prefix: str = "tether"
    """Prefix of Redis keys and channels and NATS subjects (hubs sharing a server differ)."""
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    """The backend proxy (``[proxy]`` in TOML, ``--proxy-*`` flags); off without URLs."""

    def proxy_enabled(self) -> bool:
        """Some URL, hub-wide or in a namespace, makes the hub call a backend."""
        namespaced = [self.channels, *self.namespaces.values()]
        return self.proxy.enabled or any(o.proxy_subscribe or o.proxy_publish for o in namespaced)

    def channel_options(self, channel: str) -> ChannelOptions | None:
        """The options of ``channel``'s namespace, ``None`` if the namespace is unknown."""
        namespace = namespace_of(channel)
        if not namespace:
            return self.channels
        options = self.namespaces.get(namespace)
        if options is None and not self.strict_namespaces:
            return self.channels
        return options


def namespace_of(channel: str) -> str:
    name, sep, _ = channel.partition(NAMESPACE_SEPARATOR)
    return name if sep else ""


class ConfigError(ValueError):
    """The configuration file or environment holds something unusable."""


def _coerce(where: str, default: object, value: object) -> object:
    """``value`` checked against the type of ``default`` (ints are fine for floats)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and isinstance(default, int) and not isinstance(value, int):
            ok = False
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{where} must be a {type(default).__name__}")
    return float(value) if isinstance(default, float) else value  # type: ignore[arg-type]


def _build(cls: type[Any], data: Mapping[str, Any], where: str, base: Any = None) -> Any:
    """A ``cls`` dataclass from a TOML table, over ``base`` (or the defaults)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table")
    base = base if base is not None else cls()
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"unknown option(s) in {where}: {', '.join(sorted(unknown))}")
    values = {k: _coerce(f"{where}.{k}", getattr(base, k), v) for k, v in data.items()}
    return dataclasses.replace(base, **values)


def config_from_mapping(data: Mapping[str, Any]) -> HubConfig:
    """Build a :class:`HubConfig` from a TOML document's tables (see docs/hub.md)."""
    data = dict(data)
    # Where to listen is the server's business (``tether serve`` reads these).
    data.pop("host", None)
    data.pop("port", None)
    config = HubConfig()
    if "channels" in data:
        config.channels = _build(ChannelOptions, data.pop("channels"), "channels")
    if "namespaces" in data:
        namespaces = data.pop("namespaces")
        config.namespaces = {
            name: _build(ChannelOptions, table, f"namespaces.{name}", config.channels)
            for name, table in namespaces.items()
        }
    if "limits" in data:
        config.limits = _build(Limits, data.pop("limits"), "limits")
    if "fallbacks" in data:
        config.fallbacks = _build(FallbackConfig, data.pop("fallbacks"), "fallbacks")
    if "proxy" in data:
        config.proxy = _build(ProxyConfig, data.pop("proxy"), "proxy")
        headers = config.proxy.headers
        if not all(isinstance(h, str) for h in headers):
            raise ConfigError("proxy.headers must be a list of header names")
    key_file = data.pop("jwt_public_key_file", None)
    if key_file is not None:
        try:
            config.jwt_public_key = Path(key_file).read_text()
        except OSError as exc:
            raise ConfigError(f"jwt_public_key_file {key_file}: {exc.strerror or exc}") from None
    if "static_dir" in data:
        config.static_dir = Path(data.pop("static_dir"))
    for name, value in data.items():
        if name in ("origins", "allowed_hosts"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must be a list of strings")
            setattr(config, name, list(value))
        elif name in _SCALARS:
            default = _SCALARS[name]
            setattr(config, name, _coerce(name, default, value))
        else:
            raise ConfigError(f"unknown option {name!r}")
    return config


# Top-level options and a value of their type (``None`` defaults are strings).
_SCALARS: dict[str, object] = {
    "allow_anonymous": False,
    "jwt_secret": "",
    "jwt_public_key": "",
    "api_key": "",
    "metrics_key": "",
    "cookie_name": "",
    "strict_namespaces": False,
    "ping_interval": 0.0,
    "ping_timeout": 0.0,
    "close_timeout": 0.0,
    "presence_ttl": 0.0,
    "websocket_path": "",
    "compression": True,
    "broker": "",
    "history": "",
    "presence": "",
    "data": "",
    "backplane_prefix": "",
}

# Environment variables and the option each one sets (values parsed like flags).
ENVIRONMENT = {
    "TETHER_API_KEY": "api_key",
    "TETHER_METRICS_KEY": "metrics_key",
    "TETHER_JWT_SECRET": "jwt_secret",
    "TETHER_JWT_PUBLIC_KEY_FILE": "jwt_public_key_file",
    "TETHER_ALLOW_ANONYMOUS": "allow_anonymous",
    "TETHER_ORIGINS": "origins",
    "TETHER_COOKIE_NAME": "cookie_name",
    "TETHER_BROKER": "broker",
    "TETHER_HISTORY": "history",
    "TETHER_PRESENCE": "presence",
    "TETHER_DATA": "data",
}


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML configuration file's tables (see docs/hub.md for the options)."""
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None


def with_environment(data: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """``data`` overlaid with the ``TETHER_*`` variables of :data:`ENVIRONMENT`."""
    out = dict(data)
    for var, name in ENVIRONMENT.items():
        value = environ.get(var)
        if not value:
            continue
        if name == "allow_anonymous":
            out[name] = value.strip().lower() in ("1", "true", "yes", "on")
        elif name == "origins":
            out[name] = [o.strip() for o in value.split(",") if o.strip()]
        else:
            out[name] = value
    return out


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> HubConfig:
    """A TOML file (optional) overlaid with ``TETHER_*`` environment variables."""
    data = read_config_file(path) if path is not None else {}
    return config_from_mapping(with_environment(data, os.environ if environ is None else environ))
