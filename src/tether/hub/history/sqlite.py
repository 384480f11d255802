"""History kept in a SQLite file on this node's disk (``tether serve --data DIR``).

A single node that restarts or is redeployed keeps every channel's epoch,
offsets, publications and idempotency keys, so its clients reconnect and
recover across the restart instead of seeing a new epoch.

The file is ``DIR/history.sqlite3``, in WAL mode with ``synchronous=FULL``:
a publish is acknowledged only once its transaction is on disk. Three tables:

``streams``
    Per channel: ``epoch``, ``top`` (the last offset), ``pubs_expire`` (when
    the publications expire, ms since the epoch) and ``meta_expire`` (when
    the epoch and top are forgotten: ``meta_ttl`` after the last publish).
``pubs``
    ``(channel, offset) -> body`` (the publication's data and info as JSON),
    trimmed to the channel's size on every add.
``idem``
    ``(channel, key) -> offset, expire``: an idempotency key seen within the
    channel's history TTL returns the original position.

SQLite calls block, so every one runs on one thread of this history's own,
never on the event loop. Adds are grouped: those that arrive while a
transaction is being written go into the next one, so a hot channel pays
one fsync per batch, not per publication. A batch is all or nothing: when
the disk is full, or the file turned read-only or damaged, the transaction
rolls back and every publish in it is refused with
:class:`~tether.hub.history.errors.HistoryUnavailable` (error 127); none is
acknowledged and then lost.

Expiry uses the wall clock (``time.time``), which, unlike the monotonic
clock, means the same thing after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tether.hub.history.base import AddResult, History, Recovery
from tether.hub.history.errors import HistoryUnavailable
from tether.hub.model import ClientInfo, Publication, StreamPosition
from tether.hub.wire import dumps, loads

logger = logging.getLogger("tether.hub")

FILE_NAME = "history.sqlite3"
SCHEMA_VERSION = 1
MAX_BATCH = 512
"""Adds written in one transaction at most."""
BUSY_TIMEOUT_MS = 5000
"""How long a write waits for another process holding the file's write lock."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    channel TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    top INTEGER NOT NULL,
    pubs_expire INTEGER NOT NULL,
    meta_expire INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS streams_meta_expire ON streams (meta_expire);
