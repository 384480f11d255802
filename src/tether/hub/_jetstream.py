"""What the JetStream history and the KeyValue presence share: names, errors, bulk reads."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from tether.hub.brokers.nats import import_nats

WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code: the subject's last message is not the one expected."""
FETCH_BATCH = 256
"""Messages fetched per request by :func:`fetch_all`."""


async def connect(url: str, *, timeout: float, name: str) -> Any:
    """A connection that reconnects forever once made, but whose first connect gives up.

    nats-py's ``max_reconnect_attempts=-1`` also makes a first connect to a
    server that is down retry forever: bounded here by ``timeout`` (then
    ``TimeoutError``, error 112 to the caller). No reconnect buffer
    (``pending_size=0``): while disconnected a call fails at once instead
    of being sent, and maybe stored, after its caller was told it failed.
    """
    import_nats()
    from nats.aio.client import Client

    nc = Client()
    try:
        await asyncio.wait_for(
            nc.connect(
                servers=[url],
                connect_timeout=max(1, round(timeout)),
                max_reconnect_attempts=-1,
                pending_size=0,
                name=name,
            ),
            timeout,
        )
    except BaseException:
        with contextlib.suppress(Exception):
            await nc.close()
        raise
    return nc


def bucket_base(prefix: str) -> str:
    """The hub prefix as a stream or bucket name: ``[A-Za-z0-9_-]`` only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prefix) or "tether"


def jetstream_missing(exc: BaseException) -> bool:
    """The server answered as one without JetStream does (no responders, 503)."""
    nats = import_nats()
    from nats.js.errors import ServiceUnavailableError

    return isinstance(exc, nats.errors.NoRespondersError | ServiceUnavailableError)


async def fetch_all(
    js: Any, stream: str, subject: str, *, last_per_subject: bool, timeout: float
) -> list[Any]:
    """Every message of ``stream`` matching ``subject`` (the last of each subject, if asked).

    One pull consumer, deleted after: its ``num_pending``, read before
    anything is delivered, says exactly how many messages to fetch, so this
    takes a few round trips whatever their number (a push watcher's "that
    was all" marker can come before messages already on their way, and
    reading messages one request each costs a round trip per message).
    """
    nats = import_nats()
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT
            if last_per_subject
            else DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=max(5.0, 2 * timeout),  # gone by itself if we die meanwhile
            mem_storage=True,
        ),
    )
    messages: list[Any] = []
    consumer: str | None = None
    try:
        info = await sub.consumer_info()
        consumer = str(info.name)
        remaining = int(info.num_pending)
        while remaining > 0:
            try:
                batch = await sub.fetch(min(remaining, FETCH_BATCH), timeout=timeout)
            except nats.errors.TimeoutError:
                if messages or info.num_pending == 0:
                    break  # purged meanwhile: fewer than counted (callers check offsets)
                raise
            remaining -= len(batch)
            messages += batch
    finally:
        if consumer is not None:
            with contextlib.suppress(Exception):
                await js.delete_consumer(stream, consumer)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return messages
