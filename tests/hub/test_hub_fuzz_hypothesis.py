"""Property-based fuzzing of the wire protocol (tether.v1) and the HTTP API, per backend.

For every generated input the hub must give the documented outcome: a
result, an error with a documented code (never 100 "internal error" for
bad input, nor 112/116 while the backplane is healthy), or, for a message
that is not a command at all, the documented close code; never a closed
connection for a valid command; and another client is still served
afterwards. Runs against memory, Redis and NATS (Redis and NATS skip with
the reason shown when absent, unless TETHER_REQUIRE_SERVICES=1).

Examples per test: the ``ci`` profile of fuzz_support (100); ``long`` for more.
"""

from __future__ import annotations

import contextlib
import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from backplane_services import unique
from fuzz_support import (
    BAD_INPUT_CLOSE_CODES,
    DOCUMENTED_CODES,
    NEVER_FOR_BAD_INPUT,
    ThreadedHub,
)
from hostile_support import BACKENDS, backend_config, cleanup
from hub_support import API_KEY
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tether.hub.config import Limits

TIMEOUT = 15.0

# Strings that hit the hub's edges: lone surrogates, reserved and unprintable
# channel names, over-long names, namespaces.
EDGE_STRINGS = st.sampled_from(
    ["\ud800", "a\udfff", "", "__tether.control", "x" * 300, "chat:a", "a\nb", "\x00", "room"]
)
STRINGS = st.one_of(st.text(max_size=12), EDGE_STRINGS)
EDGE_NUMBERS = st.sampled_from([0, -1, 1, 2**53 - 1, 2**53 + 1, 2**63, 2**64, 10**14, 1e14, 0.5])
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    EDGE_NUMBERS,
    STRINGS,
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner, max_size=4),
    max_leaves=10,
)
PARAM_NAMES = st.sampled_from(
    [
        "channel",
        "data",
        "token",
        "limit",
        "since",
        "reverse",
        "recover",
        "offset",
        "epoch",
        "idempotency_key",
        "info",
        "name",
        "subs",
    ]
)
POSITIONS = st.fixed_dictionaries({"offset": LEAVES, "epoch": STRINGS})
PARAMS = st.one_of(
    st.dictionaries(st.one_of(PARAM_NAMES, STRINGS), VALUES, max_size=6),
    st.fixed_dictionaries(
        {"channel": st.one_of(STRINGS, LEAVES)},
        optional={
            "data": VALUES,
            "limit": LEAVES,
            "since": st.one_of(POSITIONS, VALUES),
            "reverse": LEAVES,
            "recover": LEAVES,
            "offset": LEAVES,
            "epoch": STRINGS,
            "idempotency_key": STRINGS,
        },
    ),
)
METHODS = st.one_of(
    st.sampled_from(
        [
            "connect",
            "subscribe",
            "unsubscribe",
            "publish",
            "presence",
            "presence_stats",
            "history",
            "refresh",
            "ping",
        ]
    ),
    st.text(max_size=10),
)
COMMANDS = st.fixed_dictionaries({"method": METHODS, "params": PARAMS})
# Messages that are not commands: not JSON, not an object, bad ids, too deep.
NOT_COMMANDS = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=65, max_value=3000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=65, max_value=3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    VALUES.map(lambda v: json.dumps([v])),
    st.fixed_dictionaries({"id": LEAVES, "method": METHODS}).map(json.dumps),
    st.just('{"id":1,"method":"ping","params":[]}'),
    st.just("NaN"),
)


@pytest.fixture(scope="module", params=BACKENDS)
def hub(request: pytest.FixtureRequest) -> Iterator[ThreadedHub]:
    prefix = unique("fuzz")
    limits = Limits(publish_rate=1e9, publish_burst=10**9, flood_strikes=10**9)
    running = ThreadedHub(backend_config(request.param, prefix, limits=limits)).start()
    yield running
    try:
        running.run(cleanup(request.param, prefix))
    finally:
        running.stop()


class Peer:
    """One connected wire client that reconnects after the hub closed it."""

    def __init__(self, hub: ThreadedHub) -> None:
        self.hub = hub
        self.ws: ClientConnection | None = None
        self.stack = contextlib.ExitStack()
        self.ids = 0

    def connection(self) -> ClientConnection:
        if self.ws is None:
            self.stack.close()
            opening = connect(self.hub.websocket_url, subprotocols=["tether.v1"])  # type: ignore[list-item]
            self.ws = self.stack.enter_context(opening)
            reply = self.command("connect", {})
            assert "result" in reply, reply
        return self.ws

    def send(self, text: str) -> None:
        self.connection().send(text)

    def command(self, method: str, params: Any) -> dict[str, Any]:
        self.ids += 1
        cid = self.ids
        ws = self.connection()
        ws.send(json.dumps({"id": cid, "method": method, "params": params}))
        return self.reply(cid)

    def reply(self, cid: int) -> dict[str, Any]:
        assert self.ws is not None
        while True:
            message = json.loads(self.ws.recv(timeout=TIMEOUT))
            if message.get("id") == cid:
                return dict(message)

    def closed_with(self) -> int:
        """The close code, once the hub closes (a disconnect push may come first)."""
        assert self.ws is not None
        try:
            while True:
                self.ws.recv(timeout=TIMEOUT)
        except ConnectionClosed as exc:
            self.ws = None
            return exc.rcvd.code if exc.rcvd is not None else 1006

    def close(self) -> None:
        self.ws = None
        self.stack.close()


