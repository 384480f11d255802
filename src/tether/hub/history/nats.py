"""History in NATS JetStream, shared by every node of a hub.

Per hub prefix, one stream and one KeyValue bucket (``<name>`` is the prefix
with characters outside ``[A-Za-z0-9_-]`` replaced by ``_``):

``<name>_history`` (stream)
    Subjects ``<prefix>.h.<channel>``, the channel escaped as for the NATS
    broker. Each message is one publication as JSON; its headers carry the
    channel's state as of that message:

    ``Tether-Epoch`` / ``Tether-Offset``
        the publication's position (offset 0: the *epoch marker* that starts
        a channel's stream, written when a channel is first used);
    ``Tether-First``
        the first offset of the current run of live publications (a publish
        after the publications expired starts a new run);
    ``Tether-Expires`` / ``Tether-Size``
        when the run expires (ms) and how many publications are kept;
    ``Tether-Key-Expires``
        for a publish with an idempotency key, when the key expires (ms).

    So the channel's *last message* is its metadata: the top offset and the
    epoch are read from it, and nothing else needs to agree with it.
``<name>_history_idem`` (KV, entries kept ``key_ttl``: 10 minutes, or the
longest history TTL seen if that is longer)
    Per (channel, idempotency key): ``"<epoch> <offset> <expiry ms>"``.

Offsets are allocated and stored in one step. A node reads the channel's
last message (offset ``N``, stream sequence ``S``) and publishes offset
``N + 1`` with ``Nats-Expected-Last-Subject-Sequence: S``: JetStream stores
it only if ``S`` is still the subject's last message, atomically. If another
node got there first the publish is refused (error 10071) and the node reads
the new last message and tries again. A node that dies before its publish
was stored has allocated nothing, so there is never a hole; one that dies
after it was stored has stored the publication with its offset. Each node
remembers the last message it wrote per channel, so a channel published
through one node costs one round trip per publication, not two.

Idempotency keys: a keyed publish also carries ``Nats-Msg-Id`` (channel,
epoch and key), so JetStream's duplicate window (``duplicate_window``, two
minutes) catches a retry even when the node died before writing the key to
the KV bucket; the bucket answers retries for the rest of the history TTL.
The bucket is written after the acknowledgement, not before (one round trip
less per publish): the duplicate window covers the moment in between.

An empty channel (a new channel, one whose messages all aged out after
``meta_ttl``, or one removed) gets a new epoch from its marker, written
with ``Nats-Expected-Last-Subject-Sequence: 0`` so two nodes cannot start
two epochs. Expiry of publications and keys is checked against the clock
passed in (``time.time`` by default); the stream's ``max_age``
(``meta_ttl``) collects garbage. Trimming to the channel's size is a purge
(``keep``) every quarter of the size, and reads filter by offset, so a
message beyond the size never leaks into a reply. A read fetches the
channel's messages through one short-lived pull consumer: a few round trips
however many publications it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tether.hub._jetstream import (
    WRONG_LAST_SEQUENCE,
    bucket_base,
    connect,
    fetch_all,
    jetstream_missing,
)
from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.brokers.nats import DEFAULT_PREFIX, DEFAULT_URL, escape_token, import_nats
from tether.hub.history.base import AddResult, History, Recovery
from tether.hub.model import ClientInfo, Publication, StreamPosition
from tether.hub.wire import dumps, loads

logger = logging.getLogger("tether.hub.backplane")

_EPOCH = "Tether-Epoch"
_OFFSET = "Tether-Offset"
_FIRST = "Tether-First"
_EXPIRES = "Tether-Expires"
_SIZE = "Tether-Size"
_KEY_EXPIRES = "Tether-Key-Expires"
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_STREAM_NAME_IN_USE = 10058
# Attempts before giving up on a very contended channel.
_ATTEMPTS = 100
KEY_TTL = 600.0
"""Seconds the idempotency key bucket keeps entries, unless a history TTL is longer."""
DUPLICATE_WINDOW = 120.0
"""Seconds JetStream remembers ``Nats-Msg-Id``s (its default)."""


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


def names(prefix: str) -> tuple[str, str]:
    """The stream and the idempotency bucket of ``prefix``."""
    base = bucket_base(prefix)
    return f"{base}_history", f"{base}_history_idem"


@dataclass(frozen=True, slots=True)
class _Last:
    """A channel's last message: its stream sequence and the state it carries."""

    seq: int
    epoch: str
    offset: int
    first: int
    expires: int
    size: int

    @classmethod
    def of(cls, seq: int, headers: dict[str, str]) -> _Last:
        return cls(
            seq,
            headers.get(_EPOCH, ""),
            int(headers.get(_OFFSET, "0")),
            int(headers.get(_FIRST, "1")),
            int(headers.get(_EXPIRES, "0")),
            int(headers.get(_SIZE, "0")),
        )

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self.offset, self.epoch)


