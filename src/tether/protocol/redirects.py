"""Following an HTTP redirect of the opening handshake: where to, and whether that is allowed.

RFC 6455 §4.1: "the client MAY redirect using a 3xx status code (but
clients are not required to follow them)". Browsers do not; websockets and
tether follow 301, 302, 303, 307 and 308 (and 300 with a Location), up to a
bounded count, with the checks here. No I/O: the client asks, then connects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urljoin

from tether.protocol.client import WebSocketURI, parse_uri
from tether.protocol.exceptions import SecurityError
from tether.protocol.handshake import Response
from tether.protocol.headers import Headers, HeadersLike

REDIRECT_STATUSES = frozenset({300, 301, 302, 303, 307, 308})
# How many redirects one connect() follows by default; the next one is a
# SecurityError. TETHER_MAX_REDIRECTS (or websockets' WEBSOCKETS_MAX_REDIRECTS) sets it.
MAX_REDIRECTS = int(
    os.environ.get("TETHER_MAX_REDIRECTS", os.environ.get("WEBSOCKETS_MAX_REDIRECTS", "10"))
)
# What a request must not carry to another origin (the user did not send it there).
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@dataclass(frozen=True, slots=True)
class Redirect:
    """Where a redirect leads: the new URI, parsed, and whether it leaves the origin."""

    uri: str
    parsed: WebSocketURI
    cross_origin: bool


def location(response: Response) -> str | None:
    """The redirect target of a refused handshake, or None when it is not a redirect."""
    if response.status_code not in REDIRECT_STATUSES:
        return None
    values = response.headers.get_all("Location")
    return values[0] if len(values) == 1 and values[0] else None


def follow(current_uri: str, current: WebSocketURI, target: str) -> Redirect:
    """Resolve ``target`` against the current URI and check that it may be followed.

    Raises :class:`~tether.protocol.exceptions.InvalidURI` when the target is
    not a ws:// or wss:// URI (``http://``, ``ftp://`` …) and
    :class:`~tether.protocol.exceptions.SecurityError` for a redirect from
    ``wss://`` to ``ws://``, which would send the rest of the handshake, and
    every message after it, in clear text.
    """
    uri = urljoin(current_uri, target)
    parsed = parse_uri(uri)
    if current.secure and not parsed.secure:
        raise SecurityError(f"refused to follow a redirect from wss:// to the insecure {uri}")
    cross_origin = (current.secure, current.host, current.port) != (
        parsed.secure,
        parsed.host,
        parsed.port,
    )
    if not cross_origin and parsed.user_info is None and current.user_info is not None:
        # Same server: the credentials the user gave still apply.
        parsed = WebSocketURI(
            parsed.secure, parsed.host, parsed.port, parsed.path, *current.user_info
        )
    return Redirect(uri, parsed, cross_origin)


def without_credentials(headers: HeadersLike | None) -> Headers | None:
    """``headers`` less Authorization, Cookie and Proxy-Authorization: for another origin."""
    if headers is None:
        return None
    given = Headers(headers)
    kept = Headers()
    for name in dict.fromkeys(given):
        if name.lower() not in CREDENTIAL_HEADERS:
            for value in given.get_all(name):
                kept[name] = value
    return kept


def too_many(count: int) -> SecurityError:
    return SecurityError(f"more than {count} redirects: is there a redirect loop?")
