"""Shared fixtures: a frozen clock, the database backends, and a running ACME app.

Every app-level test runs on SQLite and on PostgreSQL (the server at 127.0.0.1:5432).
Where PostgreSQL does not answer, its half is skipped, except under CI=true, where that
is a failure: CI must prove both backends.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ca.clock import FrozenClock
from tests.support.swtpm import _manufactured_tpm, swtpm, swtpm_factory, swtpm_maker  # noqa: F401  (fixtures)

PG_ADMIN_URL = os.environ.get("ACMEDA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
START = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


async def _pg_execute(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://"), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"acmeda_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_pg_execute(PG_ADMIN_URL, f"CREATE DATABASE {name}"))
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required under CI: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_pg_execute(PG_ADMIN_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "acmeda.db")
    return request.getfixturevalue("postgres_url")
