"""What python-socks needs to know about a SOCKS proxy URL, and its errors translated.

python-socks (``pip install 'tether[socks]'``) speaks SOCKS4, SOCKS4a and
SOCKS5 (RFC 1928, user/password auth per RFC 1929); this module only maps a
:class:`~tether.proxy.address.Proxy` to its arguments, so that the asyncio and
the blocking tunnel agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tether._extras import MissingDependency
from tether.protocol.exceptions import ProxyError
from tether.proxy.address import Proxy

if TYPE_CHECKING:
    from python_socks import ProxyType

# python-socks puts its own 60 s limit on None; the callers bound the time
# themselves (open_timeout, or open_tunnel_sync's timeout), so: no limit.
NO_LIMIT = 365 * 24 * 3600.0


def socks_arguments(proxy: Proxy) -> dict[str, Any]:
    """Keyword arguments for python-socks' ``Proxy`` (sync or asyncio) for this proxy."""
    try:
        from python_socks import ProxyType
    except ImportError:
        raise MissingDependency("a SOCKS proxy", "python-socks", "socks") from None
    kind: ProxyType = ProxyType.SOCKS5 if proxy.scheme.startswith("socks5") else ProxyType.SOCKS4
    return {
        "proxy_type": kind,
        "host": proxy.host,
        "port": proxy.port,
        "username": proxy.username,
        "password": proxy.password,
        # socks5h and socks4a: the proxy resolves the server's name (remote DNS).
        "rdns": proxy.scheme in ("socks5h", "socks4a"),
    }


def translate(exc: Exception, proxy: Proxy) -> Exception:
    """python-socks' exception as tether's: OSError and TimeoutError stay, the rest is ProxyError.

    Unreachable proxies (python-socks' ProxyConnectionError is an OSError) and
    timeouts are network trouble that a reconnecting client retries; a refusal
    by the proxy (bad credentials, a rule, an unreachable server) is a ProxyError.
    """
    if isinstance(exc, OSError | TimeoutError):
        return exc
    return ProxyError(f"SOCKS proxy {proxy.host}:{proxy.port} failed: {exc}")
