"""``tether.server``: the sans-I/O server, where websockets users look."""

from tether.protocol.server import ServerProtocol

__all__ = ["ServerProtocol"]
