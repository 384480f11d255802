"""tether as uvicorn's WebSocket engine.

Run any ASGI application's WebSocket endpoints on tether's protocol core::

    uvicorn app:app --ws tether.uvicorn:WebSocketProtocol

uvicorn's own ``--ws-max-size``, ``--ws-max-queue``, ``--ws-ping-interval``,
``--ws-ping-timeout`` and ``--ws-per-message-deflate`` apply. See
docs/uvicorn.md.
"""

from tether.uvicorn.protocol import ClientDisconnected, WebSocketProtocol

__all__ = ["ClientDisconnected", "WebSocketProtocol"]
