"""Node-to-node control messages: what one node asks of every node about users.

What the application asks about a user ("subscribe alice's sessions to this
channel", "disconnect her", "where is she connected?") concerns sessions on
every node. The nodes of a hub share the broker, so each request travels on the
broker's reserved control channel, and every node (the
sender included) acts on its own sessions. Answers to a query travel back on
the same channel, addressed to the node that asked. They travel as
:class:`~tether.hub.envelope.Control` envelopes (their bytes are
:mod:`tether.hub.envelope`'s business).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tether.hub.model import RESERVED_PREFIX

# Client channel names may not start with the prefix (error 107).
CONTROL_CHANNEL = RESERVED_PREFIX + "control"


@dataclass(frozen=True, slots=True)
class Disconnect:
    user: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    user: str
    channel: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    user: str
    channel: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class SessionsQuery:
    user: str
    request: str
    """Names the query, so answers find their way back."""
    origin: str
    """The node that asks."""


@dataclass(frozen=True, slots=True)
class SessionsReply:
    request: str
    origin: str
    """The node that asked (the only one that reads the reply)."""
    node: str
    sessions: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Hello:
    """A node says it is alive (at start, then every housekeeping round)."""

    node: str
    answer: bool = False
    """A hello sent back to a newcomer, which is not answered again."""


@dataclass(frozen=True, slots=True)
class Goodbye:
    """A node shuts down: do not wait for its answers."""

    node: str


ControlMessage = (
    Disconnect | Subscribe | Unsubscribe | SessionsQuery | SessionsReply | Hello | Goodbye
)
