"""A sync-API server (tether.sync or websockets.sync) as a peer of the bench harnesses.

usage: python bench/sync_peer.py LIBRARY MODE PORT   (LIBRARY: tether or websockets;
MODE: echo or fanout)
The same settings for both libraries: no compression, no size limit, no
keepalive pings; a thread per connection (their sync servers' design).
``echo`` sends every message back; ``fanout`` sends every message to every
connected client. Prints "ready" once listening (the protocol of the bench/
harnesses, so the shared one takes it as
``TETHER_PEER="python bench/sync_peer.py tether"``).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any

LIBRARY, MODE, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])

if LIBRARY == "tether":
    from tether.sync.server import serve
elif LIBRARY == "websockets":
    from websockets.sync.server import serve
else:
    raise SystemExit(f"unknown library {LIBRARY!r}: tether or websockets")

CLIENTS: set[Any] = set()
LOCK = threading.Lock()


def echo(ws: Any) -> None:
    for message in ws:
        ws.send(message)


def fanout(ws: Any) -> None:
    with LOCK:
        CLIENTS.add(ws)
    try:
        for message in ws:
            with LOCK:
                targets = list(CLIENTS)
            for client in targets:
                with contextlib.suppress(Exception):  # a client that went away meanwhile
                    client.send(message)
    finally:
        with LOCK:
            CLIENTS.discard(ws)


def main() -> None:
    handler = echo if MODE == "echo" else fanout
    with serve(
        handler, "127.0.0.1", PORT, compression=None, max_size=None, ping_interval=None
    ) as server:
        print("ready", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
