"""The broker envelope: round trips, the server-side template, and garbage refused clearly."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import pytest
from backplane_services import delete_prefix, require_redis, unique
from hub_support import WireClient, config, http
from hypothesis import given
from hypothesis import strategies as st

from tether.hub import HubServer
from tether.hub.backplane import pub_position
from tether.hub.brokers.backplane import BackplaneBroker
from tether.hub.brokers.redis import RedisBroker
from tether.hub.control import Disconnect, Hello, SessionsReply
from tether.hub.envelope import (
    RESYNC,
    Control,
    Envelope,
    Join,
    Leave,
    MalformedEnvelope,
    PresenceChanges,
    Pub,
    PubDraft,
    decode,
    encode,
)
from tether.hub.model import ClientInfo, StreamPosition
from tether.hub.wire import pub_push

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]
ALICE = ClientInfo("c1", "alice", {"name": "Alice ✓"})
BOB = ClientInfo("c2", "bob")

EXAMPLES: list[Envelope] = [
    Pub(b'{"push":"pub","channel":"a","data":1}'),
    Pub(b"{}", StreamPosition(1, "Ab-_9")),
    Pub(b"{}", StreamPosition(2**53 - 1, "e"), reorder=True),
    Pub(b"\n\x00 bytes after the header are opaque \n"),
    PresenceChanges((Join(ALICE), Leave(BOB), Leave(ALICE))),
    RESYNC,
    Control(Disconnect("alice", 4005, "bye")),
    Control(Hello("node-1", answer=True)),
    Control(SessionsReply("r", "n1", "n2", [{"client": "c1", "user": "u"}])),
]


@pytest.mark.parametrize("envelope", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_kind_round_trips(envelope: Envelope) -> None:
    assert decode(encode(envelope)) == envelope


def test_a_draft_makes_the_same_push_as_the_wire_module_and_a_template_that_completes_to_it() -> (
    None
):
    draft = PubDraft("chat:1", '{"text":"hé"}', ALICE)
    position = StreamPosition(42, "xYz_-1")
    pub = draft.at(position, reorder=True)
    assert pub.push == pub_push("chat:1", '{"text":"hé"}', position, ALICE).encode()
    assert json.loads(pub.push)["offset"] == 42
    # What the Redis script publishes is the envelope a receiver decodes (without reorder:
    # Redis itself keeps the order of one script's publishes).
    filled = draft.template().fill(position)
    assert decode(filled) == Pub(pub.push, position)
    assert draft.at(None) == Pub(pub_push("chat:1", '{"text":"hé"}', None, ALICE).encode())
    assert draft.at(None, reorder=True).reorder is False  # nothing to order without offsets


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "no header line"),
        (b'{"push":"pub","channel":"a"}', "no header line"),
        (b"x" * 200 + b"\n", "no header line"),
        (b"t2 pub\n{}", "not a t1 envelope"),
        (b"\x00tether:resync\n", "not a t1 envelope"),
        (b"t1 launch\n", "unknown envelope kind"),
        (b"t1\n", "unknown envelope kind"),
        (b"t1 pub 1\n{}", "a pub header is"),
        (b"t1 pub 1 e sideways\n{}", "a pub header is"),
        (b"t1 pub -1 e\n{}", "bad offset"),
        (b"t1 pub 0 e\n{}", "bad offset"),
        (b"t1 pub 99999999999999999999 e\n{}", "bad offset"),
        (b"t1 pub 1 \xff\xfe\n{}", "epoch must be"),
        (b"t1 resync now\n", "unexpected header fields"),
        (b"t1 presence\n[]", "non-empty list"),
        (b't1 presence\n[["x", {}]]', "presence change is"),
        (b't1 presence\n[["j", {"client": 1, "user": "u"}]]', "string client and user"),
        (b"t1 presence\nnot json", "not JSON"),
        (b"t1 control\n[]", "JSON object"),
        (b't1 control\n{"op": "launch"}', "unknown control op"),
        (b't1 control\n{"op": "hello"}', "bad hello message"),
        (b"t1 control\n" + b"[" * 10_000, "not JSON"),
    ],
)
def test_malformed_input_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MalformedEnvelope, match=reason):
        decode(data)


@given(st.binary(max_size=300))
def test_decode_either_returns_an_envelope_or_says_why(data: bytes) -> None:
    try:
        envelope = decode(data)
    except MalformedEnvelope as exc:
        assert str(exc)
    else:
        assert decode(encode(envelope)) == envelope


def test_an_epoch_that_cannot_travel_is_refused_at_the_sender() -> None:
    with pytest.raises(MalformedEnvelope, match="epoch"):
        encode(Pub(b"{}", StreamPosition(1, "has space")))


class _Silent(BackplaneBroker):
    """Only the receiving half: ``_deliver`` is fed directly."""

    async def _open(self) -> None: ...
    async def _serve(self) -> str:
        return ""

    async def _disconnect(self) -> None: ...
    async def _subscribe(self, channel: str) -> None: ...
    async def _unsubscribe(self, channel: str) -> None: ...
    async def _publish(self, channel: str, data: bytes) -> None: ...
    async def sync(self) -> None: ...


async def test_a_broker_drops_garbage_with_one_log_line_and_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = _Silent()
    got: list[Envelope] = []
    await broker.start(lambda channel, envelope: got.append(envelope))
    await broker.subscribe("ch")
    try:
        with caplog.at_level(logging.WARNING, "tether.hub.backplane"):
            for _ in range(3):
                broker._deliver("ch", b'{"push":"pub","data":"from an old node"}')
            broker._deliver("ch", encode(Pub(b"{}", StreamPosition(1, "e"))))
        assert got == [Pub(b"{}", StreamPosition(1, "e"))]
        assert broker.malformed == 3
        warnings = [r for r in caplog.records if "malformed" in r.getMessage()]
        assert len(warnings) == 1 and "no header line" in warnings[0].getMessage()
        assert pub_position(broker.last_publication("ch")) == StreamPosition(1, "e")
    finally:
        await broker.close()


async def test_a_stray_publish_on_a_hub_channel_reaches_no_client_and_is_counted(
    start_hub: StartHub, wire: Wire
) -> None:
    import redis.asyncio

    url, prefix = require_redis(), unique("env")
    try:
        hub = await start_hub(config=config(broker=url, backplane_prefix=prefix))
        broker = hub.node.broker
        assert isinstance(broker, RedisBroker)
        client = await wire(hub.websocket_url)
        await client.call("subscribe", {"channel": "room"})
        stray = redis.asyncio.Redis.from_url(url)
        try:
            # What an older node, or someone with redis-cli, might send.
            await stray.publish(broker.prefix + "room", b'{"push":"pub","channel":"room"}')
        finally:
            await stray.aclose()
        await broker.sync()  # the stray message has been handled
        await hub.node.publish("room", "real")
        assert (await client.push("pub"))["data"] == "real"  # the stray one never came
        metrics = (await http(hub.port, "GET", "/metrics"))[2].decode()
        assert "tether_backplane_malformed 1" in metrics
    finally:
        await delete_prefix(url, prefix)
