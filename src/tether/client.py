"""``tether.client``: the sans-I/O client, where websockets users look."""

from tether.protocol.client import ClientProtocol
from tether.protocol.reconnect import backoff, process_exception

__all__ = ["ClientProtocol", "backoff", "process_exception"]
