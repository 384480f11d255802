"""One HTTP/1.1 connection: requests in order, each answered whole or streamed.

:class:`HttpConnection` is an asyncio protocol around an ``h11.Connection``.
A task serves the connection's requests one after the other (RFC 9112
section 9.3: keep-alive is the default in HTTP/1.1): it waits for a request
head, hands it to the handler with an :class:`HttpExchange`, makes sure the
response is complete and the request body consumed, then waits for the next.

Bounded in time and memory:

- a request head must arrive whole within ``request_timeout`` (slowloris),
  and be at most ``max_head_size`` bytes (431);
- a body is read only when the handler asks, up to the size it names (413);
- an idle keep-alive connection is closed after ``keepalive_timeout``;
- bytes the client sends while the handler has not asked for them (pipelined
  requests) pause reading past ``max_head_size``;
- a streamed response reports :meth:`ResponseStream.ready` false once the
  socket's write buffer holds ``write_buffer_limit`` bytes: the writer above
  (a hub session) queues, and disconnects a reader that never catches up.

Body chunks of a streamed response are framed here, not by h11, so one
framed chunk can be written to many streams (fan-out frames once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from typing import cast

import h11

# The same error as the WebSocket server's read_body, so a route serves both.
from tether.asyncio.server import RequestBodyError as RequestBodyError
from tether.http.messages import HttpLimits, HttpRequest, chunk
from tether.protocol.headers import Headers

logger = logging.getLogger("tether.http")

# Read in a handler's place (a body it did not want) before giving up on the connection.
MAX_DISCARDED_BODY = 64 * 1024


Handler = Callable[[HttpRequest, "HttpExchange"], Awaitable[None]]


class ResponseStream:
    """A response body written as it comes; ended by :meth:`end` or the peer leaving."""

    def __init__(self, connection: HttpConnection, chunked: bool) -> None:
        self._connection = connection
        self.chunked = chunked
        """Chunked transfer coding (HTTP/1.1 peers); else the body ends with the connection."""
        self.done: asyncio.Future[None] = connection.loop.create_future()
        """Resolved once the response ended or the connection was lost."""
        self.bytes_written = 0
        # Flags the connection keeps current, so that the per-message checks of
        # a fan-out are attribute reads (asyncio tells when its buffer crosses
        # the limit: pause_writing / resume_writing).
        self.is_open = True
        self.writable = not connection.writing_paused

    @property
    def open(self) -> bool:
        return self.is_open

    def frame(self, payload: bytes) -> bytes:
        """``payload`` as this stream puts it on the wire."""
        return chunk(payload) if self.chunked else payload

    def ready(self) -> bool:
        """Open, and the socket's write buffer is below the limit."""
        return self.is_open and self.writable

    def write(self, payload: bytes) -> None:
        if payload:
            self.write_framed(self.frame(payload))

    def write_framed(self, data: bytes) -> None:
        """Write bytes already framed by :meth:`frame` (shared between streams)."""
        if self.is_open:
            self.bytes_written += len(data)
            self._connection.write(data)

    async def drain(self) -> None:
        """Wait while the socket's write buffer is over the limit (or until the end)."""
        await self._connection.drain()

    def end(self) -> None:
        """End the response (the last chunk); the connection may serve another request.

        A reader that is not reading (the write buffer over its limit) would
        hold the connection and its buffer: it is dropped instead.
        """
        if not self.open:
            return
        if self.ready():
            self._connection.end_stream(self)
        else:
            self.abort()

    def abort(self) -> None:
        """Drop the connection at once (a reader that fell too far behind)."""
        self._connection.abort()


class HttpExchange:
    """One request's answer: read the body, then respond whole or start a stream."""

    def __init__(self, connection: HttpConnection, request: HttpRequest, deadline: float) -> None:
        self._connection = connection
        self.request = request
        self._deadline = deadline
        self.responded = False
        self.stream: ResponseStream | None = None
        self._body_read = False

    async def read_body(self, max_size: int) -> bytes:
        """The whole request body: at most ``max_size`` bytes, within the request timeout.

        :class:`RequestBodyError`: 411 for a chunked body (send ``Content-Length``),
        400 for a bad ``Content-Length`` or a body cut short, 413 beyond
        ``max_size``, 408 when it does not arrive in time.
        """
        if self._body_read:
            raise RuntimeError("the body was read already")
        self._body_read = True
        headers = self.request.headers
        if "Transfer-Encoding" in headers:
            raise RequestBodyError(411, "chunked bodies are not supported; send Content-Length")
        values = headers.get_all("Content-Length")
        if values and int(values[0]) > max_size:  # h11 checked that it is a number
            raise RequestBodyError(413, f"request body larger than {max_size} bytes")
        return await self._connection.read_body(max_size, self._deadline)

    async def respond(
        self, status: int, headers: Iterable[tuple[str, str]], body: bytes = b""
    ) -> None:
        """Send a whole response (``Content-Length`` is set here)."""
        if self.responded:
            raise RuntimeError("already responded")
        self.responded = True
        pairs = [(k, v) for k, v in headers if k.lower() not in ("content-length", "connection")]
        pairs.append(("Content-Length", str(len(body))))
        await self._connection.send_whole(status, pairs, body, self.request.method == "HEAD")

    def start_stream(self, status: int, headers: Iterable[tuple[str, str]]) -> ResponseStream:
        """Send the head of a response whose body follows by :class:`ResponseStream`."""
        if self.responded:
            raise RuntimeError("already responded")
        self.responded = True
        self.stream = self._connection.start_stream(status, list(headers), self.request)
        return self.stream


