"""``tether serve``: run the realtime hub, with its demo chat at ``/``.

Settings come from flags, then ``TETHER_*`` environment variables, then a TOML
file (``--config``), then defaults (docs/hub.md lists them all).

Safety: a hub needs a way to authenticate clients (``--jwt-secret`` or
``--jwt-public-key``) or an explicit ``--allow-anonymous``. Without either,
``tether serve`` runs in *development mode*, and only on a loopback address:
anonymous clients are allowed (so the demo works out of the box), and a random
JWT secret and API key are made up for this run and printed. An HS256 secret
shorter than 32 bytes (RFC 7518 section 3.2: "A key of the same size as the
hash output ... or larger MUST be used") is refused on a non-loopback address
and warned about on a loopback one.

Before listening it checks that the optional packages the chosen backends need
are installed and that each Redis/NATS backend accepts a connection (see
:mod:`tether.cli.preflight`): a problem there is one line and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import secrets
import signal
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.cli import loop, preflight
from tether.cli.errors import CliError
from tether.cli.options import port as port_number

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
PROXY_HOOKS = ("connect", "subscribe", "publish", "rpc")
MIN_HS256_SECRET = 32
"""Bytes: RFC 7518 section 3.2 wants an HS256 key at least as long as the hash (256 bits)."""
# Read by `tether serve` itself, beside the hub options of tether.hub.config.ENVIRONMENT.
SERVE_ENVIRONMENT = {
    "TETHER_HOST": "address to listen on (--host)",
    "TETHER_PORT": "port to listen on (--port)",
    "TETHER_NO_SPEEDUPS": "1: use the pure-Python code instead of the native speedups",
}


def environment_help() -> str:
    """The epilog of ``serve --help``: every environment variable it reads."""
    from tether.hub.config import ENVIRONMENT

    names = {**SERVE_ENVIRONMENT, **{var: f"sets {option}" for var, option in ENVIRONMENT.items()}}
    width = max(map(len, names))
    lines = ["environment variables (flags win over them; they win over --config):"]
    lines += [f"  {var:<{width}}  {what}" for var, what in sorted(names.items())]
    lines.append("")
    lines.append("Settings without a flag live in the TOML file (docs/hub.md lists them).")
    return "\n".join(lines)


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        parents=parents,
        help="run the realtime hub (demo chat at /)",
        description="Run the tether hub: WebSocket clients, HTTP API, metrics, demo page.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.lazy_epilog = environment_help  # at --help time: building the parser loads no hub
    p.add_argument("--host", help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=port_number, help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--api-key", help="key for the HTTP API (env TETHER_API_KEY)")
    p.add_argument(
        "--metrics-key",
        help="require 'Authorization: Bearer KEY' on /metrics (env TETHER_METRICS_KEY)",
    )
    p.add_argument("--jwt-secret", help="HS256 secret for client tokens (env TETHER_JWT_SECRET)")
    p.add_argument(
        "--jwt-public-key",
        type=Path,
        metavar="FILE",
        help="RS256 public key (PEM) for client tokens (env TETHER_JWT_PUBLIC_KEY_FILE)",
    )
    p.add_argument(
        "--allow-anonymous",
        action="store_true",
        default=None,
        help="let clients connect without a token (env TETHER_ALLOW_ANONYMOUS)",
    )
    p.add_argument(
        "--origin",
        action="append",
        dest="origins",
        metavar="ORIGIN",
        help="allowed browser origin, repeatable; '*' for any (default: same origin only)",
    )
    p.add_argument(
        "--broker",
        metavar="URL",
        help="memory (default), redis://HOST:PORT/DB or nats://HOST:PORT: "
        "nodes sharing one form one hub, with history and presence there too "
        "(env TETHER_BROKER)",
    )
    p.add_argument(
        "--history",
        metavar="URL",
        help="memory, redis://..., nats://... (JetStream) or sqlite:DIR; default: the broker "
        "if Redis or NATS, else --data, else memory (env TETHER_HISTORY)",
    )
    p.add_argument(
        "--presence",
        metavar="URL",
        help="memory, redis://... or nats://... (KeyValue); default: as for --history "
        "(env TETHER_PRESENCE)",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="keep history, epochs and idempotency keys in SQLite in DIR, so a restart "
        "loses nothing (one node; env TETHER_DATA)",
    )
    # The backend proxy (docs/proxy.md): the app hooks as POSTs to the app's URLs.
    for hook in PROXY_HOOKS:
        p.add_argument(f"--proxy-{hook}", metavar="URL", help=f"POST {hook} hook requests here")
    p.add_argument("--proxy-timeout", type=float, metavar="SECONDS", help="per call (default 5)")
    p.add_argument(
        "--proxy-key", help="sent as X-Tether-Proxy-Key to the backend (env TETHER_PROXY_KEY)"
    )
    p.add_argument(
        "--proxy-header",
        action="append",
        dest="proxy_headers",
        metavar="NAME",
        help="request header forwarded to the backend, repeatable (replaces the default list)",
    )
    loop.add_option(p)


@dataclass
class Plan:
    """What ``run`` will start, and what the banner says about it."""

    config: Any
    host: str
    port: int
    dev_mode: bool = False
    notes: list[str] = field(default_factory=list)
    backends: str = ""
    """Where broker, history and presence live, when not all in memory."""
    backend_urls: dict[str, str] = field(default_factory=dict)
    """``broker``/``history``/``presence`` -> URL, for the checks before starting."""
    warnings: list[str] = field(default_factory=list)
    """Printed on stderr before starting (e.g. a short JWT secret on loopback)."""
    loop: str = "asyncio"
    """The event loop ``run`` uses: ``asyncio`` or ``uvloop``."""


class UsageError(CliError):
    """A setting ``tether serve`` cannot run with (one line, exit status 2)."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plan(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Plan:
    """Merge flags, environment and file into a configuration (or raise UsageError)."""
    from tether.hub.config import (
        ConfigError,
        config_from_mapping,
        read_config_file,
        with_environment,
    )

    env = os.environ if environ is None else environ
    try:
        file_data = read_config_file(args.config) if args.config is not None else {}
        config = config_from_mapping(with_environment(file_data, env))
        if args.jwt_public_key is not None:
            config.jwt_public_key = args.jwt_public_key.read_text()
    except (ConfigError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if args.api_key:
        config.api_key = args.api_key
    if args.metrics_key:
        config.metrics_key = args.metrics_key
    if args.jwt_secret:
        config.jwt_secret = args.jwt_secret
    if args.allow_anonymous:
        config.allow_anonymous = True
    if args.origins:
        config.origins = list(args.origins)
    for backend in ("broker", "history", "presence", "data"):
        if getattr(args, backend, None):
            setattr(config, backend, getattr(args, backend))
    _proxy_flags(args, config, env)
    from tether.hub.backends import resolve

    try:
        backends = resolve(config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    host = args.host or env.get("TETHER_HOST") or file_data.get("host") or DEFAULT_HOST
    try:
        port = int(
            next(
                (
                    v
                    for v in (args.port, env.get("TETHER_PORT"), file_data.get("port"))
                    if v is not None and v != ""
                ),
                DEFAULT_PORT,
            )
        )
    except ValueError:
        raise UsageError("the port must be a number") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"invalid port {port} (0 to 65535)")
    result = Plan(config, str(host), port)
    result.backend_urls = {
        "broker": backends.broker,
        "history": backends.history,
        "presence": backends.presence,
    }
    if (backends.broker, backends.history, backends.presence) != ("memory",) * 3:
        result.backends = backends.describe()
    result.loop = loop.choose(getattr(args, "loop", "auto"))
    _check_jwt_secret(result)
    if config.jwt_secret or config.jwt_public_key or config.allow_anonymous:
        return result
    if not _is_loopback(result.host):
        raise UsageError(
            f"refusing to serve {result.host} without authentication: pass --jwt-secret "
            "or --jwt-public-key, or --allow-anonymous to accept anyone"
        )
    # Development mode: usable at once, and only from this machine.
    result.dev_mode = True
    # Only from this machine: also refuse pages that rebind their own name to
    # 127.0.0.1 (DNS rebinding), which pass every same-origin check.
    from tether.hub.routes import LOOPBACK_HOSTS

    config.allowed_hosts = list(LOOPBACK_HOSTS)
    config.allow_anonymous = True
    config.jwt_secret = secrets.token_urlsafe(24)
    result.notes.append("anonymous clients are allowed")
    result.notes.append(f"JWT secret (HS256) for this run: {config.jwt_secret}")
    if not config.api_key:
        config.api_key = secrets.token_urlsafe(18)
        result.notes.append(f"API key for this run: {config.api_key}")
    return result


def _proxy_flags(args: argparse.Namespace, config: Any, env: Mapping[str, str]) -> None:
    """``--proxy-*`` (and ``TETHER_PROXY_KEY``) over the file's ``[proxy]`` table."""
    import dataclasses

    changes: dict[str, Any] = {
        hook: getattr(args, f"proxy_{hook}")
        for hook in PROXY_HOOKS
        if getattr(args, f"proxy_{hook}", None)
    }
    if getattr(args, "proxy_timeout", None) is not None:
        changes["timeout"] = args.proxy_timeout
    if getattr(args, "proxy_headers", None):
        changes["headers"] = list(args.proxy_headers)
    key = getattr(args, "proxy_key", None) or env.get("TETHER_PROXY_KEY")
    if key:
        changes["key"] = key
    if changes:
        config.proxy = dataclasses.replace(config.proxy, **changes)


def _check_jwt_secret(p: Plan) -> None:
    """Refuse (anywhere reachable) or warn (loopback) about a guessable HS256 secret."""
    secret = p.config.jwt_secret
    if not secret or len(secret.encode()) >= MIN_HS256_SECRET:
        return
    problem = (
        f"the JWT secret is {len(secret.encode())} bytes; HS256 needs at least "
        f"{MIN_HS256_SECRET} (RFC 7518 section 3.2), or tokens can be forged by guessing it"
    )
    fix = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if not _is_loopback(p.host):
        raise UsageError(f"refusing to serve {p.host}: {problem}; {fix}")
    p.warnings.append(f"warning: {problem} (accepted on loopback only); {fix}")


def _is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


def lan_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: a route lookup only
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if address.startswith(("0.", "127.")) else address


def reachable_urls(host: str, port: int) -> list[str]:
    """URLs a person can open: for 0.0.0.0 or ::, loopback plus this machine's names."""
    if not _is_wildcard(host):
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return [f"http://{shown}:{port}/"]
    urls = [f"http://127.0.0.1:{port}/"]
    for name in (socket.gethostname(), lan_address()):
        if name and f"http://{name}:{port}/" not in urls:
            urls.append(f"http://{name}:{port}/")
    return urls


def history_note(url: str) -> str:
    """Where history lives, and whether it survives a restart of this node."""
    from tether.hub.backends import MEMORY, SQLITE, backend_kind, sqlite_directory

    kind = backend_kind(url)
    if kind == MEMORY:
        return "in memory: lost when this node restarts (keep it with --data DIR)"
    if kind == SQLITE:
        return f"SQLite in {sqlite_directory(url)} (survives restarts)"
    return f"shared on {kind} (survives restarts of this node)"


def banner(p: Plan, url: str, ws_url: str) -> str:
    from tether._about import speedups_status

    config = p.config
    urls = reachable_urls(p.host, int(url.rstrip("/").rsplit(":", 1)[1]))
    if _is_wildcard(p.host):
        url = urls[0]
        ws_url = "ws" + url[4:].rstrip("/") + "/" + ws_url.split("/", 3)[3]
    lines = [
        f"tether hub listening on {url}"
        + (f" (all addresses; also {', '.join(urls[1:])})" if len(urls) > 1 else ""),
        f"  demo chat : {url}",
        f"  websocket : {ws_url}",
        f"  HTTP API  : {url}api/publish"
        + ("  (Authorization: apikey KEY)" if config.api_key else "  (off: no API key)"),
        f"  metrics   : {url}metrics"
        + ("  (Authorization: Bearer KEY)" if config.metrics_key else ""),
    ]
    if p.backends:
        lines.append(f"  backends  : {p.backends}")
    lines.append(f"  history   : {history_note(p.backend_urls.get('history', 'memory'))}")
    proxied = [h for h in (*PROXY_HOOKS, "disconnect") if getattr(config.proxy, h, "")]
    if proxied:
        lines.append(f"  proxy     : {', '.join(proxied)} -> backend URLs")
    lines.append(f"  runtime   : {loop.describe(p.loop)}, native speedups {speedups_status()}")
    if p.dev_mode:
        lines.append("")
        lines.append("DEVELOPMENT MODE (loopback only; pass --jwt-secret or --allow-anonymous):")
        lines.extend(f"  - {note}" for note in p.notes)
    return "\n".join(lines)


async def serve(p: Plan) -> int:
    from tether.hub import BrokerUnavailable, Node, serve_hub

    await preflight.require_reachable(p.backend_urls)
    p.loop = loop.running()  # the banner reports the loop in use, not only the one asked for
    running = asyncio.get_running_loop()
    stop: asyncio.Future[int] = running.create_future()

    def request_stop(code: int) -> None:
        if not stop.done():
            stop.set_result(code)

    # SIGTERM is a restart or a redeploy: 1012 tells clients to come back (to
    # another node, or this one restarted) and recover what they missed.
    running.add_signal_handler(signal.SIGTERM, request_stop, 1012)
    running.add_signal_handler(signal.SIGINT, request_stop, 1001)
    hub = serve_hub(Node(p.config), p.host, p.port)
    try:
        await hub.start()
    except BrokerUnavailable as exc:  # a damaged history file, JetStream off ...
        raise CliError(f"cannot start the hub: {exc}") from exc
    except OSError as exc:  # start() has closed the node again
        raise UsageError(f"cannot listen on {p.host}:{p.port}: {exc.strerror or exc}") from exc
    print(banner(p, hub.url, hub.websocket_url), flush=True)
    try:
        code = await stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            running.remove_signal_handler(sig)
    await hub.close(code)
    print(f"tether hub stopped (clients told {code})", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    """Raises :class:`UsageError` (a ``CliError``) for anything the user can fix."""
    preflight.require_hub_dependencies()
    p = plan(args)
    preflight.require_backend_modules(p.backend_urls)
    preflight.require_proxy_dependency(p.config)
    for warning in p.warnings:
        print(f"tether serve: {warning}", file=sys.stderr, flush=True)
    return loop.run(serve(p), p.loop)
