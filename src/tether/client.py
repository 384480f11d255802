"""``tether.client``: the sans-I/O client, where websockets users look."""

from tether.protocol.client import ClientProtocol

__all__ = ["ClientProtocol"]