class HttpConnection(asyncio.Protocol):
    """An HTTP/1.1 server connection; ``handler`` answers each request."""

    def __init__(self, handler: Handler, limits: HttpLimits | None = None) -> None:
        self.handler = handler
        self.limits = limits if limits is not None else HttpLimits()
        self.loop = asyncio.get_running_loop()
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_size)
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self._data_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._paused_writing = False
        self._lost = False
        self._task: asyncio.Task[None] | None = None
        self._stream: ResponseStream | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()

    # ------------------------------------------------------- asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport: trust the loop.
        self.transport = cast(asyncio.Transport, transport)
        # pause_writing() past the limit: a stream is not ready from there on.
        self.transport.set_write_buffer_limits(high=self.limits.write_buffer_limit)
        peer = self.transport.get_extra_info("peername")
        self.remote = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._task = self.loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self._h11.receive_data(data)
        self._wake(self._data_waiter)
        # Nobody is reading (the handler streams, or pipelined requests wait):
        # stop reading from the socket before this grows without bound.
        buffered = len(self._h11.trailing_data[0])
        if buffered > self.limits.max_head_size and not self._paused_reading:
            assert self.transport is not None
            self.transport.pause_reading()
            self._paused_reading = True

    def eof_received(self) -> bool | None:
        self._h11.receive_data(b"")
        self._wake(self._data_waiter)
        # A client that half-closes is gone for a server push stream: close.
        return None

    @property
    def writing_paused(self) -> bool:
        return self._paused_writing

    def pause_writing(self) -> None:
        self._paused_writing = True
        if self._stream is not None:
            self._stream.writable = False

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._stream is not None:
            self._stream.writable = True
        self._wake(self._drain_waiter)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake(self._data_waiter)
        self._wake(self._drain_waiter)
        stream = self._stream
        if stream is not None:
            stream.is_open = stream.writable = False
            if not stream.done.done():
                stream.done.set_result(None)
        if not self.closed.done():
            self.closed.set_result(None)

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ writing

    def write_buffer_size(self) -> int:
        transport = self.transport
        if transport is None or self._lost:
            return 0
        return transport.get_write_buffer_size()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self._lost:
            self.transport.write(data)

    async def drain(self) -> None:
        while self._paused_writing and not self._lost:
            self._drain_waiter = self.loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close the connection (a server shutting down); a running stream ends with it."""
        if self.transport is not None and not self._lost:
            self.transport.close()

    def _send(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if data:
            self.write(data)

    async def send_whole(
        self, status: int, headers: list[tuple[str, str]], body: bytes, head: bool
    ) -> None:
        self._send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        if body and not head:
            self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())
        await self.drain()

    def start_stream(
        self, status: int, headers: list[tuple[str, str]], request: HttpRequest
    ) -> ResponseStream:
        chunked = request.http_version == "1.1"
        pairs = [(k, v) for k, v in headers if k.lower() not in ("content-length",)]
        if chunked:
            pairs.append(("Transfer-Encoding", "chunked"))
        self._send(h11.Response(status_code=status, headers=pairs, reason=_reason(status)))
        self._stream = ResponseStream(self, chunked)
        return self._stream

    def end_stream(self, stream: ResponseStream) -> None:
        stream.is_open = stream.writable = False
        if stream.chunked:
            self.write(b"0\r\n\r\n")
        # h11 did not see the body (written above it): tell it the message ended.
        with contextlib.suppress(h11.LocalProtocolError):
            data = self._h11.send(h11.EndOfMessage())
            if not stream.chunked and data:
                self.write(data)
        if not stream.chunked:
            # An HTTP/1.0 body ends when the connection does.
            self.close()
        if not stream.done.done():
            stream.done.set_result(None)

    # ------------------------------------------------------------ reading

    async def _next_event(self, deadline: float) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            if self._lost:
                return h11.ConnectionClosed()
            if self._paused_reading:
                assert self.transport is not None
                self.transport.resume_reading()
                self._paused_reading = False
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                raise TimeoutError
            self._data_waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._data_waiter), remaining)
            except asyncio.TimeoutError:
                # One exception on every Python (3.10's asyncio has its own class).
                raise TimeoutError from None
            finally:
                self._data_waiter = None

    async def read_body(self, max_size: int, deadline: float) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                event = await self._next_event(deadline)
            except TimeoutError:
                raise RequestBodyError(408, "the request body did not arrive in time") from None
            except h11.RemoteProtocolError as exc:
                raise RequestBodyError(400, f"bad request body: {exc}") from None
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > max_size:
                    raise RequestBodyError(413, f"request body larger than {max_size} bytes")
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            else:
                raise RequestBodyError(400, "connection closed before the body was complete")

    # ------------------------------------------------------------ serving

    async def _serve(self) -> None:
        try:
            first = True
            while not self._lost:
                timeout = self.limits.request_timeout if first else self.limits.keepalive_timeout
                first = False
                if not await self._serve_one(self.loop.time() + timeout):
                    break
        except Exception:
            logger.exception("HTTP connection failed")
        finally:
            self.close()

    async def _serve_one(self, deadline: float) -> bool:
        """Serve one request; false when the connection should close."""
        try:
            event = await self._next_event(deadline)
        except TimeoutError:
            if self._h11.their_state is h11.IDLE and not self._h11.trailing_data[0]:
                return False  # idle keep-alive connection: close quietly
            await self._refuse(408, "request head timeout")
            return False
        except h11.RemoteProtocolError as exc:
            await self._refuse(exc.error_status_hint, str(exc) or "bad request")
            return False
        if not isinstance(event, h11.Request):
            return False  # ConnectionClosed (or garbage h11 already refused)
        # h11 bounds a head that arrives in pieces; one that arrives whole is measured here.
        head_size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if head_size > self.limits.max_head_size:
            await self._refuse(431, "request head too large")
            return False
        request = HttpRequest(
            method=event.method.decode("ascii", "replace"),
            target=event.target.decode("ascii", "replace"),
            headers=Headers(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in event.headers.raw_items()
            ),
            http_version=event.http_version.decode("ascii", "replace"),
            remote=self.remote,
        )
        if self._h11.they_are_waiting_for_100_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[]))
        exchange = HttpExchange(self, request, self.loop.time() + self.limits.request_timeout)
        try:
            await self.handler(request, exchange)
        except Exception:
            logger.exception("HTTP handler failed for %s %s", request.method, request.path)
            if not exchange.responded:
                body = b'{"error": {"message": "internal error", "code": 100}}\n'
                await exchange.respond(500, [("Content-Type", "application/json")], body)
            elif exchange.stream is not None:
                exchange.stream.abort()
                return False
        if not exchange.responded:
            await exchange.respond(500, [("Content-Type", "text/plain")], b"no response\n")
        stream = exchange.stream
        if stream is not None:
            stream.end()
        if self._lost or self._h11.our_state is not h11.DONE:
            return False
        if not await self._finish_request(deadline):
            return False
        try:
            self._h11.start_next_cycle()
        except h11.LocalProtocolError:
            return False
        return True

    async def _finish_request(self, deadline: float) -> bool:
        """Read what is left of the request body (a little); false to close instead."""
        discarded = 0
        while self._h11.their_state is h11.SEND_BODY:
            try:
                event = await self._next_event(max(deadline, self.loop.time() + 1.0))
            except (TimeoutError, h11.RemoteProtocolError):
                return False
            if isinstance(event, h11.Data):
                discarded += len(event.data)
                if discarded > MAX_DISCARDED_BODY:
                    return False
            elif not isinstance(event, h11.EndOfMessage):
                return False
        return self._h11.their_state is h11.DONE

    async def _refuse(self, status: int, message: str) -> None:
        """Answer a request that cannot be served (bad head, timeout), then close."""
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE) or self._lost:
            return
        error = {"error": {"message": message[:200], "code": 107}}
        body = (json.dumps(error) + "\n").encode()
        headers = [("Content-Type", "application/json"), ("Connection", "close")]
        headers.append(("Content-Length", str(len(body))))
        with contextlib.suppress(h11.LocalProtocolError):
            self._send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
            self._send(h11.Data(data=body))
            self._send(h11.EndOfMessage())


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
