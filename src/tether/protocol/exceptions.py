"""Exceptions shared by every layer of tether.

The hierarchy and the names are websockets' (``from tether.exceptions import
...`` is the path a porter writes), so ``except websockets.X`` ports by
changing the import::

    WebSocketException (tether's WebSocketError is the same class)
        ConnectionClosed
            ConnectionClosedOK
            ConnectionClosedError
        InvalidURI
        InvalidProxy
        InvalidHandshake
            SecurityError
                RequestLineTooLong, StatusLineTooLong, HeaderLineTooLong, TooManyHeaders
            ProxyError
                InvalidProxyMessage, InvalidProxyStatus
            InvalidMessage
            InvalidMethod
            InvalidProtocol
            InvalidStatus
            InvalidHeader
                InvalidHeaderFormat, InvalidHeaderValue, InvalidOrigin, InvalidUpgrade
            NegotiationError
                DuplicateParameter, InvalidParameterName, InvalidParameterValue
        ProtocolError
            PayloadTooBig (tether: a ProtocolError too, with close code 1009)
        TooManyFragments
        InvalidState (also an AssertionError)
        ConcurrencyError (also a RuntimeError)

Beyond websockets, :class:`ProtocolError` carries the close code tether fails
the connection with, and :class:`ConnectionClosed` keeps ``code``,
``reason`` (without a deprecation warning) and ``detail``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tether.protocol.frames import Close

if TYPE_CHECKING:
    from tether.protocol.handshake import Response


class WebSocketException(Exception):
    """Base class of every exception tether defines."""


# tether's earlier name for the base class.
WebSocketError = WebSocketException


class ProtocolError(WebSocketException):
    """The peer broke RFC 6455; ``code`` is the close code to fail with."""

    def __init__(self, reason: str = "protocol error", code: int = 1002) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class PayloadTooBig(ProtocolError):
    """A frame or message exceeds the configured limit (close code 1009).

    Takes a message, as tether raises it, or websockets' ``(size, max_size,
    current_size)``.
    """

    def __init__(
        self,
        size_or_message: int | str | None,
        max_size: int | None = None,
        current_size: int | None = None,
    ) -> None:
        self.size: int | None = None
        self.max_size: int | None = max_size
        self.current_size: int | None = current_size
        if isinstance(size_or_message, str):
            message = size_or_message
        else:
            self.size = size_or_message
            if current_size is not None and max_size is not None:
                self.max_size = max_size + current_size
            message = "frame "
            if size_or_message is not None:
                message += f"with {size_or_message} bytes "
            if current_size is not None:
                message += f"after reading {current_size} bytes "
            message += f"exceeds limit of {self.max_size} bytes"
        super().__init__(message, 1009)


class TooManyFragments(WebSocketException):
    """A fragmented message has more frames than allowed."""

    def __init__(self, max_fragments: int) -> None:
        super().__init__(f"fragmented message exceeds limit of {max_fragments} frames")
        self.max_fragments = max_fragments


class InflateDeferred(Exception):
    """An extension would expand a frame past the caller's ``max_output``.

    Not an error: the extension left its state as it was before the frame,
    so the same frame can be decoded again later, without the bound (by an
    I/O layer, in a worker thread). Never escapes ``Connection.receive_data``.
    """


class InvalidURI(WebSocketException, ValueError):
    """The URI given to ``connect`` is not a valid ``ws://`` or ``wss://`` URI.

    Also a ``ValueError``, which tether raised before.
    """

    def __init__(self, uri: str, msg: str) -> None:
        super().__init__(uri, msg)
        self.uri = uri
        self.msg = msg

    def __str__(self) -> str:
        return f"{self.uri} isn't a valid URI: {self.msg}"


class InvalidProxy(WebSocketException):
    """The proxy given to ``connect`` is not valid."""

    def __init__(self, proxy: str, msg: str) -> None:
        super().__init__(proxy, msg)
        self.proxy = proxy
        self.msg = msg

    def __str__(self) -> str:
        return f"{self.proxy} isn't a valid proxy: {self.msg}"


class InvalidHandshake(WebSocketException):
    """The opening handshake failed."""


class SecurityError(InvalidHandshake):
    """A handshake request or response breaks a security limit."""


class RequestLineTooLong(SecurityError):
    """The request line of a handshake request is too long."""


class StatusLineTooLong(SecurityError):
    """The status line of a handshake response is too long."""


class HeaderLineTooLong(SecurityError):
    """A header line of a handshake request or response is too long."""


class TooManyHeaders(SecurityError):
    """A handshake request or response has too many headers."""


class ProxyError(InvalidHandshake):
    """Connecting through a proxy failed."""


class InvalidProxyMessage(ProxyError):
    """An HTTP proxy's response is malformed."""


class InvalidProxyStatus(ProxyError):
    """An HTTP proxy refused the connection."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"proxy rejected connection: HTTP {response.status_code:d}")
        self.response = response


class InvalidMessage(InvalidHandshake):
    """A handshake request or response is malformed (or the connection ended during it)."""


class InvalidMethod(InvalidHandshake):
    """A handshake request does not use GET."""

    def __init__(self, method: str) -> None:
        super().__init__(f"unsupported HTTP method: {method}")
        self.method = method


class InvalidProtocol(InvalidHandshake):
    """A handshake request does not use HTTP/1.1."""

    def __init__(self, protocol: str) -> None:
        super().__init__(f"unsupported HTTP version: {protocol}")
        self.protocol = protocol


class InvalidStatus(InvalidHandshake):
    """The server answered the upgrade request with something other than 101."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"server rejected WebSocket connection: HTTP {response.status_code:d}")
        self.response = response


