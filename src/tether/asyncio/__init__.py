"""asyncio implementation: a thin pump between transports and the sans-I/O core."""

from tether.asyncio.auth import basic_auth
from tether.asyncio.broadcast import broadcast
from tether.asyncio.client import ClientConnection, connect, unix_connect
from tether.asyncio.connection import Connection
from tether.asyncio.server import Server, ServerConnection, serve, unix_serve

__all__ = [
    "ClientConnection",
    "Connection",
    "Server",
    "ServerConnection",
    "basic_auth",
    "broadcast",
    "connect",
    "serve",
    "unix_connect",
    "unix_serve",
]
