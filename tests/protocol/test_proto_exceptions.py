"""Exception types of the protocol core and the extension base-class defaults."""

from __future__ import annotations

import pytest
from proto_helpers import Reverse

from tether.protocol import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    Headers,
    InvalidHandshake,
    InvalidHeader,
    InvalidStatus,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    Response,
    WebSocketError,
)


def test_protocol_error_codes() -> None:
    exc = ProtocolError("bad frame")
    assert (exc.reason, exc.code, str(exc)) == ("bad frame", 1002, "bad frame")
    assert ProtocolError("bad text", 1007).code == 1007
    big = PayloadTooBig("too big")
    assert isinstance(big, ProtocolError)
    assert (big.code, big.reason) == (1009, "too big")


def test_handshake_exceptions() -> None:
    header = InvalidHeader("Upgrade", "missing")
    assert (header.name, header.value, header.detail) == ("Upgrade", "missing", "missing")
    assert str(header) == "invalid Upgrade header: missing"
    assert str(InvalidHeader("Host")) == "missing Host header"
    response = Response(403, "Forbidden", Headers())
    status = InvalidStatus(response)
    assert status.response is response
    assert "HTTP 403" in str(status)
    for exc in (header, status, NegotiationError("x")):
        assert isinstance(exc, InvalidHandshake)
        assert isinstance(exc, WebSocketError)


@pytest.mark.parametrize(
    ("rcvd", "sent", "detail", "code", "reason", "text"),
    [
        (None, None, "", 1006, "", "no close frame received or sent"),
        (None, None, "timeout", 1006, "timeout", "no close frame received or sent: timeout"),
        (None, (1000, "bye"), "", 1006, "", "sent 1000 (OK) bye; no close frame received"),
        (
            (1001, "away"),
            None,
            "",
            1001,
            "away",
            "received 1001 (going away) away; no close frame sent",
        ),
        ((1000, "ok"), (1000, ""), "", 1000, "ok", "received 1000 (OK) ok; then sent 1000 (OK)"),
    ],
)
def test_connection_closed(
    rcvd: tuple[int, str] | None,
    sent: tuple[int, str] | None,
    detail: str,
    code: int,
    reason: str,
    text: str,
) -> None:
    exc = ConnectionClosed(rcvd, sent, detail=detail)
    assert (exc.rcvd, exc.sent, exc.detail) == (rcvd, sent, detail)
    assert exc.code == code
    assert exc.reason == reason
    assert str(exc) == text


def test_connection_closed_subclasses() -> None:
    ok = ConnectionClosedOK((1000, ""), (1000, ""))
    error = ConnectionClosedError(None, None, detail="lost")
    assert isinstance(ok, ConnectionClosed)
    assert isinstance(error, ConnectionClosed)
    assert not isinstance(ok, ConnectionClosedError)
    assert error.code == 1006


def test_extension_base_defaults() -> None:
    ext = Reverse()
    assert ext.shareable_key is None
    with pytest.raises(NotImplementedError):
        ext.clone()
