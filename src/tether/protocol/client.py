"""Client side of the opening handshake (RFC 6455 §4.1) on top of :class:`Connection`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from tether.protocol.connection import Connection, FrameObserver, Side, State
from tether.protocol.events import ResponseReceived
from tether.protocol.exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidHeaderValue,
    InvalidMessage,
    InvalidStatus,
    InvalidUpgrade,
    InvalidURI,
    NegotiationError,
)
from tether.protocol.extensions.base import ClientExtensionFactory, Extension
from tether.protocol.handshake import (
    HeadError,
    HeadParser,
    Request,
    Response,
    accept_key,
    generate_key,
)
from tether.protocol.headers import (
    Headers,
    HeadersLike,
    build_authorization_basic,
    build_extension_header,
    parse_extension_header,
    parse_token_list,
)


@dataclass(frozen=True, slots=True)
class WebSocketURI:
    secure: bool
    host: str
    port: int
    path: str  # includes the query string
    # From the URI's userinfo (RFC 3986 §3.2.1), percent-decoded; sent as Basic auth.
    username: str | None = None
    password: str | None = None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def resource_name(self) -> str:
        """The request target: path and query (websockets' name for it)."""
        return self.path

    @property
    def user_info(self) -> tuple[str, str] | None:
        """``(username, password)`` when the URI carries credentials, else None."""
        if self.username is None or self.password is None:
            return None
        return (self.username, self.password)


def parse_uri(uri: str) -> WebSocketURI:
    """Parse a ws:// or wss:// URI (RFC 6455 §3); raise InvalidURI if it is not one.

    InvalidURI is also a ValueError. ``ws://user:pass@host/`` keeps the
    credentials (percent-decoded) for an ``Authorization: Basic`` header.
    """
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number
        raise InvalidURI(uri, str(exc)) from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidURI(uri, "not a ws:// or wss:// URI")
    if parts.fragment:
        # RFC 6455 §3: "Fragment identifiers are meaningless in the context of WebSocket URIs".
        raise InvalidURI(uri, "a WebSocket URI has no fragment")
    if not parts.hostname:
        raise InvalidURI(uri, "no host")
    secure = parts.scheme == "wss"
    host = parts.hostname
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if not uri.isascii():
        # An IRI: the host goes to DNS and the Host header as IDNA, the path
        # and query percent-encoded as UTF-8 (RFC 3987 §3.1).
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidURI(uri, "the host is not a valid international domain name") from None
        path = quote(path, safe=_URI_DELIMS)
    username = password = None
    if parts.username is not None:
        if parts.password is None:
            # Basic auth needs both; a lone name is more likely a typo than intent.
            raise InvalidURI(uri, "a username without a password")
        try:
            username = unquote(parts.username, errors="strict")
            password = unquote(parts.password, errors="strict")
        except UnicodeDecodeError:
            raise InvalidURI(uri, "credentials are not UTF-8 once percent-decoded") from None
    return WebSocketURI(secure, host, port or (443 if secure else 80), path, username, password)


# RFC 3986 §2.2's reserved characters (and "%"): left as they are when an IRI's path is quoted.
_URI_DELIMS = ":/?#[]@!$&'()*+,;=%"


def _names_authorization(headers: HeadersLike | None) -> bool:
    return headers is not None and "Authorization" in Headers(headers)


# The most of a refused upgrade's body kept for InvalidStatus.response.body.
MAX_REFUSAL_BODY = 64 * 1024


class ClientProtocol(Connection):
    """A client connection: sends the upgrade request, checks the answer, then speaks WebSocket."""

    __slots__ = (
        "_body_wanted",
        "_head",
        "additional_headers",
        "extension_factories",
        "handshake_exc",
        "key",
        "origin",
        "request",
        "requested_subprotocols",
        "response",
        "subprotocol",
        "uri",
        "user_agent",
    )

    def __init__(
        self,
        uri: WebSocketURI,
        *,
        origin: str | None = None,
        extensions: Sequence[ClientExtensionFactory] | None = None,
        subprotocols: Sequence[str] | None = None,
        additional_headers: HeadersLike | None = None,
        user_agent: str | None = "tether",
        max_size: int | None = 2**20,
        max_frame_size: int | None = None,
        stream_fragments: bool = False,
        defer_failure: bool = False,
        frame_observer: FrameObserver | None = None,
    ) -> None:
        super().__init__(
            Side.CLIENT,
            state=State.CONNECTING,
            max_size=max_size,
            max_frame_size=max_frame_size,
            stream_fragments=stream_fragments,
            defer_failure=defer_failure,
            frame_observer=frame_observer,
        )
        self.uri = uri
        self.origin = origin
        self.extension_factories = list(extensions or [])
        self.requested_subprotocols = list(subprotocols or [])
        self.additional_headers = additional_headers
        self.user_agent = user_agent
        self.key = generate_key()
        self._head = HeadParser()
        # Bytes still expected of a refused upgrade's body (see _refused).
        self._body_wanted = 0
        self.request: Request | None = None
        self.response: Response | None = None
        self.subprotocol: str | None = None
        self.handshake_exc: Exception | None = None

    def connect(self) -> Request:
        """Build the upgrade request."""
        headers = Headers([("Host", self.uri.host_header)])
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        headers["Sec-WebSocket-Key"] = self.key
        headers["Sec-WebSocket-Version"] = "13"
        if self.origin is not None:
            headers["Origin"] = self.origin
        if self.extension_factories:
            offer = [(f.name, f.get_request_params()) for f in self.extension_factories]
            headers["Sec-WebSocket-Extensions"] = build_extension_header(offer)
        if self.requested_subprotocols:
            headers["Sec-WebSocket-Protocol"] = ", ".join(self.requested_subprotocols)
        if self.uri.user_info is not None and not _names_authorization(self.additional_headers):
            # RFC 6455 §4.1 lets the client send "authorization" headers; the
            # URI's userinfo becomes Basic credentials (RFC 7617).
            headers["Authorization"] = build_authorization_basic(*self.uri.user_info)
        if self.additional_headers is not None:
            headers.update(self.additional_headers)
        if self.user_agent is not None and "User-Agent" not in headers:
            headers["User-Agent"] = self.user_agent
        return Request(self.uri.path, headers)

    def send_request(self, request: Request) -> None:
        self.request = request
        line = f"GET {request.path} HTTP/1.1\r\n".encode("latin-1")
        self._out.append(line + request.headers.serialize())

    def _receive_handshake(self, data: bytes) -> None:
        if self._body_wanted:
            self._read_body(data)
            return
        try:
            rest = self._head.feed(data)
        except HeadError as exc:
            self._handshake_failed(InvalidMessage(f"invalid HTTP response: {exc.reason}"))
            return
        if not self._head.complete:
            return
        start = self._head.start_line or ""
        version, _, rest_line = start.partition(" ")
        status_text, _, phrase = rest_line.partition(" ")
        if not version.startswith("HTTP/1.") or not status_text.isdigit():
            self._handshake_failed(InvalidMessage(f"malformed status line {start[:80]!r}"))
            return
        response = Response(int(status_text), phrase, self._head.headers)
        self.response = response
        if response.status_code != 101:
            self._refused(response, rest)
            return
        try:
            self._check_response(response)
        except InvalidHandshake as exc:
            self._handshake_failed(exc)
            self._events.append(ResponseReceived(response))
            return
        self._set_state(State.OPEN)
        self._events.append(ResponseReceived(response))
        if rest:
            self.receive_data(rest)

    def _refused(self, response: Response, rest: bytes) -> None:
        """The server answered with an HTTP error: keep its body, for the error.

        A refusal usually says why in its body ("token expired"); it is read
        up to ``Content-Length`` (at most MAX_REFUSAL_BODY bytes; the rest is
        not waited for), then the handshake fails with InvalidStatus.
        """
        values = response.headers.get_all("Content-Length")
        length = int(values[0]) if len(values) == 1 and values[0].isdigit() else 0
        self._body_wanted = max(0, min(length, MAX_REFUSAL_BODY))
        if self._body_wanted:
            self._read_body(rest)
        else:
            self._finish_refusal(b"")

    def _read_body(self, data: bytes) -> None:
        assert self.response is not None
        body = self.response.body + data
        if len(body) >= self._body_wanted:
            self._finish_refusal(body[: self._body_wanted])
        else:
            self.response.body = body

    def _finish_refusal(self, body: bytes) -> None:
        assert self.response is not None
        self._body_wanted = 0
        self.response.body = body
        self._handshake_failed(InvalidStatus(self.response))
        self._events.append(ResponseReceived(self.response))

    def receive_eof(self) -> None:
        if self._body_wanted:
            # The server closed before the whole body came: keep what did.
            assert self.response is not None
            self._finish_refusal(self.response.body)
        super().receive_eof()

    def _handshake_failed(self, exc: InvalidHandshake) -> None:
        self.handshake_exc = exc
        self._set_state(State.CLOSED)
        self.discarding_input = True
        self.close_transport = True

    def _check_response(self, response: Response) -> None:
        if response.status_code != 101:
            raise InvalidStatus(response)
        headers = response.headers
        upgrade = [t.lower() for t in parse_token_list(headers.get_all("Upgrade"), "Upgrade")]
        if upgrade != ["websocket"]:
            raise InvalidUpgrade("Upgrade", f"expected 'websocket', got {upgrade}")
        connection = [
            t.lower() for t in parse_token_list(headers.get_all("Connection"), "Connection")
        ]
        if "upgrade" not in connection:
            raise InvalidUpgrade("Connection", "missing 'Upgrade'")
        # RFC 6455 §4.1, client step 4: the accept value must match our key.
        if headers.get_all("Sec-WebSocket-Accept") != [accept_key(self.key)]:
            raise InvalidHeaderValue("Sec-WebSocket-Accept", "does not match the key sent")
        self.extensions = self._accept_extensions(headers)
        protocols = parse_token_list(headers.get_all("Sec-WebSocket-Protocol"), "Protocol")
        if len(protocols) > 1:
            raise InvalidHeader("Sec-WebSocket-Protocol", "more than one subprotocol")
        if protocols:
            if protocols[0] not in self.requested_subprotocols:
                raise NegotiationError(f"server chose unrequested subprotocol {protocols[0]!r}")
            self.subprotocol = protocols[0]

    def _accept_extensions(self, headers: Headers) -> list[Extension]:
        values = headers.get_all("Sec-WebSocket-Extensions")
        if not values:
            return []
        accepted: list[Extension] = []
        for name, params in parse_extension_header(values):
            for factory in self.extension_factories:
                if factory.name == name:
                    accepted.append(factory.process_response_params(params, accepted))
                    break
            else:
                # RFC 6455 §4.1: the client must fail if the server uses an
                # extension the client did not ask for.
                raise NegotiationError(f"server used unrequested extension {name!r}")
        return accepted
