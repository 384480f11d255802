"""The Node: composition root of a hub process.

A node owns the sessions connected to this process, the registry of which
local session is subscribed to which channel, and the Broker, History and
Presence it was given. Publications go through the broker even on a single
node, so one code path serves one process and many.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.hub.auth import Authorizer, TokenVerifier
from tether.hub.backends import backends_for
from tether.hub.backplane import BackplaneWatcher
from tether.hub.brokers.base import Broker, BrokerUnavailable
from tether.hub.config import ChannelOptions, HubConfig
from tether.hub.errors import ErrorCode, HubCloseCode, HubError
from tether.hub.history.base import History
from tether.hub.metrics import Metrics
from tether.hub.model import JSON, RESERVED_PREFIX, ClientInfo, Publication, StreamPosition
from tether.hub.presence.base import Presence, PresenceStats
from tether.hub.registry import ChannelRegistry
from tether.hub.transport import write_many
from tether.hub.wire import dumps, join_push, leave_push, loads, pub_push

if TYPE_CHECKING:
    from tether.hub.session import Session

logger = logging.getLogger("tether.hub")

# Node-to-node messages (e.g. "disconnect this user everywhere") travel on this
# broker channel (RESERVED_PREFIX: see tether.hub.model).
CONTROL_CHANNEL = RESERVED_PREFIX + "control"


@dataclass(frozen=True, slots=True)
class PublishResult:
    position: StreamPosition | None
    """Offset and epoch, when the channel keeps history."""
    duplicate: bool = False
    """An idempotency key seen before: this is the original publication's position."""

    def to_json(self) -> dict[str, JSON]:
        return self.position.to_json() if self.position is not None else {}


@dataclass(frozen=True, slots=True)
class HistoryResult:
    publications: list[Publication]
    position: StreamPosition

    def to_json(self) -> dict[str, JSON]:
        return {
            "publications": [p.to_json() for p in self.publications],
            "offset": self.position.offset,
            "epoch": self.position.epoch,
        }


