"""The synchronous API: a threaded client and server over the same sans-I/O core.

Module paths and names are websockets' (``websockets.sync``): port code by
changing the import. ``tether.sync.client.connect`` opens a
:class:`~tether.sync.client.ClientConnection`;
``tether.sync.server.serve`` returns a :class:`~tether.sync.server.Server`
whose ``serve_forever()`` runs a handler per connection in a thread. Nothing
here runs an event loop: see :mod:`tether.sync.connection` for the threads.
"""

from tether.sync.broadcast import broadcast
from tether.sync.client import (
    ClientConnection,
    connect,
    reconnect,
    unix_connect,
    unix_reconnect,
)
from tether.sync.connection import Connection
from tether.sync.server import Server, ServerConnection, basic_auth, serve, unix_serve

__all__ = [
    "ClientConnection",
    "Connection",
    "Server",
    "ServerConnection",
    "basic_auth",
    "broadcast",
    "connect",
    "reconnect",
    "serve",
    "unix_connect",
    "unix_reconnect",
    "unix_serve",
]
