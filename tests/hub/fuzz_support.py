"""Helpers of the property-based fuzz tests: a hub on its own thread, the documented outcomes.

Hypothesis drives plain (synchronous) test functions, so the hub runs on an
event loop of its own thread (:class:`ThreadedHub`) and the tests talk to it
over real sockets, with the ``websockets`` sync client and ``http.client``.

Profiles: ``ci`` (the default: 100 examples per test, no deadline) and
``long`` (5,000 per test): ``TETHER_FUZZ_PROFILE=long pytest tests/hub -k fuzz``,
or ``fuzz/run_hypothesis.sh``.

(A module with its own name, so test modules can import it: every conftest.py is "conftest".)
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from hypothesis import HealthCheck, settings

from tether.hub import HubConfig, HubServer, Node, serve_hub
from tether.hub.errors import ErrorCode

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("TETHER_FUZZ_PROFILE", "ci"))

# What bad input may get: any documented error code but "internal error" and
# the two that mean the backplane (healthy in these tests) failed.
NEVER_FOR_BAD_INPUT = {
    int(ErrorCode.INTERNAL),
    int(ErrorCode.BROKER_UNAVAILABLE),
    int(ErrorCode.OVERLOADED),
}
DOCUMENTED_CODES = {int(code) for code in ErrorCode}
# Close codes the hub documents (docs/wire-protocol.md) for bad input.
BAD_INPUT_CLOSE_CODES = {1003, 1007, 1009, 4001}


class ThreadedHub:
    """A hub serving on 127.0.0.1 from an event loop on its own thread."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.hub: HubServer | None = None

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ThreadedHub:
        self.thread.start()

        async def start() -> HubServer:
            return await serve_hub(Node(self.config), "127.0.0.1", 0).start()

        self.hub = self.run(start())
        return self

    @property
    def port(self) -> int:
        assert self.hub is not None and self.hub.port is not None
        return self.hub.port

    @property
    def websocket_url(self) -> str:
        assert self.hub is not None
        return self.hub.websocket_url

    def stop(self) -> None:
        if self.hub is not None:
            self.run(self.hub.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
