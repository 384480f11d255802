"""Per-message compression control, and misuse of the compressed bit (RSV1), on the wire.

Frames sent by the server are read by a hand-written client, so RSV1 is seen
as it travels; frames sent by the tether client are seen through its
``frame_observer`` and, independently, by the server's.
"""

from __future__ import annotations

import asyncio
import json
import random
import zlib
from typing import Any

import pytest
from deflate_support import (
    GUARD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RSV1,
    RSV2,
    RSV3,
    close_code,
    deflate_stream,
    frame,
    inflate,
    json_text,
)

import tether
from tether.protocol.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

SMALL = "x" * 100  # below the default compress_threshold (128 bytes)
LARGE = json_text(4000)


# ----------------------------------------------------- server -> raw client


async def commanded(ws: tether.ServerConnection) -> None:
    """Send what each JSON command says: {"data": str, "binary": bool, "compress": ...}."""
    async for command in ws:
        spec = json.loads(command)
        data: str | bytes = spec["data"].encode() if spec.get("binary") else spec["data"]
        if "compress" in spec:
            await ws.send(data, compress=spec["compress"])
        else:
            await ws.send(data)


async def server_sends(raw_client: Any, **spec: Any) -> Any:
    """Have the server send a message as ``spec`` says; return the frame as it arrived."""
    payload = json.dumps(spec).encode()
    await raw_client.send(frame(OP_TEXT, payload))
    return await raw_client.read_frame()


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_server_compress_choices_on_the_wire(start_server, raw, binary) -> None:
    srv = await start_server(commanded)
    client = await raw(srv.port)
    assert await client.handshake("permessage-deflate") == 101
    opcode = OP_BINARY if binary else OP_TEXT
    decoder = zlib.decompressobj(-12)  # context takeover: one decoder for the connection
    cases = [
        # (spec, compressed on the wire)
        ({"data": SMALL}, False),  # below compress_threshold
        ({"data": "y" * 127}, False),
        ({"data": "y" * 128}, True),  # at the threshold
        ({"data": LARGE}, True),
        ({"data": LARGE, "compress": False}, False),  # forced off
        ({"data": SMALL, "compress": True}, True),  # forced on
        ({"data": "", "compress": True}, True),  # empty, compressed: one 0x00 byte
        ({"data": LARGE, "compress": None}, True),  # None: the threshold decides
    ]
    for spec, compressed in cases:
        got = await server_sends(client, binary=binary, **spec)
        assert got.opcode == opcode and got.fin
        assert got.rsv1 is compressed, spec
        data = spec["data"].encode()
        if compressed:
            assert decoder.decompress(got.payload + b"\x00\x00\xff\xff") == data
        else:
            assert got.payload == data
        if compressed and data:
            assert len(got.payload) != len(data)
    empty = await server_sends(client, binary=binary, data="", compress=True)
    assert empty.payload == b"\x00"  # RFC 7692 §7.2.3.6


async def test_server_compress_threshold_setting(start_server, raw) -> None:
    srv = await start_server(
        commanded,
        compression=None,
        extensions=[ServerPerMessageDeflateFactory(compress_threshold=1000)],
    )
    client = await raw(srv.port)
    assert await client.handshake("permessage-deflate") == 101
    assert not (await server_sends(client, data="z" * 999)).rsv1
    assert (await server_sends(client, data="z" * 1000)).rsv1
    assert (await server_sends(client, data="z" * 10, compress=True)).rsv1
    assert not (await server_sends(client, data="z" * 5000, compress=False)).rsv1


async def test_uncompressed_messages_between_compressed_ones_keep_the_context(
    start_server, raw
) -> None:
    """compress=False between messages leaves the compressor's history intact."""
    srv = await start_server(commanded)
    client = await raw(srv.port)
    assert await client.handshake("permessage-deflate") == 101
    text = random.Random(7).randbytes(1000).hex()  # 2,000 characters: fits a 4 KiB window
    decoder_input: list[bytes] = []
    for spec in ({"data": text}, {"data": text, "compress": False}, {"data": text}):
        got = await server_sends(client, **spec)
        if got.rsv1:
            decoder_input.append(got.payload)
    first, second = decoder_input
    # The second compressed copy refers back to the first: a few bytes.
    assert len(second) < 40 < 900 < len(first), (len(first), len(second))
    decoder = zlib.decompressobj(-12)
    for payload in decoder_input:
        assert decoder.decompress(payload + b"\x00\x00\xff\xff") == text.encode()


