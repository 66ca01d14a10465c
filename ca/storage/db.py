"""Database URLs and schema migrations (Alembic over SQLAlchemy engines made for the purpose).

SQLite (WAL) is the zero-config default; PostgreSQL is selected by a `postgresql://` URL.
Migrating is the only use of SQLAlchemy engines: requests go to the driver directly
(`ca.storage.sql`). On PostgreSQL an advisory lock lets one replica migrate at a time. A server
that cannot be reached is `DatabaseUnavailable`, which names the URL (without its password).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from ca.storage.sql import driver_url

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x61636D65  # "acme": one replica migrates at a time


def is_sqlite_url(url: str) -> bool:
    return not url.startswith(("postgresql://", "postgres://", "postgresql+"))


def sqlite_path(url: str) -> str:
    if url.startswith("sqlite:///"):
        return url[len("sqlite:///"):]
    return str(Path(url).resolve())


class DatabaseUnavailable(Exception):
    """The database cannot be reached or opened: the operator's to fix, said in one line."""


async def _reach_postgres(url: str, timeout: float = 10.0) -> None:
    """Connect once before anything else, so that an unreachable server, a missing database or
    refused credentials are named as such rather than surfacing deep inside the migrations."""
    try:
        conn = await asyncpg.connect(driver_url(url), timeout=timeout)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if isinstance(exc, asyncio.TimeoutError):
            reason = f"no answer within {timeout:g} s"
        elif isinstance(exc, socket.gaierror):
            reason = exc.strerror or str(exc)  # "Name or service not known"
        elif isinstance(exc, OSError) and exc.errno:
            reason = os.strerror(exc.errno)  # asyncio's own text repeats the address
        else:
            reason = str(exc) or type(exc).__name__
        raise DatabaseUnavailable(f"cannot reach the database {shown_url(url)}: {reason}") from None
    await conn.close()


def shown_url(url: str) -> str:
    """A database URL fit for a log line: the password, if any, left out."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _open_sqlite(path: str) -> None:
    """Create the file if it is new, readable by its owner only (0600, like the CA keys: it holds
    the nonce, pseudonym and EAB keys; SQLite gives its -wal and -shm files the same mode; an
    existing file keeps the mode its operator gave it). Then read its header once, so that a file
    that is not (or no longer) an SQLite database is named as such rather than surfacing deep
    inside the migrations."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create the database {path}: {exc.strerror or exc}") from None
    try:
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise DatabaseUnavailable(f"cannot open the database {path}: {exc}") from None


async def migrate(url: str) -> None:
    """Bring the database at `url` to the newest schema revision."""
    if is_sqlite_url(url):
        _open_sqlite(sqlite_path(url))
        engine = make_sqlite_engine(url)
        try:
            migrate_sqlite(engine)
        finally:
            engine.dispose()
    else:
        await _reach_postgres(url)
        async_engine = make_postgres_engine(url, pool_size=1)
        try:
            await migrate_postgres(async_engine)
        finally:
            await async_engine.dispose()


def async_url(url: str) -> str:
    """Map a user-facing PostgreSQL URL to the async driver SQLAlchemy should use."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


def make_sqlite_engine(url: str) -> Engine:
    engine = create_engine(f"sqlite:///{sqlite_path(url)}", poolclass=StaticPool, pool_reset_on_return=None,
                           connect_args={"timeout": 30, "check_same_thread": False})
    _tune_sqlite(engine)
    return engine


def make_postgres_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(async_url(url), pool_size=pool_size, max_overflow=pool_size)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # migrations are rare: each commit fsyncs, power cuts included
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(sync_conn) -> None:
    cfg = _alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def migrate_sqlite(engine: Engine) -> None:
    with engine.begin() as conn:
        _upgrade(conn)


async def migrate_postgres(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; safe to call from several replicas at once."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        await conn.run_sync(_upgrade)
