"""The Python hub client over the HTTP fallbacks: it falls back by itself when the
WebSocket upgrade is refused, and on every transport a network cut loses and doubles
nothing (docs/wire-protocol.md, "HTTP fallbacks")."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hub_support import GUARD, config

from tether.hub import Client, ClientState, HubServer
from tether.hub.client import PublicationEvent, StateEvent

StartHub = Callable[..., Awaitable[HubServer]]


class CutProxy:
    """A TCP proxy whose connections can all be cut at once, as a network failure would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.up = True
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def cut(self) -> None:
        self.up = False
        for writer in self.writers:
            writer.transport.abort()

    @property
    def ws_url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/connection/websocket"


@contextlib.asynccontextmanager
async def cut_proxy(hub: HubServer) -> AsyncIterator[CutProxy]:
    proxy = CutProxy(int(hub.url.rsplit(":", 1)[1].strip("/")))
    proxy.server = await asyncio.start_server(proxy._handle, "127.0.0.1", 0)
    try:
        yield proxy
    finally:
        proxy.cut()
        proxy.server.close()


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), GUARD)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.mark.parametrize("transport", ["http_stream", "sse", "long_poll"])
async def test_chat_across_a_network_cut(start_hub: StartHub, transport: str) -> None:
    hub = await start_hub()
    channel = f"chat:{uuid.uuid4().hex[:8]}"
    got_a: list[str] = []
    got_b: list[str] = []
    states: list[StateEvent] = []
    recovered: list[bool] = []
    async with cut_proxy(hub) as proxy:
        a = Client(
            proxy.ws_url,
            transports=[transport],
            name="alice",
            min_backoff=0.01,
            max_backoff=0.1,
            on_state=states.append,
        )
        b = Client(hub.websocket_url, transports=["long_poll"], name="bob")

        def text(into: list[str]) -> Callable[[PublicationEvent], None]:
            return lambda pub: into.append(pub.data["text"])  # type: ignore[index]

        try:
            await asyncio.wait_for(a.connect(), GUARD)
            await asyncio.wait_for(b.connect(), GUARD)
            assert (a.transport, b.transport) == (transport, "long_poll")
            await a.subscribe(
                channel,
                on_publication=text(got_a),
                on_subscribed=lambda e: recovered.append(e.recovered),
            )
            await b.subscribe(channel, on_publication=text(got_b))
            await a.publish(channel, {"text": "a1"})
            await b.publish(channel, {"text": "b1"})
            await wait_for(lambda: len(got_a) == 2 and len(got_b) == 2, "a1 and b1")
            assert len(await a.presence(channel)) == 2

            proxy.cut()
            await wait_for(lambda: a.state is not ClientState.CONNECTED, "A to see the cut")
            pending = asyncio.ensure_future(a.publish(channel, {"text": "a2"}))
            await b.publish(channel, {"text": "b2"})
            await b.publish(channel, {"text": "b3"})
            proxy.up = True
            await asyncio.wait_for(pending, GUARD)
            await wait_for(lambda: len(got_a) >= 5 and len(got_b) >= 5, "what crossed the cut")
            await b.publish(channel, {"text": "b4"})
            await wait_for(lambda: len(got_a) >= 6 and len(got_b) >= 6, "b4")
        finally:
            await a.close()
            await b.close()
    for got in (got_a, got_b):
        assert got[:2] == ["a1", "b1"] and got[5:] == ["b4"], got
        assert sorted(got[2:5]) == ["a2", "b2", "b3"], got
    assert [t for t in got_a if t.startswith("b")] == ["b1", "b2", "b3", "b4"]
    assert recovered == [False, True]  # the resubscribe recovered what was missed
    connected = [s.transport for s in states if s.state is ClientState.CONNECTED]
    assert connected == [transport, transport]


async def test_falls_back_when_the_upgrade_is_refused(start_hub: StartHub) -> None:
    # The hub's WebSocket lives elsewhere, so the upgrade to the client's URL gets a 404,
    # as behind a proxy that drops `Upgrade`: the client goes on to HTTP streaming.
    hub = await start_hub(config=config(websocket_path="/elsewhere"))
    url = hub.url.replace("http", "ws", 1).rstrip("/") + "/connection/websocket"
    states: list[StateEvent] = []
    client = Client(url, on_state=states.append, min_backoff=0.01, max_backoff=0.05)
    try:
        await asyncio.wait_for(client.connect(), GUARD)
        assert client.transport == "http_stream"
        assert (await client.presence_stats("chat:x")) == {"num_clients": 0, "num_users": 0}
    finally:
        await client.close()
    assert [s.transport for s in states if s.state is ClientState.CONNECTED] == ["http_stream"]


async def test_a_refusal_on_the_last_transport_stops(start_hub: StartHub) -> None:
    hub = await start_hub(config=config(websocket_path="/elsewhere"))
    url = hub.url.replace("http", "ws", 1).rstrip("/") + "/connection/websocket"
    client = Client(url, transports=["websocket"], min_backoff=0.01, max_backoff=0.05)
    with pytest.raises(ConnectionError, match="404"):
        await asyncio.wait_for(client.connect(), GUARD)
    assert client.state is ClientState.CLOSED


def test_transports_are_checked() -> None:
    with pytest.raises(ValueError, match="carrier_pigeon"):
        Client("ws://127.0.0.1:1/connection/websocket", transports=["carrier_pigeon"])
    with pytest.raises(ValueError, match="transports"):
        Client("ws://127.0.0.1:1/connection/websocket", transports=[])
