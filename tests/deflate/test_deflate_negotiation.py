"""permessage-deflate negotiation over real sockets: tether and websockets, both directions.

Each case checks the Sec-WebSocket-Extensions response header on the wire,
that both ends agree on the negotiated parameters (one end's local settings
are the other's remote ones), and that messages from 0 B to 4 MiB, text and
binary, compressible and not, round trip, with RSV1 where compression is on
and never where it is off.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pytest
from deflate_support import (
    GUARD,
    OP_TEXT,
    RSV1,
    KiB,
    MiB,
    deflate_stream,
    frame,
    inflate,
    json_text,
)

import tether
from tether.protocol.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)

MAX_SIZE = 8 * MiB
SIZES = [0, 1, 127, 128, 1000, 64 * KiB, 256 * KiB - 1, 256 * KiB, MiB, 4 * MiB]
DEFAULT_RESPONSE = "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"


def messages(kind: str) -> list[str | bytes]:
    """Messages of every size in SIZES of one kind."""
    out: list[str | bytes] = []
    for size in SIZES:
        if kind == "text":
            out.append(json_text(size, seed=size))  # compressible, with non-ASCII characters
        elif kind == "random":
            out.append(random.Random(size).randbytes(size))  # incompressible
        else:
            out.append(bytes(size))  # zeros: as compressible as it gets
    return out


class Wire:
    """A tether ``frame_observer`` recording ``(direction, opcode, rsv1)`` of data frames."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bool, int]] = []

    def __call__(self, direction, opcode, fin, rsv, length, masked, payload) -> None:
        if opcode in (0, 1, 2):
            self.frames.append((direction, opcode, bool(rsv & 4), length))

    def rsv1(self, direction: str) -> list[bool]:
        return [rsv1 for d, op, rsv1, _ in self.frames if d == direction and op]


def params(ext: Any) -> tuple[bool, bool, int, int]:
    """(remote_no_context_takeover, local_no_context_takeover, remote bits, local bits)."""
    return (
        ext.remote_no_context_takeover,
        ext.local_no_context_takeover,
        ext.remote_max_window_bits,
        ext.local_max_window_bits,
    )


def mirrored(client_ext: Any, server_ext: Any) -> None:
    """The client's local settings are the server's remote ones and vice versa."""
    c, s = params(client_ext), params(server_ext)
    assert (c[0], c[2]) == (s[1], s[3]), (client_ext, server_ext)
    assert (c[1], c[3]) == (s[0], s[2]), (client_ext, server_ext)


def header_params(value: str | None) -> set[str]:
    assert value is not None, "no Sec-WebSocket-Extensions header"
    name, *rest = (part.strip() for part in value.split(";"))
    assert name == "permessage-deflate", value
    return set(rest)


async def round_trip(ws: Any, batch: list[str | bytes]) -> None:
    for message in batch:
        await ws.send(message)
        echoed = await asyncio.wait_for(ws.recv(), GUARD)
        assert echoed == message, f"{type(message).__name__} of {len(message)} differs"


def tether_echo(observed: list[Wire]) -> Any:
    async def handler(ws: tether.ServerConnection) -> None:
        wire = Wire()
        ws.protocol.frame_observer = wire
        observed.append(wire)
        async for message in ws:
            await ws.send(message)

    return handler


# --------------------------------------------------------------- default on


KINDS = ["text", "random", "zeros"]


@pytest.mark.parametrize("kind", KINDS)
async def test_tether_client_tether_server(start_server, kind) -> None:
    observed: list[Wire] = []
    srv = await start_server(tether_echo(observed), max_size=MAX_SIZE)
    wire = Wire()
    async with tether.connect(srv.url, max_size=MAX_SIZE, frame_observer=wire) as ws:
        assert ws.response_headers["Sec-WebSocket-Extensions"] == DEFAULT_RESPONSE
        assert ws.request_headers["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; client_max_window_bits"
        )
        batch = messages(kind)
        await round_trip(ws, batch)
        (server_conn,) = srv.server.connections
        (client_ext,) = ws.protocol.extensions
        (server_ext,) = server_conn.protocol.extensions
        assert isinstance(client_ext, PerMessageDeflate)
        assert params(client_ext) == (False, False, 12, 12)
        mirrored(client_ext, server_ext)
    # Both sides compress exactly the messages at or above compress_threshold (128 B).
    expected = [len(m.encode() if isinstance(m, str) else m) >= 128 for m in batch]
    assert wire.rsv1(">") == expected
    assert wire.rsv1("<") == expected
    assert observed[0].rsv1("<") == expected  # what the server saw on the wire


