"""The state table: every transition the core makes is in it, and nothing else passes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tether.protocol
from tether.protocol import ClientProtocol, Connection, InvalidState, ServerProtocol, Side, State
from tether.protocol.client import parse_uri
from tether.protocol.states import TRANSITIONS, check_transition

PROTOCOL_DIR = Path(tether.protocol.__file__).parent

ALLOWED = {
    (State.CONNECTING, State.OPEN),
    (State.CONNECTING, State.CLOSING),
    (State.CONNECTING, State.CLOSED),
    (State.OPEN, State.CLOSING),
    (State.OPEN, State.CLOSED),
    (State.CLOSING, State.CLOSING),
    (State.CLOSING, State.CLOSED),
    (State.CLOSED, State.CLOSED),
}


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(State)
    table = {(old, new) for old, targets in TRANSITIONS.items() for new in targets}
    assert table == ALLOWED


@pytest.mark.parametrize("old", list(State), ids=lambda s: s.name)
@pytest.mark.parametrize("new", list(State), ids=lambda s: s.name)
def test_check_transition(old: State, new: State) -> None:
    if (old, new) in ALLOWED:
        check_transition(old, new)
    else:
        with pytest.raises(InvalidState, match=f"{old.name} -> {new.name}"):
            check_transition(old, new)


def test_the_core_refuses_an_illegal_transition() -> None:
    conn = Connection(Side.SERVER)
    conn.receive_eof()
    assert conn.state is State.CLOSED
    with pytest.raises(InvalidState):
        conn._set_state(State.OPEN)  # nothing reopens a closed connection
    assert conn.state is State.CLOSED


def test_lifecycles_go_through_the_table() -> None:
    """A handshake, a closing handshake and an EOF: each step is a legal transition."""
    client = ClientProtocol(parse_uri("ws://example.com/"))
    server = ServerProtocol()
    client.send_request(client.connect())
    for chunk in client.data_to_send():
        server.receive_data(chunk)
    (request,) = server.events_received()
    server.send_response(server.accept(request.request))  # type: ignore[attr-defined]
    assert server.state is State.OPEN
    for chunk in server.data_to_send():
        client.receive_data(chunk)
    assert client.state is State.OPEN
    client.send_close()
    assert client.state is State.CLOSING
    for chunk in client.data_to_send():
        server.receive_data(chunk)
    assert server.state is State.CLOSING
    server.receive_eof()
    client.receive_eof()
    assert (server.state, client.state) == (State.CLOSED, State.CLOSED)


def _state_assignments(path: Path) -> list[str]:
    """Functions in ``path`` that assign ``self.state`` themselves."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                targets = inner.targets if isinstance(inner, ast.Assign) else []
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and target.attr == "state"
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                    ):
                        found.append(node.name)
    return found


def test_every_state_change_is_checked() -> None:
    """Only ``__init__`` (the initial state) and ``_set_state`` assign ``state``."""
    assigners = {
        f"{path.name}:{name}"
        for path in sorted(PROTOCOL_DIR.rglob("*.py"))
        for name in _state_assignments(path)
    }
    assert assigners == {"connection.py:__init__", "connection.py:_set_state"}
