"""Who a client is: JWT verification, where tokens travel, API keys, channel grants.

A user id comes only from a verified token's ``sub`` claim; nothing a client
sends in a command can change it. Tokens travel in the ``connect`` command, in
a cookie, or in the subprotocol list as ``tether.auth.<token>`` (browsers can
set neither headers nor, safely, URLs: URLs end up in logs).

PyJWT comes with the ``hub`` extra, not with tether itself, so that the
WebSocket library installs without it (and without ``cryptography``): it is
imported where a token is checked, and :func:`require_jwt` says how to
install it when it is missing.
"""

from __future__ import annotations

import fnmatch
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from tether._extras import MissingDependency
from tether.hub.errors import ErrorCode, HubError
from tether.hub.model import JSON
from tether.hub.wire import AUTH_SUBPROTOCOL_PREFIX
from tether.protocol.headers import Headers

Action = Literal["subscribe", "publish", "presence", "history"]

# ``async def authorize(user, channel, action) -> bool``: the application's last word.
Authorizer = Callable[[str, str, Action], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a verified token (or anonymous access) grants."""

    user: str
    """The ``sub`` claim; ``""`` for anonymous clients."""
    expires_at: float | None = None
    """The ``exp`` claim (Unix time), ``None`` if the token never expires."""
    channels: tuple[str, ...] | None = None
    """Glob patterns (``*``, ``?``) of allowed channels; ``None`` allows every channel."""
    info: JSON = None
    """The ``info`` claim, shown in presence instead of anything the client sends."""
    anonymous: bool = False
    claims: Mapping[str, JSON] | None = field(default=None, compare=False)
    """Every claim of the verified token, for the application's hooks; ``None`` without one."""

    def ttl(self, now: float | None = None) -> int | None:
        if self.expires_at is None:
            return None
        return max(0, int(self.expires_at - (time.time() if now is None else now)))

    def allows(self, channel: str) -> bool:
        if self.channels is None:
            return True
        return any(fnmatch.fnmatchcase(channel, pattern) for pattern in self.channels)


ANONYMOUS = Credentials(user="", anonymous=True)


def require_jwt() -> None:
    """Raise :class:`MissingDependency` unless PyJWT, which checks tokens, is importable."""
    try:
        import jwt  # noqa: F401
    except ImportError as exc:
        raise MissingDependency("the hub's token checks", "PyJWT", "hub") from exc


class TokenVerifier:
    """Checks HS256 tokens against a secret and RS256 tokens against a public key."""

    def __init__(self, secret: str | None = None, public_key: str | None = None) -> None:
        self._keys: dict[str, str] = {}
        if secret:
            self._keys["HS256"] = secret
        if public_key:
            self._keys["RS256"] = public_key
        if self._keys:
            require_jwt()  # now, not at the first client's token

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def verify(self, token: str) -> Credentials:
        """The token's credentials; :class:`HubError` 101 if invalid, 109 if expired."""
        import jwt  # the `hub` extra; __init__ checked that it is there

        try:
            alg = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(alg) if isinstance(alg, str) else None
            if key is None or not isinstance(alg, str):
                # Also refuses "none" and HS256 tokens signed with a public key.
                raise HubError(ErrorCode.UNAUTHORIZED, f"token algorithm {alg!r} not accepted")
            claims = jwt.decode(token, key, algorithms=[alg], options={"require": ["sub"]})
        except jwt.ExpiredSignatureError:
            raise HubError(ErrorCode.TOKEN_EXPIRED) from None
        except jwt.InvalidTokenError as exc:
            raise HubError(ErrorCode.UNAUTHORIZED, f"invalid token: {exc}") from None
        return _credentials(claims)


def _credentials(claims: dict[str, JSON]) -> Credentials:
    sub = claims["sub"]
    if not isinstance(sub, str):
        raise HubError(ErrorCode.UNAUTHORIZED, "sub claim must be a string")
    exp = claims.get("exp")
    channels = claims.get("channels")
    if channels is not None and (
        not isinstance(channels, list) or not all(isinstance(c, str) for c in channels)
    ):
        raise HubError(ErrorCode.UNAUTHORIZED, "channels claim must be a list of strings")
    return Credentials(
        user=sub,
        expires_at=float(exp) if isinstance(exp, int | float) else None,
        channels=tuple(channels) if channels is not None else None,
        info=claims.get("info"),
        claims=claims,
    )


def token_from_handshake(headers: Headers, cookie_name: str) -> str | None:
    """A token from the upgrade request: the subprotocol list first, then the cookie."""
    for value in headers.get_all("Sec-WebSocket-Protocol"):
        for item in value.split(","):
            item = item.strip()
            if item.startswith(AUTH_SUBPROTOCOL_PREFIX) and len(item) > len(
                AUTH_SUBPROTOCOL_PREFIX
            ):
                return item[len(AUTH_SUBPROTOCOL_PREFIX) :]
    return cookie(headers, cookie_name)


def cookie(headers: Headers, name: str) -> str | None:
    return cookies_of(headers).get(name) or None


def cookies_of(headers: Headers) -> dict[str, str]:
    """Every cookie of a request (``Cookie`` headers, RFC 6265 5.4); the first of a name wins."""
    cookies: dict[str, str] = {}
    for value in headers.get_all("Cookie"):
        for pair in value.split(";"):
            key, sep, val = pair.strip().partition("=")
            if sep and key:
                cookies.setdefault(key, val.strip('"'))
    return cookies


def api_key_matches(authorization: str | None, api_key: str | None) -> bool:
    """``Authorization: apikey KEY``, compared in constant time."""
    return _credentials_match(authorization, "apikey", api_key)


def bearer_matches(authorization: str | None, key: str | None) -> bool:
    """``Authorization: Bearer KEY`` (what Prometheus sends), compared in constant time."""
    return _credentials_match(authorization, "bearer", key)


def _credentials_match(authorization: str | None, scheme: str, key: str | None) -> bool:
    if not key or authorization is None:
        return False
    given_scheme, _, given = authorization.strip().partition(" ")
    if given_scheme.lower() != scheme:
        return False
    return hmac.compare_digest(given.strip().encode(), key.encode())
