"""CPU per delivery of ``tether.broadcast`` to many connections, with no network.

usage: python bench/micro_broadcast.py [CONNECTIONS] [MESSAGES]

Open server connections over a transport that only counts bytes (the one of
bench/micro_echo.py), so what is timed is broadcast's own loop: the checks
and the write per socket. Compare two builds by running each one's copy (see
bench/old_vs_new.py for the whole harness); a fan-out's cost is this loop.
"""

from __future__ import annotations

import asyncio
import sys
import time

from micro_echo import NullTransport

import tether
from tether.asyncio.server import Server, ServerConnection
from tether.protocol.connection import State


async def run(connections: int, messages: int) -> float:
    async def idle(ws: ServerConnection) -> None:
        await asyncio.Future()

    server = Server(idle, compression=None, ping_interval=None, max_size=None)
    conns: list[ServerConnection] = []
    transports: list[NullTransport] = []
    for _ in range(connections):
        conn = server._make_connection()
        transport = NullTransport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        conn.protocol._set_state(State.OPEN)
        conn._enable_fast_paths()
        conns.append(conn)
        transports.append(transport)
    message = b"x" * 64
    start = time.process_time()
    for _ in range(messages):
        tether.broadcast(conns, message)
    elapsed = time.process_time() - start
    assert all(t.written == messages * 66 for t in transports)
    return elapsed * 1e6 / (connections * messages)


def main() -> None:
    connections = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    messages = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    us = asyncio.run(run(connections, messages))
    print(f"broadcast of 64 B to {connections}: {us:.3f} us per delivery")


if __name__ == "__main__":
    main()