@pytest.fixture(scope="module")
def peers(hub: ThreadedHub) -> Iterator[tuple[Peer, Peer]]:
    fuzzed, bystander = Peer(hub), Peer(hub)
    yield fuzzed, bystander
    fuzzed.close()
    bystander.close()


def check_reply(reply: dict[str, Any]) -> None:
    if "error" in reply:
        code = reply["error"]["code"]
        assert code in DOCUMENTED_CODES, reply
        assert code not in NEVER_FOR_BAD_INPUT, reply
    else:
        assert isinstance(reply.get("result"), dict), reply


@given(command=COMMANDS)
def test_fuzz_wire_commands_get_a_result_or_a_documented_error(
    peers: tuple[Peer, Peer], command: dict[str, Any]
) -> None:
    fuzzed, bystander = peers
    check_reply(fuzzed.command(command["method"], command["params"]))
    # A command, valid or not, never costs the connection…
    assert fuzzed.command("ping", {}) == {"id": fuzzed.ids, "result": {}}
    # …nor another client its service.
    assert "result" in bystander.command("ping", {})


@given(text=NOT_COMMANDS)
def test_fuzz_wire_non_commands_close_4001_and_harm_no_one(
    peers: tuple[Peer, Peer], text: str
) -> None:
    fuzzed, bystander = peers
    fuzzed.send(text)
    try:
        message = json.loads(fuzzed.ws.recv(timeout=TIMEOUT)) if fuzzed.ws else {}
    except ConnectionClosed as exc:
        fuzzed.ws = None
        assert exc.rcvd is not None and exc.rcvd.code in BAD_INPUT_CLOSE_CODES, exc
    else:
        if "id" in message:  # it was a command after all (e.g. '{"id":1,"method":""}')
            check_reply(message)
        else:
            assert message.get("push") == "disconnect", message
            assert message["code"] in BAD_INPUT_CLOSE_CODES and not message["reconnect"]
            assert fuzzed.closed_with() == message["code"]
    assert "result" in bystander.command("ping", {})


API_PATHS = ["/api/publish", "/api/broadcast", "/api/history", "/api/presence"]
API_PATHS += ["/api/presence_stats", "/api/disconnect"]
BODIES = st.one_of(
    PARAMS.map(lambda p: json.dumps(p).encode()),
    st.fixed_dictionaries(
        {"channels": st.lists(STRINGS, max_size=5), "data": VALUES, "user": STRINGS}
    ).map(lambda p: json.dumps(p).encode()),
    st.binary(max_size=64),
    st.integers(min_value=65, max_value=3000).map(lambda n: b"[" * n + b"]" * n),
    VALUES.map(lambda v: json.dumps(v).encode()),
    st.just(b"\xed\xa0\x80"),  # an encoded surrogate: not UTF-8
)
HTTP_STATUSES = {200, 400, 401, 403, 404, 405, 411, 413, 429}


@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "HEAD", "PUT"]),
    path=st.sampled_from([*API_PATHS, "/healthz", "/nope"]),
    body=BODIES,
    key=st.sampled_from([API_KEY, API_KEY, API_KEY, "wrong", None]),
)
def test_fuzz_http_api_answers_with_a_documented_code(
    hub: ThreadedHub, method: str, path: str, body: bytes, key: str | None
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=TIMEOUT)
    try:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"apikey {key}"
        conn.request(method, path, body=body if method != "HEAD" else None, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    assert response.status in HTTP_STATUSES, (response.status, payload[:200])
    if method == "HEAD":
        assert payload == b""
    elif response.status != 200 or path.startswith("/api/"):
        answer = json.loads(payload)
        if response.status != 200:
            code = answer["error"]["code"]
            assert code in DOCUMENTED_CODES and code not in NEVER_FOR_BAD_INPUT, answer
            assert isinstance(answer["error"]["message"], str)
    health = http.client.HTTPConnection("127.0.0.1", hub.port, timeout=TIMEOUT)
    try:
        health.request("GET", "/healthz")
        assert health.getresponse().status == 200
    finally:
        health.close()
