"""PathRouter: mount the hub (or any ASGI app) under a path prefix of an app that cannot.

Django's ASGI application has no way to mount another ASGI app, and Django
answers no WebSocket and no lifespan events. In ``asgi.py``::

    application = PathRouter({"/realtime": hub}, default=get_asgi_application())

Requests under a prefix go to its app with the prefix added to ``root_path``
(``path`` stays whole, as Starlette's ``Mount`` does); everything else goes to
``default``. Lifespan events start and stop the mounted hubs; the default app
does not see them (Django would refuse them).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from tether.asgi.app import HubApp
from tether.asgi.lifespan import serve_lifespan
from tether.asgi.scope import ASGIApp, Receive, Scope, Send, route_path


class PathRouter:
    def __init__(self, mounts: Mapping[str, ASGIApp], default: ASGIApp) -> None:
        for prefix in mounts:
            if not prefix.startswith("/") or prefix.endswith("/"):
                raise ValueError(f"a prefix starts with / and does not end with one: {prefix!r}")
        # Longest first, so /a/b wins over /a.
        self.mounts = sorted(mounts.items(), key=lambda item: len(item[0]), reverse=True)
        self.default = default

    def match(self, scope: Scope) -> tuple[str, ASGIApp] | None:
        path = route_path(scope)
        for prefix, app in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                return prefix, app
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        found = self.match(scope)
        if found is None:
            await self.default(scope, receive, send)
            return
        prefix, app = found
        await app({**scope, "root_path": (scope.get("root_path") or "") + prefix}, receive, send)

    def hubs(self) -> list[HubApp]:
        return [app for _, app in self.mounts if isinstance(app, HubApp)]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Every mounted hub started (in order), and stopped in reverse order."""
        async with contextlib.AsyncExitStack() as stack:
            for hub in self.hubs():
                await stack.enter_async_context(hub)
            yield

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await serve_lifespan(receive, send, self.running())
