"""The schema: what the migrations build is what the models declare, and the queries that run on
every request of a busy account read a range of an index, not all of the account's rows."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

import asyncpg

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import ca.storage.tables  # noqa: F401  (declares the tables on SQLModel.metadata)
from ca.storage import repository as repo
from ca.storage.db import is_sqlite_url, make_postgres_engine, make_sqlite_engine, migrate

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)


def _differences(connection) -> list:
    return compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)


async def test_the_migrations_build_the_schema_the_models_declare(database_url):
    await migrate(database_url)
    if is_sqlite_url(database_url):
        engine = make_sqlite_engine(database_url)
        try:
            with engine.connect() as connection:
                differences = _differences(connection)
        finally:
            engine.dispose()
    else:
        engine = make_postgres_engine(database_url, pool_size=1)
        try:
            async with engine.connect() as connection:
                differences = await connection.run_sync(_differences)
        finally:
            await engine.dispose()
    assert differences == [], "a model change without its migration (or the reverse)"


class _Recorder:
    """A transaction that keeps the statements it is given (and finds nothing)."""

    dialect = "sqlite"

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    async def one(self, sql: str, *args: Any):
        self.statements.append((sql, args))
        return (0,)

    async def all(self, sql: str, *args: Any):
        self.statements.append((sql, args))
        return []


def _plan(path: str, sql: str, args: tuple[Any, ...]) -> str:
    conn = sqlite3.connect(path)
    try:
        shown = [a.isoformat(" ") if isinstance(a, datetime) else a for a in args]
        return " | ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", shown))
    finally:
        conn.close()


async def test_the_rate_limit_counts_an_accounts_recent_orders_from_an_index(tmp_path):
    path = str(tmp_path / "acmeda.db")
    await migrate(path)
    recorder = _Recorder()
    await repo.orders_created_since(recorder, "acct", NOW)
    [(sql, args)] = recorder.statements
    plan = _plan(path, sql, args)
    assert "COVERING INDEX ix_acme_order_account_id_created_at (account_id=? AND created_at>?)" in plan, plan


async def test_the_orders_list_pages_through_an_index_without_sorting(tmp_path):
    path = str(tmp_path / "acmeda.db")
    await migrate(path)
    recorder = _Recorder()
    await repo.orders_of_account(recorder, "acct", after=None, limit=10)
    await repo.orders_of_account(recorder, "acct", after="some-order", limit=10)
    first, later = (_plan(path, sql, args) for sql, args in recorder.statements)
    assert "INDEX ix_acme_order_account_id_id (account_id=?)" in first and "TEMP B-TREE" not in first, first
    assert "INDEX ix_acme_order_account_id_id (account_id=? AND id>?)" in later and "TEMP B-TREE" not in later, later


async def test_housekeeping_finds_stale_work_from_an_index_of_what_is_in_flight(tmp_path):
    """Every 30 s each worker looks for challenges and orders left `processing`; the tables keep
    everything ever issued, so that must not be a scan."""
    path = str(tmp_path / "acmeda.db")
    await migrate(path)
    recorder = _Recorder()
    await repo.stale_processing_challenges(recorder, NOW)
    await repo.stale_processing_orders(recorder, NOW)
    challenges, orders = (_plan(path, sql, args) for sql, args in recorder.statements)
    assert challenges == "SEARCH challenge USING INDEX ix_challenge_processing (processing_since<?)", challenges
    assert orders == "SEARCH acme_order USING INDEX ix_acme_order_processing (issuance_started<?)", orders


async def test_the_in_flight_indexes_hold_only_the_rows_in_flight(database_url):
    await migrate(database_url)
    names = ("ix_challenge_processing", "ix_acme_order_processing")
    if is_sqlite_url(database_url):
        conn = sqlite3.connect(database_url)
        try:
            found = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
        finally:
            conn.close()
    else:
        conn = await asyncpg.connect(database_url)
        try:
            found = dict(await conn.fetch("SELECT indexname, indexdef FROM pg_indexes"))
        finally:
            await conn.close()
    for name in names:
        assert "WHERE" in found[name] and "'processing'" in found[name].split("WHERE", 1)[1], found[name]
