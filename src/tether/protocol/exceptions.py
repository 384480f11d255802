"""Exceptions shared by every layer of tether."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.protocol.handshake import Response


class WebSocketError(Exception):
    """Base class of tether's exceptions."""


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455; ``code`` is the close code to fail with."""

    def __init__(self, reason: str, code: int = 1002) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class PayloadTooBig(ProtocolError):
    """A frame or message exceeds the configured limit (close code 1009)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, 1009)


class InflateDeferred(Exception):
    """An extension would expand a frame past the caller's ``max_output``.

    Not an error: the extension left its state as it was before the frame,
    so the same frame can be decoded again later, without the bound (by an
    I/O layer, in a worker thread). Never escapes ``Connection.receive_data``.
    """


class InvalidURI(WebSocketError, ValueError):
    """A URI is not a valid ws:// or wss:// URI (RFC 6455 §3).

    Also a ValueError, which is what tether raised for it before.
    """

    def __init__(self, uri: str, msg: str) -> None:
        super().__init__(f"invalid WebSocket URI {uri!r}: {msg}")
        self.uri = uri
        self.msg = msg


class InvalidProxy(WebSocketError):
    """A proxy address is not one the client can use (scheme, host, credentials)."""

    def __init__(self, proxy: str, msg: str) -> None:
        super().__init__(f"invalid proxy {proxy!r}: {msg}")
        self.proxy = proxy
        self.msg = msg


class InvalidHandshake(WebSocketError):
    """The opening handshake failed."""


class SecurityError(InvalidHandshake):
    """The handshake broke a security rule (a redirect from wss:// to ws://, too many redirects)."""


class ProxyError(InvalidHandshake):
    """The proxy could not open a tunnel to the server."""


class InvalidProxyMessage(ProxyError):
    """An HTTP proxy answered CONNECT with something that is not an HTTP response."""


class InvalidMessage(InvalidHandshake):
    """A handshake response is malformed, or the connection ended during the handshake."""


class InvalidProxyStatus(ProxyError):
    """An HTTP proxy refused CONNECT: ``response`` is its answer (407, 403, 502 ...)."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"proxy rejected the connection: HTTP {response.status_code}")
        self.response = response


class InvalidHeader(InvalidHandshake):
    """A handshake header is missing or malformed."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


class InvalidStatus(InvalidHandshake):
    """The server answered the upgrade request with something other than 101."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"server rejected WebSocket connection: HTTP {response.status_code}")
        self.response = response


class NegotiationError(InvalidHandshake):
    """An extension or subprotocol negotiation failed."""


class ConnectionClosed(WebSocketError):
    """Raised when using a connection that is closed.

    ``rcvd`` and ``sent`` are the Close frames received and sent, as
    ``(code, reason)`` tuples, or ``None`` when no such frame was exchanged.
    """

    def __init__(
        self, rcvd: tuple[int, str] | None, sent: tuple[int, str] | None, detail: str = ""
    ) -> None:
        self.rcvd = rcvd
        self.sent = sent
        self.detail = detail
        super().__init__(self._describe())

    @property
    def code(self) -> int:
        if self.rcvd is not None:
            return self.rcvd[0]
        return 1006

    @property
    def reason(self) -> str:
        if self.rcvd is not None:
            return self.rcvd[1]
        return self.detail

    def _describe(self) -> str:
        if self.rcvd is None and self.sent is None:
            text = "no close frame received or sent"
        elif self.rcvd is None:
            text = f"sent {self.sent[0]} ({self.sent[1]}); no close frame received"  # type: ignore[index]
        elif self.sent is None:
            text = f"received {self.rcvd[0]} ({self.rcvd[1]}); no close frame sent"
        else:
            text = f"received {self.rcvd[0]} ({self.rcvd[1]}); then sent {self.sent[0]}"
        return f"{text}: {self.detail}" if self.detail else text


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed cleanly: 1000, 1001 or 1005 (no code) received."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error or without a closing handshake."""


class InvalidState(WebSocketError):
    """An operation is not allowed in the connection's current state."""
