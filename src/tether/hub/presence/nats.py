"""Presence in a NATS KeyValue bucket, shared by every node: no Redis needed.

One bucket per hub prefix, ``<name>_presence`` (``<name>`` as for the
JetStream history), keeping one revision per key. Each entry is one client
in one channel:

key
    ``<channel hex>.<client id hex>`` (hex keeps any channel or client id a
    valid key, and lets a channel's entries be listed by the subject filter
    ``<channel hex>.>``).
value
    ``{"i": ClientInfo as JSON, "x": expiry in ms}``.

Every entry carries its own expiry: each node rewrites its live sessions'
entries a few times per ``presence_ttl`` (the node's housekeeping), and a
node that dies stops doing so. Reads skip the entries whose expiry has
passed and delete them (only if nobody refreshed them meanwhile: the delete
is conditional on the entry's revision), so a SIGKILLed node's clients drop
out of every node's view within the TTL. The bucket's own ``max_age``
(``max_ttl``, an hour) only collects what nobody read; it must outlast the
longest presence TTL, so an add with a longer TTL raises it first.

(nats-server 2.11 added TTLs per message; stamping the expiry in the entry
works with every JetStream server, 2.9 included, and with a test's clock.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from tether.hub._jetstream import (
    WRONG_LAST_SEQUENCE,
    bucket_base,
    connect,
    fetch_all,
    jetstream_missing,
)
from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.brokers.nats import DEFAULT_PREFIX, DEFAULT_URL, import_nats
from tether.hub.model import ClientInfo
from tether.hub.presence.base import Presence, PresenceStats

MAX_TTL = 3600.0
"""Seconds: the bucket's max_age, the longest presence TTL it can hold."""


def bucket_name(prefix: str) -> str:
    return f"{bucket_base(prefix)}_presence"


