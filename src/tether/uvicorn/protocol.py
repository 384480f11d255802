"""tether as uvicorn's WebSocket engine: ``uvicorn app:app --ws tether.uvicorn:WebSocketProtocol``.

uvicorn parses the HTTP request itself; when it sees ``Upgrade: websocket``
it builds the class named by ``--ws`` with ``(config, server_state,
app_state)``, calls ``connection_made(transport)``, moves the transport over
(``transport.set_protocol``) and replays the request head through
``data_received``. From there on this class owns the socket: bytes go into
tether's sans-I/O core (:class:`tether.protocol.ServerProtocol`, which parses
whole simple frames in native code) and the ASGI application talks to it
through ``receive``/``send`` as the ASGI WebSocket spec describes.

Why it is fast, without reaching into tether's asyncio layer:

* no queue object and no task per message: a message goes straight to the
  application's pending ``receive()`` future, or into a deque that
  ``receive()`` pops without suspending;
* ``send()`` frames a whole small message in one call
  (:meth:`Connection.frame_simple`) and writes it at once when the
  application has nothing else queued; while it works through a burst of
  queued messages, its answers are held and written together (one system
  call per burst, not per message);
* the read side pushes back through TCP: beyond ``--ws-max-queue`` messages
  waiting for the application, the transport stops reading.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import os
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol, cast

from tether.protocol import (
    CloseReceived,
    Headers,
    Pong,
    Request,
    RequestReceived,
    Response,
    ServerProtocol,
    State,
)
from tether.protocol.extensions.base import ServerExtensionFactory
from tether.protocol.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from tether.protocol.frames import CloseCode, Opcode
from tether.protocol.handshake import make_response
from tether.uvicorn.scope import build_scope, log_target, peer_address

# uvicorn logs everything about WebSocket connections, access lines included,
# on this logger; so do we, with the same texts, so log filters keep working.
logger = logging.getLogger("uvicorn.error")
TRACE_LOG_LEVEL = 5  # uvicorn.logging.TRACE_LOG_LEVEL

# After a Close frame goes out, how long the peer has to answer with its own
# before the TCP connection is closed anyway (RFC 6455 §7.1.1; uvicorn's
# engines wait 10 s too).
CLOSE_TIMEOUT = 10.0
# Frames held during a burst before they are written anyway.
MAX_HELD_FRAMES = 64

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientDisconnected(OSError):
    """``send()`` after the connection closed.

    The ASGI spec (2.4) asks for "a server-specific subclass of OSError";
    Starlette turns it into ``WebSocketDisconnect``.
    """


class UvicornConfig(Protocol):
    """What this engine reads from ``uvicorn.Config``."""

    loaded: bool
    loaded_app: Any
    root_path: str
    asgi_version: str
    ws_max_size: int
    ws_max_queue: int
    ws_ping_interval: float | None
    ws_ping_timeout: float | None
    ws_per_message_deflate: bool

    def load(self) -> None: ...


class UvicornServerState(Protocol):
    """What this engine reads from ``uvicorn.server.ServerState``."""

    connections: set[Any]
    tasks: set[asyncio.Task[None]]
    default_headers: list[tuple[bytes, bytes]]


class _AppSide(enum.Enum):
    """Where the ASGI application is in the spec's message sequence."""

    HANDSHAKE = 0  # it may accept, close (403) or start a denial response
    DENYING = 1  # it sent websocket.http.response.start; body messages follow
    OPEN = 2  # it accepted; send and close
    DONE = 3  # it closed, or the denial response is complete


