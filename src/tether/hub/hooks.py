"""Application hooks: the app's say in who connects, subscribes, publishes, and what RPCs do.

A hub that only checks JWTs cannot ask the application anything. With
:class:`Hooks` given to a :class:`~tether.hub.Node`, async Python callables
decide instead (or as well: see docs/hooks.md for how they compose with JWT):

    async def on_connect(request: ConnectRequest) -> ConnectResult:
        user = await sessions.user_for(request.cookies.get("sessionid"))
        if user is None:
            raise Refuse(ErrorCode.UNAUTHORIZED, "log in first")
        return ConnectResult(user=user.id, info={"name": user.name}, channels=[f"user:{user.id}"])

    node = Node(HubConfig(...), hooks=Hooks(on_connect=on_connect))

The backend proxy (:mod:`tether.hub.proxy`) implements the same contract over
HTTP. Every call runs under :func:`call_hook`: a timeout, and an exception
turned into an error code for the client and one log line, so a broken or
slow hook never hangs a connection nor takes the hub down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tether.hub.auth import Credentials, cookies_of
from tether.hub.errors import APP_CODES, ErrorCode, HubError
from tether.hub.model import JSON
from tether.protocol.headers import Headers

logger = logging.getLogger("tether.hub.hooks")

_WIRE_CODES = frozenset(int(code) for code in ErrorCode)

DEFAULT_HOOK_TIMEOUT = 5.0


class Refuse(Exception):
    """Raised by a hook to refuse (or by an RPC handler to fail) with a code the client sees.

    ``code`` is one of the wire protocol's codes (:class:`ErrorCode`, e.g. 101
    unauthorized, 103 permission denied, 107 bad request) or an application
    code from 1000 to 1999; ``temporary`` tells clients whether retrying may help.
    """

    def __init__(
        self,
        code: int = ErrorCode.PERMISSION_DENIED,
        reason: str | None = None,
        *,
        temporary: bool = False,
    ) -> None:
        code = int(code)
        if code not in APP_CODES and code not in _WIRE_CODES:
            raise ValueError(f"refusal code {code}: use an ErrorCode or 1000-1999")
        super().__init__(f"{code} {reason or ''}".strip())
        self.code = code
        self.reason = reason
        self.temporary = temporary

    def to_error(self) -> HubError:
        return HubError(self.code, self.reason, temporary=self.temporary)


# ----------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What the hub knows about a connection when its client sends ``connect``."""

    client: str
    """The new session's id (``client`` in presence and in the connect reply)."""
    transport: str
    """``"websocket"`` (fallback transports name themselves)."""
    headers: Headers
    """The upgrade request's headers (the proxy forwards only the allowed ones)."""
    cookies: Mapping[str, str]
    token: str | None = None
    """The token the client presented (connect params, subprotocol or cookie)."""
    credentials: Credentials | None = None
    """The token, verified by the hub (``credentials.claims``), when JWT is configured."""
    name: str | None = None
    """The display name the client asked for (the ``name`` param)."""
    info: JSON = None
    """The presence info the client sent (the ``info`` param)."""
    data: JSON = None
    """The ``data`` param: anything the app's client wants to tell its server."""


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """A connect hook's yes: who the client is and what it gets."""

    user: str | None = None
    """The user id; ``None`` keeps the verified token's ``sub`` (``""``: anonymous)."""
    info: JSON = None
    """Presence info shown to others; ``None`` keeps the token's or the client's."""
    data: JSON = None
    """Per-session data: given to the session's later hooks and sent back in the
    connect reply as ``data``."""
    channels: Sequence[str] = ()
    """Server-side subscriptions: the session is subscribed to these (no subscribe
    hook) and told with a ``subscribe`` push each, after the connect reply."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A connected session, as later hooks and the app-side API see it."""

    client: str
    user: str
    transport: str = "websocket"
    data: JSON = None
    """What the connect hook returned as ``data``."""
    info: JSON = None
    """Presence info."""
    credentials: Credentials | None = None
    node: str = ""
    """The id of the node holding the session."""
    channels: tuple[str, ...] = ()
    headers: Headers = field(default_factory=Headers, compare=False, repr=False)
    """The upgrade request's headers (empty for a session listed from another node)."""

    @property
    def cookies(self) -> dict[str, str]:
        return cookies_of(self.headers)

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {
            "client": self.client,
            "user": self.user,
            "transport": self.transport,
            "node": self.node,
            "channels": list(self.channels),
        }
        if self.data is not None:
            out["data"] = self.data
        if self.info is not None:
            out["info"] = self.info
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SessionInfo:
        channels = data.get("channels")
        return cls(
            client=str(data["client"]),
            user=str(data["user"]),
            transport=str(data.get("transport", "websocket")),
            data=data.get("data"),
            info=data.get("info"),
            node=str(data.get("node", "")),
            channels=tuple(str(c) for c in channels) if isinstance(channels, list) else (),
        )


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    session: SessionInfo
    channel: str
    data: JSON = None
    """The subscribe command's ``data`` param."""


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """A subscribe hook's yes, with data for this subscription."""

    data: JSON = None
    """Sent to the client in the subscribe reply as ``data``."""


