"""PathRouter: the hub under a prefix of an app that cannot mount (Django), lifespan included."""

from __future__ import annotations

import json

import pytest
from asgi_driver import Driver, http_request, http_scope
from test_asgi_app import make_hub

from tether.asgi import PathRouter
from tether.asgi.scope import Receive, Scope, Send


class Recording:
    """A default app that answers 200 and remembers the scopes it saw."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] != "http":
            raise ValueError("only HTTP here (like Django)")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"default"})


async def test_prefix_goes_to_the_hub_the_rest_to_the_default() -> None:
    hub = make_hub()
    default = Recording()
    router = PathRouter({"/realtime": hub}, default=default)
    try:
        status, _, body = await http_request(router, http_scope("/realtime/healthz"))
        assert status == 200 and json.loads(body)["status"] == "ok"
        for path in ("/", "/realtimex/healthz", "/healthz"):
            status, _, body = await http_request(router, http_scope(path))
            assert (status, body) == (200, b"default"), path
        assert [s["path"] for s in default.scopes] == ["/", "/realtimex/healthz", "/healthz"]
        # Under a router that is itself mounted: the prefixes add up.
        status, _, _ = await http_request(
            router, http_scope("/realtime/healthz", root_path="/site")
        )
        assert status == 200
    finally:
        await hub.shutdown()


async def test_longest_prefix_wins() -> None:
    outer, inner = make_hub(), make_hub()
    router = PathRouter({"/a": outer, "/a/b": inner}, default=Recording())
    try:
        await http_request(router, http_scope("/a/b/healthz"))
        assert inner.node.started and not outer.node.started
    finally:
        await inner.shutdown()


async def test_lifespan_starts_and_stops_the_mounted_hubs_only() -> None:
    hub = make_hub()
    default = Recording()
    router = PathRouter({"/realtime": hub}, default=default)
    driver = Driver(router, {"type": "lifespan", "asgi": {"version": "3.0"}}).start()
    driver.inbox.put_nowait({"type": "lifespan.startup"})
    assert (await driver.next())["type"] == "lifespan.startup.complete"
    assert hub.node.started
    driver.inbox.put_nowait({"type": "lifespan.shutdown"})
    assert (await driver.next())["type"] == "lifespan.shutdown.complete"
    await driver.finished()
    assert not hub.node.started
    assert default.scopes == []  # Django would refuse a lifespan scope


@pytest.mark.parametrize("prefix", ["realtime", "/realtime/", ""])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        PathRouter({prefix: make_hub()}, default=Recording())
