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
NODE_CHANNEL_PREFIX = RESERVED_PREFIX + "node."


def node_channel(node_id: str) -> str:
    """The broker channel only the node ``node_id`` subscribes to (requests addressed to it)."""
    return NODE_CHANNEL_PREFIX + node_id


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


@dataclass(frozen=True, slots=True)
class RelayRequest:
    """An HTTP fallback request for a session held by another node (tether.hub.relay).

    Sent on the owner node's own channel (:func:`node_channel`), not the
    control channel: only that node reads it.
    """

    request: str
    origin: str
    """The node that received the HTTP request (and waits for the answer)."""
    action: str
    """``send`` or ``poll``."""
    key: str
    """The session key."""
    user: str | None
    """The user the HTTP request's own credentials name, if it carried any."""
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RelayAnswer:
    request: str
    status: int
    body: str
    """The HTTP response body, as the owner node rendered it."""


ControlMessage = (
    Disconnect
    | Subscribe
    | Unsubscribe
    | SessionsQuery
    | SessionsReply
    | Hello
    | Goodbye
    | RelayRequest
    | RelayAnswer
)
