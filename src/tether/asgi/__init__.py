"""tether inside an ASGI app: the hub mounted in FastAPI, Starlette or Django.

- :class:`HubApp`: everything ``tether serve`` serves, as one ASGI 3 app
  (``app.mount("/realtime", HubApp(node))``; ``lifespan=hub.lifespan``).
- :class:`PathRouter`: mounts it in apps that cannot mount (Django).
- :class:`AsgiWebSocketTransport`: a hub session over an ASGI WebSocket.

Guide: docs/asgi.md.
"""

from tether.asgi.app import HubApp
from tether.asgi.router import PathRouter
from tether.asgi.transport import AsgiWebSocketTransport

__all__ = ["AsgiWebSocketTransport", "HubApp", "PathRouter"]
