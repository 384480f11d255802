"""Checks ``tether serve`` makes before it starts: dependencies installed, backends reachable.

Without them a missing redis-py ends in a traceback deep inside the hub, and
a Redis or NATS server that is down goes unnoticed until the first client:
here each becomes one line naming the fix (see :mod:`tether.cli.errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
from urllib.parse import urlsplit

from tether.cli.errors import CliError, MissingDependency
from tether.cli.loop import TIMEOUTS

# Backend kind -> (module to import, pip distribution, extra that installs it).
_BACKEND_MODULES = {"redis": ("redis", "redis", "redis"), "nats": ("nats", "nats-py", "nats")}
_DEFAULT_PORTS = {"redis": 6379, "rediss": 6379, "nats": 4222, "tls": 4222}
PROBE_TIMEOUT = 3.0
"""Seconds to wait for a backend's TCP connection before calling it unreachable."""


def installed(module: str) -> bool:
    """Whether ``module`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # an import hook refused it, or a broken sys.modules entry
        return False


def require_hub_dependencies() -> None:
    """The hub verifies client tokens with PyJWT."""
    if not installed("jwt"):
        raise MissingDependency("tether serve", "PyJWT", "hub")
    if not installed("h11"):  # the HTTP fallbacks' parser
        raise MissingDependency("tether serve", "h11", "hub")


def require_backend_modules(role_urls: dict[str, str]) -> None:
    """``role_urls`` maps ``broker``/``history``/``presence`` to the URL chosen for each."""
    from tether.hub.backends import backend_kind

    for role, url in role_urls.items():
        kind = backend_kind(url)
        if kind in _BACKEND_MODULES:
            module, distribution, extra = _BACKEND_MODULES[kind]
            if not installed(module):
                raise MissingDependency(f"--{role} {url}", distribution, extra)


def require_proxy_dependency(config: object) -> None:
    """The backend proxy (``--proxy-*`` or the ``[proxy]`` table) makes its calls with httpx."""
    proxy = getattr(config, "proxy", None)  # HubConfig.proxy, where the proxy exists
    if proxy is not None and getattr(proxy, "enabled", False) and not installed("httpx"):
        raise MissingDependency("the backend proxy (--proxy-* or [proxy])", "httpx", "proxy")


async def _probe(url: str) -> None:
    """Open (and close) a connection to the backend's address, or raise OSError."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        _reader, writer = await asyncio.open_unix_connection(parts.path)
    else:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
        _reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", port)
    writer.close()
    # The server may drop us at once: it was reachable, which is the question.
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


async def require_reachable(role_urls: dict[str, str], timeout: float = PROBE_TIMEOUT) -> None:
    """Each distinct non-memory backend accepts a connection within ``timeout`` seconds."""
    from tether.hub.backends import backend_of

    seen: dict[str, str] = {}
    for role, url in role_urls.items():
        if not backend_of(url).local and url not in seen:
            seen[url] = role
    for url, role in seen.items():
        shown = _without_password(url)
        try:
            await asyncio.wait_for(_probe(url), timeout)
        except TIMEOUTS:
            raise CliError(
                f"cannot reach the {role} at {shown}: no answer within {timeout:g} s"
            ) from None
        except (OSError, socket.gaierror) as exc:
            raise CliError(f"cannot reach the {role} at {shown}: {exc.strerror or exc}") from None