@pytest.mark.parametrize("kind", KINDS)
async def test_tether_client_websockets_server(websockets_server, kind) -> None:
    srv = await websockets_server(max_size=MAX_SIZE)  # websockets' default: deflate
    wire = Wire()
    async with tether.connect(srv.url, max_size=MAX_SIZE, frame_observer=wire) as ws:
        # websockets' server defaults match tether's: 12-bit windows both ways.
        assert ws.response_headers["Sec-WebSocket-Extensions"] == DEFAULT_RESPONSE
        batch = messages(kind)
        await round_trip(ws, batch)
        mirrored(ws.protocol.extensions[0], srv.peers[0].protocol.extensions[0])
    expected = [len(m.encode() if isinstance(m, str) else m) >= 128 for m in batch]
    assert wire.rsv1(">") == expected
    assert all(wire.rsv1("<")), "websockets compresses every message"


@pytest.mark.parametrize("kind", KINDS)
async def test_websockets_client_tether_server(start_server, kind) -> None:
    from websockets.asyncio.client import connect as ws_connect

    observed: list[Wire] = []
    srv = await start_server(tether_echo(observed), max_size=MAX_SIZE)
    async with ws_connect(srv.url, max_size=MAX_SIZE) as ws:  # websockets' default: deflate
        assert ws.response.headers["Sec-WebSocket-Extensions"] == DEFAULT_RESPONSE
        batch = messages(kind)
        await round_trip(ws, batch)
        (server_conn,) = srv.server.connections
        mirrored(ws.protocol.extensions[0], server_conn.protocol.extensions[0])
    expected = [len(m.encode() if isinstance(m, str) else m) >= 128 for m in batch]
    assert all(observed[0].rsv1("<")), "websockets compresses every message"
    assert observed[0].rsv1(">") == expected


async def test_fragmented_compressed_messages_both_ways(start_server, websockets_server) -> None:
    """A compressed message in fragments: RSV1 on the first frame only, every way round."""
    from websockets.asyncio.client import connect as ws_connect

    chunks = [json_text(3000, seed=i) for i in range(5)]
    observed: list[Wire] = []
    srv = await start_server(tether_echo(observed), max_size=MAX_SIZE)
    wss = await websockets_server(max_size=MAX_SIZE)
    for url in (srv.url, wss.url):
        wire = Wire()
        async with tether.connect(url, max_size=MAX_SIZE, frame_observer=wire) as ws:
            await ws.send(chunks)
            assert await asyncio.wait_for(ws.recv(), GUARD) == "".join(chunks)
        sent = [(op, rsv1) for d, op, rsv1, _ in wire.frames if d == ">"]
        assert sent == [(OP_TEXT, True)] + [(0, False)] * 4
    async with ws_connect(srv.url, max_size=MAX_SIZE) as ws:
        await ws.send(chunks)
        assert await asyncio.wait_for(ws.recv(), GUARD) == "".join(chunks)
    received = [(op, rsv1) for d, op, rsv1, _ in observed[-1].frames if d == "<"]
    # websockets ends a fragmented message with an empty final frame.
    assert received == [(OP_TEXT, True)] + [(0, False)] * 5


# ------------------------------------------------------------- turned off


async def assert_uncompressed(ws: Any, wire: Wire | None = None) -> None:
    batch: list[str | bytes] = ["x" * 5000, bytes(5000), json_text(70 * KiB)]
    await round_trip(ws, batch)
    if wire is not None:
        assert wire.frames and not any(rsv1 for _, _, rsv1, _ in wire.frames)