# ------------------------------------------------------- tether client -> server


class Wire:
    def __init__(self) -> None:
        self.frames: list[tuple[str, int, bool, bool]] = []

    def __call__(self, direction, opcode, fin, rsv, length, masked, payload) -> None:
        if opcode <= 2:
            self.frames.append((direction, opcode, fin, bool(rsv & RSV1)))

    def take(self, direction: str) -> list[tuple[int, bool, bool]]:
        out = [(op, fin, rsv1) for d, op, fin, rsv1 in self.frames if d == direction]
        self.frames = [f for f in self.frames if f[0] != direction]
        return out


async def test_client_compress_choices(start_server) -> None:
    server_wire = Wire()

    async def handler(ws: tether.ServerConnection) -> None:
        ws.protocol.frame_observer = server_wire
        async for message in ws:
            await ws.send(message)

    srv = await start_server(handler)
    client_wire = Wire()
    async with tether.connect(srv.url, frame_observer=client_wire) as ws:
        cases: list[tuple[Any, dict[str, Any], list[tuple[int, bool, bool]]]] = [
            (SMALL, {}, [(OP_TEXT, True, False)]),
            (LARGE, {}, [(OP_TEXT, True, True)]),
            (LARGE, {"compress": False}, [(OP_TEXT, True, False)]),
            (SMALL, {"compress": True}, [(OP_TEXT, True, True)]),
            (b"\x01" * 127, {}, [(OP_BINARY, True, False)]),
            (b"\x01" * 128, {}, [(OP_BINARY, True, True)]),
            (b"", {"compress": True}, [(OP_BINARY, True, True)]),
            # Fragmented: the first frame decides; RSV1 on it only (RFC 7692 §6).
            (
                [LARGE, LARGE, "tail"],
                {},
                [(OP_TEXT, False, True), (OP_CONT, False, False), (OP_CONT, True, False)],
            ),
            (
                [SMALL, LARGE],
                {"compress": True},
                [(OP_TEXT, False, True), (OP_CONT, True, False)],
            ),
            (
                [LARGE, LARGE],
                {"compress": False},
                [(OP_TEXT, False, False), (OP_CONT, True, False)],
            ),
        ]
        for message, kwargs, expected in cases:
            await ws.send(message, **kwargs)
            echoed = await asyncio.wait_for(ws.recv(), GUARD)
            whole = "".join(message) if isinstance(message, list) else message
            assert echoed == whole
            assert client_wire.take(">") == expected, (message, kwargs)
            assert server_wire.take("<") == expected, (message, kwargs)


async def test_client_compress_threshold_setting(start_server) -> None:
    srv = await start_server()
    wire = Wire()
    factory = ClientPerMessageDeflateFactory(compress_threshold=2000)
    async with tether.connect(
        srv.url, compression=None, extensions=[factory], frame_observer=wire
    ) as ws:
        for message, compressed in (("a" * 1999, False), ("a" * 2000, True)):
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), GUARD) == message
            assert wire.take(">") == [(OP_TEXT, True, compressed)]


async def test_compress_true_without_the_extension_sends_plain(start_server) -> None:
    """compress=True on a connection that negotiated nothing cannot set RSV1."""
    srv = await start_server(compression=None)
    wire = Wire()
    async with tether.connect(srv.url, frame_observer=wire) as ws:
        assert ws.protocol.extensions == []
        await ws.send(LARGE, compress=True)
        assert await asyncio.wait_for(ws.recv(), GUARD) == LARGE
        assert wire.take(">") == [(OP_TEXT, True, False)]
        assert wire.take("<") == [(OP_TEXT, True, False)]


async def test_broadcast_compress_false_sends_plain(start_server, raw) -> None:
    ready = asyncio.get_running_loop().create_future()

    async def handler(ws: tether.ServerConnection) -> None:
        if not ready.done():
            ready.set_result(ws)
        await ws.wait_closed()

    srv = await start_server(handler)
    client = await raw(srv.port)
    assert await client.handshake("permessage-deflate") == 101
    conn = await asyncio.wait_for(ready, GUARD)
    tether.broadcast([conn], LARGE, compress=False)
    tether.broadcast([conn], SMALL, compress=True)
    tether.broadcast([conn], LARGE)
    plain, forced, default = [await client.read_frame() for _ in range(3)]
    assert not plain.rsv1 and plain.payload == LARGE.encode()
    assert forced.rsv1 and inflate(forced.payload, 12) == SMALL.encode()
    assert default.rsv1 and len(default.payload) < len(LARGE)


