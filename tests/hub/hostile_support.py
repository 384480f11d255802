"""Helpers of the hostile-input tests: a hub config per backend, raw commands, raw HTTP.

``backend_config(kind)`` gives a test hub's configuration on ``memory``,
``redis`` or ``nats`` (NATS broker + JetStream history), each with its own
key and subject prefix; ``cleanup(kind, prefix)`` removes what it left.
Redis and NATS skip with the reason shown when absent, unless
``TETHER_REQUIRE_SERVICES=1``.

(A module with its own name, so test modules can import it: every conftest.py is "conftest".)
"""

from __future__ import annotations

from typing import Any

from backplane_services import NATS_URL, REDIS_URL, delete_prefix, require_nats, require_redis
from hub_support import config

from tether.hub import HubConfig

BACKENDS = ("memory", "redis", "nats")


def backend_config(kind: str, prefix: str, **overrides: Any) -> HubConfig:
    """A test hub's config on ``kind``, keys and subjects under ``prefix``."""
    if kind == "redis":
        require_redis()
        overrides.setdefault("broker", REDIS_URL)
    elif kind == "nats":
        require_nats()
        overrides.setdefault("broker", NATS_URL)
        overrides.setdefault("history", NATS_URL)
        overrides.setdefault("presence", "memory")
    return config(backplane_prefix=prefix, **overrides)


async def cleanup(kind: str, prefix: str) -> None:
    """Remove the keys (Redis) or the stream and buckets (NATS) of ``prefix``."""
    if kind == "redis":
        await delete_prefix(REDIS_URL, prefix)
    elif kind == "nats":
        from tether.hub.history.nats import NatsHistory

        history = NatsHistory(NATS_URL, prefix=prefix)
        try:
            await history.destroy()
        finally:
            await history.close()