async def test_off_on_the_tether_client(start_server) -> None:
    observed: list[Wire] = []
    srv = await start_server(tether_echo(observed))
    wire = Wire()
    async with tether.connect(srv.url, compression=None, frame_observer=wire) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.request_headers
        assert "Sec-WebSocket-Extensions" not in ws.response_headers
        assert ws.protocol.extensions == []
        await assert_uncompressed(ws, wire)
    assert observed[0].frames and not any(r for _, _, r, _ in observed[0].frames)


async def test_off_on_the_tether_server(start_server) -> None:
    observed: list[Wire] = []
    srv = await start_server(tether_echo(observed), compression=None)
    wire = Wire()
    async with tether.connect(srv.url, frame_observer=wire) as ws:
        assert "permessage-deflate" in ws.request_headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in ws.response_headers
        assert ws.protocol.extensions == []
        (server_conn,) = srv.server.connections
        assert server_conn.protocol.extensions == []
        await assert_uncompressed(ws, wire)


async def test_off_on_the_tether_server_websockets_client(start_server) -> None:
    from websockets.asyncio.client import connect as ws_connect

    srv = await start_server(compression=None)
    async with ws_connect(srv.url) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []
        await assert_uncompressed(ws)


async def test_off_on_the_websockets_client(start_server) -> None:
    from websockets.asyncio.client import connect as ws_connect

    observed: list[Wire] = []
    srv = await start_server(tether_echo(observed))
    async with ws_connect(srv.url, compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.request.headers
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await assert_uncompressed(ws)
    assert observed[0].frames and not any(r for _, _, r, _ in observed[0].frames)


async def test_off_on_the_tether_client_websockets_server(websockets_server) -> None:
    srv = await websockets_server()
    wire = Wire()
    async with tether.connect(srv.url, compression=None, frame_observer=wire) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response_headers
        assert srv.peers[0].protocol.extensions == []
        await assert_uncompressed(ws, wire)


async def test_off_on_the_websockets_server(websockets_server) -> None:
    srv = await websockets_server(compression=None)
    wire = Wire()
    async with tether.connect(srv.url, frame_observer=wire) as ws:
        assert "permessage-deflate" in ws.request_headers["Sec-WebSocket-Extensions"]
        assert "Sec-WebSocket-Extensions" not in ws.response_headers
        assert ws.protocol.extensions == []
        await assert_uncompressed(ws, wire)


# ------------------------------------------------------- explicit parameters

# Each case: server factory, client factory, response parameters, and the
# client's negotiated (remote_nct, local_nct, remote_bits, local_bits).
TETHER_CASES: dict[str, tuple[dict[str, Any], dict[str, Any], set[str], tuple[Any, ...]]] = {
    "server_no_context_takeover imposed": (
        {"server_no_context_takeover": True},
        {},
        {"server_no_context_takeover", "server_max_window_bits=12", "client_max_window_bits=12"},
        (True, False, 12, 12),
    ),
    "client_no_context_takeover imposed": (
        {"client_no_context_takeover": True},
        {},
        {"client_no_context_takeover", "server_max_window_bits=12", "client_max_window_bits=12"},
        (False, True, 12, 12),
    ),
    "both no_context_takeover asked": (
        {},
        {"server_no_context_takeover": True, "client_no_context_takeover": True},
        {
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits=12",
            "client_max_window_bits=12",
        },
        (True, True, 12, 12),
    ),
    "zlib windows (no caps)": (
        {"server_max_window_bits": None, "client_max_window_bits": None},
        {},
        set(),
        (False, False, 15, 15),
    ),
    "client caps itself at 10": (
        {},
        {"client_max_window_bits": 10},
        {"server_max_window_bits=12"},
        (False, False, 12, 10),
    ),
    "client offers no client_max_window_bits": (
        {},
        {"client_max_window_bits": None},
        {"server_max_window_bits=12"},
        (False, False, 12, 15),
    ),
    "client asks server_max_window_bits=9": (
        {},
        {"server_max_window_bits": 9},
        {"server_max_window_bits=9", "client_max_window_bits=12"},
        (False, False, 9, 12),
    ),
    "8-bit windows both ways": (
        {"server_max_window_bits": 8, "client_max_window_bits": 8},
        {},
        {"server_max_window_bits=8", "client_max_window_bits=8"},
        (False, False, 8, 8),
    ),
    "server caps the client at 9, no context takeover": (
        {"client_max_window_bits": 9, "server_no_context_takeover": True},
        {"client_max_window_bits": 11},
        {"server_no_context_takeover", "server_max_window_bits=12", "client_max_window_bits=9"},
        (True, False, 12, 9),
    ),
}


def variant_batch() -> list[str | bytes]:
    """Repeated and varied messages: context takeover, resets and window distances matter."""
    text = json_text(20 * KiB)
    return [text, text, json_text(300, seed=3), text, os.urandom(3000), bytes(100 * KiB), text]


@pytest.mark.parametrize("case", list(TETHER_CASES))
async def test_explicit_factories_tether_both_ends(start_server, case) -> None:
    server_kwargs, client_kwargs, response, expected = TETHER_CASES[case]
    srv = await start_server(
        compression=None,
        extensions=[ServerPerMessageDeflateFactory(**server_kwargs)],
        max_size=MAX_SIZE,
    )
    async with tether.connect(
        srv.url,
        compression=None,
        extensions=[ClientPerMessageDeflateFactory(**client_kwargs)],
        max_size=MAX_SIZE,
    ) as ws:
        assert header_params(ws.response_headers["Sec-WebSocket-Extensions"]) == response
        (client_ext,) = ws.protocol.extensions
        (server_conn,) = srv.server.connections
        (server_ext,) = server_conn.protocol.extensions
        assert params(client_ext) == expected
        mirrored(client_ext, server_ext)
        await round_trip(ws, variant_batch())


# websockets factories take the same keyword names for these parameters.
INTEROP_CASES: dict[str, tuple[str, dict[str, Any], set[str]]] = {
    "websockets client: server_no_context_takeover, client window 9": (
        "websockets-client",
        {"server_no_context_takeover": True, "client_max_window_bits": 9},
        {"server_no_context_takeover", "server_max_window_bits=12"},
    ),
    "websockets client: server_max_window_bits=8 (tether deflates with 9)": (
        "websockets-client",
        {"server_max_window_bits": 8},
        {"server_max_window_bits=8", "client_max_window_bits=12"},
    ),
    "websockets client: client_no_context_takeover": (
        "websockets-client",
        {"client_no_context_takeover": True},
        {"client_no_context_takeover", "server_max_window_bits=12", "client_max_window_bits=12"},
    ),
    "websockets server: windows 10": (
        "websockets-server",
        {"server_max_window_bits": 10, "client_max_window_bits": 10},
        {"server_max_window_bits=10", "client_max_window_bits=10"},
    ),
    "websockets server: server_no_context_takeover imposed": (
        "websockets-server",
        {"server_no_context_takeover": True},
        {"server_no_context_takeover"},
    ),
}


@pytest.mark.parametrize("case", list(INTEROP_CASES))
async def test_explicit_factories_with_websockets(start_server, websockets_server, case) -> None:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.extensions import permessage_deflate as wpmd

    side, kwargs, response = INTEROP_CASES[case]
    if side == "websockets-client":
        srv = await start_server(max_size=MAX_SIZE)  # tether's default factory
        factory = wpmd.ClientPerMessageDeflateFactory(**kwargs)
        async with ws_connect(
            srv.url, compression=None, extensions=[factory], max_size=MAX_SIZE
        ) as ws:
            assert header_params(ws.response.headers["Sec-WebSocket-Extensions"]) == response
            (server_conn,) = srv.server.connections
            mirrored(ws.protocol.extensions[0], server_conn.protocol.extensions[0])
            await round_trip(ws, variant_batch())
    else:
        wss = await websockets_server(
            compression=None,
            extensions=[wpmd.ServerPerMessageDeflateFactory(**kwargs)],
            max_size=MAX_SIZE,
        )
        async with tether.connect(wss.url, max_size=MAX_SIZE) as ws:
            assert header_params(ws.response_headers["Sec-WebSocket-Extensions"]) == response
            mirrored(ws.protocol.extensions[0], wss.peers[0].protocol.extensions[0])
            await round_trip(ws, variant_batch())


async def test_tether_client_8_bit_window_against_websockets(websockets_server) -> None:
    """tether promises an 8-bit window but deflates with 9 (zlib refuses 8): websockets inflates
    with a real 8-bit window, so any distance beyond 256 bytes would break it."""
    wss = await websockets_server(max_size=MAX_SIZE)
    factory = ClientPerMessageDeflateFactory(client_max_window_bits=8)
    async with tether.connect(
        wss.url, compression=None, extensions=[factory], max_size=MAX_SIZE
    ) as ws:
        (client_ext,) = ws.protocol.extensions
        assert client_ext.local_max_window_bits == 8
        assert wss.peers[0].protocol.extensions[0].remote_max_window_bits == 8
        # Repeats at distances just under and over 256 bytes, and long random-ish text.
        rng = random.Random(8)
        batch: list[str | bytes] = [
            (rng.randbytes(250) + rng.randbytes(6)) * 40,
            rng.randbytes(257) * 40,
            json_text(64 * KiB),
            *variant_batch(),
        ]
        await round_trip(ws, batch)


# ------------------------------------------------------------ malformed offers

DECLINED = [
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits=10; client_max_window_bits=10",
    "permessage-deflate; mystery_param",
    'permessage-deflate; client_max_window_bits="10',
    'permessage-deflate; client_max_window_bits="1 0"',
    "permessage-deflate;",
    "permessage-deflate; =15",
    "permessage-deflate;; server_no_context_takeover",
    "permessage-deflate server_no_context_takeover",
    "permessage-deflate; server_max_window_bits=9.5",
    "permessage-deflate; server_max_window_bits=0x0f",
    "permessage-deflate; server_max_window_bits=-9",
    "=permessage-deflate",
    "x-webkit-deflate-frame",
    "permessage-deflate; client_max_window_bits=" + "9" * 5000,
]


@pytest.mark.parametrize("offer", DECLINED, ids=lambda offer: offer[:60])
async def test_malformed_offer_is_declined_not_an_error(start_server, raw, offer) -> None:
    srv = await start_server()
    client = await raw(srv.port)
    status = await client.handshake(offer)
    assert status == 101, (status, client.headers)
    assert client.extensions is None, client.extensions
    # The connection works, uncompressed.
    await client.send(frame(OP_TEXT, b"still here"))
    echoed = await client.read_frame()
    assert (echoed.opcode, echoed.rsv, echoed.payload) == (OP_TEXT, 0, b"still here")


ACCEPTED = {
    # A valid offer after an invalid one is taken (RFC 7692 §5: offers in preference order).
    "permessage-deflate; client_max_window_bits=16, permessage-deflate": (
        "permessage-deflate; server_max_window_bits=12"
    ),
    # Quoted values are allowed (RFC 7692 §7.1.2.2 "a quoted-string").
    'permessage-deflate; client_max_window_bits="10"': (
        "permessage-deflate; server_max_window_bits=12"
    ),
    # Two valid offers: only the first is accepted (one permessage-deflate at most).
    "permessage-deflate; server_max_window_bits=10, permessage-deflate": (
        "permessage-deflate; server_max_window_bits=10"
    ),
    # An unknown extension beside it is ignored.
    "x-unknown; foo=bar, permessage-deflate; client_max_window_bits": DEFAULT_RESPONSE,
}


@pytest.mark.parametrize("offer", list(ACCEPTED))
async def test_valid_offers_from_a_raw_client(start_server, raw, offer) -> None:
    srv = await start_server()
    client = await raw(srv.port)
    assert await client.handshake(offer) == 101
    assert client.extensions == ACCEPTED[offer]
    text = json_text(2000).encode()
    await client.send(frame(OP_TEXT, deflate_stream(text), rsv=RSV1))
    echoed = await client.read_frame()
    assert echoed.rsv1 and echoed.opcode == OP_TEXT
    assert inflate(echoed.payload) == text
