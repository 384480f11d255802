"""The backend proxy: the app hooks' contract over HTTP, for apps that cannot hold connections.

A serverless backend (or any web app on another stack) cannot keep a WebSocket
open, but it can answer a POST. With proxy URLs configured (``tether serve
--proxy-connect URL ...`` or ``[proxy]`` in TOML, per namespace too), each hook
of :mod:`tether.hub.hooks` becomes a POST of a JSON body to the app's URL; its
JSON answer is read as the hook's answer (docs/proxy.md has both shapes).

A backend is never trusted to behave: each call has a timeout (a slot in the
per-URL concurrency limit included), an answer is read up to a size limit, and
anything but a well-formed answer becomes an error code for the one client
that asked (113 slow, 114 garbage or an HTTP error, 115 unreachable) and one
log line. httpx does the HTTP (``pip install 'tether[proxy]'``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tether.hub.config import HubConfig, ProxyConfig
from tether.hub.errors import APP_CODES, ErrorCode, HubError
from tether.hub.hooks import (
    ConnectRequest,
    ConnectResult,
    DisconnectEvent,
    Hooks,
    PublishRequest,
    PublishRewrite,
    RpcRequest,
    SessionInfo,
    SubscribeRequest,
    SubscribeResult,
)
from tether.hub.model import JSON
from tether.hub.wire import dumps, loads
from tether.protocol.headers import Headers

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("tether.hub.proxy")

# A slot is released even when a backend never answers; the hook's own timeout
# (call_hook) sits a little above the proxy's so the proxy's precise error wins.
HOOK_TIMEOUT_MARGIN = 1.0
KEY_HEADER = "X-Tether-Proxy-Key"
_WIRE_CODES = frozenset(int(code) for code in ErrorCode)


class BackendProxy:
    """POSTs hook requests to the configured URLs; :meth:`hooks` are what a Node uses."""

    def __init__(self, config: HubConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.settings: ProxyConfig = config.proxy
        self._client = client
        self._own_client = client is None
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._allowed = {name.lower() for name in self.settings.headers}

    def hooks(self) -> Hooks:
        """Hooks for the URLs configured (a namespace URL installs its hook too)."""
        settings, config = self.settings, self.config
        namespaced = [config.channels, *config.namespaces.values()]
        timeout = settings.timeout + HOOK_TIMEOUT_MARGIN
        names = ("on_connect", "on_subscribe", "on_publish", "on_rpc", "on_disconnect")
        return Hooks(
            on_connect=self.on_connect if settings.connect else None,
            on_subscribe=(
                self.on_subscribe
                if settings.subscribe or any(o.proxy_subscribe for o in namespaced)
                else None
            ),
            on_publish=(
                self.on_publish
                if settings.publish or any(o.proxy_publish for o in namespaced)
                else None
            ),
            on_rpc=self.on_rpc if settings.rpc else None,
            on_disconnect=self.on_disconnect if settings.disconnect else None,
            timeout=timeout,
            timeouts=dict.fromkeys(names, timeout),
        )

    async def close(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------- hooks

    async def on_connect(self, request: ConnectRequest) -> ConnectResult | None:
        body: dict[str, JSON] = {
            "client": request.client,
            "transport": request.transport,
            "headers": self._headers(request.headers),
            "cookies": dict(request.cookies),
        }
        if request.token is not None:
            body["token"] = request.token
        credentials = request.credentials
        if credentials is not None:
            body["user"] = credentials.user
            body["claims"] = dict(credentials.claims or {})
        for name in ("name", "info", "data"):
            value = getattr(request, name)
            if value is not None:
                body[name] = value
        result = await self._post("connect", self.settings.connect, body, request.headers)
        if result is None:
            return None
        user = result.get("user")
        channels = result.get("channels", [])
        if user is not None and not isinstance(user, str):
            raise _garbage("connect", "result.user must be a string")
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise _garbage("connect", "result.channels must be a list of strings")
        return ConnectResult(
            user=user, info=result.get("info"), data=result.get("data"), channels=channels
        )

    async def on_subscribe(self, request: SubscribeRequest) -> SubscribeResult | None:
        result = await self._channel_hook("subscribe", request)
        return SubscribeResult(result.get("data")) if result is not None else None

    async def on_publish(self, request: PublishRequest) -> PublishRewrite | None:
        result = await self._channel_hook("publish", request)
        if result is None or "data" not in result:
            return None
        return PublishRewrite(result["data"])

    async def _channel_hook(
        self, hook: str, request: SubscribeRequest | PublishRequest
    ) -> dict[str, Any] | None:
        """POST to the channel's namespace URL, else the hub-wide one; None without either."""
        options = self.config.channel_options(request.channel)
        own = getattr(options, f"proxy_{hook}") if options is not None else ""
        url = own or getattr(self.settings, hook)
        if not url:
            return None
        body = self._session_body(request.session, channel=request.channel, data=request.data)
        return await self._post(hook, url, body, request.session.headers)

    async def on_rpc(self, request: RpcRequest) -> JSON:
        body = self._session_body(request.session, method=request.method, data=request.data)
        result = await self._post("rpc", self.settings.rpc, body, request.session.headers)
        return result.get("data") if result is not None else None

    async def on_disconnect(self, event: DisconnectEvent) -> None:
        body = self._session_body(event.session, code=event.code, reason=event.reason)
        await self._post("disconnect", self.settings.disconnect, body, event.session.headers)

    # ------------------------------------------------------------- HTTP

    def _headers(self, headers: Headers) -> dict[str, str]:
        """The allowed headers of the client's request (the last of a repeated one)."""
        return {name: value for name, value in headers.raw_items() if name.lower() in self._allowed}

    def _session_body(self, session: SessionInfo, **fields: JSON) -> dict[str, JSON]:
        body: dict[str, JSON] = {
            "client": session.client,
            "user": session.user,
            "transport": session.transport,
            "headers": self._headers(session.headers),
            "cookies": session.cookies,
        }
        if session.data is not None:
            body["session_data"] = session.data
        if session.info is not None:
            body["info"] = session.info
        body.update({k: v for k, v in fields.items() if v is not None})
        return body

    def _slot(self, url: str) -> asyncio.Semaphore:
        slot = self._slots.get(url)
        if slot is None:
            slot = self._slots[url] = asyncio.Semaphore(self.settings.max_concurrency)
        return slot

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            try:
                import httpx
            except ImportError:  # pragma: no cover - the extra is installed in CI
                logger.error("the backend proxy needs httpx: pip install 'tether[proxy]'")
                raise HubError(ErrorCode.APP_UNAVAILABLE, "proxy support missing") from None
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            self._client = httpx.AsyncClient(limits=limits, follow_redirects=False)
        return self._client

    async def _post(
        self, hook: str, url: str, body: dict[str, JSON], client_headers: Headers
    ) -> dict[str, Any] | None:
        """POST ``body``; the answer's ``result`` (``None`` without one) or :class:`HubError`."""
        timeout = self.settings.timeout
        try:
            status, content = await asyncio.wait_for(self._send(url, body, client_headers), timeout)
        except asyncio.TimeoutError:
            logger.warning("proxy %s: %s did not answer within %.3g s", hook, url, timeout)
            raise HubError(
                ErrorCode.APP_TIMEOUT, f"{hook} backend did not answer in time"
            ) from None
        except _Unreachable as exc:
            logger.warning("proxy %s: %s unreachable: %s", hook, url, exc)
            raise HubError(ErrorCode.APP_UNAVAILABLE, f"{hook} backend unavailable") from None
        except _TooLarge:
            logger.warning(
                "proxy %s: %s answered more than %d bytes",
                hook,
                url,
                self.settings.max_response_size,
            )
            raise _garbage(hook, "answer too large") from None
        if not 200 <= status < 300:
            logger.warning("proxy %s: %s answered HTTP %d", hook, url, status)
            raise HubError(ErrorCode.APP_ERROR, f"{hook} backend answered HTTP {status}")
        return _answer(hook, url, content)

    async def _send(
        self, url: str, body: dict[str, JSON], client_headers: Headers
    ) -> tuple[int, bytes]:
        import httpx

        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        headers.update(self._headers(client_headers))
        if self.settings.key:
            headers[KEY_HEADER] = self.settings.key
        cookie = "; ".join(client_headers.get_all("Cookie"))
        if cookie:
            # So a web framework's own session middleware sees its cookie, too.
            headers["Cookie"] = cookie
        limit = self.settings.max_response_size
        async with self._slot(url):
            try:
                async with self._http().stream(
                    "POST", url, content=dumps(body).encode(), headers=headers
                ) as response:
                    content = bytearray()
                    async for chunk in response.aiter_bytes():
                        content += chunk
                        if len(content) > limit:
                            raise _TooLarge()
                    return response.status_code, bytes(content)
            except httpx.TimeoutException:
                raise asyncio.TimeoutError() from None
            except httpx.HTTPError as exc:
                raise _Unreachable(str(exc) or type(exc).__name__) from None