class NatsPresence(Presence):
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 5.0,
        max_ttl: float = MAX_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import_nats()
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self.max_ttl = max_ttl
        self.clock = clock
        self.bucket = bucket_name(prefix)
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._lock = asyncio.Lock()

    def _now(self) -> int:
        return int(self.clock() * 1000)

    @staticmethod
    def _channel_key(channel: str) -> str:
        return "c" + channel.encode().hex()

    def _key(self, channel: str, client: str) -> str:
        return f"{self._channel_key(channel)}.k{client.encode().hex()}"

    # --------------------------------------------------------- connection

    async def _ready(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            return
        async with self._lock:
            if self._nc is not None and not self._nc.is_closed:
                return
            from nats.js.api import KeyValueConfig, StorageType

            nc = await connect(self.url, timeout=self.timeout, name="tether-hub-presence")
            try:
                js = nc.jetstream(timeout=self.timeout)
                config = KeyValueConfig(
                    bucket=self.bucket, history=1, ttl=self.max_ttl, storage=StorageType.FILE
                )
                kv = await asyncio.wait_for(js.create_key_value(config), self.timeout)
            except BaseException:
                await nc.close()
                raise
            self._nc, self._js, self._kv = nc, js, kv

    @asynccontextmanager
    async def _unavailable_on_error(self) -> AsyncIterator[None]:
        """A lost connection, a timeout or JetStream down: :class:`BrokerUnavailable`."""
        nats = import_nats()
        from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

        try:
            await self._ready()
            yield
        except NoStreamResponseError as exc:
            # The server lost its store (or someone deleted the stream): make it
            # again on the next call rather than failing until a restart.
            await self._forget_connection()
            raise BrokerUnavailable(
                f"nats presence: the stream was missing on {self.url}; made again on the next call"
            ) from exc
        except (OSError, TimeoutError, asyncio.TimeoutError, nats.errors.Error) as exc:
            if isinstance(exc, APIError) and not isinstance(exc, ServiceUnavailableError):
                raise
            if jetstream_missing(exc):
                raise BrokerUnavailable(
                    f"nats presence: the server at {self.url} has no JetStream "
                    "(start nats-server with -js)"
                ) from exc
            raise BrokerUnavailable(f"nats presence unavailable: {exc!r}") from exc

    async def start(self) -> None:
        """Connect and make its bucket now: a server without JetStream, or one
        that refuses them, stops the node with a sentence saying why."""
        from nats.js.errors import APIError

        try:
            async with self._unavailable_on_error():
                pass
        except APIError as exc:
            raise BrokerUnavailable(
                f"nats presence: cannot make the bucket {self.bucket} on {self.url}: "
                f"{exc.description or exc}"
            ) from exc

    # ------------------------------------------------------------- write

    def _value(self, info: ClientInfo, expires: int) -> bytes:
        return json.dumps({"i": info.to_json(), "x": expires}, separators=(",", ":")).encode()

    async def _fit(self, ttl: float) -> None:
        """Make the bucket keep entries at least twice ``ttl`` (a presence TTL over an hour)."""
        if ttl * 2 <= self.max_ttl:
            return
        info = await self._js.stream_info(f"KV_{self.bucket}")
        info.config.max_age = ttl * 2
        await self._js.update_stream(info.config)
        self.max_ttl = ttl * 2

    async def add(self, channel: str, info: ClientInfo, *, ttl: float) -> None:
        expires = self._now() + max(1, int(ttl * 1000))
        async with self._unavailable_on_error():
            await self._fit(ttl)
            await self._kv.put(self._key(channel, info.client), self._value(info, expires))

    async def add_many(self, channel: str, infos: Sequence[ClientInfo], *, ttl: float) -> None:
        """Every entry's put in flight at once: one round trip's wait, not one per entry."""
        if not infos:
            return
        expires = self._now() + max(1, int(ttl * 1000))
        async with self._unavailable_on_error():
            await self._fit(ttl)
            await asyncio.gather(
                *(
                    self._kv.put(self._key(channel, info.client), self._value(info, expires))
                    for info in infos
                )
            )

    async def remove(self, channel: str, client_id: str) -> None:
        async with self._unavailable_on_error():
            # Purge, not delete: the entry's value goes at once, only a marker stays.
            await self._kv.purge(self._key(channel, client_id))

    async def remove_many(self, channel: str, client_ids: Sequence[str]) -> None:
        """Every entry's purge in flight at once (many clients leaving together)."""
        if not client_ids:
            return
        async with self._unavailable_on_error():
            await asyncio.gather(
                *(self._kv.purge(self._key(channel, client_id)) for client_id in client_ids)
            )

    # -------------------------------------------------------------- read

    async def _entries(self, channel: str) -> list[tuple[str, int, bytes]]:
        """The channel's entries as (key, revision, value); deleted ones left out."""
        prefix = f"$KV.{self.bucket}."
        messages = await fetch_all(
            self._js,
            f"KV_{self.bucket}",
            f"{prefix}{self._channel_key(channel)}.>",
            last_per_subject=True,
            timeout=self.timeout,
        )
        return [
            (msg.subject[len(prefix) :], int(msg.metadata.sequence.stream), msg.data)
            for msg in messages
            if not (msg.headers and msg.headers.get("KV-Operation") in ("DEL", "PURGE"))
        ]

    async def get(self, channel: str) -> dict[str, ClientInfo]:
        now = self._now()
        clients: dict[str, ClientInfo] = {}
        async with self._unavailable_on_error():
            expired: list[tuple[str, int]] = []
            for key, revision, value in await self._entries(channel):
                if not value:
                    continue
                stored = json.loads(value)
                if int(stored["x"]) <= now:
                    expired.append((key, revision))
                    continue
                info = ClientInfo.from_json(stored["i"])
                clients[info.client] = info
            # A dead node's entries all at once, not one round trip each.
            await asyncio.gather(*(self._forget(key, revision) for key, revision in expired))
        return clients

    async def _forget(self, key: str, revision: int) -> None:
        """Delete an expired entry, unless its node refreshed it since it was read."""
        from nats.js.errors import APIError

        try:
            await self._kv.delete(key, last=revision)
        except APIError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise

    async def stats(self, channel: str) -> PresenceStats:
        clients = await self.get(channel)
        return PresenceStats(len(clients), len({info.user for info in clients.values()}))

    async def _forget_connection(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def destroy(self) -> None:
        """Delete this prefix's bucket (tests; a hub being decommissioned)."""
        async with self._unavailable_on_error():
            with contextlib.suppress(Exception):  # already gone
                await self._nc.jetstream().delete_key_value(self.bucket)
