"""HTTP Basic authentication for the opening handshake (RFC 7617): ``basic_auth``.

``serve(handler, ..., process_request=basic_auth(realm=..., credentials=...))``
answers 401 with a ``WWW-Authenticate`` challenge until the client sends
valid credentials, then sets ``connection.username`` and lets the upgrade
go on, as websockets' ``basic_auth`` does.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from tether.protocol.handshake import Request, Response
from tether.protocol.headers import Headers

if TYPE_CHECKING:
    from tether.asyncio.server import ServerConnection

CheckCredentials = Callable[[str, str], bool | Awaitable[bool]]


def _is_credentials(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], str)
    )


def _parse_basic(header: str) -> tuple[str, str] | None:
    """``Basic <base64 of user:password>`` as (user, password), or None if malformed."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        decoded = base64.b64decode(token.strip().encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError):
        return None
    username, sep, password = decoded.partition(":")
    # RFC 7617 §2: "the user-id ... MUST NOT contain a colon"; the password may.
    return (username, password) if sep else None


def basic_auth(
    realm: str = "",
    credentials: tuple[str, str] | Iterable[tuple[str, str]] | None = None,
    check_credentials: CheckCredentials | None = None,
) -> Callable[[ServerConnection, Request], Awaitable[Response | None]]:
    """A ``process_request`` that requires HTTP Basic credentials.

    Give either ``credentials`` (one ``(username, password)`` pair or an
    iterable of them, compared in constant time) or ``check_credentials``, a
    function or coroutine ``(username, password) -> bool``. On success the
    connection's ``username`` is set.
    """
    if (credentials is None) == (check_credentials is None):
        raise TypeError("provide either credentials or check_credentials")

    if credentials is not None:
        given: list[Any] = [credentials] if _is_credentials(credentials) else list(credentials)
        if not all(_is_credentials(pair) for pair in given):
            raise TypeError(f"invalid credentials argument: {credentials!r}")
        known: dict[str, str] = dict(given)

        def check_known(username: str, password: str) -> bool:
            expected = known.get(username)
            if expected is None:
                # Compare anyway: the answer takes as long for a wrong user.
                hmac.compare_digest(password.encode(), password.encode())
                return False
            return hmac.compare_digest(expected.encode(), password.encode())

        check: CheckCredentials = check_known
    else:
        assert check_credentials is not None
        check = check_credentials

    challenge = f'Basic realm="{realm}", charset="UTF-8"'

    def refuse(connection: ServerConnection, text: str) -> Response:
        return connection.respond(401, text, Headers([("WWW-Authenticate", challenge)]))

    async def process_request(connection: ServerConnection, request: Request) -> Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            return refuse(connection, "Missing credentials\n")
        parsed = _parse_basic(header)
        if parsed is None:
            return refuse(connection, "Unsupported credentials\n")
        username, password = parsed
        valid = check(username, password)
        if inspect.isawaitable(valid):
            valid = await valid
        if not valid:
            return refuse(connection, "Invalid credentials\n")
        connection.username = username
        return None

    return process_request
