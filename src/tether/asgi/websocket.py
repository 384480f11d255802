"""The hub's WebSocket endpoint over ASGI: check the upgrade, accept, run a Session.

The same rules as ``tether serve`` decide whether the upgrade goes ahead
(:meth:`~tether.hub.routes.HttpRoutes.respond`: the ``tether.v1`` subprotocol
must be offered, the Origin allowed). A refusal goes out as an HTTP response
with its JSON body where the server supports the ASGI ``websocket.http.response``
extension (uvicorn, hypercorn), else as ``websocket.close`` (the server then
answers 403).

What the ASGI server does instead of the hub: keepalive pings, the
permessage-deflate negotiation and the frame size limit are the server's
options (``uvicorn --ws-ping-interval``, ``--ws-per-message-deflate``,
``--ws-max-size``). The hub still refuses a message over
``limits.max_message_size`` with 1009.
"""

from __future__ import annotations

import asyncio
import contextlib

from tether.asgi.http import send_response
from tether.asgi.scope import Receive, Scope, Send, scope_request
from tether.asgi.transport import DEFAULT_WRITE_LIMIT, AsgiWebSocketTransport
from tether.hub.auth import token_from_handshake
from tether.hub.node import Node
from tether.hub.routes import HttpRoutes
from tether.hub.server import feed_session
from tether.hub.session import Session
from tether.hub.wire import SUBPROTOCOL
from tether.protocol.frames import CloseCode
from tether.protocol.handshake import Response

RESPONSE_EXTENSION = "websocket.http.response"


async def refuse_websocket(scope: Scope, receive: Receive, send: Send, response: Response) -> None:
    """Refuse a WebSocket handshake with ``response`` (or a bare 403 where unsupported)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client left first
    await _refuse(scope, send, response)


async def _refuse(scope: Scope, send: Send, response: Response) -> None:
    if RESPONSE_EXTENSION in (scope.get("extensions") or {}):
        await send_response(send, response, prefix="websocket.")
    else:
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})


async def _no_body(max_size: int) -> bytes:
    return b""  # a handshake has no body


async def serve_websocket(
    node: Node,
    routes: HttpRoutes,
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    write_limit: int = DEFAULT_WRITE_LIMIT,
) -> None:
    """The ASGI ``websocket`` scope for the hub's WebSocket path (the node is started)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # the client left before the handshake (websocket.disconnect)
    request = scope_request(scope)
    refusal = await routes.respond(request, _no_body)
    if refusal is not None:
        await _refuse(scope, send, refusal)
        return
    await send({"type": "websocket.accept", "subprotocol": SUBPROTOCOL})
    config = node.config
    transport = AsgiWebSocketTransport(
        send, write_limit=write_limit, close_timeout=config.close_timeout
    )
    token = token_from_handshake(request.headers, config.cookie_name)
    session = Session(node, transport, handshake_token=token, headers=request.headers)
    reader = asyncio.get_running_loop().create_task(_read(session, receive))
    peer_code: int = CloseCode.ABNORMAL
    try:
        # Until the client leaves (the reader ends) or the session closed the
        # transport (its writer ends after websocket.close, or on a failed send).
        await asyncio.wait((reader, transport.writer), return_when=asyncio.FIRST_COMPLETED)
        if not reader.done():
            # RFC 6455 §7.1.1: the server closes the TCP connection after the
            # closing handshake. Returning now could make the ASGI server drop
            # the connection with the client's Close still unread (a reset
            # that can swallow our Close frame); wait for websocket.disconnect.
            await asyncio.wait((reader,), timeout=config.close_timeout)
    finally:
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            peer_code = await reader
        await session.ended(peer_code)
        await transport.abort()


async def _read(session: Session, receive: Receive) -> int:
    """Feed received messages to the session until the server says the client left.

    Returns the close code of ``websocket.disconnect``. Messages that arrive
    once the session is closing are dropped (RFC 6455 §5.5.1: after sending a
    Close frame, an endpoint sends no more data; what it receives is moot).
    """
    limit = session.node.config.limits.max_message_size
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            # ASGI: the code the client's Close frame carried (1005 without one).
            return int(message.get("code", CloseCode.NO_STATUS))
        if kind != "websocket.receive" or session.closed:
            continue
        text: str | None = message.get("text")
        data: str | bytes = text if text is not None else message.get("bytes") or b""
        if len(data) > limit:
            # RFC 6455 §7.4.1: 1009, "a message that is too big for it to process".
            session.disconnect(CloseCode.MESSAGE_TOO_BIG, "message too big", reconnect=False)
            continue
        await feed_session(session, data)
