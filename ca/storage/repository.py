"""The store: transactions and the queries the ACME flows need, over SQLite or PostgreSQL.

Every state transition is a conditional UPDATE (`… WHERE status = <expected>`) inside one
transaction, so two replicas racing on the same resource cannot both win.
"""

from __future__ import annotations

import asyncio
import secrets
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, AsyncIterator, Sequence, TypeVar

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker
from sqlmodel import SQLModel

from ca.storage.db import is_sqlite_url, make_postgres_engine, make_sqlite_engine, migrate_postgres, migrate_sqlite
from ca.problems import Unauthorized, not_found
from ca.storage.tables import Account, Authorization, Challenge, Order, Setting, UsedNonce

T = TypeVar("T", bound=SQLModel)


def new_id() -> str:
    """A random resource id: 128 bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


class _LoopSession:
    """A synchronous SQLite session behind the async session methods the flows use.

    Awaiting these never suspends, so a transaction block runs to its end without letting
    another request in: SQLite transactions cannot interleave on the one connection.
    """

    def __init__(self, session: Session) -> None:
        self._session = session

    async def get(self, model, key):
        return self._session.get(model, key)

    async def execute(self, statement, *args, **kwargs):
        return self._session.execute(statement, *args, **kwargs)

    def add(self, instance) -> None:
        self._session.add(instance)


class Store:
    """Transactions over SQLite (synchronous, on the event loop) or PostgreSQL (asyncpg)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = is_sqlite_url(url)
        if self.is_sqlite:
            self._sqlite = make_sqlite_engine(url)
            self._sqlite_sessions = sessionmaker(self._sqlite, expire_on_commit=False)
            self._sqlite_lock = asyncio.Lock()  # a safety net: held only if a block ever suspends
        else:
            self._postgres = make_postgres_engine(url)
            self._sessions = async_sessionmaker(self._postgres, expire_on_commit=False, class_=AsyncSession)

    async def migrate(self) -> None:
        if self.is_sqlite:
            migrate_sqlite(self._sqlite)
        else:
            await migrate_postgres(self._postgres)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        if self.is_sqlite:
            async with self._sqlite_lock:
                with self._sqlite_sessions() as session, session.begin():
                    yield _LoopSession(session)  # type: ignore[misc]
        else:
            async with self._sessions() as session, session.begin():
                yield session

    async def close(self) -> None:
        if self.is_sqlite:
            self._sqlite.dispose()
        else:
            await self._postgres.dispose()


async def get(session: AsyncSession, model: type[T], key: Any) -> T | None:
    return await session.get(model, key)


async def owned(session: AsyncSession, model: type[T], key: Any, account_id: str, what: str) -> T:
    """The row `key` of `model` if it belongs to `account_id`: 404 if it does not exist, 403 if another's."""
    row = await session.get(model, key)
    if row is None:
        raise not_found(what)
    if row.account_id != account_id:  # type: ignore[attr-defined]
        raise Unauthorized(f"the {what} belongs to a different account")
    return row


async def transition(session: AsyncSession, model: type[SQLModel], key_column, key: Any, expected: Sequence[str], **values: Any) -> bool:
    """Conditional update: set `values` on the row whose status is one of `expected`; True if it did."""
    result = await session.execute(
        update(model).where(key_column == key, model.status.in_(list(expected))).values(**values)  # type: ignore[attr-defined]
    )
    return result.rowcount == 1


# --- settings -----------------------------------------------------------------------------

async def get_or_create_setting(store: Store, name: str, make: bytes) -> bytes:
    """Return the shared value of `name`, creating it with `make` if no replica has yet."""
    async with store.transaction() as session:
        row = await session.get(Setting, name)
        if row is not None:
            return row.value
    try:
        async with store.transaction() as session:
            session.add(Setting(name=name, value=make))
        return make
    except IntegrityError:  # another replica created it first: use theirs
        async with store.transaction() as session:
            row = await session.get(Setting, name)
            assert row is not None
            return row.value


# --- nonces -------------------------------------------------------------------------------

async def redeem_nonce(session: AsyncSession, value: str, expires: datetime) -> bool:
    """Mark a nonce used, in the caller's transaction; False if any replica redeemed it before
    (the IntegrityError aborts the transaction, so the caller must refuse the request)."""
    try:
        await session.execute(insert(UsedNonce).values(value=value, expires=expires))
        return True
    except IntegrityError:
        return False


async def prune_nonces(store: Store, now: datetime) -> int:
    async with store.transaction() as session:
        result = await session.execute(delete(UsedNonce).where(UsedNonce.expires < now))
        return result.rowcount or 0


# --- accounts -----------------------------------------------------------------------------

async def account_by_thumbprint(session: AsyncSession, thumbprint: str) -> Account | None:
    result = await session.execute(select(Account).where(Account.key_thumbprint == thumbprint))
    return result.scalar_one_or_none()


async def orders_of_account(session: AsyncSession, account_id: str, *, after: str | None, limit: int) -> list[Order]:
    query = select(Order).where(Order.account_id == account_id)
    if after is not None:
        query = query.where(Order.id > after)
    result = await session.execute(query.order_by(Order.id).limit(limit))
    return list(result.scalars())


# --- orders, authorizations, challenges -------------------------------------------------------

async def authorizations_of_order(session: AsyncSession, order_id: str) -> list[Authorization]:
    result = await session.execute(select(Authorization).where(Authorization.order_id == order_id).order_by(Authorization.id))
    return list(result.scalars())


async def challenges_of(session: AsyncSession, authz_ids: Sequence[str]) -> list[Challenge]:
    if not authz_ids:
        return []
    result = await session.execute(select(Challenge).where(Challenge.authz_id.in_(list(authz_ids))).order_by(Challenge.id))
    return list(result.scalars())


async def stale_processing_challenges(session: AsyncSession, older_than: datetime, limit: int = 50) -> list[Challenge]:
    result = await session.execute(
        select(Challenge).where(Challenge.status == "processing", Challenge.processing_since < older_than).limit(limit)
    )
    return list(result.scalars())


async def stale_processing_orders(session: AsyncSession, older_than: datetime, limit: int = 50) -> list[Order]:
    result = await session.execute(
        select(Order).where(Order.status == "processing", Order.issuance_started < older_than).limit(limit)
    )
    return list(result.scalars())

