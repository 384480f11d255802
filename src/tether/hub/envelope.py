"""The broker envelope: every message that travels between nodes, typed.

Nodes talk to each other only through the broker, and only in envelopes:

:class:`Pub`
    A publication: the client ``pub`` push, built once by the publishing
    node, and its history position. A receiving node frames ``push`` once for
    all its subscribers without looking inside it.
:class:`PresenceChanges`
    Joins and leaves of a channel, in order, coalesced (one broker message for
    many clients joining or leaving at once).
:class:`Resync`
    "Publications of this channel may have been lost between nodes": every
    node's subscribers of the channel recover from history.
:class:`Control`
    A node-to-node request about users (:mod:`tether.hub.control`).

This module is the only one that knows how they look as bytes. Networked
brokers :func:`encode` at the edge (publish) and :func:`decode` once on
arrival; the in-memory broker hands the objects over as they are. Bytes
that are not an envelope raise :class:`MalformedEnvelope` (a ValueError),
which a broker logs and drops: a stray or hostile message on the backplane
never reaches a client or stops a node.

The format, for the record (docs/backplane.md): one header line, then a body::

    t1 pub\\n<push>                           no history position
    t1 pub <offset> <epoch>\\n<push>          in offset order as delivered
    t1 pub <offset> <epoch> reorder\\n<push>  receivers restore offset order
    t1 presence\\n[["j",<info>],["l",<info>],...]
    t1 resync\\n
    t1 control\\n{"op":...,...}

``t1`` is the format's version: a node meeting another version drops the
message with a clear log line instead of misreading it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tether.hub.control import (
    ControlMessage,
    Disconnect,
    Goodbye,
    Hello,
    RelayAnswer,
    RelayRequest,
    SessionsQuery,
    SessionsReply,
    Subscribe,
    Unsubscribe,
)
from tether.hub.model import ClientInfo, StreamPosition
from tether.hub.wire import MAX_OFFSET, dumps, loads, pub_push, pub_push_around_position

VERSION = b"t1"
# A header longer than this is not ours: refuse it before splitting anything.
MAX_HEADER = 128
MAX_EPOCH = 64
_EPOCH = re.compile(rb"[!-~]{1,%d}" % MAX_EPOCH)  # printable ASCII, no space


class MalformedEnvelope(ValueError):
    """Bytes from the broker that are not an envelope of this version."""


@dataclass(frozen=True, slots=True)
class Pub:
    """A publication: the client push (framed once per node) and its position."""

    push: bytes
    position: StreamPosition | None = None
    reorder: bool = False
    """Sent by the two-step path (history add, then publish): publishes of one
    channel from different nodes may overtake each other on the broker, so
    receivers put them back in offset order."""


@dataclass(frozen=True, slots=True)
class Join:
    info: ClientInfo


@dataclass(frozen=True, slots=True)
class Leave:
    info: ClientInfo


PresenceChange = Join | Leave


@dataclass(frozen=True, slots=True)
class PresenceChanges:
    """Joins and leaves of one channel, oldest first."""

    changes: tuple[PresenceChange, ...]


@dataclass(frozen=True, slots=True)
class Resync:
    """Publications of the channel may have been lost: its subscribers must recover."""


@dataclass(frozen=True, slots=True)
class Control:
    message: ControlMessage


Envelope = Pub | PresenceChanges | Resync | Control

RESYNC = Resync()


@dataclass(frozen=True, slots=True)
class PubTemplate:
    """An encoded :class:`Pub` cut where its offset and epoch go (twice each).

    ``parts[0] + offset + parts[1] + epoch + parts[2] + offset + parts[3] +
    epoch + parts[4]`` is the envelope: a server that assigns the offset
    (the Redis history script) completes and publishes it in one step.
    """

    parts: tuple[bytes, bytes, bytes, bytes, bytes]

    def fill(self, position: StreamPosition) -> bytes:
        offset, epoch = b"%d" % position.offset, position.epoch.encode()
        p = self.parts
        return p[0] + offset + p[1] + epoch + p[2] + offset + p[3] + epoch + p[4]


@dataclass(frozen=True, slots=True)
class PubDraft:
    """A publication whose position history has not assigned yet."""

    channel: str
    data_json: str
    """The publication's data, serialized once."""
    info: ClientInfo | None = None

    def at(self, position: StreamPosition | None, *, reorder: bool = False) -> Pub:
        push = pub_push(self.channel, self.data_json, position, self.info).encode()
        return Pub(push, position, reorder=reorder and position is not None)

    def template(self) -> PubTemplate:
        before, between, after = pub_push_around_position(self.channel, self.data_json, self.info)
        return PubTemplate(
            (b"t1 pub ", b" ", b"\n" + before.encode(), between.encode(), after.encode())
        )


# ----------------------------------------------------------------- encoding


