"""The ASGI lifespan protocol over an async context manager.

A server sends ``lifespan.startup`` once, then ``lifespan.shutdown`` once;
the app answers each with ``.complete`` or ``.failed`` and a message. Both
:class:`~tether.asgi.HubApp` (when it is the app the server runs) and
:class:`~tether.asgi.PathRouter` (for the hubs it mounts) answer them by
entering and leaving a context manager.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from tether.asgi.scope import Receive, Send


async def serve_lifespan(
    receive: Receive, send: Send, running: AbstractAsyncContextManager[Any]
) -> None:
    """Enter ``running`` on startup, leave it on shutdown, and say how each went."""
    message = await receive()
    if message["type"] != "lifespan.startup":
        return
    try:
        await running.__aenter__()
    except Exception as exc:
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        return
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown: nothing else may come
    try:
        await running.__aexit__(None, None, None)
    except Exception as exc:
        await send({"type": "lifespan.shutdown.failed", "message": str(exc)})
        return
    await send({"type": "lifespan.shutdown.complete"})
