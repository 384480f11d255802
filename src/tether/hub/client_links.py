"""The links of the Python hub client: how its frames travel to the hub.

One small class per transport, each with the same interface (what
:class:`tether.hub.client.Client` uses), so the client never asks which one
it holds. docs/wire-protocol.md ("HTTP fallbacks") specifies the HTTP ones.

- ``send(text)``: one command (a JSON text). The HTTP links start their
  session with the first command (always ``connect``) and post the later
  ones upstream (``POST /connection/send``), one request at a time, so the
  hub handles them in order.
- ``async for message in link``: replies and pushes, as JSON text (WebSocket)
  or parsed objects (HTTP), until the link closes.
- ``close(code, reason)``; then ``close_code`` / ``close_reason`` say why it
  ended (1006 for a cut network or a node gone, as for a WebSocket).

The HTTP links use httpx (``pip install 'tether[proxy]'``); the WebSocket link
needs nothing beyond tether.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

from tether.asyncio.client import ClientConnection, connect
from tether.hub.wire import SUBPROTOCOL, loads
from tether.protocol.exceptions import ConnectionClosed

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger("tether.hub.client")

TRANSPORTS = ("websocket", "http_stream", "sse", "long_poll")
"""Every transport, in the order the client tries them by default."""

HTTP_TRANSPORTS = frozenset(TRANSPORTS[1:])

Message = str | dict[str, Any]


class Link(Protocol):
    """What the client needs of a transport."""

    @property
    def name(self) -> str: ...

    @property
    def close_code(self) -> int | None: ...

    @property
    def close_reason(self) -> str: ...

    async def send(self, text: str) -> None: ...

    def __aiter__(self) -> AsyncIterator[Message]: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


def httpx_available() -> bool:
    return importlib.util.find_spec("httpx") is not None


def endpoint_url(ws_url: str, name: str) -> str:
    """``/connection/<name>`` beside the WebSocket path, as http(s)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rsplit("/", 1)[0] + "/" + name
    return urlunsplit((scheme, parts.netloc, path, "", ""))


# ------------------------------------------------------------------ WebSocket


class WebSocketLink:
    name = "websocket"

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws

    @classmethod
    async def open(cls, url: str, **options: Any) -> WebSocketLink:
        return cls(await connect(url, subprotocols=[SUBPROTOCOL], **options))

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    @property
    def close_reason(self) -> str:
        return self._ws.close_reason or ""

    async def send(self, text: str) -> None:
        await self._ws.send(text)

    async def __aiter__(self) -> AsyncIterator[Message]:
        with contextlib.suppress(ConnectionClosed):
            async for message in self._ws:
                if isinstance(message, str):
                    yield message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)


# ----------------------------------------------------------------------- HTTP


class HttpRefused(Exception):
    """The hub answered an HTTP fallback request with an error status."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}" if message else f"HTTP {status}")
        self.status = status
        self.code = code

    @property
    def close_code(self) -> int:
        """As the same refusal on a WebSocket would end: an expired token is 3000 (fetch a
        new one), a refused one 4003 (stop); anything else, e.g. 404 code 125 "session
        not found" after a node died, reconnects (1006) and recovers."""
        if self.code == 109:
            return 3000
        if self.status in (401, 403):
            return 4003
        return 1006


async def _refusal(response: httpx.Response) -> HttpRefused:
    body = (await response.aread()).decode("utf-8", "replace").strip()
    code: int | None = None
    message = body.splitlines()[0][:200] if body else ""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(body)["error"]
        code = int(error["code"])
        message = str(error.get("message", ""))[:200]
    return HttpRefused(response.status_code, code, message)


