"""NatsBroker's confirmations: the server has a publish before its PING comes back.

nats-py's flush() writes its PING straight to the socket while publishes
wait in a pending buffer for its flusher task; a PONG may then confirm a
publish the server has not seen. NatsBroker pushes the buffer out first.
"""

from __future__ import annotations

from typing import Any

from backplane_services import require_nats, unique


async def test_a_round_trip_sends_earlier_publishes_before_its_ping() -> None:
    url = require_nats()
    import nats

    from tether.hub.brokers.nats import NatsBroker

    nc = await nats.connect(url)
    try:
        transport: Any = nc._transport
        wire: list[bytes] = []
        write, writelines = transport.write, transport.writelines

        def record(data: bytes) -> None:
            wire.append(bytes(data))
            write(data)

        def record_lines(datas: list[bytes]) -> None:
            wire.extend(bytes(d) for d in datas)
            writelines(datas)

        transport.write, transport.writelines = record, record_lines
        subject = unique("order").encode()
        await nc.publish(subject.decode(), b"payload")  # waits in nats-py's pending buffer
        await NatsBroker(url)._round_trip(nc)
        sent = b"".join(wire)
        assert b"PING" in sent
        assert sent.index(b"PUB " + subject) < sent.index(b"PING"), sent
    finally:
        await nc.close()