@dataclass(frozen=True, slots=True)
class PublishRequest:
    session: SessionInfo
    channel: str
    data: JSON


@dataclass(frozen=True, slots=True)
class PublishRewrite:
    """A publish hook's yes with new data: stored and fanned out instead of the client's."""

    data: JSON


@dataclass(frozen=True, slots=True)
class RpcRequest:
    session: SessionInfo
    method: str
    data: JSON


@dataclass(frozen=True, slots=True)
class DisconnectEvent:
    session: SessionInfo
    code: int
    """The close code (the hub's, or the client's when it left)."""
    reason: str = ""


ConnectHook = Callable[[ConnectRequest], Awaitable[ConnectResult | None]]
"""``None``: no opinion, the token and ``allow_anonymous`` decide as without a hook."""
SubscribeHook = Callable[[SubscribeRequest], Awaitable[SubscribeResult | None]]
"""``None`` or a :class:`SubscribeResult`: allowed; :class:`Refuse`: denied."""
PublishHook = Callable[[PublishRequest], Awaitable[PublishRewrite | None]]
"""``None``: published as sent; a :class:`PublishRewrite`: its data instead."""
RpcHook = Callable[[RpcRequest], Awaitable[JSON]]
"""The reply's ``data``; :class:`Refuse` for an error with the app's code."""
DisconnectHook = Callable[[DisconnectEvent], Awaitable[None]]


HOOK_NAMES = ("on_connect", "on_subscribe", "on_publish", "on_rpc", "on_disconnect")


@dataclass(frozen=True, slots=True)
class Hooks:
    """The application's hooks; any of them may be left out.

    Each call is bounded by ``timeout`` seconds (error 113 to the client), an
    exception other than :class:`Refuse` answers 114 and is logged.
    """

    on_connect: ConnectHook | None = None
    on_subscribe: SubscribeHook | None = None
    on_publish: PublishHook | None = None
    on_rpc: RpcHook | None = None
    on_disconnect: DisconnectHook | None = None
    timeout: float = DEFAULT_HOOK_TIMEOUT
    timeouts: Mapping[str, float] = field(default_factory=dict)
    """Per-hook timeouts by name (``{"on_rpc": 30.0}``), over ``timeout``."""

    def timeout_of(self, name: str) -> float:
        return self.timeouts.get(name, self.timeout)

    def merged(self, fallback: Hooks | None) -> Hooks:
        """These hooks, with ``fallback``'s where these have none (Python over proxy)."""
        if fallback is None:
            return self
        chosen: dict[str, Any] = {}
        timeouts = dict(self.timeouts)
        for name in HOOK_NAMES:
            hook = getattr(self, name)
            if hook is None and getattr(fallback, name) is not None:
                hook = getattr(fallback, name)
                timeouts[name] = fallback.timeout_of(name)
            chosen[name] = hook
        return Hooks(**chosen, timeout=self.timeout, timeouts=timeouts)


T = TypeVar("T")
R = TypeVar("R")


async def call_hook(
    name: str,
    hook: Callable[[T], Awaitable[R]],
    request: T,
    timeout: float,
    *,
    returns: type | None = None,
) -> R:
    """Run one hook: its answer, or :class:`HubError` (its refusal, 113 or 114).

    Never lets the hook's own exception out: the session answers the client
    with the code and goes on serving it. With ``returns``, an answer that is
    neither ``None`` nor of that type is the hook's bug (114).
    """
    try:
        answer = await asyncio.wait_for(hook(request), timeout)
    except Refuse as refusal:
        raise refusal.to_error() from None
    except HubError:
        raise  # the proxy's own mapping (backend down, garbage ...)
    except asyncio.TimeoutError:
        logger.warning("hook %s did not answer within %.3g s", name, timeout)
        raise HubError(ErrorCode.APP_TIMEOUT, f"{name} did not answer in time") from None
    except Exception:
        logger.exception("hook %s raised", name)
        raise HubError(ErrorCode.APP_ERROR, f"{name} failed") from None
    if returns is not None and answer is not None and not isinstance(answer, returns):
        logger.error("hook %s returned %r, not a %s", name, answer, returns.__name__)
        raise HubError(ErrorCode.APP_ERROR, f"{name} failed")
    return answer
