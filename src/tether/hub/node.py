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
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.asyncio.cork import hold_writes
from tether.hub.auth import Authorizer, TokenVerifier
from tether.hub.backends import backends_for
from tether.hub.backplane import BackplaneWatcher
from tether.hub.brokers.base import Broker, BrokerUnavailable
from tether.hub.config import ChannelOptions, HubConfig
from tether.hub.control import CONTROL_CHANNEL, ControlMessage, node_channel
from tether.hub.envelope import Control, Envelope, Join, PresenceChanges, Pub, PubDraft
from tether.hub.errors import ErrorCode, HubCloseCode, HubError
from tether.hub.history.base import History
from tether.hub.history.errors import unavailable_error
from tether.hub.hooks import Hooks
from tether.hub.inbound import is_valid_text
from tether.hub.metrics import Metrics
from tether.hub.model import JSON, RESERVED_PREFIX, ClientInfo, Publication, StreamPosition
from tether.hub.presence.base import Presence, PresenceStats
from tether.hub.presence_changes import PresenceChangesBatcher
from tether.hub.proxy import BackendProxy
from tether.hub.registry import ChannelRegistry
from tether.hub.transport import write_many
from tether.hub.users import Users
from tether.hub.wire import dumps, join_push, leave_push, presence_push

if TYPE_CHECKING:
    from tether.hub.session import Session

logger = logging.getLogger("tether.hub")