class Node:
    def __init__(
        self,
        config: HubConfig | None = None,
        *,
        broker: Broker | None = None,
        history: History | None = None,
        presence: Presence | None = None,
        authorize: Authorizer | None = None,
    ) -> None:
        self.config = config if config is not None else HubConfig()
        # Those not given come from the config's URLs (memory by default).
        self.broker, self.history_store, self.presence_store = backends_for(
            self.config, broker, history, presence
        )
        self.authorize = authorize
        self.verifier = TokenVerifier(self.config.jwt_secret, self.config.jwt_public_key)
        self.id = uuid.uuid4().hex
        self.metrics = Metrics()
        self.registry: ChannelRegistry[Session] = ChannelRegistry()
        self.sessions: dict[str, Session] = {}
        self._users: dict[str, set[Session]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._housekeeper: asyncio.Task[None] | None = None
        self._started = False
        self.backplane: BackplaneWatcher | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._started:
            return
        # Resets the sessions that missed publications while a networked broker was down.
        self.backplane = BackplaneWatcher.attach(self)
        await self.broker.start(self._on_broker_message)
        await self.broker.subscribe(CONTROL_CHANNEL)
        self._housekeeper = asyncio.get_running_loop().create_task(self._housekeeping())
        self._started = True

    async def shutdown(self, code: int = 1001, reason: str = "server going away") -> None:
        """Tell every client to reconnect elsewhere (``code`` 1001 or 1012) and close them."""
        for session in list(self.sessions.values()):
            session.disconnect(code, reason, reconnect=True)
        await self.drain()

    async def drain(self) -> None:
        """Wait for the background work started so far (closing sessions, mostly)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.shutdown()
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
            self._housekeeper = None
        if self.backplane is not None:
            self.backplane.detach()
            self.backplane = None
        if self._started:
            await self.broker.close()
            await self.history_store.close()
            await self.presence_store.close()
        self._started = False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _housekeeping(self) -> None:
        # Presence entries carry a TTL so a dead node's clients vanish; live
        # ones are refreshed three times per TTL.
        interval = max(0.05, self.config.presence_ttl / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_presence()
                await self.history_store.expire()
                await self.presence_store.expire()
            except Exception:
                logger.exception("housekeeping failed")

    async def refresh_presence(self) -> None:
        """Refresh the presence of every live session: one backend call per channel."""
        by_channel: dict[str, list[ClientInfo]] = {}
        for session in list(self.sessions.values()):
            info = session.client_info
            if info is None:
                continue
            for channel in session.channels:
                by_channel.setdefault(channel, []).append(info)
        for channel, infos in by_channel.items():
            if self.options(channel).presence:
                await self.presence_store.add_many(channel, infos, ttl=self.config.presence_ttl)

    # ------------------------------------------------------------- sessions

    def add_session(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.metrics.connections_total += 1

    def set_user(self, session: Session) -> None:
        """Index a connected session by its user, for :meth:`disconnect`."""
        self._users.setdefault(session.user, set()).add(session)

    async def remove_session(self, session: Session, close_code: int) -> None:
        """Forget a session that ended: its subscriptions, presence and user index."""
        if self.sessions.pop(session.id, None) is None:
            return
        self.metrics.close_codes[close_code] += 1
        users = self._users.get(session.user)
        if users is not None:
            users.discard(session)
            if not users:
                del self._users[session.user]
        for channel in session.subscriptions():
            await self.remove_subscription(session, channel)

    # ------------------------------------------------------------- channels

    def options(self, channel: str) -> ChannelOptions:
        """The channel's options; :class:`HubError` for a bad or unknown channel."""
        limit = self.config.limits.max_channel_length
        if not channel:
            raise HubError(ErrorCode.BAD_REQUEST, "empty channel name")
        if len(channel) > limit:
            raise HubError(ErrorCode.LIMIT_EXCEEDED, f"channel name longer than {limit}")
        if channel.startswith(RESERVED_PREFIX) or not channel.isprintable():
            raise HubError(ErrorCode.BAD_REQUEST, "invalid channel name")
        options = self.config.channel_options(channel)
        if options is None:
            raise HubError(ErrorCode.UNKNOWN_NAMESPACE)
        return options

    async def add_subscription(self, session: Session, channel: str) -> None:
        self.registry.add(channel, session)
        try:
            # For every session, not only the channel's first here: a networked
            # broker's subscribe may still be in flight for another session,
            # and this one must not read history before it is confirmed.
            await self.broker.subscribe(channel)
        except BaseException:
            self.registry.remove(channel, session)
            raise

    async def remove_subscription(self, session: Session, channel: str) -> None:
        """Unsubscribe a session: registry, broker, and presence with a leave push."""
        joined = channel in session.channels
        session.channels.discard(channel)
        if self.registry.remove(channel, session):
            with contextlib.suppress(Exception):
                await self.broker.unsubscribe(channel)
        info = session.client_info
        if joined and info is not None and self.options(channel).presence:
            try:
                await self.presence_store.remove(channel, info.client)
                await self.broker.publish(channel, leave_push(channel, info).encode())
            except Exception:
                logger.warning("could not remove presence of %s in %s", info.client, channel)

    async def join(self, channel: str, info: ClientInfo) -> None:
        await self.presence_store.add(channel, info, ttl=self.config.presence_ttl)
        await self.broker.publish(channel, join_push(channel, info).encode())

    # ----------------------------------------------------------- publishing

    async def publish(
        self,
        channel: str,
        data: JSON,
        *,
        info: ClientInfo | None = None,
        idempotency_key: str | None = None,
        max_size: int | None = None,
    ) -> PublishResult:
        """Publish ``data`` to ``channel`` on every node; its position if it keeps history.

        A repeated ``idempotency_key`` (within the channel's history TTL)
        publishes nothing and returns the original position.
        """
        options = self.options(channel)
        try:
            data_json = dumps(data)
        except (TypeError, ValueError) as exc:
            raise HubError(ErrorCode.BAD_REQUEST, f"data is not JSON: {exc}") from None
        if max_size is not None and len(data_json.encode()) > max_size:
            raise HubError(ErrorCode.PAYLOAD_TOO_LARGE, f"data larger than {max_size} bytes")
        try:
            if not options.has_history:
                await self.broker.publish(
                    channel, pub_push(channel, data_json, None, info).encode()
                )
                self.metrics.publications += 1
                return PublishResult(None)
            # One broker call for both steps, so a networked broker can keep
            # offsets and delivery order together (or do both on one server).
            added = await self.broker.publish_with_history(
                self.history_store,
                channel,
                Publication(data, info),
                lambda position: pub_push(channel, data_json, position, info).encode(),
                size=options.history_size,
                ttl=options.history_ttl,
                idempotency_key=idempotency_key,
            )
        except BrokerUnavailable as exc:
            raise HubError(ErrorCode.BROKER_UNAVAILABLE, str(exc) or None) from None
        if added.duplicate:
            return PublishResult(added.position, duplicate=True)
        self.metrics.publications += 1
        return PublishResult(added.position)

    async def broadcast(self, channels: Iterable[str], data: JSON) -> list[PublishResult]:
        """Publish the same data to several channels."""
        return [await self.publish(channel, data) for channel in channels]

    async def history(
        self,
        channel: str,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        options = self.options(channel)
        if not options.has_history:
            raise HubError(ErrorCode.NOT_AVAILABLE, "channel keeps no history")
        limit = min(limit, options.history_size)
        current = await self.history_store.position(channel)
        if since is not None and since.epoch != current.epoch:
            # Offsets of another epoch mean nothing now: the client sees the new epoch.
            return HistoryResult([], current)
        pubs, current = await self.history_store.read(
            channel, limit=limit, since=since.offset if since else None, reverse=reverse
        )
        return HistoryResult(pubs, current)

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        self._presence_on(channel)
        return await self.presence_store.get(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        self._presence_on(channel)
        return await self.presence_store.stats(channel)

    def _presence_on(self, channel: str) -> None:
        if not self.options(channel).presence:
            raise HubError(ErrorCode.NOT_AVAILABLE, "presence is off for this channel")

    async def disconnect(
        self, user: str, *, code: int = HubCloseCode.DISCONNECTED, reason: str = "disconnected"
    ) -> None:
        """Disconnect every session of ``user`` on every node (they are told not to reconnect)."""
        message = dumps({"op": "disconnect", "user": user, "code": code, "reason": reason})
        try:
            await self.broker.publish(CONTROL_CHANNEL, message.encode())
        except BrokerUnavailable as exc:
            raise HubError(ErrorCode.BROKER_UNAVAILABLE, str(exc) or None) from None

    # ------------------------------------------------------------- delivery

    def _on_broker_message(self, channel: str, payload: bytes) -> None:
        if channel == CONTROL_CHANNEL:
            self._on_control(payload)
            return
        sessions = self.registry.sessions(channel)
        if not sessions:
            return
        # Decoded once, and written once for every ready subscriber: one frame, N writes.
        text = payload.decode()
        size = len(payload)
        ready = []
        for session in sessions:
            if session.buffer(channel, text, size):
                continue
            writer = session.writer
            if writer.idle:
                ready.append(writer.transport)
            else:
                writer.enqueue(text, size)
        if ready:
            write_many(ready, text)
            self.metrics.sent(len(ready), size)

    def _on_control(self, payload: bytes) -> None:
        try:
            message = loads(payload)
            if message.get("op") == "disconnect":
                user, code, reason = message["user"], int(message["code"]), message["reason"]
                for session in list(self._users.get(user, ())):
                    session.disconnect(code, reason, reconnect=False)
        except Exception:
            logger.exception("bad control message %r", payload[:200])
