"""Memory of idle hub sessions: a bound that fails if per-session allocations creep back.

300 sessions connect over real sockets, each subscribed to its own channel,
and go idle. tracemalloc counts what tether's own code (and the asyncio
objects it creates, attributed to tether frames) keeps per session. Measured
on Python 3.11: 10.9 KiB before the keepalive wheel, lazy queues and shared
header strings, 7.5 KiB after them, 9.0 KiB once the websockets-compatible
``Headers`` (a lower-cased index beside the header list) came in. The bound
(10 KiB) leaves room for other Python versions and still fails if the old
per-session costs come back.
"""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from pathlib import Path

import tether
from tether.hub import Node, serve_hub
from tether.hub.config import HubConfig

SESSIONS = 300
BOUND = 10 * 1024
"""Bytes per idle session that tether's code may keep (traced Python allocations)."""
GUARD = 10.0
TETHER_SOURCES = str(Path(tether.__file__).parent / "*")

HANDSHAKE = (
    b"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tether.v1\r\n\r\n"
)


def masked_text(payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload


async def idle_session(port: int, channel: str) -> asyncio.StreamWriter:
    """Upgrade, connect with a subscription, read the reply; then stay idle."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HANDSHAKE)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    command = {"id": 1, "method": "connect", "params": {"subs": {channel: None}}}
    writer.write(masked_text(json.dumps(command).encode()))
    while True:  # until the connect reply (a join push may come first)
        _b0, b1 = await reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        message = json.loads(await reader.readexactly(n))
        if message.get("id") == 1:
            assert "error" not in message and "error" not in message["result"]["subs"][channel]
            return writer


async def test_idle_sessions_stay_under_the_memory_bound() -> None:
    # Keepalive on (25 s, as deployed), so its cost is counted too.
    node = Node(HubConfig(allow_anonymous=True))
    async with serve_hub(node, "127.0.0.1", 0) as hub:
        port = hub.port
        assert port is not None
        warm = [await idle_session(port, f"warm:{i}") for i in range(20)]
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            writers = [await idle_session(port, f"idle:{i}") for i in range(SESSIONS)]
            await asyncio.sleep(0)  # let the last session's writes settle
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert len(node.sessions) == SESSIONS + len(warm)
        only_tether = [tracemalloc.Filter(True, TETHER_SOURCES)]
        grown = sum(
            stat.size_diff
            for stat in after.filter_traces(only_tether).compare_to(
                before.filter_traces(only_tether), "filename"
            )
        )
        per_session = grown / SESSIONS
        assert 0 < per_session <= BOUND, f"{per_session:.0f} bytes per idle session"
        for writer in warm + writers:
            writer.close()