class _Unreachable(Exception):
    pass


class _TooLarge(Exception):
    pass


def _garbage(hook: str, why: str) -> HubError:
    return HubError(ErrorCode.APP_ERROR, f"{hook} backend answered garbage: {why}")


def _answer(hook: str, url: str, content: bytes) -> dict[str, Any] | None:
    """The ``result`` of a backend's answer, or its ``error`` raised as :class:`HubError`."""
    try:
        answer = loads(content)
        if not isinstance(answer, Mapping):
            raise ValueError("the answer must be a JSON object")
        error = answer.get("error")
        if error is not None:
            raise _backend_error(error)
        result = answer.get("result")
        if result is not None and not isinstance(result, Mapping):
            raise ValueError("result must be an object")
    except (ValueError, UnicodeDecodeError) as exc:
        logger.warning("proxy %s: %s answered garbage: %s", hook, url, exc)
        raise _garbage(hook, str(exc)) from None
    return dict(result) if result is not None else None


def _backend_error(error: Any) -> HubError:
    """``{"error": {"code", "message"?, "temporary"?}}``: the app's refusal."""
    if not isinstance(error, Mapping):
        raise ValueError("error must be an object")
    code, message = error.get("code"), error.get("message")
    if type(code) is not int or (code not in APP_CODES and code not in _WIRE_CODES):
        raise ValueError("error.code must be a wire protocol code or 1000-1999")
    if message is not None and not isinstance(message, str):
        raise ValueError("error.message must be a string")
    temporary = error.get("temporary", False)
    if not isinstance(temporary, bool):
        raise ValueError("error.temporary must be a boolean")
    return HubError(code, message, temporary=temporary)
