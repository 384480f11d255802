"""Every public name of websockets' asyncio API exists in tether, at the same module path.

Checked against the installed websockets itself: its ``__all__``, its
exception hierarchy, its ``CloseCode`` members, the parameters of its
``connect``/``serve`` and connection methods, and its ``Headers``
behaviour, compared operation by operation.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

import pytest
import websockets
import websockets.asyncio.client
import websockets.asyncio.connection
import websockets.asyncio.server
import websockets.datastructures
import websockets.exceptions
import websockets.frames

import tether
import tether.exceptions
from tether.datastructures import Headers, MultipleValuesError
from tether.frames import Close, CloseCode

# What other branches of work bring (the sync API).
ELSEWHERE = {"proxy_ssl", "proxy_server_hostname"}

# Module paths a porter writes, as (websockets module, tether module).
MODULES = [
    ("websockets", "tether"),
    ("websockets.exceptions", "tether.exceptions"),
    ("websockets.frames", "tether.frames"),
    ("websockets.datastructures", "tether.datastructures"),
    ("websockets.http11", "tether.http11"),
    ("websockets.typing", "tether.typing"),
    ("websockets.client", "tether.client"),
    ("websockets.server", "tether.server"),
    ("websockets.uri", "tether.uri"),
    ("websockets.asyncio.client", "tether.asyncio.client"),
    ("websockets.asyncio.server", "tether.asyncio.server"),
    ("websockets.asyncio.router", "tether.asyncio.router"),
    ("websockets.extensions", "tether.extensions"),
    ("websockets.extensions.permessage_deflate", "tether.extensions.permessage_deflate"),
]


def _public(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return sorted(names)


@pytest.mark.parametrize(("theirs", "ours"), MODULES, ids=[m for m, _ in MODULES])
def test_every_public_name_exists_at_the_same_path(theirs: str, ours: str) -> None:
    their_module = importlib.import_module(theirs)
    our_module = importlib.import_module(ours)
    wanted = [n for n in _public(their_module) if not n.startswith("_")]
    if theirs in ("websockets.uri", "websockets.client", "websockets.server"):
        # Their sans-I/O modules also export helpers; these are the documented names.
        wanted = [
            n
            for n in wanted
            if n
            in (
                "parse_uri",
                "WebSocketURI",
                "ClientProtocol",
                "ServerProtocol",
                "backoff",
                "process_exception",
            )
        ]
    if theirs == "websockets.extensions.permessage_deflate":
        wanted = [n for n in wanted if "Factory" in n or n == "PerMessageDeflate"]
    if theirs == "websockets.frames":
        wanted = [
            n
            for n in wanted
            if n in ("Close", "CloseCode", "Frame", "Opcode") or n.startswith("OP_")
        ]
    missing = [n for n in wanted if not hasattr(our_module, n)]
    assert wanted
    assert missing == []


def _exception_classes() -> list[str]:
    return [
        name
        for name in websockets.exceptions.__all__
        if isinstance(getattr(websockets.exceptions, name), type)
    ]


def test_exception_hierarchy_is_websockets() -> None:
    """Each exception derives from the same-named bases as in websockets."""
    for name in _exception_classes():
        theirs = getattr(websockets.exceptions, name)
        ours = getattr(tether.exceptions, name)
        for base in theirs.__mro__[1:]:
            if base.__module__.startswith("websockets"):
                assert issubclass(ours, getattr(tether.exceptions, base.__name__)), (name, base)
            elif base is not object:
                assert issubclass(ours, base), (name, base)  # RuntimeError, AssertionError ...
    assert tether.WebSocketError is tether.WebSocketException


def test_close_codes_have_websockets_names_and_tethers_aliases() -> None:
    for member in websockets.frames.CloseCode:
        assert CloseCode[member.name] == member.value
    assert CloseCode.NORMAL is CloseCode.NORMAL_CLOSURE
    assert CloseCode.NO_STATUS is CloseCode.NO_STATUS_RCVD
    assert CloseCode.ABNORMAL is CloseCode.ABNORMAL_CLOSURE


def test_close_describes_itself_as_websockets() -> None:
    for code, reason in [(1000, ""), (1001, "bye"), (3001, "x"), (4000, "private"), (1011, "")]:
        assert str(Close(code, reason)) == str(websockets.frames.Close(code, reason))
    close = Close.parse(b"\x03\xe8bye")
    assert (close.code, close.reason) == (1000, "bye")
    assert close.serialize() == b"\x03\xe8bye"
    code, reason = close  # still unpacks like tether's earlier tuples
    assert (code, reason) == (1000, "bye")


def test_invalid_uri() -> None:
    for uri in ["http://example.com/", "ws://example.com/#f", "ws://:80/", "ws://h:99999/"]:
        with pytest.raises(tether.InvalidURI) as caught:
            tether.connect(uri)
        assert caught.value.uri == uri
        assert "isn't a valid URI" in str(caught.value)
        assert isinstance(caught.value, ValueError)  # what tether raised before


def _params(func: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(func).parameters)


SIGNATURES = [
    (websockets.asyncio.client.connect.__init__, tether.connect.__init__),
    (websockets.asyncio.client.unix_connect, tether.unix_connect),
    (websockets.asyncio.server.serve.__init__, tether.Server.__init__),
    (websockets.asyncio.server.unix_serve, tether.unix_serve),
    (websockets.asyncio.server.basic_auth, tether.basic_auth),
    (websockets.asyncio.server.Server.close, tether.Server.close),
    (websockets.asyncio.server.ServerConnection.respond, tether.ServerConnection.respond),
    (websockets.asyncio.connection.Connection.send, tether.Connection.send),
    (websockets.asyncio.connection.Connection.recv, tether.Connection.recv),
    (websockets.asyncio.connection.Connection.recv_streaming, tether.Connection.recv_streaming),
    (websockets.asyncio.connection.Connection.close, tether.Connection.close),
    (websockets.asyncio.connection.Connection.ping, tether.Connection.ping),
    (websockets.asyncio.connection.Connection.pong, tether.Connection.pong),
    (websockets.asyncio.server.broadcast, tether.broadcast),
    (websockets.datastructures.Headers.get_all, Headers.get_all),
]


@pytest.mark.parametrize(
    ("theirs", "ours"), SIGNATURES, ids=[t.__qualname__ for t, _ in SIGNATURES]
)
def test_signatures_accept_websockets_arguments(theirs: Any, ours: Any) -> None:
    """Every parameter of websockets' function exists in tether's, same kind, same position."""
    their_params = _params(theirs)
    our_params = _params(ours)
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in our_params.values())
    positional = [n for n, p in our_params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    for index, (name, param) in enumerate(their_params.items()):
        if name in ELSEWHERE or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if name not in our_params:
            assert takes_kwargs, f"{name} not accepted"
            continue
        if param.kind is param.POSITIONAL_OR_KEYWORD:
            assert positional.index(name) == index, name
        if param.default is not param.empty and not isinstance(param.default, type):
            ours_default = our_params[name].default
            # tether's own process_exception and backoff: websockets' rules and delays,
            # checked in tests/asyncio/test_aio_reconnect.py.
            own = ("user_agent_header", "server_header", "logger")
            if name not in (*own, "process_exception", "reconnect_delays"):
                assert ours_default == param.default, (name, ours_default, param.default)


def test_coroutine_methods_are_coroutines() -> None:
    for name in ["send", "recv", "close", "wait_closed", "ping", "pong"]:
        ours = getattr(tether.Connection, name)
        theirs = getattr(websockets.asyncio.connection.Connection, name)
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(theirs), name
    for name in ["is_serving", "get_loop", "close"]:
        assert not inspect.iscoroutinefunction(getattr(tether.Server, name))
    for name in ["start_serving", "serve_forever", "wait_closed"]:
        assert inspect.iscoroutinefunction(getattr(tether.Server, name))


# ------------------------------------------------------------------- Headers


def _both(*args: Any, **kwargs: Any) -> tuple[Headers, Any]:
    return Headers(*args, **kwargs), websockets.datastructures.Headers(*args, **kwargs)


def _outcome(call: Any) -> Any:
    try:
        return ("ok", call())
    except Exception as exc:
        return ("raised", type(exc).__name__)


@pytest.mark.parametrize(
    "items",
    [
        [],
        [("Host", "example.com")],
        [("Set-Cookie", "a=1"), ("X-Other", "x"), ("set-cookie", "b=2")],
        [("A", "1"), ("b", "2"), ("a", "3"), ("C", "")],
    ],
)
def test_headers_behave_as_websockets_headers(items: list[tuple[str, str]]) -> None:
    ours, theirs = _both(items)
    for operation in [
        lambda h: dict(h),
        lambda h: list(h),
        lambda h: len(h),
        lambda h: list(h.raw_items()),
        lambda h: h.get_all("a"),
        lambda h: h.get_all("SET-COOKIE"),
        lambda h: h["host"],
        lambda h: h["set-cookie"],
        lambda h: "HOST" in h,
        lambda h: str(h),
        lambda h: h.serialize(),
        lambda h: list(h.keys()),
        lambda h: h == Headers(items) if isinstance(h, Headers) else h == type(h)(items),
    ]:
        ours_result, theirs_result = (
            _outcome(lambda op=operation: op(ours)),
            _outcome(lambda op=operation: op(theirs)),
        )
        if ours_result[0] == "raised" and ours_result[1] == "MultipleValuesError":
            assert theirs_result == ("raised", "MultipleValuesError")
        else:
            assert ours_result == theirs_result
    copy_ours, copy_theirs = ours.copy(), theirs.copy()
    copy_ours["X-New"] = "1"
    copy_theirs["X-New"] = "1"
    assert list(copy_ours.raw_items()) == list(copy_theirs.raw_items())
    assert "x-new" not in ours
    for h in (ours, theirs):
        if "a" in h:
            del h["A"]
    assert list(ours.raw_items()) == list(theirs.raw_items())


def test_headers_is_a_mutable_mapping_with_websockets_errors() -> None:
    headers = Headers(Host="example.com")
    headers.update({"X-A": "1"}, X_B="2")
    assert dict(headers) == {"host": "example.com", "x-a": "1", "x_b": "2"}
    headers.update(Headers([("X-A", "3")]))
    assert headers.get_all("x-a") == ["1", "3"]
    with pytest.raises(MultipleValuesError):
        headers["X-A"]
    assert issubclass(MultipleValuesError, LookupError)
    assert headers.get("X-A") == "1"  # tether: the first value (websockets raises)
    with pytest.raises(KeyError):
        del headers["missing"]
    assert re.fullmatch(r"Headers\(\[.*\]\)", repr(headers))