class HttpLink:
    """The shared part of the HTTP links: the session key from the session frame, the
    upstream poster, frame numbering, one close. Subclasses read the downstream."""

    name = "http"

    def __init__(self, ws_url: str, http: httpx.AsyncClient) -> None:
        self._ws_url = ws_url
        self._http = http
        self._incoming: asyncio.Queue[Message | None] = asyncio.Queue()
        self._session: str | None = None
        self._last_seq = 0
        self._started = False
        self._outgoing: list[str] = []
        self._sender: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.close_reason = ""

    def url(self, name: str) -> str:
        return endpoint_url(self._ws_url, name)

    async def send(self, text: str) -> None:
        if self.close_code is not None:
            raise ConnectionError(f"{self.name} session closed")
        if not self._started:
            self._started = True
            self._reader = asyncio.get_running_loop().create_task(self._read_guarded(text))
            return
        self._outgoing.append(text)
        self._kick()

    def _kick(self) -> None:
        if self._session is None or not self._outgoing or self.close_code is not None:
            return
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._post_commands())

    async def _post_commands(self) -> None:
        # One `send` at a time per session: the next after this answer (spec).
        while self._outgoing and self.close_code is None:
            commands, self._outgoing = self._outgoing, []
            body = f'{{"session":{json.dumps(self._session)},"commands":[{",".join(commands)}]}}'
            try:
                response = await self._http.post(
                    self.url("send"), content=body, headers={"Content-Type": "application/json"}
                )
            except Exception as exc:  # httpx's errors, an OSError
                self._end(1006, f"upstream failed: {exc}")
                return
            if response.status_code != 200:
                refused = await _refusal(response)
                self._end(refused.close_code, str(refused))
                return

    async def _read_guarded(self, connect: str) -> None:
        try:
            await self._read(connect)
        except HttpRefused as exc:
            self._end(exc.close_code, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # httpx's errors, an OSError, bad JSON
            self._end(1006, f"{self.name} failed: {exc}")
        else:
            self._end(1006, f"{self.name} ended")

    async def _read(self, connect: str) -> None:
        raise NotImplementedError

    def _hello(self, frame: Any) -> None:
        """The session frame: ``{"session": key, "seq": 0, "transport", "ping"}``."""
        if not isinstance(frame, dict) or not isinstance(frame.get("session"), str):
            raise ValueError("the first frame is not a session frame")
        self._session = frame["session"]
        self._kick()

    def _frame(self, frame: Any, seq: int | None = None) -> None:
        """Frame number ``seq`` (implicit on streams): repeats are dropped (a poll answered
        again); a gap means frames were lost, so the session is given up."""
        seq = self._last_seq + 1 if seq is None else seq
        if seq <= self._last_seq:
            return
        if seq != self._last_seq + 1:
            raise ValueError(f"frames lost (seq {self._last_seq} -> {seq})")
        if not isinstance(frame, dict):
            raise ValueError("a frame is not a JSON object")
        self._last_seq = seq
        self._incoming.put_nowait(frame)

    def _end(self, code: int, reason: str) -> None:
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        self._incoming.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[Message]:
        while (message := await self._incoming.get()) is not None:
            yield message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._end(code, reason)
        current = asyncio.current_task()
        for task in (self._reader, self._sender):
            if task is not None and task is not current and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def http_client(headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """The HTTP client the HTTP links of one hub client share (its connections too)."""
    import httpx  # the optional dependency, needed only here

    # No read timeout: a stream or a poll waits for the hub as long as it takes; the
    # client's own ping (and the hub's heartbeats) find a dead one.
    return httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(10.0, read=None))


class HttpStreamLink(HttpLink):
    """``POST /connection/stream`` with the connect command; NDJSON frames come back."""

    name = "http_stream"

    async def _read(self, connect: str) -> None:
        headers = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
        async with self._http.stream(
            "POST", self.url("stream"), content=connect, headers=headers
        ) as response:
            if response.status_code != 200:
                raise await _refusal(response)
            async for line in response.aiter_lines():
                if not line.strip():
                    continue  # a heartbeat
                frame = loads(line)
                if self._session is None:
                    self._hello(frame)
                else:
                    self._frame(frame)


class SseLink(HttpLink):
    """``GET /connection/eventsource?connect=...``: one unnamed event per frame."""

    name = "sse"

    async def _read(self, connect: str) -> None:
        url = self.url("eventsource") + "?" + urlencode({"connect": connect})
        async with self._http.stream(
            "GET", url, headers={"Accept": "text/event-stream"}
        ) as response:
            if response.status_code != 200:
                raise await _refusal(response)
            data: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue  # a heartbeat comment
                if line:
                    field, _, value = line.partition(":")
                    if field == "data":
                        data.append(value[1:] if value.startswith(" ") else value)
                    continue
                if not data:
                    continue
                frame = loads("\n".join(data))
                data = []
                if self._session is None:
                    self._hello(frame)
                else:
                    self._frame(frame)


class LongPollLink(HttpLink):
    """``POST /connection/poll``: ``{"connect": ...}`` first, then ``{"session", "ack"}``;
    each answer is ``{"session", "seq", "messages"}``."""

    name = "long_poll"

    async def _read(self, connect: str) -> None:
        body = f'{{"connect":{connect}}}'
        while self.close_code is None:
            response = await self._http.post(
                self.url("poll"), content=body, headers={"Content-Type": "application/json"}
            )
            if response.status_code != 200:
                raise await _refusal(response)
            answer = loads(response.text)
            if self._session is None:
                self._hello(answer)
            first, messages = answer.get("seq"), answer.get("messages")
            if not isinstance(first, int) or not isinstance(messages, list):
                raise ValueError("bad poll answer")
            for index, frame in enumerate(messages):
                self._frame(frame, first + index)
            body = json.dumps({"session": self._session, "ack": self._last_seq})


HTTP_LINKS: dict[str, type[HttpLink]] = {
    "http_stream": HttpStreamLink,
    "sse": SseLink,
    "long_poll": LongPollLink,
}