# ------------------------------------------------------------ RSV1 misuse


def bad_sequences() -> dict[str, tuple[str | None, list[bytes]]]:
    """name: (offer, frames sent after the handshake); each must close the connection 1002."""
    compressed = deflate_stream(LARGE.encode())
    return {
        "RSV1 on a ping": ("permessage-deflate", [frame(OP_PING, b"hi", rsv=RSV1)]),
        "RSV1 on a pong": ("permessage-deflate", [frame(OP_PONG, b"hi", rsv=RSV1)]),
        "RSV1 on a close": (
            "permessage-deflate",
            [frame(OP_CLOSE, b"\x03\xe8", rsv=RSV1)],
        ),
        "RSV1 on a ping between compressed fragments": (
            "permessage-deflate",
            [
                frame(OP_TEXT, compressed[:100], fin=False, rsv=RSV1),
                frame(OP_PING, b"", rsv=RSV1),
            ],
        ),
        "RSV1 on a continuation of a compressed message": (
            "permessage-deflate",
            [
                frame(OP_TEXT, compressed[:100], fin=False, rsv=RSV1),
                frame(OP_CONT, compressed[100:], rsv=RSV1),
            ],
        ),
        "RSV1 on a continuation of an uncompressed message": (
            "permessage-deflate",
            [frame(OP_TEXT, b"plain", fin=False), frame(OP_CONT, compressed, rsv=RSV1)],
        ),
        "RSV1 when nothing was offered": (None, [frame(OP_TEXT, compressed, rsv=RSV1)]),
        "RSV1 when the offer was declined": (
            "permessage-deflate; client_max_window_bits=16",
            [frame(OP_TEXT, compressed, rsv=RSV1)],
        ),
        "RSV1 on binary when nothing was offered": (
            None,
            [frame(OP_BINARY, deflate_stream(b"\x00" * 500), rsv=RSV1)],
        ),
        "RSV2 with permessage-deflate": (
            "permessage-deflate",
            [frame(OP_TEXT, b"hello", rsv=RSV2)],
        ),
        "RSV3 with permessage-deflate": (
            "permessage-deflate",
            [frame(OP_TEXT, b"hello", rsv=RSV3)],
        ),
        "RSV1 and RSV2 with permessage-deflate": (
            "permessage-deflate",
            [frame(OP_TEXT, compressed, rsv=RSV1 | RSV2)],
        ),
        "corrupt compressed data": (
            "permessage-deflate",
            [frame(OP_BINARY, b"\xff\xff\xff\xff\xff\xff", rsv=RSV1)],
        ),
    }


BAD = bad_sequences()


@pytest.mark.parametrize("case", list(BAD))
async def test_compressed_bit_misuse_closes_1002(start_server, raw, case) -> None:
    offer, frames = BAD[case]
    received: list[Any] = []

    async def handler(ws: tether.ServerConnection) -> None:
        async for message in ws:
            received.append(message)

    srv = await start_server(handler)
    client = await raw(srv.port)
    assert await client.handshake(offer) == 101
    await client.send(b"".join(frames))
    close = await client.read_close()
    assert close_code(close) == 1002, (case, close)
    await client.read_eof()
    assert received == []


async def test_a_good_compressed_message_before_a_bad_frame_is_delivered(start_server, raw) -> None:
    """Frames before the violation still reach the handler; the close is still 1002."""
    received: list[Any] = []

    async def handler(ws: tether.ServerConnection) -> None:
        async for message in ws:
            received.append(message)

    srv = await start_server(handler)
    client = await raw(srv.port)
    assert await client.handshake("permessage-deflate") == 101
    good = frame(OP_TEXT, deflate_stream(LARGE.encode()), rsv=RSV1)
    await client.send(good + frame(OP_PING, b"", rsv=RSV1))
    assert close_code(await client.read_close()) == 1002
    await client.read_eof()
    assert received == [LARGE]
