"""Statements straight to the database driver: sqlite3 on the event loop, or asyncpg.

A request runs a few fixed statements. Through SQLAlchemy's ORM each one cost more CPU than
the rest of the request: under load, 72 % of the server's CPU went to the ORM's per-statement
work. So the store hands plain SQL to the driver instead. Statements are written once, with
`?` placeholders; PostgreSQL gets them as `$1, $2, …`. SQLModel still declares the schema
(`ca.storage.tables`), and Alembic still migrates it (`ca.storage.db`).

Values cross in their Python types. `encode_sqlite` and `encode_postgres` map them to what
each driver stores for the SQLAlchemy column types of the schema, and `ca.storage.records`
decodes them back, so rows read the same whichever path wrote them:
- times are aware UTC datetimes, stored as naive UTC (SQLite: text such as
  `2026-11-01 12:00:00.000000`, which sorts as time);
- JSON values are stored as their text;
- booleans are 0/1 on SQLite.

SQLite: one connection, used synchronously on the event loop. A statement is a local function
call of microseconds, and a transaction block never awaits anything that suspends, so blocks
cannot interleave on the connection. A writing transaction takes the write lock up front
(BEGIN IMMEDIATE), so it never fails on a stale read; a reading one (`read`) takes none, and in
WAL mode nothing blocks it. Only the write lock may be busy, held by another process: an
operator command, or another `acmeda serve` worker on the same file. The wait for it happens
outside any transaction and yields to the event loop, so the other requests of this process
go on meanwhile (SQLite's own busy handler would block the loop for a millisecond or more).
WAL checkpoints, which copy committed pages into the database file and fsync it, run on a
thread of their own (`_Checkpointer`), not inside whichever COMMIT crossed SQLite's threshold.
They also rewind the WAL to its start, so that it stays as small as a few intervals of writes.

Durability: a writing block returns only once its commit is on disk, so nothing a response
acknowledges is lost to a power cut. SQLite's own way (synchronous=FULL) fsyncs inside COMMIT,
under the write lock: 0.6 ms of lock per transaction, one fsync each. Instead COMMIT only writes
the WAL (synchronous=NORMAL) and the block then awaits `_WalSync`, which fsyncs the WAL on a
thread for every commit made before that fsync began: concurrent transactions share one fsync
(group commit) and no lock is held while it runs. The one exception is asked for by name,
`transaction(durable=False)`: a nonce's redemption. A power cut may forget one, but cannot let
the nonce be used again, since the nonces minted before the machine started are refused
(`ca.nonces`).

PostgreSQL: a pool of asyncpg connections. A reading block runs without BEGIN and COMMIT: under
READ COMMITTED, the isolation the writing transactions use too, a transaction would give its
statements no common snapshot anyway. Nor does a writing block of exactly one statement
(`statement()`), which is atomic on its own; that block refuses a second statement, on SQLite too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, AsyncIterator, Callable, Protocol, Sequence

import asyncpg

WRITE_LOCK_TIMEOUT = 30.0  # seconds a transaction waits for another process's write lock
CHECKPOINT_INTERVAL = 0.25  # seconds between two WAL checkpoints of the background thread
CHECKPOINT_FULL_TRIES = 20  # FULL checkpoint attempts of a round, a millisecond apart, while the lock is busy
WAL_SIZE_LIMIT = 64 << 20  # bytes a rewound WAL file is truncated to, after a burst made it larger
# Another process holds the write lock for a fraction of a millisecond (longer only when the OS
# preempts it), and the event loop's timers count whole milliseconds. So a refused transaction
# first only yields to the loop once, then tries again every millisecond.
_RETRY_SLEEP = 0.001


class Conflict(Exception):
    """A unique or primary-key constraint refused the statement (the row exists already)."""


class Transaction(Protocol):
    """One open transaction; committed when its block ends, rolled back if the block raises."""

    dialect: str  # "sqlite" or "postgresql"

    async def one(self, sql: str, *args: Any) -> Sequence[Any] | None: ...
    async def all(self, sql: str, *args: Any) -> list[Sequence[Any]]: ...
    async def run(self, sql: str, *args: Any) -> int: ...


class Database(Protocol):
    dialect: str

    def transaction(self, *, durable: bool = True) -> Any: ...  # an async context manager yielding a Transaction
    def statement(self, *, durable: bool = True) -> Any: ...  # the same, for exactly one statement
    def read(self) -> Any: ...  # the same, for blocks that only read
    async def close(self) -> None: ...


# --- values ------------------------------------------------------------------------------------

_UTC = timezone.utc


def _utc_naive(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("refusing to store a naive datetime")
    return value.astimezone(_UTC).replace(tzinfo=None)


def encode_sqlite(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is _UTC:  # the common case, without the conversions: "… 12:00:00.000000+00:00"
            return value.isoformat(" ", "microseconds")[:-6]
        return _utc_naive(value).isoformat(" ", "microseconds")
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value  # str, int, bool (an int to sqlite3), bytes, None


def encode_postgres(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc_naive(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def decode_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value + "+00:00")  # stored as naive UTC
    return value.replace(tzinfo=_UTC)


def decode_json(value: Any) -> Any:
    return None if value is None else json.loads(value)


@lru_cache(maxsize=512)
def postgres_sql(sql: str) -> str:
    """`?` placeholders as asyncpg's `$1, $2, …` (the statements carry no `?` in literals)."""
    counter = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _m: f"${next(counter)}", sql)


