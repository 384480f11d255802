"""The connection's states and every transition between them, as data.

One table says where a WebSocket connection may go from each state; the
core changes state only through :meth:`Connection._set_state
<tether.protocol.connection.Connection>`, which checks the table and raises
:class:`InvalidState` on anything else. Reading the table is reading the
lifecycle (RFC 6455 §4, §7):

- CONNECTING: the opening handshake. It opens (§4.1: the server's 101, or a
  client that validated it), or ends CLOSED when the handshake is refused or
  fails (§4.1 "_Fail the WebSocket Connection_" before it opened). It may go
  to CLOSING only when the I/O layer fails it explicitly.
- OPEN: messages flow both ways. A Close sent or received, or a protocol
  error, starts the closing handshake (CLOSING, §7.1.2, §7.1.7); the TCP
  connection ending first skips straight to CLOSED (§7.1.5, code 1006).
- CLOSING: a Close was sent or received; a second Close, or another
  failure, keeps it CLOSING until the TCP connection ends (CLOSED).
- CLOSED: final. Only a repeated end of input (say a refused handshake
  whose connection then reaches EOF) may "enter" it again.

Nothing else lives here: the flags beside the state (what was sent,
received, what failed) belong to the connection.
"""

from __future__ import annotations

import enum

from tether.protocol.exceptions import InvalidState


class State(enum.IntEnum):
    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# Where each state may go. A state missing from its own row may not repeat.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.CONNECTING: frozenset({State.OPEN, State.CLOSING, State.CLOSED}),
    State.OPEN: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSED: frozenset({State.CLOSED}),
}


def check_transition(old: State, new: State) -> None:
    """Raise :class:`InvalidState` unless the table allows ``old`` -> ``new``."""
    if new not in TRANSITIONS[old]:
        raise InvalidState(f"illegal state transition {old.name} -> {new.name}")
