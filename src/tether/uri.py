"""``tether.uri``: parsing ``ws://`` and ``wss://`` URIs, where websockets users look."""

from tether.protocol.client import WebSocketURI, parse_uri

__all__ = ["WebSocketURI", "parse_uri"]