class InvalidHeader(InvalidHandshake):
    """A handshake header is missing (``value`` is None) or has a bad value."""

    def __init__(self, name: str, value: str | None = None) -> None:
        if value is None:
            text = f"missing {name} header"
        elif value == "":
            text = f"empty {name} header"
        else:
            text = f"invalid {name} header: {value}"
        super().__init__(text)
        self.name = name
        self.value = value

    @property
    def detail(self) -> str | None:
        """tether's earlier name for ``value``."""
        return self.value


class InvalidHeaderFormat(InvalidHeader):
    """A header does not match its grammar."""

    def __init__(self, name: str, error: str, header: str, pos: int) -> None:
        super().__init__(name, f"{error} at {pos} in {header}")


class InvalidHeaderValue(InvalidHeader):
    """A header is well-formed but its value is not acceptable."""


class InvalidOrigin(InvalidHeader):
    """The request's Origin is not allowed."""

    def __init__(self, origin: str | None) -> None:
        super().__init__("Origin", origin)


class InvalidUpgrade(InvalidHeader):
    """The Upgrade or Connection header is not right."""


class NegotiationError(InvalidHandshake):
    """An extension or subprotocol negotiation failed."""


class DuplicateParameter(NegotiationError):
    """A parameter is repeated in an extension header."""

    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate parameter: {name}")
        self.name = name


class InvalidParameterName(NegotiationError):
    """A parameter name in an extension header is not valid."""

    def __init__(self, name: str) -> None:
        super().__init__(f"invalid parameter name: {name}")
        self.name = name


class InvalidParameterValue(NegotiationError):
    """A parameter value in an extension header is not valid."""

    def __init__(self, name: str, value: str | None) -> None:
        if value is None:
            text = f"missing value for parameter {name}"
        elif value == "":
            text = f"empty value for parameter {name}"
        else:
            text = f"invalid value for parameter {name}: {value}"
        super().__init__(text)
        self.name = name
        self.value = value


class ConnectionClosed(WebSocketException):
    """Raised when using a connection that is closed.

    ``rcvd`` and ``sent`` are the Close frames received and sent, as
    :class:`~tether.frames.Close` (``.code``, ``.reason``), or ``None`` when
    no such frame was exchanged; ``rcvd_then_sent`` says which came first
    when both were. ``code`` and ``reason`` are those received (1006 and the
    failure's detail when none was); ``detail`` says why tether closed.
    """

    def __init__(
        self,
        rcvd: Close | tuple[int, str] | None,
        sent: Close | tuple[int, str] | None,
        rcvd_then_sent: bool | None = None,
        detail: str = "",
    ) -> None:
        self.rcvd = None if rcvd is None else Close(*rcvd)
        self.sent = None if sent is None else Close(*sent)
        if rcvd_then_sent is None and self.rcvd is not None and self.sent is not None:
            rcvd_then_sent = True
        elif self.rcvd is None or self.sent is None:
            rcvd_then_sent = None
        self.rcvd_then_sent = rcvd_then_sent
        self.detail = detail
        super().__init__(self._describe())

    @property
    def code(self) -> int:
        if self.rcvd is not None:
            return self.rcvd.code
        return 1006

    @property
    def reason(self) -> str:
        if self.rcvd is not None:
            return self.rcvd.reason
        return self.detail

    def _describe(self) -> str:
        if self.rcvd is None:
            if self.sent is None:
                text = "no close frame received or sent"
            else:
                text = f"sent {self.sent}; no close frame received"
        elif self.sent is None:
            text = f"received {self.rcvd}; no close frame sent"
        elif self.rcvd_then_sent:
            text = f"received {self.rcvd}; then sent {self.sent}"
        else:
            text = f"sent {self.sent}; then received {self.rcvd}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return self._describe()


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed cleanly: 1000, 1001 or 1005 (no code) received and sent."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error or without a closing handshake."""


class InvalidState(WebSocketException, AssertionError):
    """An operation is not allowed in the connection's current state."""


class ConcurrencyError(WebSocketException, RuntimeError):
    """Two coroutines received (or streamed a send) on one connection at once."""


__all__ = [
    "ConcurrencyError",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DuplicateParameter",
    "HeaderLineTooLong",
    "InflateDeferred",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidHeaderFormat",
    "InvalidHeaderValue",
    "InvalidMessage",
    "InvalidMethod",
    "InvalidOrigin",
    "InvalidParameterName",
    "InvalidParameterValue",
    "InvalidProtocol",
    "InvalidProxy",
    "InvalidProxyMessage",
    "InvalidProxyStatus",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "InvalidUpgrade",
    "NegotiationError",
    "PayloadTooBig",
    "ProtocolError",
    "ProxyError",
    "RequestLineTooLong",
    "SecurityError",
    "StatusLineTooLong",
    "TooManyFragments",
    "TooManyHeaders",
    "WebSocketError",
    "WebSocketException",
]
