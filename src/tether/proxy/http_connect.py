"""HTTP ``CONNECT`` (RFC 9110 §9.3.6) without I/O: the request, and a reader for the answer.

Shared by the asyncio and the blocking tunnel: each moves the bytes, this
module decides what they mean.
"""

from __future__ import annotations

from tether.protocol.exceptions import InvalidProxyMessage, InvalidProxyStatus
from tether.protocol.handshake import HeadError, HeadParser, Response
from tether.protocol.headers import build_authorization_basic
from tether.proxy.address import Proxy

# A proxy's answer to CONNECT is a status line and a few headers; these
# bounds keep a proxy that streams headers forever from costing memory.
MAX_LINE = 8192
MAX_HEADERS = 64


def authority(host: str, port: int) -> str:
    """``host:port`` with an IPv6 literal in brackets (RFC 9110 §9.3.6: authority-form)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_request(proxy: Proxy, host: str, port: int, user_agent: str | None) -> bytes:
    """The ``CONNECT host:port`` request, with ``Proxy-Authorization: Basic`` from the proxy URL."""
    target = authority(host, port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if user_agent is not None:
        lines.append(f"User-Agent: {user_agent}")
    if proxy.user_info is not None:
        # RFC 9110 §11.7.2; Basic per RFC 7617, as curl and browsers send it.
        lines.append(f"Proxy-Authorization: {build_authorization_basic(*proxy.user_info)}")
    if any(c in line for line in lines for c in "\r\n\x00"):
        # A CR or LF inside a value would end the header early and inject others.
        raise ValueError("invalid character in the CONNECT request's host or User-Agent")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ConnectResponseReader:
    """Feed the proxy's bytes; ``feed`` returns True once a 2xx answer is complete.

    Raises :class:`InvalidProxyStatus` for any other status (403, 407, 502 …)
    and :class:`InvalidProxyMessage` for bytes that are not an HTTP/1.x
    response, for an answer cut short by EOF, and for bytes after a 2xx
    answer: neither a WebSocket server nor a TLS server speaks before the
    client, so such bytes can only come from a confused proxy.
    """

    def __init__(self) -> None:
        self._head = HeadParser(max_line=MAX_LINE, max_headers=MAX_HEADERS)
        self.response: Response | None = None

    def feed(self, data: bytes) -> bool:
        if self.response is not None:
            if data:
                raise InvalidProxyMessage("the proxy sent data before the server could answer")
            return True
        try:
            rest = self._head.feed(data)
        except HeadError as exc:
            raise InvalidProxyMessage(
                f"invalid HTTP response from the proxy: {exc.reason}"
            ) from None
        if not self._head.complete:
            return False
        start = self._head.start_line or ""
        version, _, status_and_phrase = start.partition(" ")
        status_text, _, phrase = status_and_phrase.partition(" ")
        if not version.startswith("HTTP/1.") or len(status_text) != 3 or not status_text.isdigit():
            raise InvalidProxyMessage(f"invalid status line from the proxy: {start[:80]!r}")
        response = Response(int(status_text), phrase, self._head.headers)
        # RFC 9110 §9.3.6: "Any 2xx (Successful) response indicates that the
        # sender (and all inbound proxies) will switch to tunnel mode".
        if not 200 <= response.status_code < 300:
            raise InvalidProxyStatus(response)
        self.response = response
        return self.feed(rest)

    def feed_eof(self) -> None:
        """The proxy closed the connection: an error unless the tunnel was already open."""
        if self.response is None:
            raise InvalidProxyMessage("the proxy closed the connection before answering CONNECT")