class _Refused(Exception):
    """JetStream refused a conditional publish: the subject moved on."""


class NatsHistory(History):
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        prefix: str = DEFAULT_PREFIX,
        meta_ttl: float = 86400.0,
        key_ttl: float = KEY_TTL,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import_nats()
        self.url = url
        self.prefix = prefix
        self.meta_ttl = meta_ttl
        self.key_ttl = key_ttl
        self.timeout = timeout
        self.clock = clock
        self.stream, self.idem_bucket = names(prefix)
        self._nc: Any = None
        self._js: Any = None
        self._idem: Any = None
        self._lock = asyncio.Lock()
        # channel -> the last message this node wrote or read (a hint: a stale
        # one only costs a refused publish and a read).
        self._lasts: dict[str, _Last] = {}
        self._recording: set[asyncio.Task[None]] = set()

    def subject(self, channel: str) -> str:
        return f"{self.prefix}.h.{escape_token(channel)}"

    def _now(self) -> int:
        return int(self.clock() * 1000)

    # --------------------------------------------------------- connection

    async def _ready(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            return
        async with self._lock:
            if self._nc is not None and not self._nc.is_closed:
                return
            nc = await connect(self.url, timeout=self.timeout, name="tether-hub-history")
            try:
                js, idem = await asyncio.wait_for(self._make(nc), self.timeout)
            except BaseException:
                await nc.close()
                raise
            self._nc, self._js, self._idem = nc, js, idem

    async def _make(self, nc: Any) -> tuple[Any, Any]:
        """The stream and the bucket (made, or updated if an older tether made them)."""
        from nats.js.api import StorageType, StreamConfig
        from nats.js.errors import BadRequestError

        js = nc.jetstream(timeout=self.timeout)
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.h.>"],
            storage=StorageType.FILE,
            max_age=self.meta_ttl,
            duplicate_window=min(DUPLICATE_WINDOW, self.meta_ttl),
        )
        try:
            await js.add_stream(config)
        except BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            await js.update_stream(config)  # made by an older tether, or other settings
        try:
            idem = await js.create_key_value(bucket=self.idem_bucket, history=1, ttl=self.key_ttl)
        except BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            idem = await js.key_value(self.idem_bucket)  # other settings: kept, fitted below
        return js, idem

    async def _fit_keys(self, ttl: float) -> None:
        """Make the key bucket keep entries ``ttl`` seconds (a history TTL over ``key_ttl``).

        Each entry carries its own expiry; the bucket's ``max_age`` only has
        to outlast it, and keeps the garbage short otherwise.
        """
        if ttl <= self.key_ttl:
            return
        stream = f"KV_{self.idem_bucket}"
        info = await self._js.stream_info(stream)
        if (info.config.max_age or 0) < ttl:
            info.config.max_age = ttl
            await self._js.update_stream(info.config)
        self.key_ttl = max(ttl, info.config.max_age or ttl)

    @asynccontextmanager
    async def _unavailable_on_error(self) -> AsyncIterator[None]:
        """Turn a lost connection, a timeout or JetStream down into :class:`BrokerUnavailable`."""
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
                f"nats history: the stream was missing on {self.url}; made again on the next call"
            ) from exc
        except (OSError, TimeoutError, asyncio.TimeoutError, nats.errors.Error) as exc:
            if isinstance(exc, APIError) and not isinstance(exc, ServiceUnavailableError):
                raise
            if jetstream_missing(exc):
                raise BrokerUnavailable(
                    f"nats history: the server at {self.url} has no JetStream "
                    "(start nats-server with -js)"
                ) from exc
            raise BrokerUnavailable(f"nats history unavailable: {exc!r}") from exc

    async def start(self) -> None:
        """Connect and make its stream and bucket now: a server without JetStream, or one
        that refuses them, stops the node with a sentence saying why."""
        from nats.js.errors import APIError

        try:
            async with self._unavailable_on_error():
                pass
        except APIError as exc:
            raise BrokerUnavailable(
                f"nats history: cannot make the stream {self.stream} on {self.url}: "
                f"{exc.description or exc}"
            ) from exc

    # ------------------------------------------------------ last message

    async def _read_last(self, channel: str) -> _Last | None:
        """The channel's last message, or ``None`` if it has none."""
        from nats.js.errors import NotFoundError

        try:
            msg = await self._js.get_msg(self.stream, subject=self.subject(channel))
        except NotFoundError:
            self._lasts.pop(channel, None)
            return None
        last = _Last.of(int(msg.seq), dict(msg.headers or {}))
        self._lasts[channel] = last
        return last

    async def _publish(
        self, channel: str, body: bytes, headers: dict[str, str], expected: int
    ) -> Any:
        """Store ``body`` only if the subject's last message is ``expected``; its PubAck."""
        from nats.js.errors import APIError

        try:
            return await self._js.publish(
                self.subject(channel),
                body,
                stream=self.stream,
                headers={**headers, _EXPECTED_LAST: str(expected)},
            )
        except APIError as exc:
            if exc.err_code == WRONG_LAST_SEQUENCE:
                self._lasts.pop(channel, None)
                raise _Refused from None
            raise

    async def _live(self, channel: str, *, create: bool = True) -> _Last | None:
        """The channel's last message, starting a new epoch (its marker) if it has none."""
        for _ in range(_ATTEMPTS):
            last = await self._read_last(channel)
            if last is not None or not create:
                return last
            headers = {_EPOCH: new_epoch(), _OFFSET: "0", _FIRST: "1", _EXPIRES: "0", _SIZE: "0"}
            try:
                ack = await self._publish(channel, b"", headers, 0)
            except _Refused:
                continue  # another node started the epoch: read it
            marker = _Last.of(int(ack.seq), headers)
            self._lasts[channel] = marker
            return marker
        raise BrokerUnavailable(f"nats history: channel {channel!r} too contended")

    # --------------------------------------------------------------- add

    async def add(
        self,
        channel: str,
        publication: Publication,
        *,
        size: int,
        ttl: float,
        idempotency_key: str | None = None,
    ) -> AddResult:
        size = max(1, size)
        ttl_ms = max(1, int(ttl * 1000))
        stored: dict[str, Any] = {"data": publication.data}
        if publication.info is not None:
            stored["info"] = publication.info.to_json()
        body = dumps(stored).encode()
        async with self._unavailable_on_error():
            return await self._add(channel, body, size, ttl_ms, idempotency_key)

    async def _add(
        self, channel: str, body: bytes, size: int, ttl_ms: int, key: str | None
    ) -> AddResult:
        idem_key = None
        if key is not None:
            idem_key = f"c{channel.encode().hex()}.k{key.encode().hex()}"
        msg_id_suffix = ""
        for _ in range(_ATTEMPTS):
            last = self._lasts.get(channel) or await self._live(channel)
            assert last is not None
            now = self._now()
            if idem_key is not None:
                seen = await self._seen(idem_key, last.epoch, now)
                if seen is not None:
                    return AddResult(seen, duplicate=True)
            offset = last.offset + 1
            expired = last.expires <= now
            headers = {
                _EPOCH: last.epoch,
                _OFFSET: str(offset),
                _FIRST: str(offset if expired else last.first),
                _EXPIRES: str(now + ttl_ms),
                _SIZE: str(size),
            }
            if key is not None:
                headers[_KEY_EXPIRES] = str(now + ttl_ms)
                headers["Nats-Msg-Id"] = f"{channel.encode().hex()}:{last.epoch}:{key}"
                headers["Nats-Msg-Id"] += msg_id_suffix
            try:
                ack = await self._publish(channel, body, headers, last.seq)
            except _Refused:
                continue
            if ack.duplicate:
                # This key's publish is already stored (a retry after a node died
                # before it wrote the key to the bucket), or was, under a key now
                # expired: then publish under a new id that any retry derives too.
                original = await self._original(channel, int(ack.seq))
                if original is not None and original[1] > now:
                    return AddResult(StreamPosition(original[0], last.epoch), duplicate=True)
                msg_id_suffix += f"~{original[0] if original else 'gone'}"
                continue
            written = _Last.of(int(ack.seq), headers)
            self._lasts[channel] = written
            await self._trim(channel, written, expired)
            if idem_key is not None:
                self._record(idem_key, f"{last.epoch} {offset} {now + ttl_ms}".encode(), ttl_ms)
            return AddResult(written.position)
        raise BrokerUnavailable(f"nats history: channel {channel!r} too contended")

    def _record(self, idem_key: str, value: bytes, ttl_ms: int) -> None:
        """Write a key's entry without holding up the acknowledgement.

        Until it lands (a millisecond), and if it never does because this node
        died, a retry is still caught by JetStream's duplicate window.
        """

        async def record() -> None:
            try:
                await self._fit_keys(ttl_ms / 1000)
                await self._idem.put(idem_key, value)
            except Exception as exc:  # the duplicate window covers the retries meanwhile
                logger.warning("nats history: idempotency key not recorded: %r", exc)

        task = asyncio.get_running_loop().create_task(record())
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _seen(self, idem_key: str, epoch: str, now: int) -> StreamPosition | None:
        from nats.js.errors import NotFoundError

        try:
            seen = (await self._idem.get(idem_key)).value
        except NotFoundError:
            return None
        if not seen:
            return None
        seen_epoch, offset, expires = seen.decode().split(" ")
        if seen_epoch != epoch or int(expires) <= now:
            return None
        return StreamPosition(int(offset), epoch)

    async def _original(self, channel: str, seq: int) -> tuple[int, int] | None:
        """(offset, key expiry) of the stored message ``seq``, if it is still there."""
        from nats.js.errors import NotFoundError

        try:
            msg = await self._js.get_msg(self.stream, seq=seq)
        except NotFoundError:
            return None
        headers = dict(msg.headers or {})
        return int(headers.get(_OFFSET, "0")), int(headers.get(_KEY_EXPIRES, "0"))

    async def _trim(self, channel: str, written: _Last, expired: bool) -> None:
        """Drop what reads would skip anyway: a run that expired, or beyond the size."""
        subject = self.subject(channel)
        if expired:
            # Everything before this message (``seq``: up to, not including).
            await self._js.purge_stream(self.stream, subject=subject, seq=written.seq)
        elif written.offset % max(1, written.size // 4) == 0:
            await self._js.purge_stream(self.stream, subject=subject, keep=written.size)

    # -------------------------------------------------------------- read

    async def _publications(self, channel: str, last: _Last, after: int) -> list[Publication]:
        """The channel's live publications after offset ``after``, oldest first."""
        if last.offset <= after or last.expires <= self._now():
            return []
        low = max(last.first, last.offset - last.size + 1, after + 1)
        found: dict[int, Publication] = {}
        messages = await fetch_all(
            self._js,
            self.stream,
            self.subject(channel),
            last_per_subject=False,
            timeout=self.timeout,
        )
        for msg in messages:
            headers = msg.headers or {}
            if headers.get(_EPOCH) != last.epoch:
                continue
            offset = int(headers.get(_OFFSET, "0"))
            if low <= offset <= last.offset:
                found[offset] = _publication(msg.data or b"{}", offset)
        return [found[o] for o in sorted(found)]

    async def since(self, channel: str, position: StreamPosition, *, limit: int) -> Recovery:
        async with self._unavailable_on_error():
            last = await self._live(channel)
            assert last is not None
            current = last.position
            if position.epoch != last.epoch or position.offset > last.offset:
                return Recovery([], False, current)
            missed = last.offset - position.offset
            if missed == 0:
                return Recovery([], True, current)
            if missed > limit:
                return Recovery([], False, current)
            pubs = await self._publications(channel, last, position.offset)
        if len(pubs) != missed or pubs[0].offset != position.offset + 1:
            return Recovery([], False, current)
        return Recovery(pubs, True, current)

    async def read(
        self, channel: str, *, limit: int, since: int | None = None, reverse: bool = False
    ) -> tuple[list[Publication], StreamPosition]:
        async with self._unavailable_on_error():
            last = await self._live(channel)
            assert last is not None
            if limit <= 0:
                return [], last.position
            pubs = await self._publications(channel, last, 0)
        if reverse:
            pubs.reverse()
            if since is not None:
                pubs = [p for p in pubs if p.offset < since]
        elif since is not None:
            pubs = [p for p in pubs if p.offset > since]
        return pubs[:limit], last.position

    async def position(self, channel: str) -> StreamPosition:
        async with self._unavailable_on_error():
            last = await self._live(channel)
        assert last is not None
        return last.position

    async def peek(self, channel: str) -> StreamPosition | None:
        async with self._unavailable_on_error():
            last = await self._live(channel, create=False)
        return None if last is None else last.position

    async def remove(self, channel: str) -> None:
        async with self._unavailable_on_error():
            await self._js.purge_stream(self.stream, subject=self.subject(channel))
        self._lasts.pop(channel, None)

    async def _forget_connection(self) -> None:
        self._lasts.clear()
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    async def close(self) -> None:
        if self._recording:
            await asyncio.wait(list(self._recording), timeout=self.timeout)
        nc, self._nc = self._nc, None
        self._lasts.clear()
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def destroy(self) -> None:
        """Delete this prefix's stream and bucket (tests; a hub being decommissioned)."""
        async with self._unavailable_on_error():
            with contextlib.suppress(Exception):  # already gone
                await self._js.delete_key_value(self.idem_bucket)
            with contextlib.suppress(Exception):
                await self._js.delete_stream(self.stream)


def _publication(raw: bytes, offset: int) -> Publication:
    stored = loads(raw)
    assert isinstance(stored, dict)
    info = stored.get("info")
    return Publication(
        stored.get("data"),
        ClientInfo.from_json(info) if isinstance(info, dict) else None,
        offset,
    )
