"""History: recent publications per channel, for recovery and the ``history`` command."""

from tether.hub.history.base import AddResult, History, Recovery
from tether.hub.history.memory import MemoryHistory

__all__ = ["AddResult", "History", "MemoryHistory", "Recovery"]
