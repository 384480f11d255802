"""Server side of the opening handshake (RFC 6455 §4.2) on top of :class:`Connection`."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from tether.protocol.connection import Connection, FrameObserver, Side, State
from tether.protocol.events import RequestReceived
from tether.protocol.exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidMessage,
    InvalidProtocol,
    InvalidState,
    NegotiationError,
)
from tether.protocol.extensions.base import Extension, ServerExtensionFactory
from tether.protocol.handshake import (
    HeadError,
    HeadParser,
    Request,
    Response,
    accept_key,
    make_response,
)
from tether.protocol.headers import (
    Headers,
    build_extension_header,
    parse_extension_header,
    parse_token_list,
)

# Bytes a client may send after its request head before the server answers
# (pipelined frames, or a request body for process_request to read).
MAX_PENDING = 4 * 1024 * 1024

SubprotocolSelector = Callable[[Sequence[str], Sequence[str]], str | None]
# An allowed Origin: the exact string (None for no Origin header) or a
# compiled regex that must match it whole (as in websockets).
OriginLike = str | re.Pattern[str] | None


def origin_allowed(origin: str | None, allowed: Sequence[OriginLike]) -> bool:
    """Whether ``origin`` (None: no Origin header) is one of ``allowed``."""
    for candidate in allowed:
        if candidate == origin:
            return True
        if (
            isinstance(candidate, re.Pattern)
            and origin is not None
            and candidate.fullmatch(origin) is not None
        ):
            return True
    return False


class ServerProtocol(Connection):
    """A server connection: parses the upgrade request, then speaks WebSocket."""

    __slots__ = (
        "_accepted_extensions",
        "_head",
        "_pending",
        "available_subprotocols",
        "extension_factories",
        "handshake_exc",
        "origins",
        "request",
        "response",
        "select_subprotocol",
        "subprotocol",
    )

    def __init__(
        self,
        *,
        origins: Sequence[OriginLike] | None = None,
        extensions: Sequence[ServerExtensionFactory] | None = None,
        subprotocols: Sequence[str] | None = None,
        select_subprotocol: SubprotocolSelector | None = None,
        max_size: int | None = 2**20,
        max_frame_size: int | None = None,
        max_header_line: int = 8192,
        max_headers: int = 128,
        stream_fragments: bool = False,
        defer_failure: bool = False,
        frame_observer: FrameObserver | None = None,
    ) -> None:
        super().__init__(
            Side.SERVER,
            state=State.CONNECTING,
            max_size=max_size,
            max_frame_size=max_frame_size,
            stream_fragments=stream_fragments,
            defer_failure=defer_failure,
            frame_observer=frame_observer,
        )
        self.origins = origins
        self.extension_factories = list(extensions or [])
        self.available_subprotocols = list(subprotocols or [])
        self.select_subprotocol = select_subprotocol
        self._head = HeadParser(max_line=max_header_line, max_headers=max_headers)
        self._pending = bytearray()
        self.request: Request | None = None
        self.response: Response | None = None
        self.subprotocol: str | None = None
        self.handshake_exc: Exception | None = None

    def _receive_handshake(self, data: bytes) -> None:
        if self.request is not None:
            # Bytes after the request head but before we answered: keep them
            # for the frame parser (a client may pipeline its first frames).
            self._pending += data
            if len(self._pending) > MAX_PENDING:
                # The application is slow to answer and the client keeps
                # sending: bound what we hold for it.
                self.handshake_exc = InvalidHandshake("too much data before the handshake answer")
                self._reject_now(make_response(413, "too much data before the handshake answer"))
            return
        if data[0] == 0x16 and self._head.start_line is None and not self._head.buffer:
            # 0x16 starts a TLS handshake record: a wss:// client on a plain
            # port. Say so now instead of waiting for a line that never comes.
            self.handshake_exc = InvalidHandshake("TLS handshake received on a plain-text port")
            self._reject_now(make_response(400, "this port does not speak TLS"))
            return
        try:
            rest = self._head.feed(data)
        except HeadError as exc:
            self.handshake_exc = InvalidMessage(exc.reason)
            self._reject_now(make_response(exc.status, exc.reason))
            return
        if not self._head.complete:
            return
        start = self._head.start_line or ""
        parts = start.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self.handshake_exc = InvalidMessage(f"malformed request line {start[:80]!r}")
            self._reject_now(make_response(400, "malformed request line"))
            return
        method, path, version = parts
        if version != "HTTP/1.1":
            # RFC 6455 §4.1: "The method of the request MUST be GET, and the
            # HTTP version MUST be at least 1.1."
            self.handshake_exc = InvalidProtocol(version)
            self._reject_now(make_response(505, "HTTP/1.1 required"))
            return
        self._pending = bytearray(rest)
        self.request = Request(path, self._head.headers, method)
        self._events.append(RequestReceived(self.request))

    @property
    def body_received(self) -> int:
        """Bytes received after the request head, before the handshake is answered.

        A plain HTTP request's body (see ``take_body``), or frames a client
        pipelined behind its upgrade request.
        """
        return len(self._pending)

    def take_body(self, size: int) -> bytes:
        """Remove and return the first ``size`` bytes after the request head.

        For an I/O layer that answers a plain HTTP request with a body instead
        of upgrading it (RFC 9112 §6.3: the body is exactly ``Content-Length``
        bytes after the head).
        """
        if self.state is not State.CONNECTING:
            raise InvalidState("the handshake was answered: there is no request body")
        body = bytes(self._pending[:size])
        del self._pending[:size]
        return body

    def _reject_now(self, response: Response) -> None:
        self.response = response
        if self.request is not None and self.request.method == "HEAD":
            # RFC 9110 section 9.3.2: "The HEAD method is identical to GET except
            # that the server MUST NOT send content in the response." The
            # headers (Content-Length included) stay those of the GET answer.
            response = replace(response, body=b"")
        self._out.append(response.serialize())
        self._set_state(State.CLOSED)
        self.discarding_input = True
        self.close_transport = True

    def reject(self, status: int, text: str = "", headers: Headers | None = None) -> Response:
        """Build an HTTP error response to send instead of upgrading."""
        return make_response(status, text, headers)

    def accept(self, request: Request) -> Response:
        """Validate the upgrade request and build the 101 response or a clear error."""
        try:
            key, ext_header, subprotocol, extensions = self._validate(request)
        except _Reject as exc:
            self.handshake_exc = InvalidHandshake(exc.text)
            return make_response(exc.status, exc.text, exc.headers)
        headers = Headers(
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept_key(key)),
            ]
        )
        if ext_header:
            headers["Sec-WebSocket-Extensions"] = ext_header
        if subprotocol is not None:
            headers["Sec-WebSocket-Protocol"] = subprotocol
        self._accepted_extensions = extensions
        self.subprotocol = subprotocol
        return Response(101, "Switching Protocols", headers)

    def send_response(self, response: Response) -> None:
        """Send the handshake answer; on 101 the connection opens."""
        if self.state is not State.CONNECTING:
            raise RuntimeError("response already sent")
        self.response = response
        if response.status_code == 101:
            self._out.append(response.serialize())
            self.extensions = getattr(self, "_accepted_extensions", [])
            self._set_state(State.OPEN)
            pending, self._pending = bytes(self._pending), bytearray()
            if pending:
                self.receive_data(pending)
        else:
            if self.handshake_exc is None:
                self.handshake_exc = InvalidHandshake(f"rejected with HTTP {response.status_code}")
            self._reject_now(response)

    def _validate(self, request: Request) -> tuple[str, str, str | None, list[Extension]]:
        headers = request.headers
        if request.method != "GET":
            raise _Reject(405, f"method {request.method} not allowed", Headers({"Allow": "GET"}))
        if len(headers.get_all("Host")) != 1:
            raise _Reject(400, "missing or repeated Host header")
        try:
            upgrade = [t.lower() for t in parse_token_list(headers.get_all("Upgrade"), "Upgrade")]
            connection = [
                t.lower() for t in parse_token_list(headers.get_all("Connection"), "Connection")
            ]
        except InvalidHeader as exc:
            raise _Reject(400, str(exc)) from None
        # RFC 6455 §4.2.1 items 3 and 4.
        if "websocket" not in upgrade:
            raise _Reject(
                426 if not upgrade else 400,
                "Upgrade header must be 'websocket'",
                Headers({"Upgrade": "websocket", "Connection": "Upgrade"}),
            )
        if "upgrade" not in connection:
            raise _Reject(400, "Connection header must include 'Upgrade'")
        versions = headers.get_all("Sec-WebSocket-Version")
        if versions != ["13"]:
            # RFC 6455 §4.4: answer with the versions we support.
            raise _Reject(
                426 if versions else 400,
                "unsupported Sec-WebSocket-Version, use 13"
                if versions
                else "missing Sec-WebSocket-Version",
                Headers({"Sec-WebSocket-Version": "13"}),
            )
        keys = headers.get_all("Sec-WebSocket-Key")
        if len(keys) != 1:
            raise _Reject(400, "missing or repeated Sec-WebSocket-Key")
        key = keys[0]
        try:
            raw = base64.b64decode(key.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raw = b""
        if len(raw) != 16:
            # RFC 6455 §4.1: "a randomly selected 16-byte value ... base64-encoded".
            raise _Reject(400, "Sec-WebSocket-Key must be 16 bytes, base64-encoded")
        if self.origins is not None:
            origins = headers.get_all("Origin")
            if len(origins) > 1:
                # RFC 6454 §7.3: "The user agent MUST NOT include more than one Origin header".
                raise _Reject(400, "more than one Origin header")
            origin = origins[0] if origins else None
            if not origin_allowed(origin, self.origins):
                raise _Reject(403, f"origin {origin!r} not allowed")
        ext_header, extensions = self._negotiate_extensions(headers)
        subprotocol = self._negotiate_subprotocol(headers)
        return key, ext_header, subprotocol, extensions

    def _negotiate_extensions(self, headers: Headers) -> tuple[str, list[Extension]]:
        values = headers.get_all("Sec-WebSocket-Extensions")
        if not values or not self.extension_factories:
            return "", []
        try:
            offers = parse_extension_header(values)
        except InvalidHeader:
            # RFC 7692 §5: a server may decline; a malformed offer is declined,
            # never an error response.
            return "", []
        accepted: list[Extension] = []
        response: list[tuple[str, list[tuple[str, str | None]]]] = []
        for name, params in offers:
            for factory in self.extension_factories:
                if factory.name != name:
                    continue
                try:
                    resp_params, ext = factory.process_request_params(params, accepted)
                except NegotiationError:
                    continue
                accepted.append(ext)
                response.append((name, resp_params))
                break
        return build_extension_header(response), accepted

    def _negotiate_subprotocol(self, headers: Headers) -> str | None:
        try:
            offered = parse_token_list(headers.get_all("Sec-WebSocket-Protocol"), "Protocol")
        except InvalidHeader as exc:
            raise _Reject(400, str(exc)) from None
        if self.select_subprotocol is not None:
            try:
                chosen = self.select_subprotocol(offered, self.available_subprotocols)
            except NegotiationError as exc:
                # As websockets: a selector declines the handshake by raising it.
                raise _Reject(400, str(exc) or "subprotocol negotiation failed") from None
            if chosen is not None and chosen not in offered:
                raise _Reject(500, "selected subprotocol was not offered")
            return chosen
        for proto in offered:
            if proto in self.available_subprotocols:
                return proto
        return None


class _Reject(Exception):
    def __init__(self, status: int, text: str, headers: Headers | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers
