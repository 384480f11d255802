"""The wire format of docs/wire-protocol.md: commands in, replies and pushes out.

Everything the hub sends is built here, as compact JSON text. A push that goes
to many clients is serialized once and the same text is written to each.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tether.hub import jsonlimits
from tether.hub.errors import ErrorCode, HubError
from tether.hub.inbound import check_params
from tether.hub.model import JSON, ClientInfo, StreamPosition

SUBPROTOCOL = "tether.v1"
AUTH_SUBPROTOCOL_PREFIX = "tether.auth."

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dumps(value: JSON) -> str:
    """Compact JSON; raises ValueError for NaN/Infinity, TypeError for non-JSON values."""
    return _encoder.encode(value)


def loads(text: str | bytes) -> JSON:
    """Strict JSON: no NaN/Infinity (other peers cannot parse them), bounded nesting.

    See :mod:`tether.hub.jsonlimits`; every malformed input raises ValueError.
    """
    return jsonlimits.loads(text)


class ProtocolViolation(Exception):
    """A message that is not a command at all; the session closes with 4001."""


@dataclass(frozen=True, slots=True)
class Command:
    id: int
    method: str
    params: dict[str, JSON]
    refusal: HubError | None = None
    """Why the command is refused before it runs (a string that is not Unicode)."""


MAX_OFFSET = 2**53 - 1
"""The largest stream offset the hub accepts: every backend stores it exactly
(Redis scripts compute in doubles), and JavaScript clients can represent it."""


def parse_command(text: str) -> Command:
    try:
        message = loads(text)
    except ValueError as exc:
        raise ProtocolViolation(f"invalid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolViolation("a command must be a JSON object")
    cid = message.get("id")
    if type(cid) is not int or cid <= 0:
        raise ProtocolViolation("command id must be a positive integer")
    method = message.get("method")
    if not isinstance(method, str):
        raise ProtocolViolation("command method must be a string")
    params = message.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolViolation("command params must be an object")
    return Command(cid, method, params, check_params(text, params))


# ---------------------------------------------------------------- params


def _bad(message: str) -> HubError:
    return HubError(ErrorCode.BAD_REQUEST, message)


def opt_str(params: dict[str, JSON], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"{name} must be a string")
    return value


def req_str(params: dict[str, JSON], name: str) -> str:
    value = opt_str(params, name)
    if value is None:
        raise HubError(ErrorCode.MISSING_PARAMETER, f"{name} is required")
    return value


def opt_int(params: dict[str, JSON], name: str, default: int) -> int:
    value = params.get(name)
    if value is None:
        return default
    if type(value) is not int or value < 0:
        raise _bad(f"{name} must be a non-negative integer")
    return value


def opt_bool(params: dict[str, JSON], name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise _bad(f"{name} must be a boolean")
    return value


def position_param(value: JSON, name: str) -> StreamPosition:
    """``{offset, epoch}`` as sent by clients."""
    if not isinstance(value, dict):
        raise _bad(f"{name} must be an object with offset and epoch")
    offset, epoch = value.get("offset"), value.get("epoch")
    if type(offset) is not int or offset < 0 or not isinstance(epoch, str):
        raise _bad(f"{name} needs a non-negative integer offset and a string epoch")
    if offset > MAX_OFFSET:
        raise HubError(ErrorCode.OUT_OF_RANGE, f"{name} offset is above 2**53 - 1")
    return StreamPosition(offset, epoch)


# ------------------------------------------------------- replies and pushes


def reply(cid: int, result: dict[str, JSON]) -> str:
    return dumps({"id": cid, "result": result})


def error_reply(cid: int, error: HubError) -> str:
    return dumps({"id": cid, "error": error.to_json()})


def pub_push(
    channel: str,
    data_json: str,
    position: StreamPosition | None = None,
    info: ClientInfo | None = None,
) -> str:
    """A ``pub`` push around already-serialized data (serialized once per publish)."""
    if position is None:
        head = '{"push":"pub","channel":' + dumps(channel) + ',"data":' + data_json
        return head + _info_tail(info) + "}"
    before, between, after = pub_push_around_position(channel, data_json, info)
    return before + str(position.offset) + between + dumps(position.epoch)[1:-1] + after


def pub_push_around_position(
    channel: str, data_json: str, info: ClientInfo | None = None
) -> tuple[str, str, str]:
    """A ``pub`` push cut where its offset and epoch go: ``before``, ``between``, ``after``.

    ``before + str(offset) + between + epoch + after`` is the push, for an
    epoch that needs no JSON escaping (history backends make them
    URL-safe). A server that assigns the offset (Redis history) completes it.
    """
    before = '{"push":"pub","channel":' + dumps(channel) + ',"data":' + data_json + ',"offset":'
    return before, ',"epoch":"', '"' + _info_tail(info) + "}"


def _info_tail(info: ClientInfo | None) -> str:
    return ',"info":' + dumps(info.to_json()) if info is not None else ""


def join_push(channel: str, info: ClientInfo) -> str:
    return dumps({"push": "join", "channel": channel, "info": info.to_json()})


def leave_push(channel: str, info: ClientInfo) -> str:
    return dumps({"push": "leave", "channel": channel, "info": info.to_json()})


def presence_push(channel: str, changes: list[tuple[bool, ClientInfo]]) -> str:
    """Several joins (``True``) and leaves of a channel, in order, in one push.

    Sent instead of ``join``/``leave`` pushes to clients that asked for it
    (``presence_batches`` in ``connect``).
    """
    items = [["join" if joined else "leave", info.to_json()] for joined, info in changes]
    return dumps({"push": "presence", "channel": channel, "changes": items})


def unsubscribe_push(channel: str, code: int, reason: str) -> str:
    return dumps({"push": "unsubscribe", "channel": channel, "code": code, "reason": reason})


def subscribe_push(channel: str, result: dict[str, JSON]) -> str:
    """A server-side subscription: the same fields as a ``subscribe`` result."""
    return dumps({"push": "subscribe", "channel": channel, **result})


def disconnect_push(code: int, reason: str, reconnect: bool) -> str:
    return dumps({"push": "disconnect", "code": code, "reason": reason, "reconnect": reconnect})