def _extensions(enabled: bool) -> list[ServerExtensionFactory]:
    # tether's memory-frugal defaults (12-bit windows, memLevel 5), the same
    # choice uvicorn makes for its websockets engines.
    return [ServerPerMessageDeflateFactory()] if enabled else []


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection under uvicorn, running an ASGI app on tether's core."""

    def __init__(
        self,
        config: UvicornConfig,
        server_state: UvicornServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.app = config.loaded_app
        self.loop = _loop if _loop is not None else asyncio.get_running_loop()
        self.app_state = app_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.default_headers = server_state.default_headers

        # Messages that came in with (and before) a protocol error in the same
        # read still reach the app, which may answer them; the error closes
        # the connection when the app asks for the next message.
        self.core = ServerProtocol(
            extensions=_extensions(config.ws_per_message_deflate),
            max_size=config.ws_max_size,
            defer_failure=True,
        )
        # Each compressed message may inflate up to ws_max_size: parse at most
        # a queue's worth per read (the rest waits in the core's buffer).
        self.max_queue = max(1, config.ws_max_queue)
        self.core.set_read_budget(max_messages=self.max_queue, inflate_budget=None)

        self.transport: asyncio.Transport | None = None
        self.scope: dict[str, Any] = {}
        self._response: Response | None = None
        self._app_side = _AppSide.HANDSHAKE
        self._denial: tuple[int, Headers, bytearray] | None = None

        # Receive side: events for the app, and its pending receive() future.
        self._inbox: collections.deque[Message] = collections.deque()
        self._waiter: asyncio.Future[Message] | None = None
        self._disconnect: Message | None = None
        self._read_paused = False

        # Send side.
        self._held: list[bytes] = []
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._lost = False
        self._opened = False

        # Timers.
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._failure_timer: asyncio.TimerHandle | None = None

    @property
    def reading_paused(self) -> bool:
        """Whether reading stopped because ``--ws-max-queue`` messages wait for the app."""
        return self._read_paused

    @property
    def writing_paused(self) -> bool:
        """Whether ``send()`` waits because the transport's write buffer is full."""
        return self._writing_paused

    @property
    def pending_messages(self) -> int:
        """Events received and not yet taken by the app's ``receive()``."""
        return len(self._inbox)

    # ----------------------------------------------------------- transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self)
        if logger.isEnabledFor(TRACE_LOG_LEVEL):
            logger.log(TRACE_LOG_LEVEL, "%sWebSocket connection made", self._prefix())

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.connections.discard(self)
        for timer in (self._close_timer, self._ping_timer, self._pong_timer, self._failure_timer):
            if timer is not None:
                timer.cancel()
        if self._opened:
            logger.info("connection closed")
        if logger.isEnabledFor(TRACE_LOG_LEVEL):
            logger.log(TRACE_LOG_LEVEL, "%sWebSocket connection lost", self._prefix())
        self.core.receive_eof()
        # 1006: the connection closed with no Close frame (RFC 6455 §7.1.5).
        self._disconnected(CloseCode.ABNORMAL, "")
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.core.receive_data(data, after_messages=bool(self._inbox))
        self._process()

    def eof_received(self) -> bool | None:
        # Returning None closes the transport; connection_lost follows.
        return None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def shutdown(self) -> None:
        """uvicorn is stopping: close with 1012 (service restart), or refuse the handshake."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        core = self.core
        if core.state is State.OPEN:
            # RFC 6455 §7.4.1 (IANA registry): 1012 "Service Restart".
            self._disconnected(CloseCode.SERVICE_RESTART, "")
            core.send_close(CloseCode.SERVICE_RESTART, "server restarting")
            self._flush()
            self._start_close_timer()
        elif core.state is State.CONNECTING:
            self._respond(make_response(503, "server shutting down"))
        else:
            transport.close()

    # ------------------------------------------------------------- events

    def _process(self) -> None:
        """Hand what the core parsed to the app; write what it queued."""
        core = self.core
        inbox = self._inbox
        for event in core.events_received():
            kind = type(event)
            if kind is str or kind is bytes:
                # The hot path, _deliver inlined: one message per round trip.
                if self._disconnect is not None:
                    continue  # the app was told the connection is over
                message = (
                    {"type": "websocket.receive", "text": event}
                    if kind is str
                    else {"type": "websocket.receive", "bytes": event}
                )
                waiter = self._waiter
                if waiter is not None:
                    self._waiter = None
                    if not waiter.done():
                        waiter.set_result(message)
                        continue
                inbox.append(message)
            elif kind is CloseReceived:
                assert isinstance(event, CloseReceived)
                self._disconnected(event.code, event.reason)
            elif kind is Pong:
                assert isinstance(event, Pong)
                self._pong_received(event.data)
            elif kind is RequestReceived:
                assert isinstance(event, RequestReceived)
                self._request_received(event.request)
            # Ping: the core has queued the Pong already (RFC 6455 §5.5.2).
        if core.pending_failure is not None and self._failure_timer is None:
            if self._inbox or self._waiter is None:
                # Give the app the messages that came before the error (and
                # the time to answer them), but not forever.
                self._failure_timer = self.loop.call_later(CLOSE_TIMEOUT, self._fail_pending)
            else:
                self._fail_pending()
                return
        self._flush()
        if core.failure is not None and self._disconnect is None:
            self._disconnected(core.failure.code, core.failure.reason)
        if core.close_transport and self.transport is not None:
            self.transport.close()
        elif not self._read_paused and (len(self._inbox) >= self.max_queue or core.parse_paused):
            # Push back through TCP until the app catches up; receive() resumes.
            self._read_paused = True
            if self.transport is not None:
                self.transport.pause_reading()

    def _deliver(self, event: Message) -> None:
        if self._disconnect is not None and event is not self._disconnect:
            return  # the app was told the connection is over: nothing after that
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(event)
                return
        self._inbox.append(event)

    def _disconnected(self, code: int, reason: str) -> None:
        """Tell the app the connection is over (once)."""
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._deliver(self._disconnect)

    def _fail_pending(self) -> None:
        if self._failure_timer is not None:
            self._failure_timer.cancel()
            self._failure_timer = None
        core = self.core
        if core.pending_failure is None:
            return
        core.fail_pending()
        self._process()

    def _request_received(self, request: Request) -> None:
        core = self.core
        # Validates the upgrade (RFC 6455 §4.2.1) and negotiates
        # permessage-deflate; the app picks the subprotocol on accept.
        response = core.accept(request)
        if response.status_code != 101:
            logger.info(
                '%s - "WebSocket %s" %d', self._prefix(""), request.path, response.status_code
            )
            self._respond(response)
            return
        self._response = response
        assert self.transport is not None
        self.scope = build_scope(
            request,
            transport=self.transport,
            root_path=self.config.root_path,
            asgi_version=self.config.asgi_version,
            app_state=self.app_state,
        )
        self._deliver({"type": "websocket.connect"})
        task = self.loop.create_task(self._run_asgi())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ----------------------------------------------------------------- app

    async def _run_asgi(self) -> None:
        try:
            result = await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass  # the app sent after the peer went away: nothing to report
        except BaseException:
            logger.exception("Exception in ASGI application\n")
            self._app_failed()
        else:
            if self._app_side is _AppSide.HANDSHAKE:
                if self._disconnect is None:  # not when the connection was gone already
                    logger.error("ASGI callable returned without completing handshake.")
                self._app_failed()
            elif self._app_side is _AppSide.DENYING:
                logger.error("ASGI callable returned without completing the response.")
                self._app_failed()
            else:
                if result is not None:
                    logger.error("ASGI callable should return None, but returned '%s'.", result)
                # The app is done with the connection: close it normally.
                self._close_from_app(CloseCode.NORMAL, "")

    def _app_failed(self) -> None:
        """The app raised (or gave up): 500 before the handshake, 1011 after it."""
        self._app_side = _AppSide.DONE
        core = self.core
        if core.state is State.CONNECTING:
            self._respond(make_response(500, "Internal Server Error"))
        elif core.state is State.OPEN:
            # RFC 6455 §7.4.1: 1011 "encountered an unexpected condition".
            core.send_close(CloseCode.INTERNAL_ERROR, "")
            self._flush()
            self._start_close_timer()

    async def receive(self) -> Message:
        """ASGI ``receive``: connect, then messages, then one disconnect (repeated)."""
        inbox = self._inbox
        if not inbox:
            if self._held:
                self._flush_held()
            if self._read_paused:
                self._resume_reading()
            if not inbox and self.core.pending_failure is not None:
                # The app has seen every message before the protocol error.
                self._fail_pending()
            if not inbox:
                if self._disconnect is not None:
                    return self._disconnect
                if self._waiter is not None and not self._waiter.done():
                    raise RuntimeError("receive() called while another receive() is waiting")
                waiter: asyncio.Future[Message] = self.loop.create_future()
                self._waiter = waiter
                event: Message = await waiter
                return event
        event = inbox.popleft()
        if self._read_paused and len(inbox) <= self.max_queue // 2:
            self._resume_reading()
        return event

    def _resume_reading(self) -> None:
        self._read_paused = False
        core = self.core
        if core.parse_paused:
            # Messages left in the core's buffer: parse the next batch now.
            core.receive_data(b"", after_messages=bool(self._inbox))
            self._process()
        if not self._read_paused and self.transport is not None and not self._lost:
            self.transport.resume_reading()

    async def send(self, message: Message) -> None:
        """ASGI ``send``."""
        side = self._app_side
        kind = message["type"]
        if side is _AppSide.OPEN:
            if kind == "websocket.send":
                if self._writing_paused and not self._lost:
                    await self._drain()
                self._send_message(message)
            elif kind == "websocket.close":
                code = message.get("code")
                self._close_from_app(
                    CloseCode.NORMAL if code is None else code, message.get("reason") or ""
                )
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.send' or 'websocket.close', "
                    f"but got {kind!r}."
                )
        elif side is _AppSide.HANDSHAKE:
            if self._lost:
                raise ClientDisconnected("the client went away before the handshake completed")
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                # ASGI: a close before accept "will result in an HTTP 403".
                self._app_side = _AppSide.DONE
                self._access_log(403)
                self._respond(make_response(403, "", self._default_headers(), close=True))
            elif kind == "websocket.http.response.start":
                self._start_denial(message)
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start' but got {kind!r}."
                )
        elif side is _AppSide.DENYING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body' but got {kind!r}."
                )
            self._denial_body(message)
        elif self._lost and kind == "websocket.send":
            raise ClientDisconnected("the connection is closed")
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} after the connection closed.")

    async def _drain(self) -> None:
        """Flow control (the transport's high-water mark): wait for the peer to read."""
        waiter = self._drain_waiter
        if waiter is None or waiter.done():
            waiter = self._drain_waiter = self.loop.create_future()
        # Shared by every task that sends meanwhile; shielded, so that one of
        # them being cancelled does not cancel the wait of the others.
        await asyncio.shield(waiter)

    def _send_message(self, message: Message) -> None:
        core = self.core
        if core.state is not State.OPEN or self._lost:
            raise ClientDisconnected("the connection is closed")
        text = message.get("text")
        if text is not None:
            opcode, data = Opcode.TEXT, text.encode("utf-8")
        else:
            payload = message.get("bytes")
            if payload is None:
                raise TypeError("websocket.send needs 'text' or 'bytes'")
            opcode, data = Opcode.BINARY, bytes(payload)
        frame = core.frame_simple(opcode, data)
        if frame is None:
            # Compressed, large or otherwise not simple: the core frames it.
            if opcode is Opcode.TEXT:
                core.send_text(data)
            else:
                core.send_binary(data)
            self._flush()
            return
        held = self._held
        if self._inbox:
            # The app will answer the next queued message in this same step:
            # write the whole burst at once when it has worked through it.
            held.append(frame)
            if len(held) == 1:
                self.loop.call_soon(self._flush_held)
            elif len(held) >= MAX_HELD_FRAMES:
                self._flush_held()
        elif held:
            held.append(frame)
            self._flush_held()
        else:
            assert self.transport is not None
            self.transport.write(frame)

    def _accept(self, message: Message) -> None:
        response = self._response
        assert response is not None and self.transport is not None
        headers = response.headers
        for name, value in self._default_headers().items():
            headers[name] = value
        for name, value in message.get("headers") or ():
            headers[name.decode("latin-1")] = value.decode("latin-1")
        subprotocol = message.get("subprotocol")
        if subprotocol is not None:
            if subprotocol not in self.scope["subprotocols"]:
                # RFC 6455 §4.1: the client fails a connection whose
                # subprotocol "was not present in the client's handshake".
                raise RuntimeError(f"subprotocol {subprotocol!r} was not offered by the client")
            headers["Sec-WebSocket-Protocol"] = subprotocol
        # ValueError for a CR or LF in an app's header, before anything goes out.
        headers.serialize()
        who, path = log_target(self.scope)
        logger.info('%s - "WebSocket %s" [accepted]', who, path)
        if self.transport.is_closing() or self._lost:
            self._app_side = _AppSide.DONE
            return
        self._app_side = _AppSide.OPEN
        self.core.send_response(response)
        self._opened = True
        logger.info("connection open")
        # Frames the client sent right behind its request were parsed by send_response.
        self._process()
        self._start_keepalive()

    def _start_denial(self, message: Message) -> None:
        status = message["status"]
        if not isinstance(status, int) or not 100 <= status < 600:
            raise RuntimeError(f"Invalid HTTP status code {status!r} in response.")
        headers = Headers(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in message.get("headers") or ()
        )
        self._access_log(status)
        self._denial = (status, headers, bytearray())
        self._app_side = _AppSide.DENYING

    def _denial_body(self, message: Message) -> None:
        assert self._denial is not None
        status, headers, body = self._denial
        body += message.get("body", b"")
        if message.get("more_body", False):
            return
        self._app_side = _AppSide.DONE
        for name, value in self._default_headers().items():
            if name not in headers:
                headers[name] = value
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(len(body))
        headers["Connection"] = "close"
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        self._respond(Response(status, phrase, headers, bytes(body)))

    def _close_from_app(self, code: int, reason: str) -> None:
        self._app_side = _AppSide.DONE
        core = self.core
        if core.state is State.OPEN and not self._lost:
            core.send_close(code, reason)  # ValueError for a code RFC 6455 forbids on the wire
            self._flush()
            self._start_close_timer()
        self._disconnected(code, reason)

    # ------------------------------------------------------------- output

    def _respond(self, response: Response) -> None:
        """Answer the upgrade request with an HTTP response and close."""
        self._disconnected(CloseCode.ABNORMAL, "")
        core = self.core
        if core.state is State.CONNECTING:
            core.send_response(response)
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def _flush_held(self) -> None:
        held = self._held
        if held and self.transport is not None and not self._lost:
            self.transport.write(b"".join(held) if len(held) > 1 else held[0])
        held.clear()

    def _flush(self) -> None:
        """Write what the core queued (after any held frames, in order)."""
        out = self.core.data_to_send()
        if self._held:
            self._held.extend(out)
            self._flush_held()
        elif out and self.transport is not None and not self._lost:
            self.transport.write(b"".join(out) if len(out) > 1 else out[0])

    def _start_close_timer(self) -> None:
        """We sent a Close: the peer answers with its own, or we close TCP anyway."""
        if self._close_timer is None and self.transport is not None:
            self._close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.close)
        self._stop_keepalive()

    # ------------------------------------------------------------ keepalive

    def _start_keepalive(self) -> None:
        interval = self.config.ws_ping_interval
        if interval:
            self._ping_timer = self.loop.call_later(interval, self._send_ping)

    def _stop_keepalive(self) -> None:
        for timer in (self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = None

    def _send_ping(self) -> None:
        self._ping_timer = None
        if self.core.state is not State.OPEN or self._lost:
            return
        # A random payload tells our Pong from an unsolicited one (RFC 6455 §5.5.3).
        self._ping_payload = os.urandom(4)
        self.core.send_ping(self._ping_payload)
        self._flush()
        timeout = self.config.ws_ping_timeout
        if timeout:
            self._pong_timer = self.loop.call_later(timeout, self._ping_timed_out)
        else:
            self._start_keepalive()

    def _pong_received(self, payload: bytes) -> None:
        if self._ping_payload is None or payload != self._ping_payload:
            return
        self._ping_payload = None
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
            self._start_keepalive()

    def _ping_timed_out(self) -> None:
        self._pong_timer = None
        if logger.isEnabledFor(TRACE_LOG_LEVEL):
            logger.log(TRACE_LOG_LEVEL, "%sWebSocket keepalive ping timeout", self._prefix())
        # RFC 6455 §7.1.7: fail the connection; 1011 as websockets does.
        self.core.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        self._process()

    # --------------------------------------------------------------- helpers

    def _default_headers(self) -> Headers:
        # uvicorn's Server and Date headers (and --header ones).
        headers = Headers(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self.default_headers
        )
        if "Date" not in headers:
            headers["Date"] = formatdate(usegmt=True)
        return headers

    def _access_log(self, status: int) -> None:
        who, path = log_target(self.scope)
        logger.info('%s - "WebSocket %s" %d', who, path, status)

    def _prefix(self, sep: str = " - ") -> str:
        client = peer_address(self.transport) if self.transport is not None else None
        return f"{client[0]}:{client[1]}{sep}" if client else ""