# Node-to-node messages (e.g. "disconnect this user everywhere") travel on
# CONTROL_CHANNEL (tether.hub.control); client channel names may not start
# with RESERVED_PREFIX.
__all__ = ["CONTROL_CHANNEL", "RESERVED_PREFIX", "HistoryResult", "Node", "PublishResult"]


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
        hooks: Hooks | None = None,
    ) -> None:
        """``hooks``: the application's say in connections (docs/hooks.md)."""
        self.config = config if config is not None else HubConfig()
        # Those not given come from the config's URLs (memory by default).
        self.broker, self.history_store, self.presence_store = backends_for(
            self.config, broker, history, presence
        )
        self.authorize = authorize
        self.proxy: BackendProxy | None = None
        """The backend proxy, when the config names backend URLs (docs/proxy.md)."""
        own = hooks if hooks is not None else Hooks()
        if self.config.proxy_enabled():
            # Python hooks win; the proxy answers for the hooks they leave out.
            self.proxy = BackendProxy(self.config)
            own = own.merged(self.proxy.hooks())
        self.hooks = own
        self.presence_changes = PresenceChangesBatcher(
            self.presence_store, self.broker, ttl=self.config.presence_ttl
        )
        """Joins and leaves, stored and announced in batches per channel."""
        self.users = Users(self)
        """Subscribe, unsubscribe, disconnect and list a user's sessions on every node."""
        self.verifier = TokenVerifier(self.config.jwt_secret, self.config.jwt_public_key)
        self.id = uuid.uuid4().hex
        self.channel = node_channel(self.id)
        """This node's own broker channel: requests addressed to it (tether.hub.relay)."""
        self.on_addressed: Callable[[ControlMessage], None] | None = None
        """Handles what arrives on :attr:`channel` (set by the HTTP fallbacks)."""
        self.metrics = Metrics()
        self.registry: ChannelRegistry[Session] = ChannelRegistry()
        self.sessions: dict[str, Session] = {}
        self._users: dict[str, set[Session]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._housekeeper: asyncio.Task[None] | None = None
        self._started = False
        self._starting: asyncio.Task[None] | None = None
        self._closed = False
        self.backplane: BackplaneWatcher | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def started(self) -> bool:
        """Started (by :meth:`start` or the first use) and not closed since."""
        return self._started

    async def start(self) -> None:
        """Connect the broker and start housekeeping; concurrent calls share one start.

        Idempotent. A start that fails (say the broker is unreachable) raises in
        every caller waiting for it, and the next call tries again.
        """
        if self._started:
            return
        starting = self._starting
        if starting is None:
            starting = asyncio.get_running_loop().create_task(self._start())
            starting.add_done_callback(self._start_done)
            self._starting = starting
        # Shielded: a caller that gives up (a cancelled request) does not
        # cancel the start the others are waiting for.
        await asyncio.shield(starting)

    async def _start(self) -> None:
        self._closed = False
        # Resets the sessions that missed publications while a networked broker was down.
        # A damaged history file or a server without JetStream stops the node
        # here, with a sentence saying so, before it accepts any client.
        watcher = None
        try:
            await self.history_store.start()
            await self.presence_store.start()
            self.backplane = watcher = BackplaneWatcher.attach(self)
            await self.broker.start(self._on_broker_message)
            await self.broker.subscribe(CONTROL_CHANNEL)
            await self.broker.subscribe(self.channel)
        except BaseException:
            if watcher is not None:
                watcher.detach()
            self.backplane = None
            # Released, not lost: a later start() opens them again.
            with contextlib.suppress(Exception):
                await self.history_store.close()
            with contextlib.suppress(Exception):
                await self.presence_store.close()
            raise
        with contextlib.suppress(HubError):  # a backplane down now: said at the next round
            await self.users.hello()
        self._housekeeper = asyncio.get_running_loop().create_task(self._housekeeping())
        self._started = True

    def _start_done(self, task: asyncio.Task[None]) -> None:
        self._starting = None
        if not task.cancelled():
            task.exception()  # each waiting caller raises it; marked as seen here

    async def ensure_started(self) -> None:
        """Start on first use, so app code may publish before any lifespan or request.

        A node closed on purpose stays closed (a publish during shutdown must
        not start it again); :meth:`start` reopens it.
        """
        if not self._started and not self._closed:
            await self.start()

    async def shutdown(self, code: int = 1001, reason: str = "server going away") -> None:
        """Tell every client to reconnect elsewhere (``code`` 1001 or 1012) and close them."""
        for session in list(self.sessions.values()):
            session.disconnect(code, reason, reconnect=True)
        await self.drain()

    async def drain(self) -> None:
        """Wait for the background work started so far (closing sessions, mostly)."""
        # Wait on the tasks not done yet, not on the set: a finished task leaves
        # it only when its done callback runs, so looping on the set could spin.
        while pending := [task for task in self._tasks if not task.done()]:
            await asyncio.wait(pending)
        self._tasks.difference_update([task for task in self._tasks if task.done()])

    async def close(self) -> None:
        starting = self._starting
        if starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(starting)
        self._closed = True
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
            with contextlib.suppress(HubError):
                await self.users.goodbye()
            await self.broker.close()
            await self.history_store.close()
            await self.presence_store.close()
        if self.proxy is not None:
            await self.proxy.close()
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
                await self.users.hello()
                await self.refresh_presence()
                await self.history_store.expire()
                await self.presence_store.expire()
            except Exception:
                logger.exception("housekeeping failed")

    async def refresh_presence(self) -> None:
        """Refresh the presence of every live session: one backend call per channel.

        The calls are made together, so a pipelining backend (Redis) sends
        them in a few round trips, not one per channel.
        """
        by_channel: dict[str, list[ClientInfo]] = {}
        for session in list(self.sessions.values()):
            info = session.client_info
            if info is None:
                continue
            for channel in session.channels:
                by_channel.setdefault(channel, []).append(info)
        ttl = self.config.presence_ttl
        await asyncio.gather(
            *(
                self.presence_store.add_many(channel, infos, ttl=ttl)
                for channel, infos in by_channel.items()
                if self.options(channel).presence
            )
        )

    # ------------------------------------------------------------- sessions

    def add_session(self, session: Session) -> None:
        self.sessions[session.id] = session
        self.metrics.connections_total += 1
        self.metrics.transport_sessions[session.transport_name] += 1

    def set_user(self, session: Session) -> None:
        """Index a connected session by its user, for :meth:`disconnect`."""
        self._users.setdefault(session.user, set()).add(session)

    def local_sessions(self, user: str) -> list[Session]:
        """The connected sessions of ``user`` on this node."""
        return [s for s in self._users.get(user, ()) if s.connected]

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
        options = self.options(channel)
        if joined and info is not None and options.presence:
            announce = not options.presence_count_only
            try:
                await self.presence_changes.leave(channel, info, announce=announce)
            except Exception as exc:
                logger.warning(
                    "could not remove presence of %s in %s: %s", info.client, channel, exc
                )

    async def join(self, channel: str, info: ClientInfo) -> None:
        announce = not self.options(channel).presence_count_only
        await self.presence_changes.join(channel, info, announce=announce)

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
        await self.ensure_started()
        options = self.options(channel)
        # Stored and sent, or neither: everything that can fail about the
        # publication itself fails here, before anything is stored.
        try:
            data_json = dumps(data)
            size = len(data_json.encode())
        except UnicodeEncodeError:
            raise HubError(ErrorCode.INVALID_STRING, "data holds a lone surrogate") from None
        except (TypeError, ValueError) as exc:
            raise HubError(ErrorCode.BAD_REQUEST, f"data is not JSON: {exc}") from None
        if info is not None and not is_valid_text(dumps(info.to_json())):
            raise HubError(ErrorCode.INVALID_STRING, "client info holds a lone surrogate")
        if idempotency_key is not None and not is_valid_text(idempotency_key):
            raise HubError(ErrorCode.INVALID_STRING, "idempotency_key holds a lone surrogate")
        if max_size is not None and size > max_size:
            raise HubError(ErrorCode.PAYLOAD_TOO_LARGE, f"data larger than {max_size} bytes")
        try:
            draft = PubDraft(channel, data_json, info)
            if not options.has_history:
                await self.broker.publish(channel, draft.at(None))
                self.metrics.publications += 1
                return PublishResult(None)
            # One broker call for both steps, so a networked broker can keep
            # offsets and delivery order together (or do both on one server).
            added = await self.broker.publish_with_history(
                self.history_store,
                channel,
                Publication(data, info),
                draft,
                size=options.history_size,
                ttl=options.history_ttl,
                idempotency_key=idempotency_key,
            )
        except BrokerUnavailable as exc:  # 127 for history storage, 112 for the backplane
            raise unavailable_error(exc) from None
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
        await self.ensure_started()
        options = self.options(channel)
        if not options.has_history:
            raise HubError(ErrorCode.NOT_AVAILABLE, "channel keeps no history")
        limit = min(limit, options.history_size)
        current = await self.history_store.peek(channel)
        if current is None:
            # Never published (or expired): reading creates nothing. Offset 0
            # and an empty epoch say "no stream yet" (docs/wire-protocol.md).
            return HistoryResult([], StreamPosition(0, ""))
        if since is not None and since.epoch != current.epoch:
            # Offsets of another epoch mean nothing now: the client sees the new epoch.
            return HistoryResult([], current)
        pubs, current = await self.history_store.read(
            channel, limit=limit, since=since.offset if since else None, reverse=reverse
        )
        return HistoryResult(pubs, current)

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        await self.ensure_started()
        self._presence_on(channel)
        if self.options(channel).presence_count_only:
            raise HubError(
                ErrorCode.NOT_AVAILABLE, "presence is count-only here: use presence_stats"
            )
        return await self.presence_store.get(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        await self.ensure_started()
        self._presence_on(channel)
        return await self.presence_store.stats(channel)

    def _presence_on(self, channel: str) -> None:
        if not self.options(channel).presence:
            raise HubError(ErrorCode.NOT_AVAILABLE, "presence is off for this channel")

    async def disconnect(
        self, user: str, *, code: int = HubCloseCode.DISCONNECTED, reason: str = "disconnected"
    ) -> None:
        """Disconnect every session of ``user`` on every node (they are told not to reconnect)."""
        await self.users.disconnect(user, code=code, reason=reason)

    # ------------------------------------------------------------- delivery

    def _on_broker_message(self, channel: str, envelope: Envelope) -> None:
        # A broker delivers in bursts (what one read of its connection held):
        # each subscriber's frames of a burst leave in one write, as for
        # publications that arrive in one client read.
        hold_writes()
        if type(envelope) is Pub:
            self._fan_out(channel, envelope.push, envelope.position)
        elif type(envelope) is PresenceChanges:
            self._fan_out_presence(channel, envelope)
        elif type(envelope) is Control:
            if channel == CONTROL_CHANNEL:
                self.users.on_control(envelope.message)
            elif channel == self.channel and self.on_addressed is not None:
                self.on_addressed(envelope.message)
        # A Resync never gets here: the networked brokers act on it themselves.

    def _fan_out_presence(self, channel: str, envelope: PresenceChanges) -> None:
        """One ``presence`` push for the clients that take batches, the single pushes else."""
        sessions = self.registry.sessions(channel)
        if not sessions:
            return
        changes = [(type(c) is Join, c.info) for c in envelope.changes]
        batched = [s for s in sessions if s.presence_batches]
        if batched:
            text = presence_push(channel, changes)
            self._write_all(channel, batched, text, len(text.encode()), None)
        if len(batched) < len(sessions):
            single = [s for s in sessions if not s.presence_batches]
            for joined, info in changes:
                text = (join_push if joined else leave_push)(channel, info)
                self._write_all(channel, single, text, len(text.encode()), None)

    def _fan_out(self, channel: str, push: bytes, position: StreamPosition | None) -> None:
        sessions = self.registry.sessions(channel)
        if not sessions:
            return
        # Decoded once, and written once for every ready subscriber: one frame, N writes.
        self._write_all(channel, sessions, push.decode(), len(push), position)

    def _write_all(
        self,
        channel: str,
        sessions: Iterable[Session],
        text: str,
        size: int,
        position: StreamPosition | None,
    ) -> None:
        ready = []
        for session in sessions:
            if session.buffer(channel, text, size, position):
                continue
            writer = session.writer
            if writer.idle:
                ready.append(writer.transport)
            else:
                writer.enqueue(text, size)
        if ready:
            write_many(ready, text)
            self.metrics.sent(len(ready), size)
