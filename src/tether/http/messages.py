"""What the HTTP layer hands out and takes, without h11: requests, limits, chunk framing.

Modules that only describe or frame HTTP (the hub's transports) import these
without needing h11, which :mod:`tether.http.server` parses with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from tether.protocol.headers import Headers


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Limits of one HTTP connection; every one has a safe default."""

    max_head_size: int = 16 * 1024
    """Bytes of a request line plus headers (431 beyond)."""
    request_timeout: float = 10.0
    """Seconds to receive a request's head, and then its body."""
    keepalive_timeout: float = 15.0
    """Seconds an idle connection waits for its next request."""
    write_buffer_limit: int = 256 * 1024
    """Bytes in the socket's write buffer above which a stream is not ready."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str
    """The request target as sent: path and query."""
    headers: Headers
    http_version: str
    remote: str
    """The peer's IP address ("" when unknown)."""
    path: str = field(init=False)
    query: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        object.__setattr__(self, "path", parts.path)
        object.__setattr__(self, "query", parse_qs(parts.query, keep_blank_values=True))

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


def chunk(payload: bytes) -> bytes:
    """``payload`` as one chunk of chunked transfer coding (RFC 9112 section 7.1)."""
    return b"%x\r\n%b\r\n" % (len(payload), payload)


class BodyStream(Protocol):
    """A response body written as it comes (tether's :class:`~tether.http.server.ResponseStream`,
    or an ASGI response in :mod:`tether.asgi.fallbacks`)."""

    chunked: bool
    """Whether :meth:`frame` adds chunked transfer coding (the writer frames itself)."""
    done: asyncio.Future[None]
    """Resolved once the response ended or the client left."""

    @property
    def open(self) -> bool: ...

    def frame(self, payload: bytes) -> bytes:
        """``payload`` as :meth:`write_framed` wants it (the same for every stream alike)."""

    def ready(self) -> bool:
        """Open, and what is buffered for the client is below the limit."""

    def write(self, payload: bytes) -> None: ...

    def write_framed(self, data: bytes) -> None: ...

    async def drain(self) -> None:
        """Wait while the buffer is over its limit (or until the end)."""

    def end(self) -> None:
        """End the response; a client that is not reading is dropped instead."""

    def abort(self) -> None: ...


class Exchange(Protocol):
    """One request's answer: read the body, then respond whole or start a stream."""

    @property
    def responded(self) -> bool: ...

    async def read_body(self, max_size: int) -> bytes:
        """The body, at most ``max_size`` bytes; ``RequestBodyError`` otherwise."""

    async def respond(
        self, status: int, headers: Iterable[tuple[str, str]], body: bytes = b""
    ) -> None: ...

    def start_stream(self, status: int, headers: Iterable[tuple[str, str]]) -> BodyStream: ...
