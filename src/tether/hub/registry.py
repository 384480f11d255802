"""Which local sessions are subscribed to which channel."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

S = TypeVar("S", bound=Hashable)


class ChannelRegistry(Generic[S]):
    """channel -> the sessions of this node subscribed to it."""

    def __init__(self) -> None:
        self._channels: dict[str, set[S]] = {}
        self.subscriptions = 0

    def add(self, channel: str, session: S) -> bool:
        """Subscribe ``session``; True if it is the channel's first on this node."""
        sessions = self._channels.get(channel)
        first = sessions is None
        if sessions is None:
            sessions = self._channels[channel] = set()
        if session not in sessions:
            sessions.add(session)
            self.subscriptions += 1
        return first

    def remove(self, channel: str, session: S) -> bool:
        """Unsubscribe ``session``; True if the channel has no session left on this node."""
        sessions = self._channels.get(channel)
        if sessions is None or session not in sessions:
            return False
        sessions.remove(session)
        self.subscriptions -= 1
        if sessions:
            return False
        del self._channels[channel]
        return True

    def sessions(self, channel: str) -> set[S]:
        return self._channels.get(channel, set())

    def __contains__(self, channel: object) -> bool:
        return channel in self._channels

    def __len__(self) -> int:
        return len(self._channels)
