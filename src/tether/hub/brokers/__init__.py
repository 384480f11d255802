"""Brokers: how publications travel between the nodes of a hub."""

from tether.hub.brokers.base import Broker, BrokerHandler, BrokerUnavailable
from tether.hub.brokers.memory import MemoryBroker, MemoryBus

__all__ = ["Broker", "BrokerHandler", "BrokerUnavailable", "MemoryBroker", "MemoryBus"]
