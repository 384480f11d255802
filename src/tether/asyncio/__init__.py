"""asyncio implementation: a thin pump between transports and the sans-I/O core."""

from tether.asyncio.broadcast import broadcast
from tether.asyncio.client import ClientConnection, connect
from tether.asyncio.connection import Connection
from tether.asyncio.server import Server, ServerConnection, serve

__all__ = [
    "ClientConnection",
    "Connection",
    "Server",
    "ServerConnection",
    "broadcast",
    "connect",
    "serve",
]
