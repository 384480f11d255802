"""tether's callback fast path (``tether.Listener``) as a peer of the shared harness.

usage: python bench/tether_listener_peer.py MODE PORT   (MODE: echo or fanout)
Same options as bench/tether_peer.py, but no task per connection: messages are
answered from the transport callback with ``send_nowait`` / ``broadcast``.
"""

from __future__ import annotations

import sys

from tether_peer import run  # same settings and loop choice

import tether
from tether.asyncio.connection import Connection, Data
from tether.protocol.events import Fragment

MODE, PORT = sys.argv[1], int(sys.argv[2])
CLIENTS: set[Connection] = set()


class Echo(tether.Listener):
    def on_message(self, ws: Connection, message: Data | Fragment) -> None:
        ws.send_nowait(message)  # type: ignore[arg-type]


class Fanout(tether.Listener):
    def on_open(self, ws: Connection) -> None:
        CLIENTS.add(ws)

    def on_message(self, ws: Connection, message: Data | Fragment) -> None:
        tether.broadcast(CLIENTS, message)  # type: ignore[arg-type]

    def on_close(self, ws: Connection) -> None:
        CLIENTS.discard(ws)


if __name__ == "__main__":
    run(Echo if MODE == "echo" else Fanout)
