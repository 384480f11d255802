"""One connected client: its commands, subscriptions, limits and outgoing queue.

Commands are handled one at a time, in order. Every failure is answered with
the error code of docs/wire-protocol.md and logged once per session and kind,
so a misbehaving client cannot flood the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tether.hub.auth import ANONYMOUS, Action, Credentials, cookies_of
from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.config import ChannelOptions
from tether.hub.errors import ErrorCode, HubCloseCode, HubError
from tether.hub.history.errors import unavailable_error
from tether.hub.hooks import (
    ConnectRequest,
    ConnectResult,
    DisconnectEvent,
    PublishRequest,
    PublishRewrite,
    RpcRequest,
    SessionInfo,
    SubscribeRequest,
    SubscribeResult,
    call_hook,
)
from tether.hub.model import JSON, ClientInfo, StreamPosition
from tether.hub.node import Node
from tether.hub.ratelimit import TokenBucket
from tether.hub.transport import Transport
from tether.hub.wire import (
    Command,
    ProtocolViolation,
    disconnect_push,
    dumps,
    error_reply,
    opt_bool,
    opt_int,
    opt_str,
    parse_command,
    position_param,
    reply,
    req_str,
    subscribe_push,
    unsubscribe_push,
)
from tether.hub.writer import SessionWriter
from tether.protocol.headers import Headers

logger = logging.getLogger("tether.hub")

MAX_IDEMPOTENCY_KEY = 64
MAX_RPC_METHOD = 255
# Close reasons must fit a control frame (RFC 6455 5.5: 125 bytes, 2 for the code).
MAX_CLOSE_REASON = 120

Result = dict[str, JSON]


class SessionState(enum.Enum):
    """Where a session is in its life; only the transitions in ``_NEXT`` happen."""

    CONNECTING = "connecting"
    """The transport is open; no ``connect`` has succeeded yet (only it is accepted)."""
    CONNECTED = "connected"
    """``connect`` succeeded: the session has credentials and takes every command."""
    CLOSED = "closed"
    """Disconnected by the hub or gone: nothing more is handled or sent."""


_NEXT: dict[SessionState, frozenset[SessionState]] = {
    SessionState.CONNECTING: frozenset({SessionState.CONNECTED, SessionState.CLOSED}),
    SessionState.CONNECTED: frozenset({SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


class Session:
    def __init__(
        self,
        node: Node,
        transport: Transport,
        *,
        handshake_token: str | None,
        headers: Headers | None = None,
        transport_name: str | None = None,
    ) -> None:
        self.node = node
        self.transport = transport
        self.state = SessionState.CONNECTING
        self.id = uuid.uuid4().hex
        self.handshake_token = handshake_token
        self.headers = headers if headers is not None else Headers()
        """The upgrade request's headers, for the connect hook."""
        self.transport_name = transport_name if transport_name is not None else transport.kind.name
        self.data: JSON = None
        """Per-session data from the connect hook (docs/hooks.md)."""
        self.presence_batches = False
        """The client takes ``presence`` pushes (many joins and leaves in one)."""
        self._app_refused = False
        # Pushes to send right after the current command's reply (server-side
        # subscriptions made by the connect hook).
        self._after_reply: list[str] = []
        self.credentials: Credentials | None = None
        self.client_info: ClientInfo | None = None
        self.channels: set[str] = set()
        self.close_code: int | None = None
        limits = node.config.limits
        self.writer = SessionWriter(
            transport,
            max_bytes=limits.send_queue_size,
            metrics=node.metrics,
            on_overflow=self._slow_consumer,
        )
        self._publish_bucket = TokenBucket(limits.publish_rate, limits.publish_burst)
        self._rpc_bucket = TokenBucket(limits.publish_rate, limits.publish_burst)
        self._flood_bucket = TokenBucket(1.0, limits.flood_strikes)
        # Channels being subscribed: pushes wait here until the reply is out.
        self._recovering: dict[str, list[tuple[str, int, StreamPosition | None]]] = {}
        self._recovered_top: dict[str, StreamPosition] = {}
        self._to_flush: list[str] = []
        self._held_bytes = 0
        self._logged: set[object] = set()
        loop = asyncio.get_running_loop()
        self._expiry: asyncio.TimerHandle | None = None
        self._close_task: asyncio.Task[None] | None = None
        self._connect_deadline: asyncio.TimerHandle | None = loop.call_later(
            limits.connect_timeout, self._connect_timed_out
        )
        self._handlers: dict[str, Callable[[dict[str, JSON]], Awaitable[Result]]] = {
            "connect": self._connect,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "publish": self._publish,
            "presence": self._presence,
            "presence_stats": self._presence_stats,
            "history": self._history,
            "refresh": self._refresh,
            "ping": self._ping,
            "rpc": self._rpc,
        }
        node.add_session(self)

    def subscriptions(self) -> list[str]:
        """Channels subscribed to, or being subscribed to right now."""
        # A channel is in both while its subscribe reply waits to be flushed
        # (for a connect with ``subs``, until every channel is done): count it once.
        return [*self.channels, *(c for c in self._recovering if c not in self.channels)]

    @property
    def user(self) -> str:
        return self.credentials.user if self.credentials is not None else ""

    @property
    def connected(self) -> bool:
        """``connect`` succeeded and the session has not ended."""
        return self.state is SessionState.CONNECTED

    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    def _to(self, state: SessionState) -> None:
        """Move to ``state``; a transition the state machine does not allow is a bug."""
        if state not in _NEXT[self.state]:
            raise RuntimeError(f"session {self.id}: {self.state.value} -> {state.value}")
        self.state = state

    def info(self) -> SessionInfo:
        """What hooks and the app-side API see of this session."""
        client_info = self.client_info
        return SessionInfo(
            client=self.id,
            user=self.user,
            transport=self.transport_name,
            data=self.data,
            info=client_info.info if client_info is not None else None,
            credentials=self.credentials,
            node=self.node.id,
            channels=tuple(sorted(self.channels)),
            headers=self.headers,
        )

    # ------------------------------------------------------------- sending

    def send(self, text: str) -> None:
        self.writer.send(text, len(text.encode()))

    def buffer(
        self, channel: str, text: str, size: int, position: StreamPosition | None = None
    ) -> bool:
        """Hold a push (a publication's at ``position``) until the subscribe reply is out."""
        pending = self._recovering.get(channel)
        if pending is None:
            return False
        # Held pushes count against the send queue: a hot channel and a slow
        # history read must not grow memory without bound either.
        self._held_bytes += size
        if self._held_bytes > self.writer.max_bytes:
            self._recovering.clear()
            self._slow_consumer()
            return True
        pending.append((text, size, position))
        return True

    def _flush_recovered(self) -> None:
        """After a subscribe reply: send what arrived meanwhile, minus what it held."""
        for channel in self._to_flush:
            pending = self._recovering.pop(channel, [])
            top = self._recovered_top.pop(channel, None)
            for text, size, position in pending:
                self._held_bytes -= size
                if top is not None and position is not None and _covered(position, top):
                    continue
                self.writer.send(text, size)
        self._to_flush.clear()

    # ------------------------------------------------------------ commands

    async def handle(self, text: str) -> None:
        """Handle one incoming message (one command)."""
        if self.closed:
            return
        try:
            command = parse_command(text)
        except ProtocolViolation as exc:
            self._log_once("protocol", "closing %s: %s", self.id, exc)
            self.disconnect(HubCloseCode.BAD_REQUEST, "bad request", reconnect=False)
            return
        if self.credentials is None and command.method != "connect":
            self.send(error_reply(command.id, HubError(ErrorCode.UNAUTHORIZED, "connect first")))
            self.disconnect(HubCloseCode.BAD_REQUEST, "connect first", reconnect=False)
            return
        handler = self._handlers.get(command.method)
        try:
            if command.refusal is not None:
                raise command.refusal
            if handler is None:
                raise HubError(ErrorCode.METHOD_NOT_FOUND)
            result = await handler(command.params)
        except HubError as err:
            self._failed(command, err)
        except BrokerUnavailable as exc:
            # History or presence on a backplane that is down, or history storage
            # failing (127): temporary, retry.
            self._failed(command, unavailable_error(exc))
        except Exception:
            logger.exception("%s failed for %s", command.method, self.id)
            self._failed(command, HubError(ErrorCode.INTERNAL))
        else:
            self.send(reply(command.id, result))
            for text in self._after_reply:
                self.send(text)
        finally:
            self._after_reply.clear()
            if self._to_flush:
                self._flush_recovered()

    def _failed(self, command: Command, err: HubError) -> None:
        self.node.metrics.refused("wire", command.method, err.code)
        self._log_once(err.code, "%s: %s refused: %s", self.id, command.method, err.message)
        self.send(error_reply(command.id, err))
        if command.method != "connect" or self.closed:
            return
        # A failed connect ends the connection, except for errors the client can fix in place.
        if err.code == ErrorCode.TOKEN_EXPIRED:
            self.disconnect(HubCloseCode.TOKEN_EXPIRED, "token expired", reconnect=True)
        elif err.code == ErrorCode.UNAUTHORIZED:
            self.disconnect(HubCloseCode.FORBIDDEN, "unauthorized", reconnect=False)
        elif self._app_refused:
            # The application said no (not a timeout or failure of its hook):
            # asking again on this connection cannot help.
            self.disconnect(HubCloseCode.FORBIDDEN, _close_reason(err.message), reconnect=False)

    def _log_once(self, kind: object, message: str, *args: Any) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            logger.info(message, *args)

    async def _connect(self, params: dict[str, JSON]) -> Result:
        if self.credentials is not None:
            raise HubError(ErrorCode.BAD_REQUEST, "already connected")
        node, config = self.node, self.node.config
        token = opt_str(params, "token") or self.handshake_token
        name = opt_str(params, "name")
        client_info = params.get("info")
        limit = config.limits.max_presence_info_size
        if client_info is not None and len(dumps(client_info).encode()) > limit:
            raise HubError(ErrorCode.LIMIT_EXCEEDED, f"info larger than {limit} bytes")
        self.presence_batches = opt_bool(params, "presence_batches")
        subs = params.get("subs")
        if subs is not None and not isinstance(subs, dict):
            raise HubError(ErrorCode.BAD_REQUEST, "subs must be an object")
        verified: Credentials | None = None
        if token and node.verifier.enabled:
            # A token the hub can check is checked before any hook runs.
            verified = node.verifier.verify(token)
        accepted = await self._connect_hook(token, verified, name, client_info, params)
        if self.closed:
            # The client left while the app was deciding: index nothing for it.
            raise HubError(ErrorCode.INTERNAL, "connection closed")
        if accepted is not None:
            credentials = _accepted_credentials(verified, accepted)
            self.data = accepted.data
        elif verified is not None:
            credentials = verified
        elif token:
            raise HubError(ErrorCode.UNAUTHORIZED, "token auth is not configured")
        elif config.allow_anonymous:
            credentials = ANONYMOUS
        else:
            raise HubError(ErrorCode.UNAUTHORIZED, "a token is required")
        info = credentials.info
        if info is None:
            # What the client says about itself (its user id never comes from here).
            info = client_info
            if info is None and name is not None:
                info = {"name": name}
        self.credentials = credentials
        self._to(SessionState.CONNECTED)
        self.client_info = ClientInfo(self.id, credentials.user, info)
        if self._connect_deadline is not None:
            self._connect_deadline.cancel()
            self._connect_deadline = None
        node.set_user(self)
        self._schedule_expiry()
        result: Result = {"client": self.id, "user": credentials.user, "ping": config.ping_interval}
        ttl = credentials.ttl()
        if ttl is not None:
            result["ttl"] = ttl
        if self.data is not None:
            result["data"] = self.data
        if accepted is not None:
            for channel in accepted.channels:
                await self._subscribe_at_connect(channel)
        if subs:
            results: Result = {}
            for channel, position in subs.items():
                sub_params: dict[str, JSON] = {"channel": channel}
                if isinstance(position, dict):
                    sub_params = {**position, "channel": channel, "recover": True}
                try:
                    results[channel] = await self._subscribe(sub_params)
                except HubError as err:
                    results[channel] = {"error": err.to_json()}
            result["subs"] = results
        return result

    async def _connect_hook(
        self,
        token: str | None,
        verified: Credentials | None,
        name: str | None,
        client_info: JSON,
        params: dict[str, JSON],
    ) -> ConnectResult | None:
        hooks = self.node.hooks
        if hooks.on_connect is None:
            return None
        data = params.get("data")
        self._check_size("data", data)
        request = ConnectRequest(
            client=self.id,
            transport=self.transport_name,
            headers=self.headers,
            cookies=cookies_of(self.headers),
            token=token or None,
            credentials=verified,
            name=name,
            info=client_info,
            data=data,
        )
        try:
            accepted = await call_hook(
                "on_connect",
                hooks.on_connect,
                request,
                hooks.timeout_of("on_connect"),
                returns=ConnectResult,
            )
        except HubError as err:
            self._app_refused = not err.temporary
            raise
        if accepted is not None:
            self._check_json("on_connect data", accepted.data)
            self._check_json("on_connect info", accepted.info)
            channels = accepted.channels
            if isinstance(channels, str) or not all(isinstance(c, str) for c in channels):
                logger.error("on_connect channels must be a list of channel names")
                raise HubError(ErrorCode.APP_ERROR, "on_connect channels is not a list of names")
        return accepted

    async def _subscribe_at_connect(self, channel: str) -> None:
        """A server-side subscription the connect hook asked for: pushed after the reply."""
        try:
            if channel in self.channels or channel in self._recovering:
                return
            self._check_room()
            result = await self._enter(channel, self.node.options(channel), None)
        except (HubError, BrokerUnavailable) as exc:
            logger.warning("server-side subscription of %s to %r failed: %s", self.id, channel, exc)
            return
        self._to_flush.append(channel)
        self._after_reply.append(subscribe_push(channel, result))

    async def subscribe_server_side(self, channel: str) -> bool:
        """Subscribe this session to ``channel`` on the app's behalf (no hook, no grant check).

        The client learns it from a ``subscribe`` push. False when the session is
        not connected or already subscribed.
        """
        if not self.connected or channel in self.channels or channel in self._recovering:
            return False
        self._check_room()
        result = await self._enter(channel, self.node.options(channel), None)
        if self.closed:
            return False
        self.send(subscribe_push(channel, result))
        self._to_flush.append(channel)
        self._flush_recovered()
        return True

    async def unsubscribe_server_side(
        self, channel: str, code: int = 2000, reason: str = "unsubscribed by the server"
    ) -> bool:
        """End a subscription on the app's behalf; the client gets an ``unsubscribe`` push."""
        if self.closed or channel not in self.channels:
            return False
        await self.node.remove_subscription(self, channel)
        self.send(unsubscribe_push(channel, code, reason))
        return True

    async def _subscribe(self, params: dict[str, JSON]) -> Result:
        channel = req_str(params, "channel")
        options = self.node.options(channel)
        if channel in self.channels or channel in self._recovering:
            raise HubError(ErrorCode.ALREADY_SUBSCRIBED)
        self._check_room()
        await self._authorize(channel, "subscribe", options)
        since: StreamPosition | None = None
        if opt_bool(params, "recover"):
            since = position_param(params, "recover position")
        sub_data: JSON = None
        hook = self.node.hooks.on_subscribe
        if hook is not None:
            data = params.get("data")
            self._check_size("data", data)
            request = SubscribeRequest(self.info(), channel, data)
            timeout = self.node.hooks.timeout_of("on_subscribe")
            allowed = await call_hook(
                "on_subscribe", hook, request, timeout, returns=SubscribeResult
            )
            if allowed is not None:
                self._check_json("on_subscribe data", allowed.data)
                sub_data = allowed.data
        result = await self._enter(channel, options, since)
        if sub_data is not None:
            result["data"] = sub_data
        self._to_flush.append(channel)
        return result

    def _check_room(self) -> None:
        limit = self.node.config.limits.max_subscriptions
        if len(self.subscriptions()) >= limit:
            raise HubError(ErrorCode.LIMIT_EXCEEDED, f"more than {limit} subscriptions")

    async def _enter(
        self, channel: str, options: ChannelOptions, since: StreamPosition | None
    ) -> Result:
        """Subscribe (registry, broker, presence) and read the position or what was missed.

        Pushes arriving meanwhile wait until the caller flushes the channel.
        """
        # Subscribe before reading history, so nothing published meanwhile is
        # lost; what arrives before the reply waits in _recovering.
        self._recovering[channel] = []
        try:
            await self.node.add_subscription(self, channel)
            result = await self._position(channel, options, since)
            if self.closed:
                # Cleaned up while we awaited: do not leave a subscription behind.
                raise HubError(ErrorCode.INTERNAL, "connection closed")
            self.channels.add(channel)
            if options.presence and self.client_info is not None:
                await self.node.join(channel, self.client_info)
        except BaseException:
            self._recovering.pop(channel, None)
            self._recovered_top.pop(channel, None)
            await self.node.remove_subscription(self, channel)
            raise
        return result

    async def _position(
        self, channel: str, options: ChannelOptions, since: StreamPosition | None
    ) -> Result:
        result: Result = {
            "recoverable": options.has_history,
            "positioned": options.has_history,
            "recovered": False,
            "publications": [],
        }
        if not options.has_history:
            return result
        history = self.node.history_store
        if since is not None:
            recovery = await history.since(channel, since, limit=options.history_size)
            position = recovery.position
            result["recovered"] = recovery.recovered
            result["publications"] = [p.to_json() for p in recovery.publications]
        else:
            position = await history.position(channel)
        self._recovered_top[channel] = position
        result.update(position.to_json())
        return result

    async def _unsubscribe(self, params: dict[str, JSON]) -> Result:
        channel = req_str(params, "channel")
        if channel in self.channels:
            await self.node.remove_subscription(self, channel)
        return {}

    async def _publish(self, params: dict[str, JSON]) -> Result:
        channel = req_str(params, "channel")
        options = self.node.options(channel)
        if "data" not in params:
            raise HubError(ErrorCode.MISSING_PARAMETER, "data is required")
        key = opt_str(params, "idempotency_key")
        if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
            raise HubError(ErrorCode.BAD_REQUEST, "idempotency_key must be 1 to 64 characters")
        if not self._publish_bucket.take():
            if not self._flood_bucket.take():
                self.disconnect(HubCloseCode.PUBLISH_FLOOD, "publish flood", reconnect=True)
            raise HubError(ErrorCode.TOO_MANY_REQUESTS)
        if not options.publish:
            raise HubError(ErrorCode.PERMISSION_DENIED, "clients may not publish here")
        await self._authorize(channel, "publish", options)
        data = params["data"]
        hook = self.node.hooks.on_publish
        if hook is not None:
            request = PublishRequest(self.info(), channel, data)
            timeout = self.node.hooks.timeout_of("on_publish")
            rewritten = await call_hook(
                "on_publish", hook, request, timeout, returns=PublishRewrite
            )
            if rewritten is not None:
                data = rewritten.data
        published = await self.node.publish(
            channel,
            data,
            info=self.client_info,
            idempotency_key=key,
            max_size=self.node.config.limits.max_payload_size,
        )
        return published.to_json()

    async def _presence(self, params: dict[str, JSON]) -> Result:
        channel = req_str(params, "channel")
        await self._authorize(channel, "presence", self.node.options(channel))
        clients = await self.node.presence(channel)
        return {"clients": {cid: info.to_json() for cid, info in clients.items()}}

    async def _presence_stats(self, params: dict[str, JSON]) -> Result:
        channel = req_str(params, "channel")
        await self._authorize(channel, "presence", self.node.options(channel))
        stats = await self.node.presence_stats(channel)
        return {"num_clients": stats.num_clients, "num_users": stats.num_users}

    async def _history(self, params: dict[str, JSON]) -> Result:
        channel = req_str(params, "channel")
        await self._authorize(channel, "history", self.node.options(channel))
        since = params.get("since")
        result = await self.node.history(
            channel,
            limit=opt_int(params, "limit", 0),
            since=position_param(since, "since") if since is not None else None,
            reverse=opt_bool(params, "reverse"),
        )
        return result.to_json()

    async def _refresh(self, params: dict[str, JSON]) -> Result:
        credentials = self.node.verifier.verify(req_str(params, "token"))
        if self.credentials is None or credentials.user != self.credentials.user:
            raise HubError(ErrorCode.UNAUTHORIZED, "token is for another user")
        self.credentials = credentials
        self._schedule_expiry()
        # A refreshed token may allow fewer channels: drop subscriptions it no
        # longer covers, and say why (an ``unsubscribe`` push, code 2000 + 103).
        for channel in [c for c in self.channels if not credentials.allows(c)]:
            await self.node.remove_subscription(self, channel)
            self.send(unsubscribe_push(channel, 2103, "permission denied by the refreshed token"))
        ttl = credentials.ttl()
        return {"ttl": ttl} if ttl is not None else {}

    async def _ping(self, params: dict[str, JSON]) -> Result:
        return {}

    async def _rpc(self, params: dict[str, JSON]) -> Result:
        method = req_str(params, "method")
        if not 0 < len(method) <= MAX_RPC_METHOD:
            raise HubError(
                ErrorCode.BAD_REQUEST, f"method must be 1 to {MAX_RPC_METHOD} characters"
            )
        data = params.get("data")
        self._check_size("data", data)
        hook = self.node.hooks.on_rpc
        if hook is None:
            raise HubError(ErrorCode.NOT_AVAILABLE, "this hub has no RPC handler")
        if not self._rpc_bucket.take():
            raise HubError(ErrorCode.TOO_MANY_REQUESTS)
        request = RpcRequest(self.info(), method, data)
        answer = await call_hook("on_rpc", hook, request, self.node.hooks.timeout_of("on_rpc"))
        self._check_json("on_rpc reply", answer)
        return {"data": answer}

    def _check_size(self, name: str, value: JSON) -> None:
        """Client data for a hook: at most ``max_payload_size`` bytes of JSON (error 110)."""
        if value is None:
            return
        limit = self.node.config.limits.max_payload_size
        if len(dumps(value).encode()) > limit:
            raise HubError(ErrorCode.PAYLOAD_TOO_LARGE, f"{name} larger than {limit} bytes")

    @staticmethod
    def _check_json(what: str, value: JSON) -> None:
        """What a hook returned must serialize, or the reply could not be sent at all."""
        try:
            dumps(value)
        except (TypeError, ValueError) as exc:
            logger.error("%s is not JSON: %s", what, exc)
            raise HubError(ErrorCode.APP_ERROR, f"{what} is not JSON") from None

    async def _authorize(self, channel: str, action: Action, options: ChannelOptions) -> None:
        credentials = self.credentials
        assert credentials is not None  # commands other than connect need it
        if credentials.anonymous and not options.anonymous:
            raise HubError(ErrorCode.PERMISSION_DENIED, "anonymous clients may not use this")
        if not credentials.allows(channel):
            raise HubError(ErrorCode.PERMISSION_DENIED)
        hook = self.node.authorize
        if hook is not None and not await hook(credentials.user, channel, action):
            raise HubError(ErrorCode.PERMISSION_DENIED)

    # ------------------------------------------------------------ timeouts

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        credentials = self.credentials
        if credentials is None or credentials.expires_at is None:
            return
        delay = max(0.0, credentials.expires_at - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._token_expired)

    def _token_expired(self) -> None:
        self._expiry = None
        self.disconnect(HubCloseCode.TOKEN_EXPIRED, "token expired", reconnect=True)

    def _connect_timed_out(self) -> None:
        self._connect_deadline = None
        if self.credentials is None:
            self.disconnect(HubCloseCode.BAD_REQUEST, "connect timeout", reconnect=False)

    def _slow_consumer(self) -> None:
        self.node.metrics.slow_consumer_disconnects += 1
        logger.info("client %s (user %r) too slow: disconnecting", self.id, self.user)
        self.disconnect(HubCloseCode.SLOW_CONSUMER, "slow consumer", reconnect=True)

    # --------------------------------------------------------------- close

    def disconnect(self, code: int, reason: str, *, reconnect: bool) -> None:
        """Tell the client why (a ``disconnect`` push), close with ``code``, clean up."""
        if self.closed:
            return
        self._to(SessionState.CLOSED)
        self.close_code = code
        self._cancel_timers()
        self.writer.close()
        if self.transport.ready():
            self.transport.write_now(disconnect_push(code, reason, reconnect))
        self._close_task = self.node.spawn(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        await self.node.remove_session(self, code)
        self._notify_disconnect(code, reason)
        await self.transport.close(code, reason)

    def _notify_disconnect(self, code: int, reason: str) -> None:
        """Run the disconnect hook in the background (bounded by its timeout)."""
        hook = self.node.hooks.on_disconnect
        if hook is None or self.credentials is None:
            return
        event = DisconnectEvent(self.info(), code, reason)
        timeout = self.node.hooks.timeout_of("on_disconnect")

        async def notify() -> None:
            with contextlib.suppress(HubError):  # call_hook logged it
                await call_hook("on_disconnect", hook, event, timeout)

        self.node.spawn(notify())

    def _cancel_timers(self) -> None:
        for handle in (self._expiry, self._connect_deadline):
            if handle is not None:
                handle.cancel()
        self._expiry = self._connect_deadline = None

    async def ended(self, peer_code: int) -> None:
        """The read loop ended: the client left, its connection died, or we closed it."""
        if self._close_task is not None:
            # We are closing it: let the close frame carry our code before the
            # transport's handler closes anything itself.
            await asyncio.shield(self._close_task)
            return
        if not self.closed:
            self._to(SessionState.CLOSED)
        self._cancel_timers()
        self.writer.close()
        await self.node.remove_session(self, peer_code)
        self._notify_disconnect(peer_code, "")


def _accepted_credentials(verified: Credentials | None, accepted: ConnectResult) -> Credentials:
    """A verified token's credentials (if any) with what the connect hook set over them."""
    base = verified if verified is not None else ANONYMOUS
    user = accepted.user if accepted.user is not None else base.user
    return dataclasses.replace(
        base,
        user=user,
        anonymous=not user,
        info=accepted.info if accepted.info is not None else base.info,
    )


def _close_reason(message: str) -> str:
    data = message.encode()[:MAX_CLOSE_REASON]
    return data.decode("utf-8", "ignore")


def _covered(position: StreamPosition, top: StreamPosition) -> bool:
    """A held publication the subscribe reply already covered (same epoch, offset ≤ top)."""
    return position.epoch == top.epoch and position.offset <= top.offset
