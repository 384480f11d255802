"""The app-side API over a user's sessions, on every node: ``node.users``.

Application code (a FastAPI route, a Django view, a hook) acts on users, not
connections; a user's sessions may sit on any node. Each call here is one
control message (:mod:`tether.hub.control`) through the broker, acted on by
every node for its own sessions:

    await node.users.subscribe("alice", "orders:alice")   # her open tabs and phones
    await node.users.unsubscribe("alice", "orders:alice")
    await node.users.disconnect("alice")
    sessions = await node.users.sessions("alice")         # [SessionInfo, ...]

Listing asks every node and waits for the answers of the nodes known to be
alive (each node says hello at start and every housekeeping round), or for
``timeout`` at most.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.control import (
    CONTROL_CHANNEL,
    ControlMessage,
    Disconnect,
    Goodbye,
    Hello,
    SessionsQuery,
    SessionsReply,
    Subscribe,
    Unsubscribe,
)
from tether.hub.envelope import Control
from tether.hub.errors import ErrorCode, HubCloseCode, HubError
from tether.hub.hooks import SessionInfo

if TYPE_CHECKING:
    from tether.hub.node import Node

logger = logging.getLogger("tether.hub")

DEFAULT_SESSIONS_TIMEOUT = 2.0
UNSUBSCRIBED_BY_SERVER = 2000


@dataclass(eq=False)
class _Query:
    expected: set[str]
    sessions: list[SessionInfo] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Users:
    """Subscribe, unsubscribe, disconnect and list a user's sessions on every node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._queries: dict[str, _Query] = {}
        self._peers: dict[str, float] = {}
        """Other nodes heard from, and when (monotonic seconds)."""

    # ------------------------------------------------------------ app API

    async def subscribe(self, user: str, channel: str) -> None:
        """Subscribe every session of ``user`` to ``channel`` (a ``subscribe`` push each).

        No subscribe hook runs and no token grant is checked: the app decided.
        :class:`HubError` for a bad channel name or a broker that is down.
        """
        self.node.options(channel)
        await self.node.ensure_started()  # app code may call before any request
        await self._send(Subscribe(user, channel))

    async def unsubscribe(
        self,
        user: str,
        channel: str,
        *,
        code: int = UNSUBSCRIBED_BY_SERVER,
        reason: str = "unsubscribed by the server",
    ) -> None:
        """End ``user``'s subscriptions to ``channel`` (an ``unsubscribe`` push each).

        ``code`` 2000-2099 lets clients subscribe again, 2100-2199 tells them not to.
        """
        if not 2000 <= code <= 2199:
            raise ValueError("unsubscribe codes are 2000-2199 (docs/wire-protocol.md)")
        await self.node.ensure_started()  # app code may call before any request
        await self._send(Unsubscribe(user, channel, code, reason))

    async def disconnect(
        self, user: str, *, code: int = HubCloseCode.DISCONNECTED, reason: str = "disconnected"
    ) -> None:
        """Disconnect every session of ``user`` (close code 4005: told not to reconnect)."""
        await self.node.ensure_started()  # app code may call before any request
        await self._send(Disconnect(user, int(code), reason))

    async def sessions(
        self, user: str, *, timeout: float = DEFAULT_SESSIONS_TIMEOUT
    ) -> list[SessionInfo]:
        """The sessions of ``user`` on every node that answers within ``timeout`` seconds."""
        await self.node.ensure_started()
        request = uuid.uuid4().hex
        query = _Query(expected={self.node.id, *self.live_peers()})
        self._queries[request] = query
        try:
            await self._send(SessionsQuery(user, request, self.node.id))
            try:
                await asyncio.wait_for(query.done.wait(), timeout)
            except asyncio.TimeoutError:
                logger.info(
                    "sessions of %r: no answer from %s within %s s",
                    user,
                    ", ".join(sorted(query.expected)),
                    timeout,
                )
        finally:
            self._queries.pop(request, None)
        return sorted(query.sessions, key=lambda s: (s.node, s.client))

    def local(self, user: str) -> list[SessionInfo]:
        """``user``'s sessions on this node only (no broker round trip)."""
        return [session.info() for session in self.node.local_sessions(user)]

    # ----------------------------------------------------------- liveness

    def live_peers(self) -> list[str]:
        """Other nodes heard from within the presence TTL."""
        horizon = time.monotonic() - self.node.config.presence_ttl
        for peer, seen in list(self._peers.items()):
            if seen < horizon:
                del self._peers[peer]
        return list(self._peers)

    def forget(self, peer: str) -> None:
        """Count ``peer`` as gone until it says hello again (it stopped answering)."""
        self._peers.pop(peer, None)

    async def hello(self) -> None:
        """Tell the other nodes this one is alive (at start and every housekeeping round)."""
        await self._send(Hello(self.node.id))

    async def goodbye(self) -> None:
        await self._send(Goodbye(self.node.id))

    # ----------------------------------------------------------- handling

    async def _send(self, message: ControlMessage) -> None:
        try:
            await self.node.broker.publish(CONTROL_CHANNEL, Control(message))
        except BrokerUnavailable as exc:
            raise HubError(ErrorCode.BROKER_UNAVAILABLE, str(exc) or None) from None

    def on_control(self, message: ControlMessage) -> None:
        """A control message from the broker (sent by any node, this one too)."""
        node = self.node
        if isinstance(message, Disconnect):
            for session in node.local_sessions(message.user):
                session.disconnect(int(message.code), str(message.reason), reconnect=False)
        elif isinstance(message, Subscribe):
            for session in node.local_sessions(message.user):
                self._spawn(session.subscribe_server_side(message.channel), "subscribe")
        elif isinstance(message, Unsubscribe):
            for session in node.local_sessions(message.user):
                coro = session.unsubscribe_server_side(
                    message.channel, int(message.code), str(message.reason)
                )
                self._spawn(coro, "unsubscribe")
        elif isinstance(message, SessionsQuery):
            reply = SessionsReply(
                message.request,
                message.origin,
                node.id,
                [info.to_json() for info in self.local(message.user)],
            )
            self._spawn(self._send(reply), "sessions reply")
        elif isinstance(message, SessionsReply):
            self._on_reply(message)
        elif isinstance(message, Hello):
            self._on_hello(message)
        elif isinstance(message, Goodbye):
            self._peers.pop(message.node, None)
            for query in self._queries.values():
                self._answered(query, message.node)

    def _on_reply(self, message: SessionsReply) -> None:
        query = self._queries.get(message.request)
        if message.origin != self.node.id or query is None:
            return
        query.sessions.extend(SessionInfo.from_json(s) for s in message.sessions)
        self._answered(query, message.node)

    def _on_hello(self, message: Hello) -> None:
        if message.node == self.node.id:
            return
        new = message.node not in self._peers
        self._peers[message.node] = time.monotonic()
        if new and not message.answer:
            # A newcomer: answer at once, so it knows this node before its first query.
            self._spawn(self._send(Hello(self.node.id, answer=True)), "hello")

    @staticmethod
    def _answered(query: _Query, node: str) -> None:
        query.expected.discard(node)
        if not query.expected:
            query.done.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception as exc:
                logger.warning("control %s failed: %s", what, exc)

        self.node.spawn(run())
