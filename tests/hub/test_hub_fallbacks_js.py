"""tether.js over the HTTP fallbacks against a real hub: it falls back by itself, chats,
and survives a network cut on every transport with nothing lost or doubled.

Runs tests/js/fallback_live.mjs under node (20+; its WebSocket is behind
``--experimental-websocket`` there, its ``fetch`` streams). Node has no ``EventSource``:
the SSE emulation is covered by the browser end-to-end tests (tests/e2e/).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hub_support import GUARD
from test_hub_hooks_js import JS, node_binary

from tether.hub import HubServer

BEFORE_CUT = ["a1", "b1"]
ACROSS_CUT = {"a2", "b2", "b3"}


async def run_scenario(hub: HubServer, scenario: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        node_binary(),
        "--experimental-websocket",
        "--no-warnings",
        str(JS / "fallback_live.mjs"),
        hub.url.rstrip("/"),
        scenario,
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 3 * GUARD)
    assert process.returncode == 0, stderr.decode()[-4000:]
    seen: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return seen


def assert_exactly_once(got: list[str]) -> None:
    """Everything, each once: the order before the cut, then what crossed it, then b4."""
    assert got[:2] == BEFORE_CUT, got
    assert set(got[2:5]) == ACROSS_CUT and len(got) == 6, got
    assert got[5] == "b4", got
    # B's own publications keep their order for A (one channel, one stream of offsets).
    b_order = [text for text in got if text.startswith("b")]
    assert b_order == ["b1", "b2", "b3", "b4"], got


@pytest.mark.parametrize(
    ("scenario", "transport", "fallbacks"),
    [
        ("refused", "http_stream", [["websocket", "http_stream"]]),
        ("hanging", "long_poll", [["websocket", "long_poll"]]),
        ("http_stream", "http_stream", []),
        ("long_poll", "long_poll", []),
        ("websocket", "websocket", []),
    ],
)
async def test_tether_js_transport(
    start_hub: Callable[..., Awaitable[HubServer]],
    scenario: str,
    transport: str,
    fallbacks: list[list[str]],
) -> None:
    hub = await start_hub()
    seen = await run_scenario(hub, scenario)
    assert seen["transport"] == transport
    assert seen["transportAfter"] == transport  # the reconnect kept the working transport
    assert seen["bTransport"] == "long_poll"
    assert seen["fallbacks"] == fallbacks
    assert ["connected", transport] in seen["states"]
    assert seen["presence"] == 2
    assert_exactly_once(seen["gotA"])
    assert_exactly_once(seen["gotB"])
    # The resubscribe after the cut recovered what was missed (not a fresh start).
    assert seen["recovered"] == [False, True]