CREATE INDEX IF NOT EXISTS streams_pubs_expire ON streams (pubs_expire);
CREATE TABLE IF NOT EXISTS pubs (
    channel TEXT NOT NULL,
    offset INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (channel, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idem (
    channel TEXT NOT NULL,
    key TEXT NOT NULL,
    offset INTEGER NOT NULL,
    expire INTEGER NOT NULL,
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idem_expire ON idem (expire);
"""

T = TypeVar("T")


def new_epoch() -> str:
    return secrets.token_urlsafe(6)


def open_database(path: Path) -> sqlite3.Connection:
    """Open (or create) the history file, check it and its schema; raise HistoryUnavailable.

    Every problem an operator can fix becomes one sentence naming the file:
    a directory that cannot be created or written, a file that is not a
    SQLite database or is damaged, a schema from a newer tether.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HistoryUnavailable(
            f"cannot create the data directory {path.parent}: {exc.strerror or exc}"
        ) from None
    db: sqlite3.Connection | None = None
    try:
        # Autocommit mode: transactions are the explicit BEGIN/COMMIT below.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        check = db.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise HistoryUnavailable(f"the history file {path} is damaged ({check and check[0]})")
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise HistoryUnavailable(
                f"the history file {path} was written by a newer tether "
                f"(schema {version}, this one knows {SCHEMA_VERSION})"
            )
        mode = _switch_to_wal(db)
        if str(mode).lower() != "wal":
            raise HistoryUnavailable(f"the history file {path} cannot use WAL mode ({mode})")
        # FULL: a commit returns once the WAL is synced, so an acknowledged
        # publish survives a crash of the machine, not only of the process.
        db.execute("PRAGMA synchronous = FULL")
        if version < SCHEMA_VERSION:  # a new file (an existing one is opened without writing)
            db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            )
    except HistoryUnavailable:
        if db is not None:
            db.close()
        raise
    except sqlite3.Error as exc:
        if db is not None:
            db.close()
        raise HistoryUnavailable(f"cannot use the history file {path}: {describe(exc)}") from None
    return db


def _switch_to_wal(db: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode = WAL``, retried while another connection holds the file.

    Changing the journal mode can answer "database is locked" at once, without
    waiting through ``busy_timeout``, while a second process opens the same new
    file (two workers at start): retry for as long as the busy timeout.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return str(db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)  # the store's own thread, never the event loop


def describe(exc: sqlite3.Error) -> str:
    """SQLite's message, with a hint for the failures an operator can fix."""
    message = str(exc) or type(exc).__name__
    lowered = message.lower()
    if "not a database" in lowered or "malformed" in lowered:
        return f"{message} (the file is damaged: restore it, or move it away to start afresh)"
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        return f"{message} (check that the file and its directory are writable)"
    if "full" in lowered:
        return f"{message} (the disk or the file size limit is full)"
    return message


@dataclass(slots=True)
class _Add:
    channel: str
    body: str
    size: int
    ttl_ms: int
    key: str | None
    future: asyncio.Future[AddResult]


class SqliteHistory(History):
    def __init__(
        self,
        directory: str | Path,
        *,
        meta_ttl: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(directory) / FILE_NAME
        self.meta_ttl_ms = int(meta_ttl * 1000)
        self.clock = clock
        self._db: sqlite3.Connection | None = None
        # One thread: SQLite calls never run on the event loop, and they run
        # one after another in the order they were asked for.
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[_Add] = []
        self._writer: asyncio.Task[None] | None = None
        self._failures: set[str] = set()

    def _now(self) -> int:
        return int(self.clock() * 1000)

    # ------------------------------------------------------------ thread

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the history's thread, with the database open."""
        if self._executor is None:  # made on first use, and again after close()
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="tether-history-sqlite")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            self._db = open_database(self.path)
        try:
            return work(self._db)
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            message = f"history store {self.path}: {describe(exc)}"
            if message not in self._failures:  # said once per kind of failure
                self._failures.add(message)
                logger.error("%s", message)
            raise HistoryUnavailable(message) from None

    def _transaction(self, db: sqlite3.Connection, work: Callable[[], T]) -> T:
        db.execute("BEGIN IMMEDIATE")
        result = work()
        db.execute("COMMIT")
        return result

    async def start(self) -> None:
        """Open and check the file now, so a problem stops the node before it listens."""
        await self._run(lambda db: None)

    # ---------------------------------------------------------- streams

    def _stream(self, db: sqlite3.Connection, channel: str, now: int) -> tuple[str, int, int]:
        """(epoch, top, pubs_expire) of the live stream, made afresh if expired or missing."""
        row = db.execute(
            "SELECT epoch, top, pubs_expire, meta_expire FROM streams WHERE channel = ?",
            (channel,),
        ).fetchone()
        if row is not None and row[3] > now:
            return str(row[0]), int(row[1]), int(row[2])
        epoch = new_epoch()
        db.execute("DELETE FROM pubs WHERE channel = ?", (channel,))
        db.execute("DELETE FROM idem WHERE channel = ?", (channel,))
        db.execute(
            "INSERT OR REPLACE INTO streams VALUES (?, ?, 0, 0, ?)",
            (channel, epoch, now + self.meta_ttl_ms),
        )
        return epoch, 0, 0

    def _peek(self, db: sqlite3.Connection, channel: str, now: int) -> tuple[str, int, int] | None:
        row = db.execute(
            "SELECT epoch, top, pubs_expire FROM streams WHERE channel = ? AND meta_expire > ?",
            (channel, now),
        ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]), int(row[2]))

    def _current(self, db: sqlite3.Connection, channel: str, now: int) -> tuple[str, int, int]:
        """The live stream, creating it (a write) only when there is none."""
        found = self._peek(db, channel, now)
        if found is not None:
            return found
        return self._transaction(db, lambda: self._stream(db, channel, now))

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
        stored: dict[str, Any] = {"data": publication.data}
        if publication.info is not None:
            stored["info"] = publication.info.to_json()
        future: asyncio.Future[AddResult] = asyncio.get_running_loop().create_future()
        self._pending.append(
            _Add(
                channel,
                dumps(stored),
                max(1, size),
                max(1, int(ttl * 1000)),
                idempotency_key,
                future,
            )
        )
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_pending())
        return await future

    async def _write_pending(self) -> None:
        """Write what is pending, a transaction at a time, until nothing is."""
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    results = await self._run(self._writes(batch))
                except HistoryUnavailable as exc:
                    for add in batch:
                        if not add.future.done():
                            add.future.set_exception(HistoryUnavailable(str(exc)))
                    continue
                for add, result in zip(batch, results, strict=True):
                    if not add.future.done():  # its caller may have given up
                        add.future.set_result(result)
        finally:
            self._writer = None

    def _writes(self, batch: list[_Add]) -> Callable[[sqlite3.Connection], list[AddResult]]:
        """The work of writing ``batch`` in one transaction."""

        def work(db: sqlite3.Connection) -> list[AddResult]:
            now = self._now()
            return self._transaction(db, lambda: [self._add_one(db, add, now) for add in batch])

        return work

    def _add_one(self, db: sqlite3.Connection, add: _Add, now: int) -> AddResult:
        channel = add.channel
        epoch, top, pubs_expire = self._stream(db, channel, now)
        if add.key is not None:
            seen = db.execute(
                "SELECT offset FROM idem WHERE channel = ? AND key = ? AND expire > ?",
                (channel, add.key, now),
            ).fetchone()
            if seen is not None:
                return AddResult(StreamPosition(int(seen[0]), epoch), duplicate=True)
        if pubs_expire <= now:
            db.execute("DELETE FROM pubs WHERE channel = ?", (channel,))
        top += 1
        db.execute("INSERT INTO pubs VALUES (?, ?, ?)", (channel, top, add.body))
        db.execute("DELETE FROM pubs WHERE channel = ? AND offset <= ?", (channel, top - add.size))
        db.execute(
            "UPDATE streams SET top = ?, pubs_expire = ?, meta_expire = max(meta_expire, ?) "
            "WHERE channel = ?",
            (top, now + add.ttl_ms, now + max(self.meta_ttl_ms, add.ttl_ms), channel),
        )
        if add.key is not None:
            db.execute(
                "INSERT OR REPLACE INTO idem VALUES (?, ?, ?, ?)",
                (channel, add.key, top, now + add.ttl_ms),
            )
        return AddResult(StreamPosition(top, epoch))

    # -------------------------------------------------------------- read

    def _rows(self, db: sqlite3.Connection, query: str, args: tuple[Any, ...]) -> list[Publication]:
        return [_publication(body, int(offset)) for offset, body in db.execute(query, args)]

    async def since(self, channel: str, position: StreamPosition, *, limit: int) -> Recovery:
        def work(db: sqlite3.Connection) -> Recovery:
            now = self._now()
            epoch, top, pubs_expire = self._current(db, channel, now)
            current = StreamPosition(top, epoch)
            if position.epoch != epoch or position.offset > top:
                return Recovery([], False, current)
            missed = top - position.offset
            if missed == 0:
                return Recovery([], True, current)
            if missed > limit or pubs_expire <= now:
                return Recovery([], False, current)
            pubs = self._rows(
                db,
                "SELECT offset, body FROM pubs WHERE channel = ? AND offset > ? "
                "ORDER BY offset LIMIT ?",
                (channel, position.offset, missed),
            )
            if len(pubs) != missed or pubs[0].offset != position.offset + 1:
                return Recovery([], False, current)
            return Recovery(pubs, True, current)

        return await self._run(work)

    async def read(
        self, channel: str, *, limit: int, since: int | None = None, reverse: bool = False
    ) -> tuple[list[Publication], StreamPosition]:
        def work(db: sqlite3.Connection) -> tuple[list[Publication], StreamPosition]:
            now = self._now()
            epoch, top, pubs_expire = self._current(db, channel, now)
            current = StreamPosition(top, epoch)
            if limit <= 0 or pubs_expire <= now:
                return [], current
            if reverse:
                bound = top + 1 if since is None else since
                query = "offset < ? ORDER BY offset DESC"
            else:
                bound = 0 if since is None else since
                query = "offset > ? ORDER BY offset"
            pubs = self._rows(
                db,
                f"SELECT offset, body FROM pubs WHERE channel = ? AND {query} LIMIT ?",
                (channel, bound, limit),
            )
            return pubs, current

        return await self._run(work)

    async def position(self, channel: str) -> StreamPosition:
        def work(db: sqlite3.Connection) -> StreamPosition:
            epoch, top, _ = self._current(db, channel, self._now())
            return StreamPosition(top, epoch)

        return await self._run(work)

    async def peek(self, channel: str) -> StreamPosition | None:
        def work(db: sqlite3.Connection) -> StreamPosition | None:
            found = self._peek(db, channel, self._now())
            return None if found is None else StreamPosition(found[1], found[0])

        return await self._run(work)

    async def remove(self, channel: str) -> None:
        def work(db: sqlite3.Connection) -> None:
            def remove() -> None:
                for table in ("streams", "pubs", "idem"):
                    db.execute(f"DELETE FROM {table} WHERE channel = ?", (channel,))

            self._transaction(db, remove)

        await self._run(work)

    async def expire(self) -> None:
        def work(db: sqlite3.Connection) -> None:
            now = self._now()

            def expire() -> None:
                gone = "SELECT channel FROM streams WHERE meta_expire <= ?"
                db.execute(f"DELETE FROM pubs WHERE channel IN ({gone})", (now,))
                db.execute(f"DELETE FROM idem WHERE channel IN ({gone})", (now,))
                db.execute("DELETE FROM streams WHERE meta_expire <= ?", (now,))
                stale = "SELECT channel FROM streams WHERE pubs_expire <= ?"
                db.execute(f"DELETE FROM pubs WHERE channel IN ({stale})", (now,))
                db.execute("DELETE FROM idem WHERE expire <= ?", (now,))

            self._transaction(db, expire)

        await self._run(work)

    async def close(self) -> None:
        writer = self._writer
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer

        def shut() -> None:  # on the history's thread, after the work queued before it
            db, self._db = self._db, None
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                db.close()

        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(executor, shut)
        executor.shutdown(wait=False)


def _publication(body: str, offset: int) -> Publication:
    stored = loads(body)
    assert isinstance(stored, dict)
    info = stored.get("info")
    return Publication(
        stored.get("data"),
        ClientInfo.from_json(info) if isinstance(info, dict) else None,
        offset,
    )
