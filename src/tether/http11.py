"""``tether.http11``: the handshake's HTTP request and response, where websockets users look."""

from tether.protocol.handshake import Request, Response

__all__ = ["Request", "Response"]
