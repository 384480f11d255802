"""Which proxy to use, and what a proxy URL says: ``parse_proxy`` and ``get_proxy``.

Pure functions over strings and the environment (and, for an https:// proxy,
the TLS context to reach it): no network I/O.
"""

from __future__ import annotations

import ssl as ssl_module
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from tether.protocol.client import WebSocketURI
from tether.protocol.exceptions import InvalidProxy

# The schemes a proxy URL may have. socks5h and socks4a let the proxy resolve
# the server's name; socks5 and socks4 resolve it here (SOCKS4 only takes IPv4).
SOCKS_SCHEMES = ("socks5h", "socks5", "socks4a", "socks4")
HTTP_SCHEMES = ("https", "http")
DEFAULT_PORTS = {"http": 80, "https": 443} | dict.fromkeys(SOCKS_SCHEMES, 1080)


@dataclass(frozen=True, slots=True)
class Proxy:
    """A parsed proxy URL.

    ``scheme`` is one of socks5h, socks5, socks4a, socks4, https, http;
    ``host`` is lower case (IDNA for an international name), ``port`` always
    set; ``username`` and ``password`` come percent-decoded from the URL's
    userinfo, both or neither.
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def is_socks(self) -> bool:
        return self.scheme in SOCKS_SCHEMES

    @property
    def user_info(self) -> tuple[str, str] | None:
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)

    def __repr__(self) -> str:
        # Never the password: a Proxy may end up in a log line or a traceback.
        who = f"{self.username}:***@" if self.username is not None else ""
        return f"Proxy('{self.scheme}://{who}{self.host}:{self.port}')"


def parse_proxy(proxy: str) -> Proxy:
    """Parse a proxy URL such as ``http://user:pass@proxy:3128`` or ``socks5h://proxy:1080``.

    Raises :class:`~tether.protocol.exceptions.InvalidProxy` (also a ValueError)
    when the scheme is not supported, the host is missing, the URL has a path,
    query or fragment, or a username comes without a password.
    """
    try:
        parts = urlsplit(proxy)
        port = parts.port
    except ValueError as exc:
        raise InvalidProxy(proxy, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in SOCKS_SCHEMES + HTTP_SCHEMES:
        raise InvalidProxy(proxy, f"the scheme {parts.scheme!r} is not supported")
    if not parts.hostname:
        raise InvalidProxy(proxy, "no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidProxy(proxy, "a proxy URL has no path, query or fragment")
    host = parts.hostname
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidProxy(proxy, "the host is not a valid international domain name") from None
    username = password = None
    if parts.username is not None:
        if parts.password is None:
            raise InvalidProxy(proxy, "a username without a password")
        try:
            username = unquote(parts.username, errors="strict")
            password = unquote(parts.password, errors="strict")
        except UnicodeDecodeError:
            raise InvalidProxy(proxy, "credentials are not UTF-8 once percent-decoded") from None
    return Proxy(scheme, host, port or DEFAULT_PORTS[scheme], username, password)


def get_proxy(uri: WebSocketURI) -> str | None:
    """The proxy URL the environment sets for ``uri``, or None for a direct connection.

    The environment variables read, lower case first then upper case (as
    :func:`urllib.request.getproxies` reads them), the first one set wins:

    - ``wss://``: ``wss_proxy``, ``socks_proxy``, ``https_proxy``, ``all_proxy``;
    - ``ws://``: ``ws_proxy``, ``socks_proxy``, ``https_proxy``, ``http_proxy``, ``all_proxy``.

    RFC 6455 §4.1 recommends a SOCKS5 proxy where one is configured, then
    the HTTPS proxy (WebSocket traffic is long-lived, like HTTPS); the
    ``ws*_proxy`` variables come first so that WebSocket traffic alone can go
    elsewhere. A ``socks_proxy`` without a SOCKS scheme means socks5h.
    ``no_proxy``/``NO_PROXY`` (comma-separated host names, domain suffixes,
    ``host:port``, or ``*``) sends matching servers around the proxy.
    """
    # getproxies() and proxy_bypass() read the environment (and, on macOS
    # and Windows, the system's settings when the environment sets none).
    proxies = urllib.request.getproxies()
    if not proxies:
        return None
    if urllib.request.proxy_bypass(f"{uri.host}:{uri.port}"):
        return None
    order = (
        ("wss", "socks", "https", "all") if uri.secure else ("ws", "socks", "https", "http", "all")
    )
    for key in order:
        url = proxies.get(key)
        if not url:
            continue
        if key == "socks" and "://" not in url:
            return "socks5h://" + url
        if key == "socks" and url.startswith("http://"):
            # How some systems spell a SOCKS proxy in socks_proxy.
            return "socks5h://" + url[len("http://") :]
        if "://" not in url:
            # "proxy:3128": curl and most tools read a bare address as HTTP.
            return "http://" + url
        return url
    return None


def proxy_context(
    proxy: Proxy, proxy_ssl: ssl_module.SSLContext | bool | None
) -> ssl_module.SSLContext | None:
    """The TLS context for the connection to the proxy itself: for https:// only."""
    if proxy.scheme == "https":
        if isinstance(proxy_ssl, ssl_module.SSLContext):
            return proxy_ssl
        if proxy_ssl is False:
            raise ValueError("an https:// proxy needs TLS: proxy_ssl cannot be False")
        return ssl_module.create_default_context()
    if proxy_ssl:
        raise ValueError("proxy_ssl is for an https:// proxy, not " + proxy.scheme)
    return None
