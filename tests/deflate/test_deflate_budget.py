"""A bound on what one ``receive_data`` call may inflate (``inflate_budget``).

The asyncio layer sets it so that one read costs the event loop a bounded
amount of inflating; a frame that needs more is tried within what is left,
then put back whole, with the decompressor as it was, for a worker thread.
These tests check, on the sans-I/O core and the codec, that deferring a frame
changes nothing but where it is inflated: the events, the compression context
carried between messages, the size limit and what a frame observer sees.
"""

from __future__ import annotations

import random

import pytest

from tether.protocol import Connection, Side
from tether.protocol.exceptions import InflateDeferred, PayloadTooBig
from tether.protocol.extensions.permessage_deflate import MAX_INFLATE_RATIO, PerMessageDeflate
from tether.protocol.frames import Frame, Opcode

KiB, MiB = 1 << 10, 1 << 20


def words(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    vocabulary = [rng.randbytes(rng.randrange(2, 9)).hex() for _ in range(200)]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(vocabulary).encode() + b" "
    return bytes(out[:n])


def pair(max_size: int | None = None) -> tuple[Connection, Connection]:
    """A client and a server core sharing permessage-deflate with context takeover."""
    client = Connection(Side.CLIENT, extensions=[PerMessageDeflate()])
    server = Connection(Side.SERVER, max_size=max_size, extensions=[PerMessageDeflate()])
    return client, server


def wire(client: Connection, messages: list[bytes | str], *, fragments: int = 1) -> bytes:
    for message in messages:
        if fragments == 1:
            if isinstance(message, str):
                client.send_text(message.encode())
            else:
                client.send_binary(message)
        else:
            assert isinstance(message, bytes)
            size = -(-len(message) // fragments)
            parts = [message[i : i + size] for i in range(0, len(message), size)]
            client.send_binary(parts[0], fin=False)
            for i, part in enumerate(parts[1:], 2):
                client.send_continuation(part, fin=i == len(parts))
    return b"".join(client.data_to_send())


def drain(server: Connection) -> list[object]:
    """Go on without a budget (what the worker thread does) until nothing is paused."""
    events: list[object] = []
    server.inflate_budget = None
    while server.parse_paused:
        server.inflate_deferred = False
        server.receive_data(b"")
        events += server.events_received()
    return events


# One stream with context takeover: later messages refer back into earlier ones.
MESSAGES: list[bytes | str] = [
    words(3 * KiB, 1),
    bytes(3 * MiB),  # about 3 KiB on the wire, 3 MiB inflated
    words(3 * KiB, 1),  # the same words again: mostly back-references
    "é" * 5000,
    bytes(200 * KiB),
]


@pytest.mark.parametrize("budget", [0, 1, 64 * KiB, MiB, 3 * MiB, 100 * MiB])
@pytest.mark.parametrize("split", [None, 1000])
def test_deferring_changes_nothing_but_where(budget: int, split: int | None) -> None:
    reference_client, reference = pair()
    reference.receive_data(wire(reference_client, MESSAGES))
    assert reference.events_received() == MESSAGES

    client, server = pair()
    data = wire(client, MESSAGES)
    chunks = [data] if split is None else [data[i : i + split] for i in range(0, len(data), split)]
    events: list[object] = []
    deferred = 0
    for chunk in chunks:
        server.inflate_budget = budget
        server.receive_data(chunk)
        events += server.events_received()
        if server.inflate_deferred:
            deferred += 1
            assert server.parse_paused
            events += drain(server)
    assert events == MESSAGES
    assert not server.parse_paused and not server.inflate_deferred
    if budget >= 3 * MiB + 200 * KiB + 20 * KiB:
        assert deferred == 0
    if budget < 3 * MiB:
        assert deferred >= 1  # the 3 MiB message never fits


def test_budget_counts_what_frames_really_inflate_to() -> None:
    client, server = pair()
    small = [words(KiB, seed) for seed in range(40)]  # 40 KiB inflated in all
    server.inflate_budget = 64 * KiB  # each could inflate to 1 MiB: each is tried
    server.receive_data(wire(client, small))
    assert server.events_received() == small
    assert not server.inflate_deferred
    assert server.inflate_budget == 64 * KiB - sum(map(len, small))


def test_budget_runs_out_between_frames() -> None:
    client, server = pair()
    server.inflate_budget = 2 * MiB
    server.receive_data(wire(client, [bytes(MiB), bytes(MiB), bytes(MiB), b"tail" * 100]))
    assert server.events_received() == [bytes(MiB), bytes(MiB)]
    assert server.inflate_deferred and server.parse_paused
    assert drain(server) == [bytes(MiB), b"tail" * 100]


def test_a_deferred_fragment_keeps_the_message_state() -> None:
    client, server = pair()
    message = bytes(2 * MiB)
    data = wire(client, [message, b"next"], fragments=4)
    server.inflate_budget = MiB  # the first fragment fits, the second does not
    server.receive_data(data)
    assert server.events_received() == []
    assert server.inflate_deferred
    assert drain(server) == [message, b"next"]


def test_size_limit_still_wins() -> None:
    client, server = pair(max_size=MiB)
    server.inflate_budget = 4 * MiB
    server.receive_data(wire(client, [b"ok", bytes(2 * MiB)]))
    assert server.events_received() == [b"ok"]
    assert not server.inflate_deferred
    assert server.failure is not None and server.failure.code == 1009


def test_a_deferred_frame_is_observed_once() -> None:
    client, server = pair()
    seen: list[tuple[int, int]] = []
    server.frame_observer = lambda d, opcode, fin, rsv, length, masked, payload: seen.append(
        (opcode, length)
    )
    data = wire(client, [b"a" * 500, bytes(2 * MiB), b"b" * 500])
    server.inflate_budget = MiB
    server.receive_data(data)
    assert server.events_received() == [b"a" * 500]
    assert len(seen) == 2  # the deferred frame was seen once already
    assert drain(server) == [bytes(2 * MiB), b"b" * 500]
    assert len(seen) == 3


# --- The codec ---


def compressed(data: bytes, codec: PerMessageDeflate) -> Frame:
    return codec.encode(Frame(Opcode.BINARY, data), compress=True)


def test_codec_puts_its_state_back() -> None:
    sender, receiver = PerMessageDeflate(), PerMessageDeflate()
    first, big, again = words(4 * KiB, 2), bytes(MiB), words(4 * KiB, 2)
    frames = [compressed(m, sender) for m in (first, big, again)]
    assert receiver.decode(frames[0], max_output=MiB).data == first
    with pytest.raises(InflateDeferred):
        receiver.decode(frames[1], max_output=MiB - 1)
    with pytest.raises(InflateDeferred):  # again: nothing was consumed
        receiver.decode(frames[1], max_output=10)
    assert receiver.decode(frames[1], max_output=MiB).data == big
    assert receiver.decode(frames[2], max_output=0 + len(again)).data == again


def test_codec_defers_a_fresh_stream_and_a_first_fragment() -> None:
    sender, receiver = PerMessageDeflate(), PerMessageDeflate()
    parts = [
        sender.encode(Frame(Opcode.BINARY, bytes(MiB), fin=False), compress=True),
        sender.encode(Frame(Opcode.CONT, bytes(MiB), fin=True)),
    ]
    with pytest.raises(InflateDeferred):
        receiver.decode(parts[0], max_output=KiB)
    assert receiver._decoder is None and not receiver._decoding  # as before the frame
    assert receiver.decode(parts[0], max_output=MiB).data == bytes(MiB)
    with pytest.raises(InflateDeferred):
        receiver.decode(parts[1], max_output=KiB)
    assert receiver._decoding  # still inside the message
    assert receiver.decode(parts[1]).data == bytes(MiB)


@pytest.mark.parametrize(
    ("size", "max_size", "max_output", "tried"),
    [
        (1000, None, 1032 * 1000, False),  # at DEFLATE's best ratio it just fits
        (1000, None, 1032 * 1000 - 1, True),
        (100 * KiB, MiB, 4 * MiB, False),  # max_size caps the message below the bound
        (100 * KiB, 4 * MiB, 4 * MiB, True),  # one byte past max_size must be seen
        (10, None, 0, True),
    ],
)
def test_which_frames_are_tried(
    size: int, max_size: int | None, max_output: int, tried: bool
) -> None:
    from tether.protocol.extensions.permessage_deflate import _may_inflate_past

    assert MAX_INFLATE_RATIO == 1032
    assert _may_inflate_past(size, max_size, max_output) is tried


def test_codec_size_limit_before_budget() -> None:
    sender, receiver = PerMessageDeflate(), PerMessageDeflate()
    frame = compressed(bytes(MiB), sender)
    with pytest.raises(PayloadTooBig):
        receiver.decode(frame, max_size=KiB, max_output=MiB)
    sender, receiver = PerMessageDeflate(), PerMessageDeflate()
    frame = compressed(bytes(MiB), sender)
    with pytest.raises(InflateDeferred):
        receiver.decode(frame, max_size=2 * MiB, max_output=KiB)
