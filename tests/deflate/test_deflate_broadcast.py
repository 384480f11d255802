"""``broadcast`` with permessage-deflate: compress once where the result can be shared.

Connections whose server side keeps no context (``server_no_context_takeover``)
and negotiated the same parameters get the very same compressed frame, made
once; connections with context takeover each get their own (their
compressor's history differs); connections without compression get the plain
frame. What is written to each socket is recorded, and every client, tether
or websockets, must decode the right messages.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from deflate_support import GUARD, KiB, inflate

import tether
from tether.protocol.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)


def payload_of(frame: bytes) -> bytes:
    """The payload of one unmasked frame."""
    n = frame[1] & 0x7F
    head = {126: 4, 127: 10}.get(n, 2)
    return frame[head:]


def shared_offer(**kwargs: Any) -> list[ClientPerMessageDeflateFactory]:
    return [ClientPerMessageDeflateFactory(server_no_context_takeover=True, **kwargs)]


async def test_broadcast_shares_compressed_frames_by_parameters(start_server, monkeypatch) -> None:
    from websockets.asyncio.client import connect as ws_connect
    from websockets.extensions.permessage_deflate import (
        ClientPerMessageDeflateFactory as WsClientFactory,
    )

    connected: list[tether.ServerConnection] = []
    everyone = asyncio.Event()
    clients_count = 9

    async def handler(ws: tether.ServerConnection) -> None:
        connected.append(ws)
        if len(connected) == clients_count:
            everyone.set()
        await ws.wait_closed()

    srv = await start_server(handler)
    url = srv.url
    clients: dict[str, Any] = {}
    # Shared, 12-bit server window (the server's default): three tether clients, one websockets.
    for name in ("shared-1", "shared-2", "shared-3"):
        clients[name] = await tether.connect(url, compression=None, extensions=shared_offer())
    ws_offer = WsClientFactory(server_no_context_takeover=True)
    clients["shared-ws"] = await ws_connect(url, compression=None, extensions=[ws_offer])
    # Shared among themselves, but a 10-bit server window: another compressed frame.
    for name in ("narrow-1", "narrow-2"):
        clients[name] = await tether.connect(
            url, compression=None, extensions=shared_offer(server_max_window_bits=10)
        )
    # Context takeover: each compressed by its own compressor.
    clients["own-1"] = await tether.connect(url)
    clients["own-ws"] = await ws_connect(url)
    # No compression: the plain frame.
    clients["plain"] = await tether.connect(url, compression=None)
    assert len(clients) == clients_count
    await asyncio.wait_for(everyone.wait(), GUARD)

    # Which server connection serves which client: match the client's local port.
    by_port = {conn.remote_address[1]: conn for conn in connected}
    server_side = {name: by_port[ws.local_address[1]] for name, ws in clients.items()}

    written: dict[str, list[bytes]] = {name: [] for name in clients}
    for name, conn in server_side.items():
        transport = conn.transport
        assert transport is not None
        real_write = transport.write

        def spy(data: bytes, name: str = name, real_write: Any = real_write) -> None:
            written[name].append(data)
            real_write(data)

        transport.write = spy  # type: ignore[method-assign]

    encoders: list[PerMessageDeflate] = []
    real_encode = PerMessageDeflate.encode

    def counting_encode(self: PerMessageDeflate, frame: Any, *, compress: Any = None) -> Any:
        encoders.append(self)
        return real_encode(self, frame, compress=compress)

    monkeypatch.setattr(PerMessageDeflate, "encode", counting_encode)

    # Random hex compresses about 2:1 and fits the 4 KiB window twice over: a compressor
    # that remembers the previous broadcast sends the second one in a few bytes.
    message = random.Random(6).randbytes(900).hex()
    rounds = [message, message, "short"]
    for i, text in enumerate(rounds):
        for frames in written.values():
            frames.clear()
        encoders.clear()
        tether.broadcast(connected, text)
        # One per shareable parameter set, one per connection with context takeover.
        assert len(encoders) == 4
        own_codecs = {name: conn.protocol.extensions for name, conn in server_side.items()}
        clones = [e for e in encoders if not any(e in exts for exts in own_codecs.values())]
        assert len(clones) == 2, "one compression per shareable parameter set"
        for name in ("own-1", "own-ws"):
            assert encoders.count(own_codecs[name][0]) == 1, name
        frame = {name: b"".join(chunks) for name, chunks in written.items()}
        shared = [written[n] for n in ("shared-1", "shared-2", "shared-3", "shared-ws")]
        narrow = [written[n] for n in ("narrow-1", "narrow-2")]
        for group in (shared, narrow):
            # One write of the same bytes object to each socket of the group.
            assert all(len(w) == 1 and w[0] is group[0][0] for w in group)
        payload = text.encode()
        if i < 2:
            assert frame["shared-1"] != frame["narrow-1"]
            for name in ("shared-1", "narrow-1", "own-1", "own-ws"):
                assert frame[name][0] & 0x40, f"{name}: RSV1 not set"
        header_plain = bytes((0x81, 126)) + len(payload).to_bytes(2, "big") if i < 2 else b""
        if i < 2:
            assert frame["plain"] == header_plain + payload
        else:
            assert frame["plain"] == bytes((0x81, len(payload))) + payload
            # Below compress_threshold nobody compresses, shared or not.
            assert all(f == frame["plain"] for f in frame.values())
        if i == 0:
            first = dict(frame)
            assert inflate(payload_of(frame["shared-1"]), 12) == payload
            assert inflate(payload_of(frame["narrow-1"]), 10) == payload
            assert len(frame["shared-1"]) < len(payload)
        elif i == 1:
            # No context: the same frame again. Context takeover: a back-reference.
            assert frame["shared-1"] == first["shared-1"]
            assert frame["narrow-1"] == first["narrow-1"]
            assert len(frame["own-1"]) < 40 < len(first["own-1"])
            assert len(frame["own-ws"]) < 40 < len(first["own-ws"])

    for name, ws in clients.items():
        for text in rounds:
            assert await asyncio.wait_for(ws.recv(), GUARD) == text, name
    for ws in clients.values():
        await ws.close()


async def test_broadcast_to_many_shared_connections_compresses_once(
    start_server, monkeypatch
) -> None:
    """50 connections with server_no_context_takeover: one compression, 50 identical writes."""
    connected: list[tether.ServerConnection] = []
    everyone = asyncio.Event()
    count = 50

    async def handler(ws: tether.ServerConnection) -> None:
        connected.append(ws)
        if len(connected) == count:
            everyone.set()
        await ws.wait_closed()

    srv = await start_server(handler)
    clients = [
        await tether.connect(srv.url, compression=None, extensions=shared_offer())
        for _ in range(count)
    ]
    await asyncio.wait_for(everyone.wait(), GUARD)
    writes: list[bytes] = []
    for conn in connected:
        transport = conn.transport
        assert transport is not None
        real_write = transport.write

        def spy(data: bytes, real_write: Any = real_write) -> None:
            writes.append(data)
            real_write(data)

        transport.write = spy  # type: ignore[method-assign]
    calls = 0
    real_encode = PerMessageDeflate.encode

    def counting_encode(self: PerMessageDeflate, frame: Any, *, compress: Any = None) -> Any:
        nonlocal calls
        calls += 1
        return real_encode(self, frame, compress=compress)

    monkeypatch.setattr(PerMessageDeflate, "encode", counting_encode)
    message = bytes(range(256)) * (64 * KiB // 256)
    tether.broadcast(connected, message)
    assert calls == 1
    assert len(writes) == count and all(w is writes[0] for w in writes)
    assert writes[0][0] == 0xC2  # FIN, RSV1, binary
    for ws in clients:
        assert await asyncio.wait_for(ws.recv(), GUARD) == message
    for ws in clients:
        await ws.close()
