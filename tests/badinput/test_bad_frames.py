"""Protocol violations after the handshake, over raw TCP sockets.

Each case: the server answers with a Close frame carrying the expected code
(RFC 6455 §7.4.1), closes TCP, does so quickly, and a healthy client on the
same server keeps echoing meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

import pytest

import tether
from tether.protocol.frames import Opcode
from tether_testing import build_frame

FAST = 2.0
MAX_SIZE = 1 << 20

TEXT, BINARY, CONT, CLOSE, PING, PONG = (
    Opcode.TEXT,
    Opcode.BINARY,
    Opcode.CONT,
    Opcode.CLOSE,
    Opcode.PING,
    Opcode.PONG,
)


async def echo_ok(ws: tether.ClientConnection) -> None:
    message = os.urandom(8).hex()
    await ws.send(message)
    assert await asyncio.wait_for(ws.recv(), FAST) == message


@pytest.fixture
async def target(start_server):
    """A server and a healthy client that echoes before and after each case."""
    srv = await start_server(compression=None, ping_interval=None, max_size=MAX_SIZE)
    async with tether.connect(srv.url, compression=None) as healthy:
        await echo_ok(healthy)
        srv.healthy = healthy  # type: ignore[attr-defined]
        yield srv
        await echo_ok(healthy)
        assert healthy.close_code is None


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x12\x34\x56\x78",
    length: int | None = None,
) -> bytes:
    """A frame built by hand; ``length`` overrides the declared payload length."""
    return build_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, length=length)


def close(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


CASES = {
    # RFC 6455 §5.1: a server MUST close on an unmasked client frame.
    "unmasked text": ([frame(TEXT, b"hi", mask=None)], 1002),
    "unmasked ping": ([frame(PING, b"", mask=None)], 1002),
    # §5.2: RSV bits without a negotiated extension, reserved opcodes.
    "RSV1 without extension": ([frame(TEXT, b"x", rsv=4)], 1002),
    "RSV2": ([frame(TEXT, b"x", rsv=2)], 1002),
    "RSV3": ([frame(BINARY, b"x", rsv=1)], 1002),
    "RSV1 on ping": ([frame(PING, b"", rsv=4)], 1002),
    "opcode 0x3": ([frame(0x3, b"x")], 1002),
    "opcode 0x7": ([frame(0x7, b"x")], 1002),
    "opcode 0xB": ([frame(0xB, b"")], 1002),
    "opcode 0xF": ([frame(0xF, b"")], 1002),
    # §5.5: control frames are at most 125 bytes and never fragmented.
    "ping of 126 bytes": ([frame(PING, b"p" * 126)], 1002),
    "close of 126 bytes": ([frame(CLOSE, close(1000, b"r" * 124))], 1002),
    "fragmented ping": ([frame(PING, b"", fin=False)], 1002),
    # §5.4: fragmentation rules.
    "continuation first": ([frame(CONT, b"x")], 1002),
    "text inside a fragmented message": (
        [frame(TEXT, b"a", fin=False), frame(TEXT, b"b")],
        1002,
    ),
    # §8.1: text must be valid UTF-8.
    "invalid UTF-8": ([frame(TEXT, b"\xff")], 1007),
    "surrogate in UTF-8": ([frame(TEXT, b"\xed\xa0\x80")], 1007),
    "invalid UTF-8 across fragments": (
        [frame(TEXT, b"\xce", fin=False), frame(CONT, b"\x28")],
        1007,
    ),
    "truncated UTF-8 at the end": ([frame(TEXT, b"ok\xe2\x82")], 1007),
    "invalid UTF-8 in close reason": ([frame(CLOSE, close(1000, b"\xff"))], 1007),
    # §7.4: close codes.
    "close code 999": ([frame(CLOSE, close(999))], 1002),
    "close code 1004": ([frame(CLOSE, close(1004))], 1002),
    "close code 1005": ([frame(CLOSE, close(1005))], 1002),
    "close code 1006": ([frame(CLOSE, close(1006))], 1002),
    "close code 1015": ([frame(CLOSE, close(1015))], 1002),
    "close code 2000": ([frame(CLOSE, close(2000))], 1002),
    "close code 5000": ([frame(CLOSE, close(5000))], 1002),
    "close payload of 1 byte": ([frame(CLOSE, b"\x03")], 1002),
    # §5.2: "the most significant bit MUST be 0".
    "length 2**63": ([frame(BINARY, b"", length=2**63)], 1002),
    "length 2**64-1": ([frame(BINARY, b"", length=2**64 - 1)], 1002),
    # Limits: 1009, before the payload arrives.
    "length 2**63-1": ([frame(BINARY, b"", length=2**63 - 1)], 1009),
    "length 100 MiB": ([frame(BINARY, b"", length=100 << 20)], 1009),
    "length max_size+1": ([frame(TEXT, b"", length=MAX_SIZE + 1)], 1009),
    "fragments over max_size": (
        [frame(BINARY, b"x" * 60000, fin=False)]
        + [frame(CONT, b"x" * 60000, fin=False) for _ in range(20)],
        1009,
    ),
}


@pytest.mark.parametrize("frames,code", CASES.values(), ids=CASES.keys())
async def test_protocol_violation_closes_with_code(target, raw_client, frames, code) -> None:
    loop = asyncio.get_running_loop()
    client = await raw_client(target.port)
    await client.handshake()
    start = loop.time()
    with contextlib.suppress(ConnectionError):  # the server may close before reading all
        await client.send(b"".join(frames))
    got, _ = await client.read_close(FAST)
    assert got == code
    assert await client.read_eof(FAST) == b""
    assert loop.time() - start < FAST
    await echo_ok(target.healthy)


async def test_valid_frames_just_below_the_limits_pass(target, raw_client) -> None:
    client = await raw_client(target.port)
    await client.handshake()
    await client.send_frame(PING, b"p" * 125)
    assert await client.read_frame() == (True, PONG, b"p" * 125)
    await client.send_frame(TEXT, "☃".encode() * 10, fin=False)
    await client.send_frame(PING, b"between fragments")  # allowed mid-message
    assert await client.read_frame() == (True, PONG, b"between fragments")
    await client.send_frame(CONT, b"!")
    # The server echo handler answers with the whole message.
    assert await client.read_frame() == (True, TEXT, "☃".encode() * 10 + b"!")
    await client.send_frame(BINARY, b"\x00" * (MAX_SIZE - 1))
    fin, opcode, data = await client.read_frame()
    assert (fin, opcode, len(data)) == (True, BINARY, MAX_SIZE - 1)
    await client.send_frame(CLOSE, close(3000, "valid ☃".encode()))
    assert await client.read_close() == (3000, "valid ☃")  # code and reason echoed
    assert await client.read_eof(FAST) == b""


async def test_text_split_inside_a_code_point_is_fine(target, raw_client) -> None:
    client = await raw_client(target.port)
    await client.handshake()
    snowman = "☃".encode()
    await client.send_frame(TEXT, snowman[:1], fin=False)
    await client.send_frame(CONT, snowman[1:2], fin=False)
    await client.send_frame(CONT, snowman[2:])
    assert await client.read_frame() == (True, TEXT, snowman)


async def test_invalid_utf8_fails_fast_before_the_frame_is_complete(target, raw_client) -> None:
    """A text frame declared at 1 MiB: bad UTF-8 in its first bytes closes at once."""
    client = await raw_client(target.port)
    await client.handshake()
    head = frame(TEXT, b"", length=MAX_SIZE - 1)  # header (and mask) only
    masked_bad = bytes(b ^ head[-4:][i % 4] for i, b in enumerate(b"ok\xff\xfe"))
    await client.send(head + masked_bad)
    assert (await client.read_close(FAST))[0] == 1007


async def test_max_frame_size(start_server, raw_client) -> None:
    srv = await start_server(compression=None, max_frame_size=1000, max_size=10_000)
    client = await raw_client(srv.port)
    await client.handshake()
    await client.send_frame(BINARY, b"a" * 1000, fin=False)
    await client.send_frame(CONT, b"b" * 1000)
    assert await client.read_frame() == (True, BINARY, b"a" * 1000 + b"b" * 1000)
    await client.send_frame(BINARY, b"c" * 1001)
    assert (await client.read_close(FAST))[0] == 1009


async def test_data_after_close_is_ignored(target, raw_client) -> None:
    client = await raw_client(target.port)
    await client.handshake()
    await client.send(frame(CLOSE, close(1000)) + frame(TEXT, b"after close") + b"\xff" * 100)
    assert await client.read_close(FAST) == (1000, "")
    assert await client.read_eof(FAST) == b""


async def test_abrupt_eof_mid_frame(target, raw_client) -> None:
    client = await raw_client(target.port)
    await client.handshake()
    await client.send(frame(TEXT, b"hello")[:5])
    client.writer.write_eof()
    assert await client.read_eof(FAST) == b""


async def test_never_answered_pings_close_with_1011(start_server, raw_client) -> None:
    ping_interval, ping_timeout = 0.2, 0.2
    srv = await start_server(
        compression=None, ping_interval=ping_interval, ping_timeout=ping_timeout
    )
    loop = asyncio.get_running_loop()
    async with tether.connect(srv.url, compression=None, ping_interval=None) as healthy:
        deaf = await raw_client(srv.port)
        await deaf.handshake()
        start = loop.time()
        closing = asyncio.ensure_future(deaf.read_close(FAST + 1))
        await echo_ok(healthy)
        assert not closing.done()
        code, _ = await closing
        elapsed = loop.time() - start
        assert code == 1011
        assert ping_interval + ping_timeout - 0.05 <= elapsed < ping_interval + ping_timeout + FAST
        assert await deaf.read_eof(FAST) == b""
        # The healthy client answered the same keepalive pings and stays open.
        await echo_ok(healthy)
        assert healthy.close_code is None
