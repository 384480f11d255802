"""No sticky sessions: an HTTP fallback request is answered by the node holding the session.

A session key starts with the id of its node. A node that receives ``send``
or ``poll`` for another node's session sends a :class:`RelayRequest` on that
node's own broker channel and answers the HTTP request with the
:class:`RelayAnswer` that comes back on its own channel. A node not heard
from (its hello, :mod:`tether.hub.users`) or silent past the timeout is
gone: the answer is 404, code 125, and the client connects again, to any
node, and recovers from history.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.control import ControlMessage, RelayAnswer, RelayRequest, node_channel
from tether.hub.envelope import Control
from tether.hub.errors import ErrorCode
from tether.hub.node import Node
from tether.hub.wire import dumps

logger = logging.getLogger("tether.hub")

Answer = tuple[int, str]
"""An HTTP status and the response body (JSON text)."""

LocalHandler = Callable[[str, str, "str | None", dict[str, Any]], Awaitable[Answer]]
"""``(op, key, user, body)`` -> the answer of the node holding the session."""


def error_body(code: int, message: str) -> str:
    return dumps({"error": {"message": message, "code": int(code)}})


SESSION_NOT_FOUND: Answer = (
    404,
    error_body(ErrorCode.SESSION_NOT_FOUND, "session not found: connect again"),
)


class Relay:
    def __init__(self, node: Node, local: LocalHandler) -> None:
        self.node = node
        self.local = local
        self._waiting: dict[str, asyncio.Future[RelayAnswer]] = {}
        node.on_addressed = self._on_message

    async def forward(
        self, owner: str, op: str, key: str, user: str | None, body: dict[str, Any], timeout: float
    ) -> Answer:
        """Ask node ``owner`` to answer; 404/125 if it is gone or silent for ``timeout`` s."""
        if owner not in self.node.users.live_peers():
            return SESSION_NOT_FOUND
        request = uuid.uuid4().hex
        future: asyncio.Future[RelayAnswer] = asyncio.get_running_loop().create_future()
        self._waiting[request] = future
        message = RelayRequest(request, self.node.id, op, key, user, body)
        try:
            await self.node.broker.publish(node_channel(owner), Control(message))
            answer = await asyncio.wait_for(future, timeout)
        except BrokerUnavailable as exc:
            text = str(exc) or "broker unavailable"
            return 503, error_body(ErrorCode.BROKER_UNAVAILABLE, text)
        except asyncio.TimeoutError:
            # Killed without a goodbye: its next hello (if it is alive) brings it back.
            logger.info("node %s did not answer a %s relay within %s s", owner, op, timeout)
            self.node.users.forget(owner)
            return SESSION_NOT_FOUND
        finally:
            self._waiting.pop(request, None)
        return answer.status, answer.body

    def _on_message(self, message: ControlMessage) -> None:
        if isinstance(message, RelayAnswer):
            future = self._waiting.get(message.request)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, RelayRequest):
            self.node.spawn(self._answer(message))

    async def _answer(self, message: RelayRequest) -> None:
        try:
            status, body = await self.local(message.action, message.key, message.user, message.body)
        except Exception:
            logger.exception("relayed %s failed", message.action)
            status, body = 500, error_body(ErrorCode.INTERNAL, "internal error")
        answer = RelayAnswer(message.request, status, body)
        try:
            await self.node.broker.publish(node_channel(message.origin), Control(answer))
        except BrokerUnavailable:
            logger.info("could not answer a relayed %s: broker unavailable", message.action)
