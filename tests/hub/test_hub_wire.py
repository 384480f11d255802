"""The wire format: parsing commands, building replies and pushes, error codes."""

from __future__ import annotations

import json

import pytest

from tether.hub import ClientInfo, ErrorCode, HubError, StreamPosition
from tether.hub.errors import should_reconnect
from tether.hub.wire import (
    ProtocolViolation,
    disconnect_push,
    dumps,
    error_reply,
    join_push,
    opt_bool,
    opt_int,
    opt_str,
    parse_command,
    position_param,
    pub_push,
    reply,
    req_str,
)


def test_parse_command() -> None:
    command = parse_command('{"id": 7, "method": "subscribe", "params": {"channel": "a"}}')
    assert (command.id, command.method, command.params) == (7, "subscribe", {"channel": "a"})
    assert parse_command('{"id": 1, "method": "ping"}').params == {}
    assert parse_command('{"id": 1, "method": "ping", "params": null}').params == {}


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"method": "ping"}',
        '{"id": 0, "method": "ping"}',
        '{"id": -3, "method": "ping"}',
        '{"id": true, "method": "ping"}',
        '{"id": 1.5, "method": "ping"}',
        '{"id": 1}',
        '{"id": 1, "method": "ping", "params": [1]}',
        '{"id": 1, "method": "publish", "params": {"data": NaN}}',
        '{"id": 1, "method": "publish", "params": {"data": Infinity}}',
    ],
)
def test_parse_command_rejects_non_commands(text: str) -> None:
    with pytest.raises(ProtocolViolation):
        parse_command(text)


def test_pub_push_is_the_json_of_the_spec() -> None:
    info = ClientInfo("c1", "alice", {"name": "A"})
    text = pub_push("chat:lobby", dumps({"text": "hé"}), StreamPosition(42, "Yb3k"), info)
    assert json.loads(text) == {
        "push": "pub",
        "channel": "chat:lobby",
        "data": {"text": "hé"},
        "offset": 42,
        "epoch": "Yb3k",
        "info": {"client": "c1", "user": "alice", "info": {"name": "A"}},
    }
    bare = json.loads(pub_push('we"ird', dumps([1, None])))
    assert bare == {"push": "pub", "channel": 'we"ird', "data": [1, None]}


def test_replies_and_pushes() -> None:
    assert json.loads(reply(3, {"a": 1})) == {"id": 3, "result": {"a": 1}}
    error = json.loads(error_reply(4, HubError(ErrorCode.TOO_MANY_REQUESTS)))
    assert error == {
        "id": 4,
        "error": {"code": 111, "message": "too many requests", "temporary": True},
    }
    assert json.loads(join_push("c", ClientInfo("x", "u"))) == {
        "push": "join",
        "channel": "c",
        "info": {"client": "x", "user": "u"},
    }
    assert json.loads(disconnect_push(4010, "slow consumer", True)) == {
        "push": "disconnect",
        "code": 4010,
        "reason": "slow consumer",
        "reconnect": True,
    }


def test_dumps_refuses_nan_and_non_json() -> None:
    with pytest.raises(ValueError):
        dumps(float("nan"))
    with pytest.raises(TypeError):
        dumps(object())


def test_param_helpers() -> None:
    params = {"s": "x", "n": 3, "b": True, "bad": 1.5, "pos": {"offset": 2, "epoch": "e"}}
    assert req_str(params, "s") == "x"
    assert opt_str(params, "missing") is None
    assert opt_int(params, "n", 0) == 3
    assert opt_int(params, "missing", 9) == 9
    assert opt_bool(params, "b") is True
    assert position_param(params["pos"], "pos") == StreamPosition(2, "e")
    with pytest.raises(HubError) as missing:
        req_str(params, "missing")
    assert missing.value.code == ErrorCode.MISSING_PARAMETER
    for call in (
        lambda: req_str(params, "n"),
        lambda: opt_int(params, "bad", 0),
        lambda: opt_int({"n": -1}, "n", 0),
        lambda: opt_bool(params, "s"),
        lambda: position_param({"offset": "1", "epoch": "e"}, "p"),
        lambda: position_param("nope", "p"),
    ):
        with pytest.raises(HubError) as caught:
            call()
        assert caught.value.code == ErrorCode.BAD_REQUEST


def test_error_codes_and_temporary_flags() -> None:
    codes = {int(code) for code in ErrorCode}
    assert codes == set(range(100, 128))
    temporary = {code for code in ErrorCode if HubError(code).temporary}
    assert temporary == {
        ErrorCode.INTERNAL,
        ErrorCode.TOO_MANY_REQUESTS,
        112,
        113,
        114,
        115,
        116,
        ErrorCode.HISTORY_UNAVAILABLE,
        ErrorCode.TOO_MANY_STREAMS,
    }


@pytest.mark.parametrize(
    ("code", "again"),
    [
        (1000, False),
        (1001, True),
        (1006, True),
        (1011, True),
        (1012, True),
        (1013, True),
        (3000, True),
        (4001, False),
        (4003, False),
        (4005, False),
        (4009, False),
        (4010, True),
        (4011, True),
        (4012, True),
        (4499, True),
        (4500, False),
    ],
)
def test_should_reconnect_follows_the_spec(code: int, again: bool) -> None:
    assert should_reconnect(code) is again
