"""Presence: who is in a channel."""

from tether.hub.presence.base import Presence, PresenceStats
from tether.hub.presence.memory import MemoryPresence

__all__ = ["MemoryPresence", "Presence", "PresenceStats"]
