"""The Python hub client: what tether.js does in the browser, for asyncio programs.

    client = Client("ws://127.0.0.1:8000/connection/websocket", token=token)
    await client.connect()
    await client.subscribe("chat:lobby", on_publication=print)
    await client.publish("chat:lobby", {"text": "hi"})

When the WebSocket cannot get through (a proxy that strips ``Upgrade``, one
that holds it), it falls back by itself to the HTTP transports of
docs/wire-protocol.md ("HTTP fallbacks"): HTTP streaming, then SSE, then long
polling (``transports=`` orders or forces them; the HTTP ones need httpx).

It reconnects by itself (exponential backoff with full jitter), resubscribes
with the last offset and epoch of each channel so missed publications arrive
in order and once, and resends publishes that were not acknowledged with
their idempotency key, so nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tether.hub.client_links import (
    HTTP_LINKS,
    HTTP_TRANSPORTS,
    TRANSPORTS,
    Link,
    WebSocketLink,
    http_client,
    httpx_available,
)
from tether.hub.errors import ErrorCode, HubCloseCode, should_reconnect
from tether.hub.model import JSON, ClientInfo, StreamPosition
from tether.hub.wire import dumps, loads
from tether.protocol.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

logger = logging.getLogger("tether.hub.client")

# Refusals of the upgrade that may go away by themselves: retried.
_RETRY_STATUSES = frozenset({408, 429})


class ClientState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"
    """Stopped for good: by :meth:`Client.close` or a close code that says not to reconnect."""


@dataclass(frozen=True, slots=True)
class StateEvent:
    state: ClientState
    code: int | None = None
    reason: str = ""
    transport: str | None = None
    """The transport in use (``"websocket"``, ``"http_stream"``, ``"sse"``,
    ``"long_poll"``), or the one lost; None before any."""


@dataclass(frozen=True, slots=True)
class PublicationEvent:
    channel: str
    data: JSON
    offset: int | None = None
    epoch: str | None = None
    info: ClientInfo | None = None


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    channel: str
    info: ClientInfo
    joined: bool


@dataclass(frozen=True, slots=True)
class SubscribedEvent:
    channel: str
    recovered: bool
    """Missed publications were delivered; false after a (re)subscribe that could not
    recover them (new epoch, or too many missed): the application should resync."""
    resubscribed: bool
    position: StreamPosition | None


@dataclass(frozen=True, slots=True)
class UnsubscribedEvent:
    channel: str
    code: int
    reason: str


class HubClientError(Exception):
    """The hub refused a command (``code`` from the wire protocol's table)."""

    def __init__(self, code: int, message: str, temporary: bool = False) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message
        self.temporary = temporary


Handler = Callable[[Any], Awaitable[None] | None]


@dataclass(eq=False)
class Subscription:
    """A channel the client stays subscribed to across reconnects."""

    channel: str
    on_publication: Handler | None = None
    on_join: Handler | None = None
    on_leave: Handler | None = None
    on_subscribed: Handler | None = None
    on_unsubscribed: Handler | None = None
    offset: int | None = None
    epoch: str | None = None
    active: bool = False
    server_side: bool = False
    """Made by the hub (the app's connect hook or ``node.users.subscribe``), not by
    :meth:`Client.subscribe`: the hub makes it again after a reconnect."""
    data: JSON = None
    """What the app's subscribe hook returned for this subscription."""
    _ready: asyncio.Future[None] | None = field(default=None, repr=False)
    _attempt: int = field(default=0, repr=False)
    """Temporary subscribe errors in a row (the retry backoff's exponent)."""
    _retry: asyncio.TimerHandle | None = field(default=None, repr=False)

    def _cancel_retry(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    @property
    def position(self) -> StreamPosition | None:
        if self.offset is None or self.epoch is None:
            return None
        return StreamPosition(self.offset, self.epoch)


@dataclass(eq=False)
class _Publish:
    channel: str
    data: JSON
    key: str
    future: asyncio.Future[dict[str, JSON]]


@dataclass(eq=False)
class _Pending:
    future: asyncio.Future[dict[str, JSON]]
    on_reply: Callable[[dict[str, JSON]], None] | None


class Client:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        get_token: Callable[[], Awaitable[str]] | None = None,
        info: JSON = None,
        name: str | None = None,
        min_backoff: float = 0.5,
        max_backoff: float = 20.0,
        on_state: Callable[[StateEvent], Any] | None = None,
        data: JSON = None,
        on_server_subscription: Callable[[Subscription], Any] | None = None,
        transports: Sequence[str] | None = None,
        transport_timeout: float = 5.0,
        **connect_options: Any,
    ) -> None:
        """``transports`` are tried in order (default: websocket, http_stream, sse,
        long_poll; the HTTP ones only when httpx is installed); the first that connects
        is kept for reconnects, and one that has not connected within
        ``transport_timeout`` seconds makes way for the next.

        ``get_token`` fetches a fresh token (at start without ``token``, before
        expiry, and after the hub closes with 3000); ``connect_options`` go to
        :func:`tether.connect`.

        ``data`` goes to the app's connect hook with every ``connect``.
        ``on_server_subscription`` is called with each subscription the hub makes
        on its own (before any of its publications): set its handlers there.
        """
        self.url = url
        wanted = tuple(TRANSPORTS if transports is None else transports)
        unknown = [name for name in wanted if name not in TRANSPORTS]
        if not wanted or unknown:
            raise ValueError(f"transports must be some of {', '.join(TRANSPORTS)}: {unknown}")
        if not httpx_available():
            if transports is not None and any(name in HTTP_TRANSPORTS for name in wanted):
                raise ImportError("the HTTP transports need httpx: pip install 'tether[proxy]'")
            wanted = tuple(name for name in wanted if name not in HTTP_TRANSPORTS)
        self.transports = wanted
        self.transport_timeout = transport_timeout
        self._round: list[str] = []  # transports still to try before backing off
        self._working: str | None = None  # the one that connected last
        self._working_failures = 0
        self._http: Any = None  # an httpx.AsyncClient, made for the first HTTP transport
        self.token = token
        self.get_token = get_token
        self.info = info
        self.name = name
        self.data = data
        self.on_server_subscription = on_server_subscription
        self.connect_data: JSON = None
        """What the app's connect hook returned as ``data`` (the last connect's)."""
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.connect_options = connect_options
        self.state = ClientState.DISCONNECTED
        self.client_id: str | None = None
        self.user: str | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self._state_callbacks: list[Callable[[StateEvent], Any]] = []
        if on_state is not None:
            self._state_callbacks.append(on_state)
        self._subs: dict[str, Subscription] = {}
        self._publishes: dict[str, _Publish] = {}
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._ws: Link | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._first: asyncio.Future[None] | None = None
        self._events: asyncio.Queue[tuple[Handler, Any]] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None
        self._closing = False
        self._attempt = 0
        self._disconnect_push: tuple[int, str] | None = None

    # -------------------------------------------------------------- public

    @property
    def transport(self) -> str | None:
        """The name of the transport in use (None while there is none)."""
        return self._ws.name if self._ws is not None else None

    def on_state(self, callback: Callable[[StateEvent], Any]) -> None:
        self._state_callbacks.append(callback)

    async def connect(self, timeout: float | None = None) -> None:
        """Start connecting (and reconnecting); return once connected the first time.

        Raises :class:`HubClientError` or :class:`ConnectionError` if the hub
        refuses for good before that (an upgrade refused with a 4xx status
        other than 408/429, a rejected token ...). Otherwise it retries with
        backoff; with ``timeout`` (seconds), it gives up after that long:
        the client is closed and :class:`ConnectionError` says the last error.
        """
        if self._run_task is None:
            loop = asyncio.get_running_loop()
            self._first = loop.create_future()
            self._dispatcher = loop.create_task(self._dispatch())
            self._run_task = loop.create_task(self._run())
        assert self._first is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._first), timeout)
        except asyncio.TimeoutError:  # not yet the built-in TimeoutError on Python 3.10
            last = self.close_reason
            await self.close()
            detail = f": last error: {last}" if last else ""
            raise ConnectionError(f"not connected to the hub within {timeout} s{detail}") from None

    async def close(self) -> None:
        """Disconnect for good; pending publishes fail with ConnectionError."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            await ws.close(1000, "client closed")
        for task in (self._run_task, self._refresh_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        closed = ConnectionError("client closed")
        self._fail_all(closed, publishes=True)
        for sub in self._subs.values():
            sub._cancel_retry()
            if sub._ready is not None and not sub._ready.done():
                sub._ready.set_exception(closed)  # e.g. still retrying a temporary error
        self._connected.set()  # wake waiters, who find the client closed
        if self._dispatcher is not None:
            # Deliver what arrived before the close, then stop.
            await self._events.join()
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        self._set_state(ClientState.CLOSED, self.close_code, self.close_reason)

    async def wait_connected(self) -> None:
        """Return once connected (or closed for good: check :attr:`state`)."""
        await self._connected.wait()

    async def subscribe(
        self,
        channel: str,
        *,
        on_publication: Handler | None = None,
        on_join: Handler | None = None,
        on_leave: Handler | None = None,
        on_subscribed: Handler | None = None,
        on_unsubscribed: Handler | None = None,
    ) -> Subscription:
        """Subscribe (now and after every reconnect); return once the hub accepted."""
        if channel in self._subs:
            raise HubClientError(ErrorCode.ALREADY_SUBSCRIBED, "already subscribed")
        sub = Subscription(
            channel, on_publication, on_join, on_leave, on_subscribed, on_unsubscribed
        )
        sub._ready = asyncio.get_running_loop().create_future()
        self._subs[channel] = sub
        if self.state is ClientState.CONNECTED:
            self._send_subscribe(sub)
        try:
            await sub._ready
        except BaseException:
            self._subs.pop(channel, None)
            raise
        return sub

    async def unsubscribe(self, channel: str) -> None:
        sub = self._subs.pop(channel, None)
        if sub is not None:
            sub._cancel_retry()
            if sub._ready is not None and not sub._ready.done():
                sub._ready.set_result(None)  # a subscribe() still retrying returns
        if sub is not None and sub.active and self.state is ClientState.CONNECTED:
            sub.active = False
            await self._call("unsubscribe", {"channel": channel})

    async def publish(
        self, channel: str, data: JSON, *, idempotency_key: str | None = None
    ) -> dict[str, JSON]:
        """Publish; return ``{offset, epoch}`` once acknowledged (``{}`` without history).

        Survives reconnects: unacknowledged publishes are resent with the same
        idempotency key, which the hub uses to publish each only once.
        """
        dumps(data)  # fail now, not after a reconnect, if data is not JSON
        key = idempotency_key or uuid.uuid4().hex
        future: asyncio.Future[dict[str, JSON]] = asyncio.get_running_loop().create_future()
        publish = _Publish(channel, data, key, future)
        self._publishes[key] = publish
        if self.state is ClientState.CONNECTED:
            self._send_publish(publish)
        try:
            return await future
        finally:
            self._publishes.pop(key, None)

    async def rpc(self, method: str, data: JSON = None) -> JSON:
        """Call the app's RPC handler; its reply's data, or :class:`HubClientError` with its code.

        Not resent after a reconnect (the app may not expect a call twice): a
        connection lost meanwhile raises :class:`ConnectionError`.
        """
        dumps(data)
        result = await self._call("rpc", {"method": method, "data": data})
        return result.get("data")

    def server_subscriptions(self) -> list[Subscription]:
        return [sub for sub in self._subs.values() if sub.server_side]

    async def presence(self, channel: str) -> dict[str, ClientInfo]:
        result = await self._call("presence", {"channel": channel})
        clients = result.get("clients", {})
        return {cid: ClientInfo.from_json(info) for cid, info in clients.items()}

    async def presence_stats(self, channel: str) -> dict[str, int]:
        result = await self._call("presence_stats", {"channel": channel})
        return {"num_clients": int(result["num_clients"]), "num_users": int(result["num_users"])}

    async def history(
        self,
        channel: str,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> tuple[list[PublicationEvent], StreamPosition]:
        params: dict[str, JSON] = {"channel": channel, "limit": limit, "reverse": reverse}
        if since is not None:
            params["since"] = since.to_json()
        result = await self._call("history", params)
        epoch = str(result["epoch"])
        pubs = [_publication(channel, p, epoch) for p in result.get("publications", [])]
        return pubs, StreamPosition(int(result["offset"]), epoch)

    # ---------------------------------------------------------- connection

    async def _run(self) -> None:
        while not self._closing:
            self._set_state(ClientState.CONNECTING)
            code, reason = await self._session()
            self._connected.clear()
            self._ws = None
            self.close_code, self.close_reason = code, reason
            for sub in self._subs.values():
                sub.active = False
                sub._cancel_retry()  # resubscribed after reconnecting instead
            for sub in self.server_subscriptions():
                del self._subs[sub.channel]  # the hub makes them again
            self._fail_all(ConnectionError(f"disconnected ({code} {reason})"), publishes=False)
            if self._closing:
                break
            if not should_reconnect(code):
                self._stop(ConnectionError(f"hub closed the connection: {code} {reason}"))
                return
            if code == HubCloseCode.TOKEN_EXPIRED:
                if self.get_token is None:
                    self._stop(ConnectionError("token expired and no get_token to refresh it"))
                    return
                self.token = None  # fetched again before the next connect
            self._set_state(ClientState.DISCONNECTED, code, reason)
            # Exponential backoff with full jitter, so that clients dropped at
            # once (a node restart) do not all come back at once.
            delay = self._backoff(self._attempt)
            self._attempt = min(self._attempt + 1, 30)
            await asyncio.sleep(delay)

    async def _session(self) -> tuple[int, str]:
        """One connection, from opening to closing; return the close code and reason.

        Transports of this round are tried in turn until one connects; one that
        fails before the hub's connect reply (the network or a proxy, not the hub)
        makes way for the next at once, without backoff.
        """
        if not self._round:
            if self._working is not None and self._working_failures < 3:
                self._round = [self._working]
            else:
                self._working = None
                self._round = list(self.transports)
        while True:
            name = self._round.pop(0)
            code, reason, connected = await self._session_on(name)
            if connected:
                self._round = []
                return code, reason
            if name == self._working:
                self._working_failures += 1
            self.close_code, self.close_reason = code, reason  # the last error, if all fail
            if not self._round or self._closing or not should_reconnect(code):
                self._round = []
                return code, reason
            logger.info("transport %s failed (%s %s), next: %s", name, code, reason, self._round[0])

    async def _session_on(self, name: str) -> tuple[int, str, bool]:
        """One connection on one transport: its close code and reason, and whether it
        connected (got the hub's connect reply)."""
        last = not self._round
        try:
            if self.token is None and self.get_token is not None:
                self.token = await self.get_token()
            link: Link
            if name == "websocket":
                link = await asyncio.wait_for(
                    WebSocketLink.open(self.url, **self.connect_options), self.transport_timeout
                )
            else:
                if self._http is None:
                    self._http = http_client()
                link = HTTP_LINKS[name](self.url, self._http)
        except InvalidStatus as exc:
            return (*self._refused(exc, last=last), False)
        except (OSError, InvalidHandshake, asyncio.TimeoutError, TimeoutError) as exc:
            return 1006, f"{name}: {exc or 'did not open in time'}", False
        self._ws = link
        reader = asyncio.get_running_loop().create_task(self._read(link))
        connected = False
        try:
            await asyncio.wait_for(self._handshake(), self.transport_timeout)
            connected = True
        except HubClientError as exc:
            connected = True  # the hub answered: this transport works
            if exc.code == ErrorCode.TOKEN_EXPIRED:
                self.token = None  # the hub closes with 3000; a new token comes next time
            elif exc.temporary:
                await link.close(1000, "connect failed")
                await reader
                return 1011, exc.message, True
            else:
                self._stop(exc)
                await link.close(1000, "refused")
        except (asyncio.TimeoutError, TimeoutError):
            await link.close(1000, "no connect reply")
            await reader
            return 1006, f"{name} did not connect within {self.transport_timeout} s", False
        except ConnectionError:
            pass
        await reader
        if connected or self._disconnect_push is not None:
            connected = True
            self._working, self._working_failures = name, 0
        code = link.close_code if link.close_code is not None else 1006
        reason = link.close_reason or ""
        if self._disconnect_push is not None:
            code, reason = self._disconnect_push
        return code, reason, connected

    def _refused(self, exc: InvalidStatus, *, last: bool) -> tuple[int, str]:
        """The upgrade got an HTTP error: retry when that can help, else stop.

        A refusal other than 401/403 may come from a proxy rather than the hub (one
        that strips ``Upgrade`` gets the hub's 400): the next transport is tried, and
        only the last one's refusal stops the client.
        """
        response = exc.response
        why = response.body.decode("utf-8", "replace").strip().splitlines()
        reason = f"{exc}: {why[0][:200]}" if why else str(exc)
        status = response.status_code
        if status == 401 and self.get_token is not None:
            self.token = None  # a token in a cookie or subprotocol may have expired
        elif status == 403 or (last and 400 <= status < 500 and status not in _RETRY_STATUSES):
            # A forbidden origin, a bad token, no such path: asking again
            # cannot help.
            self._stop(ConnectionError(f"hub refused the connection: {reason}"))
        return 1006, reason

    async def _handshake(self) -> None:
        self._disconnect_push = None
        # Many joins and leaves in one push (docs/wire-protocol.md).
        params: dict[str, JSON] = {"presence_batches": True}
        if self.name is not None:
            params["name"] = self.name
        if self.token:
            params["token"] = self.token
        if self.info is not None:
            params["info"] = self.info
        if self.data is not None:
            params["data"] = self.data
        result = await self._call("connect", params, wait=False)
        self.connect_data = result.get("data")
        self.client_id = str(result["client"])
        self.user = str(result["user"])
        ttl = result.get("ttl")
        if isinstance(ttl, int) and self.get_token is not None:
            self._schedule_refresh(ttl)
        self._attempt = 0
        self._set_state(ClientState.CONNECTED)
        self._connected.set()
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        for sub in list(self._subs.values()):
            self._send_subscribe(sub)
        for publish in list(self._publishes.values()):
            self._send_publish(publish)

    def _stop(self, exc: Exception) -> None:
        self._closing = True
        if self._first is not None and not self._first.done():
            self._first.set_exception(exc)
        self._fail_all(exc, publishes=True)
        for sub in self._subs.values():
            sub._cancel_retry()
            if sub._ready is not None and not sub._ready.done():
                sub._ready.set_exception(exc)
        self._set_state(ClientState.CLOSED, self.close_code, self.close_reason)
        self._connected.set()  # wake waiters, who find the client closed

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform(0, min(max, min * 2**attempt))."""
        ceiling = min(self.max_backoff, self.min_backoff * 2 ** min(attempt, 30))
        return random.uniform(0, ceiling)

    def _schedule_refresh(self, ttl: int) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        delay = max(0.0, ttl - max(1.0, ttl * 0.1))
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh(delay))

    async def _refresh(self, delay: float) -> None:
        await asyncio.sleep(delay)
        assert self.get_token is not None
        try:
            self.token = await self.get_token()
            result = await self._call("refresh", {"token": self.token})
        except (HubClientError, ConnectionError) as exc:
            logger.warning("token refresh failed: %s", exc)
            return
        ttl = result.get("ttl")
        if isinstance(ttl, int):
            self._schedule_refresh(ttl)

    # ----------------------------------------------------------- commands

    async def _call(
        self,
        method: str,
        params: dict[str, JSON],
        *,
        wait: bool = True,
        on_reply: Callable[[dict[str, JSON]], None] | None = None,
    ) -> dict[str, JSON]:
        if wait and self.state is not ClientState.CONNECTED:
            await self._connected.wait()
            if self._closing:
                raise ConnectionError("client closed")
        return await self._send(method, params, on_reply)

    def _send(
        self,
        method: str,
        params: dict[str, JSON],
        on_reply: Callable[[dict[str, JSON]], None] | None = None,
    ) -> asyncio.Future[dict[str, JSON]]:
        future: asyncio.Future[dict[str, JSON]] = asyncio.get_running_loop().create_future()
        ws = self._ws
        if ws is None:
            future.set_exception(ConnectionError("not connected"))
            return future
        cid = next(self._ids)
        self._pending[cid] = _Pending(future, on_reply)
        message = dumps({"id": cid, "method": method, "params": params})
        task = asyncio.get_running_loop().create_task(ws.send(message))
        task.add_done_callback(_ignore_closed)
        return future

    def _send_subscribe(self, sub: Subscription) -> None:
        params: dict[str, JSON] = {"channel": sub.channel}
        resubscribe = sub.position is not None
        if sub.position is not None:
            params.update(recover=True, offset=sub.offset, epoch=sub.epoch)

        def on_reply(result: dict[str, JSON]) -> None:
            # Runs in the reader, before any later push: recovered publications
            # are delivered ahead of new ones.
            if self._subs.get(sub.channel) is not sub:
                # Unsubscribed (or replaced) while the hub was answering: undo it
                # on the hub too (commands run in order), and tell nobody.
                if self._subs.get(sub.channel) is None:
                    self._send("unsubscribe", {"channel": sub.channel})
                return
            sub.active = True
            sub._attempt = 0
            sub.data = result.get("data")
            recovered = bool(result.get("recovered"))
            epoch = result.get("epoch")
            for pub in result.get("publications", []) if recovered else []:
                self._on_publication(sub, _publication(sub.channel, pub, epoch))
            if isinstance(epoch, str):
                sub.offset, sub.epoch = int(result.get("offset", 0)), epoch
            position = sub.position
            if sub.on_subscribed is not None:
                event = SubscribedEvent(sub.channel, recovered, resubscribe, position)
                self._emit(sub.on_subscribed, event)

        future = self._send("subscribe", params, on_reply)
        future.add_done_callback(lambda f: self._subscribe_done(sub, f))

    def _subscribe_done(self, sub: Subscription, future: asyncio.Future[dict[str, JSON]]) -> None:
        ready = sub._ready
        exc = future.exception() if not future.cancelled() else None
        if exc is None:
            if ready is not None and not ready.done():
                ready.set_result(None)
            return
        if isinstance(exc, HubClientError) and exc.temporary and self._subs.get(sub.channel) is sub:
            # E.g. 112 broker unavailable, 111 too many requests, 100 internal: keep
            # the subscription and ask again after a backoff (full jitter);
            # subscribe() goes on waiting.
            delay = self._backoff(sub._attempt)
            sub._attempt += 1
            logger.warning(
                "subscribe to %r failed (%s), retrying in %.2f s", sub.channel, exc, delay
            )
            sub._cancel_retry()
            sub._retry = asyncio.get_running_loop().call_later(delay, self._retry_subscribe, sub)
            return
        if isinstance(exc, HubClientError):
            # Refused for good (e.g. permission revoked): stop trying this channel.
            if self._subs.get(sub.channel) is sub:
                self._subs.pop(sub.channel)
            if sub.on_unsubscribed is not None:
                self._emit(
                    sub.on_unsubscribed, UnsubscribedEvent(sub.channel, exc.code, exc.message)
                )
            if ready is not None and not ready.done():
                ready.set_exception(exc)
        # A ConnectionError: the subscription is sent again after reconnecting.

    def _retry_subscribe(self, sub: Subscription) -> None:
        sub._retry = None
        # Only on the same connection: a reconnect resubscribes every channel itself.
        current = self._subs.get(sub.channel) is sub
        if current and self.state is ClientState.CONNECTED and not sub.active:
            self._send_subscribe(sub)

    def _resync(self, sub: Subscription) -> None:
        """A gap in a channel's offsets: subscribe again, recovering from the last
        publication processed (what tether.js does)."""
        if self.state is not ClientState.CONNECTED or self._subs.get(sub.channel) is not sub:
            return
        # Publications still in flight are dropped until the hub answers: the
        # recovery delivers them (it has everything after sub.offset), and the hub
        # sends later ones after its reply.
        sub.active = False
        self._send("unsubscribe", {"channel": sub.channel})
        self._send_subscribe(sub)

    def _send_publish(self, publish: _Publish) -> None:
        params: dict[str, JSON] = {
            "channel": publish.channel,
            "data": publish.data,
            "idempotency_key": publish.key,
        }

        def done(future: asyncio.Future[dict[str, JSON]]) -> None:
            if publish.future.done() or future.cancelled():
                return
            exc = future.exception()
            if exc is None:
                publish.future.set_result(future.result())
            elif isinstance(exc, HubClientError):
                publish.future.set_exception(exc)
            # A ConnectionError: kept, and resent after reconnecting.

        self._send("publish", params).add_done_callback(done)

    def _fail_all(self, exc: Exception, *, publishes: bool) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(exc)
                item.future.exception()  # retrieved: a caller may be gone
        if publishes:
            for publish in list(self._publishes.values()):
                if not publish.future.done():
                    publish.future.set_exception(exc)
                    publish.future.exception()

    # ------------------------------------------------------------ reading

    async def _read(self, link: Link) -> None:
        try:
            async for message in link:
                if isinstance(message, str):
                    self._on_message(message)
                else:
                    self._on_frame(message)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("hub client reader failed")
            await link.close(1011, "client error")
        finally:
            # Replies that cannot come any more (publishes stay, to be sent again).
            self._fail_all(ConnectionError("connection lost"), publishes=False)

    def _on_message(self, text: str) -> None:
        try:
            message = loads(text)
        except ValueError:
            logger.warning("hub sent invalid JSON")
            return
        if not isinstance(message, dict):
            logger.warning("hub sent a message that is not a JSON object")
            return
        self._on_frame(message)

    def _on_frame(self, message: dict[str, Any]) -> None:
        """One reply or push, parsed (a WebSocket message, or an HTTP transport's frame)."""
        if "id" in message:
            pending = self._pending.pop(message["id"], None)
            if pending is None:
                return
            error = message.get("error")
            if error is not None:
                exc = HubClientError(
                    int(error.get("code", 100)),
                    str(error.get("message", "")),
                    bool(error.get("temporary")),
                )
                if not pending.future.done():
                    pending.future.set_exception(exc)
                    pending.future.exception()
                return
            result = message.get("result") or {}
            if pending.on_reply is not None:
                pending.on_reply(result)
            if not pending.future.done():
                pending.future.set_result(result)
            return
        self._on_push(message)

    def _on_push(self, message: dict[str, Any]) -> None:
        kind = message.get("push")
        if kind == "disconnect":
            self._disconnect_push = (int(message["code"]), str(message.get("reason", "")))
            return
        if kind == "subscribe":
            self._on_server_subscribe(message)
            return
        sub = self._subs.get(str(message.get("channel")))
        if sub is None:
            return
        if kind == "pub":
            if sub.active:
                self._on_pushed_publication(sub, message)
        elif kind in ("join", "leave"):
            self._on_presence_change(sub, kind, message["info"])
        elif kind == "presence":
            for change, info in message.get("changes", ()):
                self._on_presence_change(sub, change, info)
        elif kind == "unsubscribe":
            self._subs.pop(sub.channel, None)
            if sub.on_unsubscribed is not None:
                event = UnsubscribedEvent(
                    sub.channel, int(message.get("code", 0)), str(message.get("reason", ""))
                )
                self._emit(sub.on_unsubscribed, event)

    def _on_presence_change(self, sub: Subscription, kind: str, info: JSON) -> None:
        handler = sub.on_join if kind == "join" else sub.on_leave
        if handler is not None:
            event = PresenceEvent(sub.channel, ClientInfo.from_json(info), kind == "join")
            self._emit(handler, event)

    def _on_server_subscribe(self, message: dict[str, Any]) -> None:
        channel = str(message.get("channel"))
        existing = self._subs.get(channel)
        if existing is not None and not existing.server_side:
            return  # the client's own subscription carries on
        sub = Subscription(channel, server_side=True, active=True, data=message.get("data"))
        epoch = message.get("epoch")
        if isinstance(epoch, str):
            sub.offset, sub.epoch = int(message.get("offset", 0)), epoch
        self._subs[channel] = sub
        if self.on_server_subscription is not None:
            try:
                # Called here, in the reader, so its handlers are set before the
                # next push (the first publication) is read.
                self.on_server_subscription(sub)
            except Exception:
                logger.exception("on_server_subscription failed")
        if sub.on_subscribed is not None:
            self._emit(sub.on_subscribed, SubscribedEvent(channel, False, False, sub.position))

    def _on_pushed_publication(self, sub: Subscription, message: dict[str, Any]) -> None:
        pub = _publication(sub.channel, message, message.get("epoch"))
        if pub.offset is not None and pub.epoch is not None and sub.offset is not None:
            if sub.epoch is not None and pub.epoch != sub.epoch:
                # The channel's history was reset (lost, expired): the position is
                # gone, as after a recovery that failed. Tell the app to resync and
                # go on from the new epoch.
                logger.warning(
                    "channel %r: new epoch %r (was %r)", sub.channel, pub.epoch, sub.epoch
                )
                sub.offset, sub.epoch = pub.offset, pub.epoch
                if sub.on_subscribed is not None:
                    position = StreamPosition(pub.offset, pub.epoch)
                    event = SubscribedEvent(sub.channel, False, True, position)
                    self._emit(sub.on_subscribed, event)
                if sub.on_publication is not None:
                    self._emit(sub.on_publication, pub)
                return
            if pub.epoch == sub.epoch and pub.offset > sub.offset + 1:
                logger.info("channel %r: gap %d -> %d", sub.channel, sub.offset, pub.offset)
                self._resync(sub)
                return
        self._on_publication(sub, pub)

    def _on_publication(self, sub: Subscription, pub: PublicationEvent) -> None:
        if pub.offset is not None and pub.epoch is not None:
            if sub.epoch == pub.epoch and sub.offset is not None and pub.offset <= sub.offset:
                return  # seen already (e.g. both recovered and pushed)
            sub.offset, sub.epoch = pub.offset, pub.epoch
        if sub.on_publication is not None:
            self._emit(sub.on_publication, pub)

    # ------------------------------------------------------------- events

    def _emit(self, handler: Handler, event: Any) -> None:
        self._events.put_nowait((handler, event))

    async def _dispatch(self) -> None:
        # One task calls every handler, in arrival order; a slow handler delays
        # the next one, never the reading of the socket.
        while True:
            handler, event = await self._events.get()
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("event handler failed")
            finally:
                self._events.task_done()

    def _set_state(self, state: ClientState, code: int | None = None, reason: str = "") -> None:
        if state is self.state:
            return
        self.state = state
        transport = self._ws.name if self._ws is not None else self._working
        event = StateEvent(state, code, reason, transport)
        for callback in self._state_callbacks:
            try:
                callback(event)
            except Exception:
                logger.exception("state callback failed")


def _publication(channel: str, data: dict[str, Any], epoch: object) -> PublicationEvent:
    info = data.get("info")
    offset = data.get("offset")
    return PublicationEvent(
        channel,
        data.get("data"),
        offset if isinstance(offset, int) else None,
        epoch if isinstance(epoch, str) and isinstance(offset, int) else None,
        ClientInfo.from_json(info) if isinstance(info, dict) else None,
    )


def _ignore_closed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        if not isinstance(exc, (ConnectionClosed, ConnectionError)):
            logger.warning("hub client send failed: %s", exc)
