"""A client parses frames that arrive in the same read as the 101 within its inflate budget.

The server's answer and a burst of compressed frames (a 6 MiB message in two
fragments with a Ping between them, 3 MiB of text, then a Close) come in one
write; the large ones move to the worker and every message arrives intact.
"""

from __future__ import annotations

import asyncio

import pytest
from deflate_support import GUARD, MiB

import tether
from tether.protocol import Connection, Side
from tether.protocol.extensions.permessage_deflate import PerMessageDeflate
from tether_testing import answer_upgrade


def server_frames() -> tuple[list[bytes | str], bytes]:
    srv = Connection(Side.SERVER, extensions=[PerMessageDeflate()])
    messages: list[bytes | str] = [b"a" * 100, bytes(6 * MiB), "é" * (3 * MiB), b"tail"]
    srv.send_binary(messages[0])
    srv.send_binary(bytes(3 * MiB), fin=False)
    srv.send_ping(b"x")
    srv.send_continuation(bytes(3 * MiB), fin=True)
    srv.send_text(("é" * (3 * MiB)).encode())
    srv.send_binary(b"tail")
    srv.send_close(1000, "bye")
    return messages, b"".join(srv.data_to_send())


@pytest.mark.parametrize("max_queue", [1, 16])
async def test_frames_in_the_same_read_as_the_101(max_queue: int) -> None:
    messages, data = server_frames()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        extension = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
        writer.write(await answer_upgrade(reader, extension) + data)  # one write
        await writer.drain()
        await reader.readexactly(2)  # the client's Close in answer to ours
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    got: list[bytes | str] = []
    async with tether.connect(
        f"ws://127.0.0.1:{port}/", max_size=16 * MiB, max_queue=max_queue
    ) as ws:
        for _ in messages:
            got.append(await asyncio.wait_for(ws.recv(), GUARD))
    server.close()
    assert got == messages
