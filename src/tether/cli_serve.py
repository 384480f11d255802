"""``tether serve``: run the realtime hub, with its demo chat at ``/``.

Settings come from flags, then ``TETHER_*`` environment variables, then a TOML
file (``--config``), then defaults (docs/hub.md lists them all).

Safety: a hub needs a way to authenticate clients (``--jwt-secret`` or
``--jwt-public-key``) or an explicit ``--allow-anonymous``. Without either,
``tether serve`` runs in *development mode*, and only on a loopback address:
anonymous clients are allowed (so the demo works out of the box), and a random
JWT secret and API key are made up for this run and printed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import secrets
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the realtime hub (demo chat at /)",
        description="Run the tether hub: WebSocket clients, HTTP API, metrics, demo page.",
    )
    p.add_argument("--host", help=f"address to listen on (default {DEFAULT_HOST})")
    p.add_argument("--port", type=int, help=f"port to listen on (default {DEFAULT_PORT})")
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
        "nodes sharing one form one hub (env TETHER_BROKER)",
    )
    p.add_argument(
        "--history",
        metavar="URL",
        help="memory, redis://... or nats://... (JetStream); default: the broker if Redis, "
        "else memory (TETHER_HISTORY)",
    )
    p.add_argument(
        "--presence",
        metavar="URL",
        help="memory or redis://...; default: as for --history (env TETHER_PRESENCE)",
    )


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


class UsageError(Exception):
    pass


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
    for backend in ("broker", "history", "presence"):
        if getattr(args, backend, None):
            setattr(config, backend, getattr(args, backend))
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
    result = Plan(config, str(host), port)
    if (backends.broker, backends.history, backends.presence) != ("memory",) * 3:
        result.backends = backends.describe()
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


def banner(p: Plan, url: str, ws_url: str) -> str:
    config = p.config
    lines = [
        f"tether hub listening on {url}",
        f"  demo chat : {url}",
        f"  websocket : {ws_url}",
        f"  HTTP API  : {url}api/publish"
        + ("  (Authorization: apikey KEY)" if config.api_key else "  (off: no API key)"),
        f"  metrics   : {url}metrics"
        + ("  (Authorization: Bearer KEY)" if config.metrics_key else ""),
    ]
    if p.backends:
        lines.append(f"  backends  : {p.backends}")
    if p.dev_mode:
        lines.append("")
        lines.append("DEVELOPMENT MODE (loopback only; pass --jwt-secret or --allow-anonymous):")
        lines.extend(f"  - {note}" for note in p.notes)
    return "\n".join(lines)


async def serve(p: Plan) -> int:
    from tether.hub import Node, serve_hub

    loop = asyncio.get_running_loop()
    stop: asyncio.Future[int] = loop.create_future()

    def request_stop(code: int) -> None:
        if not stop.done():
            stop.set_result(code)

    # SIGTERM is a restart or a redeploy: 1012 tells clients to come back (to
    # another node, or this one restarted) and recover what they missed.
    loop.add_signal_handler(signal.SIGTERM, request_stop, 1012)
    loop.add_signal_handler(signal.SIGINT, request_stop, 1001)
    hub = serve_hub(Node(p.config), p.host, p.port)
    await hub.start()
    print(banner(p, hub.url, hub.websocket_url), flush=True)
    try:
        code = await stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    await hub.close(code)
    print(f"tether hub stopped (clients told {code})", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        p = plan(args)
    except UsageError as exc:
        print(f"tether serve: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(p))