def encode(envelope: Envelope) -> bytes:
    """The bytes a networked broker carries for ``envelope``."""
    if isinstance(envelope, Pub):
        return _pub_header(envelope) + envelope.push
    if isinstance(envelope, PresenceChanges):
        body = [["j" if isinstance(c, Join) else "l", c.info.to_json()] for c in envelope.changes]
        return b"t1 presence\n" + dumps(body).encode()
    if isinstance(envelope, Resync):
        return b"t1 resync\n"
    message = envelope.message
    fields = {name: getattr(message, name) for name in type(message).__slots__}
    return b"t1 control\n" + dumps({"op": _CONTROL_NAMES[type(message)], **fields}).encode()


def _pub_header(pub: Pub) -> bytes:
    position = pub.position
    if position is None:
        return b"t1 pub\n"
    _check_epoch(position.epoch.encode())
    flag = b" reorder" if pub.reorder else b""
    return b"t1 pub %d %s%s\n" % (position.offset, position.epoch.encode(), flag)


def _check_epoch(epoch: bytes) -> None:
    if _EPOCH.fullmatch(epoch) is None:
        raise MalformedEnvelope(f"epoch must be 1 to {MAX_EPOCH} printable ASCII characters")


# ----------------------------------------------------------------- decoding


def decode(data: bytes) -> Envelope:
    """The envelope in ``data``; :class:`MalformedEnvelope` says what is wrong with it."""
    end = data.find(b"\n", 0, MAX_HEADER + 1)
    if end < 0:
        raise MalformedEnvelope(f"no header line within {MAX_HEADER} bytes")
    header, body = data[:end].split(b" "), data[end + 1 :]
    if header[0] != VERSION:
        raise MalformedEnvelope(f"not a {VERSION.decode()} envelope (header {data[:end]!r})")
    kind = header[1] if len(header) > 1 else b""
    fields = header[2:]
    if kind == b"pub":
        return Pub(body, *_pub_fields(fields))
    if fields:
        raise MalformedEnvelope(f"unexpected header fields after {kind!r}")
    if kind == b"presence":
        return PresenceChanges(_presence_changes(body))
    if kind == b"resync":
        return RESYNC
    if kind == b"control":
        return Control(_control_message(body))
    raise MalformedEnvelope(f"unknown envelope kind {kind!r}")


def _pub_fields(fields: list[bytes]) -> tuple[StreamPosition | None, bool]:
    if not fields:
        return None, False
    if len(fields) not in (2, 3) or (len(fields) == 3 and fields[2] != b"reorder"):
        raise MalformedEnvelope("a pub header is: t1 pub [<offset> <epoch> [reorder]]")
    offset, epoch = fields[0], fields[1]
    if not offset.isdigit() or not 0 < int(offset) <= MAX_OFFSET:
        raise MalformedEnvelope(f"bad offset {offset[:20]!r}")
    _check_epoch(epoch)
    return StreamPosition(int(offset), epoch.decode()), len(fields) == 3


def _json_body(body: bytes, what: str) -> Any:
    try:
        return loads(body)
    except ValueError as exc:
        raise MalformedEnvelope(f"{what} body is not JSON: {exc}") from None


def _presence_changes(body: bytes) -> tuple[PresenceChange, ...]:
    items = _json_body(body, "presence")
    if not isinstance(items, list) or not items:
        raise MalformedEnvelope("a presence body is a non-empty list of changes")
    changes: list[PresenceChange] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 2 and item[0] in ("j", "l")):
            raise MalformedEnvelope('a presence change is ["j" or "l", info]')
        info = item[1]
        if not (
            isinstance(info, dict)
            and isinstance(info.get("client"), str)
            and isinstance(info.get("user"), str)
        ):
            raise MalformedEnvelope("a presence info needs string client and user")
        client = ClientInfo.from_json(info)
        changes.append(Join(client) if item[0] == "j" else Leave(client))
    return tuple(changes)


_CONTROL_OPS: dict[str, type[ControlMessage]] = {
    "disconnect": Disconnect,
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "sessions": SessionsQuery,
    "sessions_reply": SessionsReply,
    "hello": Hello,
    "goodbye": Goodbye,
    "relay": RelayRequest,
    "relay_answer": RelayAnswer,
}
_CONTROL_NAMES = {cls: op for op, cls in _CONTROL_OPS.items()}


def _control_message(body: bytes) -> ControlMessage:
    data = _json_body(body, "control")
    if not isinstance(data, Mapping):
        raise MalformedEnvelope("a control message is a JSON object")
    cls = _CONTROL_OPS.get(str(data.get("op")))
    if cls is None:
        raise MalformedEnvelope(f"unknown control op {data.get('op')!r}")
    fields = {k: v for k, v in data.items() if k != "op"}
    try:
        return cls(**fields)
    except TypeError as exc:
        raise MalformedEnvelope(f"bad {data['op']} message: {exc}") from None
