"""Presence kept in this process's memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tether.hub.model import ClientInfo
from tether.hub.presence.base import Presence, PresenceStats


class MemoryPresence(Presence):
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # channel -> client id -> (info, expiry)
        self._channels: dict[str, dict[str, tuple[ClientInfo, float]]] = {}

    async def add(self, channel: str, info: ClientInfo, *, ttl: float) -> None:
        self._channels.setdefault(channel, {})[info.client] = (info, self.clock() + ttl)

    async def add_many(self, channel: str, infos: Sequence[ClientInfo], *, ttl: float) -> None:
        if not infos:
            return
        expiry = self.clock() + ttl
        clients = self._channels.setdefault(channel, {})
        for info in infos:
            clients[info.client] = (info, expiry)

    async def remove(self, channel: str, client_id: str) -> None:
        clients = self._channels.get(channel)
        if clients is not None:
            clients.pop(client_id, None)
            if not clients:
                del self._channels[channel]

    def _live(self, channel: str) -> dict[str, ClientInfo]:
        clients = self._channels.get(channel)
        if not clients:
            return {}
        now = self.clock()
        return {cid: info for cid, (info, expiry) in clients.items() if expiry > now}

    async def get(self, channel: str) -> dict[str, ClientInfo]:
        return self._live(channel)

    async def stats(self, channel: str) -> PresenceStats:
        live = self._live(channel)
        return PresenceStats(len(live), len({info.user for info in live.values()}))

    async def expire(self) -> None:
        now = self.clock()
        for channel, clients in list(self._channels.items()):
            for cid in [cid for cid, (_, expiry) in clients.items() if expiry <= now]:
                del clients[cid]
            if not clients:
                del self._channels[channel]
