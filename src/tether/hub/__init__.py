"""tether's realtime hub: channels, presence, history with recovery, auth, HTTP API.

Server side::

    node = Node(HubConfig(jwt_secret="..."))
    async with serve_hub(node, "127.0.0.1", 8000) as hub:
        await node.publish("chat:lobby", {"text": "hello"})

Client side: :class:`tether.hub.Client`. The protocol between them is
docs/wire-protocol.md; the concepts and options are docs/hub.md.
"""

from tether.hub.auth import Action, Authorizer, Credentials, TokenVerifier
from tether.hub.brokers import Broker, BrokerUnavailable, MemoryBroker, MemoryBus
from tether.hub.client import Client, ClientState, HubClientError, Subscription
from tether.hub.config import ChannelOptions, ConfigError, HubConfig, Limits, load_config
from tether.hub.errors import ErrorCode, HubCloseCode, HubError
from tether.hub.history import History, MemoryHistory
from tether.hub.hooks import Hooks, Refuse
from tether.hub.model import ClientInfo, Publication, StreamPosition
from tether.hub.node import HistoryResult, Node, PublishResult
from tether.hub.presence import MemoryPresence, Presence, PresenceStats
from tether.hub.server import HubServer, serve_hub

__all__ = [
    "Action",
    "Authorizer",
    "Broker",
    "BrokerUnavailable",
    "ChannelOptions",
    "Client",
    "ClientInfo",
    "ClientState",
    "ConfigError",
    "Credentials",
    "ErrorCode",
    "History",
    "HistoryResult",
    "Hooks",
    "HubClientError",
    "HubCloseCode",
    "HubConfig",
    "HubError",
    "HubServer",
    "Limits",
    "MemoryBroker",
    "MemoryBus",
    "MemoryHistory",
    "MemoryPresence",
    "Node",
    "Presence",
    "PresenceStats",
    "Publication",
    "PublishResult",
    "Refuse",
    "StreamPosition",
    "Subscription",
    "TokenVerifier",
    "load_config",
    "serve_hub",
]
