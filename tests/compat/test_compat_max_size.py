"""``max_size`` bounds the inflated message, as documented, however the data compresses.

A compressed message of random bytes is a little larger on the wire than
inflated (about 1,051,000 bytes for 1 MiB); at the default ``max_size`` of
1 MiB it must pass, in both roles, against websockets and tether peers.
"""

from __future__ import annotations

import os

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosedError as WsClosedError

import tether
from tether.protocol import ClientProtocol, parse_uri
from tether.protocol.extensions.permessage_deflate import PerMessageDeflate

MIB = 2**20


async def _size_echo(ws) -> None:
    async for message in ws:
        await ws.send(str(len(message)))


async def test_compressed_random_mebibyte_reaches_a_tether_server(start_server) -> None:
    srv = await start_server(_size_echo)  # max_size defaults to 1 MiB
    data = os.urandom(MIB)
    async with ws_connect(srv.url, max_size=None) as ws:  # websockets compresses by default
        assert ws.protocol.extensions, "permessage-deflate was negotiated"
        await ws.send(data)
        assert await ws.recv() == str(MIB)
        await ws.send(data + b"!")  # one byte over, once inflated: refused
        with pytest.raises(WsClosedError) as caught:
            await ws.recv()
    assert caught.value.rcvd.code == 1009


async def test_compressed_random_mebibyte_reaches_a_tether_client(
    websockets_server, start_server
) -> None:
    data = os.urandom(MIB)

    async def send_it(ws):
        await ws.send(data)
        await ws.wait_closed()

    for url in [await websockets_server(send_it, max_size=None), (await start_server(send_it)).url]:
        async with tether.connect(url) as ws:
            assert ws.protocol.extensions
            message = await ws.recv()
            assert message == data


def test_wire_size_of_a_compressed_frame_is_still_bounded() -> None:
    """A compressed frame far above what max_size could inflate from is refused unread."""
    client = ClientProtocol(parse_uri("ws://x/"), max_size=1000)
    client.state = tether.State.OPEN
    client.extensions = [PerMessageDeflate()]
    # Declares 1,200 bytes of compressed payload: more than 1000 can grow to.
    header = bytes([0xC2, 126]) + (1200).to_bytes(2, "big")
    client.receive_data(header)
    assert client.close_sent is not None and client.close_sent.code == 1009
    assert "compressed frame of 1200 bytes" in client.close_sent.reason