# --- blocks of one statement ------------------------------------------------------------------

class _SingleStatement:
    """The block of a `statement()`: one statement, which is atomic on its own. A second one
    raises, on either database: on PostgreSQL it would not be in the first one's transaction."""

    def __init__(self, tx: Transaction) -> None:
        self.dialect, self._tx, self._used = tx.dialect, tx, False
        self.done = False  # the statement ran to its end: it stands, whatever the block does after

    async def _only(self, call: Callable[..., Any], sql: str, args: tuple[Any, ...]) -> Any:
        if self._used:
            raise RuntimeError("a statement() block runs one statement; use transaction() for more")
        self._used = True
        result = await call(sql, *args)
        self.done = True
        return result

    async def one(self, sql: str, *args: Any) -> Sequence[Any] | None:
        return await self._only(self._tx.one, sql, args)

    async def all(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return await self._only(self._tx.all, sql, args)

    async def run(self, sql: str, *args: Any) -> int:
        return await self._only(self._tx.run, sql, args)


# --- SQLite ------------------------------------------------------------------------------------

class _SqliteTransaction:
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def one(self, sql: str, *args: Any) -> Sequence[Any] | None:
        return self._conn.execute(sql, [encode_sqlite(a) for a in args]).fetchone()

    async def all(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return self._conn.execute(sql, [encode_sqlite(a) for a in args]).fetchall()

    async def run(self, sql: str, *args: Any) -> int:
        try:
            return self._conn.execute(sql, [encode_sqlite(a) for a in args]).rowcount
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise Conflict(str(exc)) from None
            raise


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteDatabase:
    dialect = "sqlite"

    def __init__(self, path: str, *, write_lock_timeout: float = WRITE_LOCK_TIMEOUT,
                 fsync: Callable[[int], None] = os.fsync) -> None:
        # busy_timeout 0: a busy write lock raises at once and `_begin` retries without
        # blocking the event loop. In WAL mode nothing else inside a transaction waits on it.
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        if self._conn.execute("PRAGMA journal_mode=WAL").fetchone() != ("wal",):
            raise RuntimeError(f"SQLite database {path} cannot use WAL mode, which acmeda needs")
        for pragma in ("synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=0", "wal_autocheckpoint=0",
                       f"journal_size_limit={WAL_SIZE_LIMIT}"):
            self._conn.execute(f"PRAGMA {pragma}")
        self._lock = asyncio.Lock()  # a safety net: only contended if a block ever suspended
        self._write_lock_timeout = write_lock_timeout
        self._conn.execute("SELECT count(*) FROM sqlite_master")  # opens (creates) the -wal file
        self._wal_sync = _WalSync(path + "-wal", fsync=fsync)
        self._checkpointer = _Checkpointer(path)

    def transaction(self, *, durable: bool = True):
        return self._transaction("BEGIN IMMEDIATE", durable)

    @asynccontextmanager
    async def statement(self, *, durable: bool = True) -> AsyncIterator[_SingleStatement]:
        failure: BaseException | None = None
        async with self.transaction(durable=durable) as tx:
            single = _SingleStatement(tx)
            try:
                yield single
            except BaseException as exc:
                if not single.done:
                    raise  # the statement did not run, or failed: nothing to keep
                failure = exc  # kept, as on PostgreSQL where the statement committed on its own
        if failure is not None:
            raise failure

    def read(self):
        return self._transaction("BEGIN DEFERRED", False)

    @asynccontextmanager
    async def _transaction(self, begin: str, durable: bool) -> AsyncIterator[_SqliteTransaction]:
        started, delay = time.monotonic(), 0.0
        while True:
            async with self._lock:
                if self._begin(begin, started):
                    try:
                        yield _SqliteTransaction(self._conn)
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    try:
                        self._conn.execute("COMMIT")
                    finally:
                        if self._conn.in_transaction:  # COMMIT failed: leave the connection clean
                            self._conn.execute("ROLLBACK")
                    if durable:
                        commit = self._wal_sync.committed()
                        break
                    return
            await asyncio.sleep(delay)  # the write lock is busy: no transaction is open here
            delay = _RETRY_SLEEP
        await self._wal_sync.durable(commit)

    def _begin(self, begin: str, started: float) -> bool:
        """True once the transaction is open; False while another process holds the write lock."""
        try:
            self._conn.execute(begin)
            return True
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() - started >= self._write_lock_timeout:
                raise
            return False

    async def close(self) -> None:
        self._conn.close()
        self._wal_sync.close()
        self._checkpointer.stop()


class _WalSync:
    """Group commit: makes the commits of this connection durable by fsyncing the WAL file.

    `committed()` numbers a commit; `durable(n)` returns once an fsync that began after commit
    n has finished. One fsync runs at a time, on a thread; the commits made while it runs wait
    for the next one, which covers them all. The WAL file keeps its inode while any connection
    is open (SQLite deletes it only when the last one closes), so one descriptor serves; its
    directory entry is synced once, since a new WAL file was just created. A WAL that a
    checkpoint has already copied is restarted only after the database file itself was synced.
    A failed fsync fails every commit waiting on it: what reached the disk is then unknown.
    """

    def __init__(self, wal_path: str, *, fsync: Callable[[int], None] = os.fsync) -> None:
        self._fsync = fsync
        self._fd = os.open(wal_path, os.O_RDONLY)
        directory = os.open(os.path.dirname(os.path.abspath(wal_path)), os.O_RDONLY)
        try:
            fsync(directory)
        finally:
            os.close(directory)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-wal-sync")
        self._commits = 0  # commits made on this connection
        self._synced = 0  # commits known to be on disk
        self._running: asyncio.Future | None = None

    def committed(self) -> int:
        self._commits += 1
        return self._commits

    async def durable(self, commit: int) -> None:
        while self._synced < commit:
            if self._running is None:
                self._running = asyncio.ensure_future(self._sync(self._commits))
            # shielded: a cancelled request must not cancel the fsync the others wait for
            await asyncio.shield(self._running)

    async def _sync(self, covering: int) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._fsync, self._fd)
            self._synced = max(self._synced, covering)
        finally:
            self._running = None

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        os.close(self._fd)


class _Checkpointer:
    """A thread that checkpoints the WAL every `CHECKPOINT_INTERVAL` seconds, on its own connection.

    A round first copies what it can without any lock (PASSIVE), then takes the write lock for a
    FULL checkpoint of the frames committed meanwhile, so that the whole WAL is in the database
    file and the next write starts the WAL over from its beginning. PASSIVE alone never let that
    happen under steady load: a commit always landed while it copied, so the WAL grew by every
    write (375 MB in 18 s of the issuance bench), and each append cost the kernel a fresh zeroed
    page. Writers wait while FULL holds the lock: a sync of the database file, four times a
    second. FULL is tried without SQLite's busy wait, which would hold the lock while waiting
    for readers of an older snapshot (a long backup, say): a busy attempt gives the lock back at
    once and the next one comes a millisecond later, `CHECKPOINT_FULL_TRIES` times at most. The
    last round runs when the database is closed.
    """

    def __init__(self, path: str, interval: float = CHECKPOINT_INTERVAL) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._interval = interval
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._checkpoint()
        self._checkpoint()
        self._conn.close()

    def _checkpoint(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            for _ in range(CHECKPOINT_FULL_TRIES):
                busy, _, _ = self._conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
                if not busy or self._stopping.is_set():
                    return
                time.sleep(0.001)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


# --- PostgreSQL --------------------------------------------------------------------------------

def _rowcount(status: str) -> int:
    """asyncpg's command tag (`UPDATE 1`, `INSERT 0 1`, `DELETE 3`): the last number."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _PostgresTransaction:
    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def one(self, sql: str, *args: Any) -> Sequence[Any] | None:
        return await self._conn.fetchrow(postgres_sql(sql), *[encode_postgres(a) for a in args])

    async def all(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return await self._conn.fetch(postgres_sql(sql), *[encode_postgres(a) for a in args])

    async def run(self, sql: str, *args: Any) -> int:
        try:
            return _rowcount(await self._conn.execute(postgres_sql(sql), *[encode_postgres(a) for a in args]))
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(str(exc)) from None


class PostgresDatabase:
    dialect = "postgresql"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, pool_size: int = 10) -> "PostgresDatabase":
        return cls(await asyncpg.create_pool(driver_url(url), min_size=1, max_size=pool_size, reset=_keep_session))

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[_PostgresTransaction]:
        # every commit is durable: PostgreSQL's synchronous_commit, which is its operator's to set
        async with self._pool.acquire() as conn, conn.transaction():
            yield _PostgresTransaction(conn)

    @asynccontextmanager
    async def statement(self, *, durable: bool = True) -> AsyncIterator[_SingleStatement]:
        """One statement is atomic on its own: no BEGIN and COMMIT, which are a round trip each."""
        async with self._pool.acquire() as conn:
            yield _SingleStatement(_PostgresTransaction(conn))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[_PostgresTransaction]:
        async with self._pool.acquire() as conn:
            yield _PostgresTransaction(conn)

    async def close(self) -> None:
        await self._pool.close()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool does to a connection given back, besides rolling back an open transaction
    (which asyncpg always does): nothing. Its default, a `RESET ALL; UNLISTEN *; …` query, is a
    round trip per transaction, and the store changes no session state (no SET, LISTEN, cursors
    or session advisory locks)."""


def driver_url(url: str) -> str:
    """A user-facing PostgreSQL URL as asyncpg takes it (`postgresql+asyncpg://` → `postgresql://`)."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith(("postgresql", "postgres")) else url
