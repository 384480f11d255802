"""A publication that reaches a node after its subscribers read it from history.

With a backplane, a publication is written to the shared history before the
broker carries it to the other nodes. A client subscribing (or recovering) on
another node in between reads it from history in its subscribe reply, then
gets the broker's copy: found by bench/soak.py as duplicates after faults.
The session drops the copy; the first later publication ends the check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hub_support import WireClient

from tether.hub import HubServer
from tether.hub.model import StreamPosition
from tether.hub.wire import pub_push

CHANNEL = "chat:late"


async def test_a_late_copy_of_a_publication_in_the_reply_is_dropped(
    start_hub: Callable[..., Awaitable[HubServer]],
    wire: Callable[..., Awaitable[WireClient]],
) -> None:
    hub = await start_hub()
    node = hub.node
    await node.publish(CHANNEL, "one")
    second = (await node.publish(CHANNEL, "two")).position
    assert second is not None
    client = await wire(hub.websocket_url)
    result = await client.call("subscribe", {"channel": CHANNEL})
    assert (result["offset"], result["epoch"]) == (2, second.epoch)
    # The broker's copies of publications 1 and 2 arrive only now (from "another node").
    for offset, data in ((1, '"one"'), (2, '"two"')):
        position = StreamPosition(offset, second.epoch)
        late = pub_push(CHANNEL, data, position)
        node._fan_out(CHANNEL, late.encode(), position)
    await node.publish(CHANNEL, "three")
    await node.publish(CHANNEL, "four")
    pubs = [await client.push("pub") for _ in range(2)]
    assert [(p["offset"], p["data"]) for p in pubs] == [(3, "three"), (4, "four")]
    assert client.pushes.empty()
