"""Plain HTTP over ASGI: read a request body within a limit, send a :class:`Response`.

The hub's HTTP answers (:meth:`tether.hub.routes.HttpRoutes.respond`) are
built once for both servers; this module is the ASGI side of sending them.
Hop-by-hop headers are the host server's business (ASGI forbids them in a
response), so ``Connection`` is dropped here.
"""

from __future__ import annotations

from tether.asgi.scope import Receive, Send
from tether.asyncio.server import RequestBodyError
from tether.protocol.handshake import Response

# RFC 9110 §7.6.1: connection-specific fields; the ASGI server owns them.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade"})


class BodyReader:
    """Reads an ASGI request body (``http.request`` events), refusing more than asked.

    Raises :class:`RequestBodyError` with 413 beyond the limit (the rest is
    not read: the server drops it with the connection or discards it) and
    400 when the client goes away mid-body.
    """

    def __init__(self, receive: Receive) -> None:
        self.receive = receive

    async def __call__(self, max_size: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise RequestBodyError(400, "connection closed before the body was complete")
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > max_size:
                raise RequestBodyError(413, f"request body larger than {max_size} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def send_response(send: Send, response: Response, *, prefix: str = "") -> None:
    """Send ``response`` as ``http.response.start`` and one ``http.response.body``.

    ``prefix="websocket."`` sends it as the refusal of a WebSocket handshake
    (the ASGI ``websocket.http.response`` extension).
    """
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.raw_items()
        if name.lower() not in _HOP_BY_HOP
    ]
    start = {"type": prefix + "http.response.start", "status": response.status_code}
    await send({**start, "headers": headers})
    await send({"type": prefix + "http.response.body", "body": response.body})
