"""The store: transactions, record statements, and the queries the ACME flows need.

Every state transition is a conditional UPDATE (`… WHERE status IN (<expected>)`) inside one
transaction, so two replicas racing on the same resource cannot both win. Statements go to
the driver directly (`ca.storage.sql`); records are plain dataclasses (`ca.storage.records`).
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from typing import Any, Iterable, Sequence, TypeVar

from ca.model import Status
from ca.problems import Unauthorized, not_found
from ca.storage.db import is_sqlite_url, migrate, sqlite_path
from ca.storage.records import (Account, Authorization, Certificate, Challenge, Order, Setting, placeholders,
                                quoted, table_of)
from ca.storage.sql import Conflict, Database, PostgresDatabase, SqliteDatabase, Transaction  # noqa: F401  (Conflict: for the flows)

R = TypeVar("R")


def new_id() -> str:
    """A random resource id: 128 bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


class Store:
    """The database of one replica: migrated to the newest schema when opened."""

    def __init__(self, database: Database) -> None:
        self.is_sqlite = database.dialect == "sqlite"
        self._database = database

    @classmethod
    async def open(cls, url: str) -> "Store":
        await migrate(url)  # creates a new SQLite file with mode 0600
        if not is_sqlite_url(url):
            return cls(await PostgresDatabase.connect(url))
        return cls(SqliteDatabase(sqlite_path(url)))

    def transaction(self, *, durable: bool = True):
        """One transaction (an async context manager): committed when the block ends, rolled back
        if it raises. The block returns once the commit is on disk; `durable=False` lets it
        return before (SQLite), for a write that a power cut may undo harmlessly."""
        return self._database.transaction(durable=durable)

    def statement(self, *, durable: bool = True):
        """A writing block of exactly one statement, which is atomic on its own: on PostgreSQL it
        saves the BEGIN and COMMIT round trips of `transaction`; a second statement raises."""
        return self._database.statement(durable=durable)

    def read(self):
        """A block that only reads (an async context manager): it waits for no writer."""
        return self._database.read()

    async def close(self) -> None:
        await self._database.close()


# --- records by primary key ----------------------------------------------------------------------

async def get(tx: Transaction, record_type: type[R], key: Any) -> R | None:
    table = table_of(record_type)
    row = await tx.one(table.get_sql, key)
    return None if row is None else table.decode(row)


async def insert(tx: Transaction, record: Any) -> None:
    """Insert `record`; `Conflict` if its key (or another unique column) is taken."""
    table = table_of(type(record))
    await tx.run(table.insert_sql, *table.values_of(record))


async def insert_all(tx: Transaction, records: Sequence[Any]) -> None:
    """Insert records of one type with one statement (one round trip on PostgreSQL)."""
    if not records:
        return
    record_type = type(records[0])
    if any(type(record) is not record_type for record in records):
        raise TypeError("insert_all takes records of one type")
    table = table_of(record_type)
    await tx.run(table.insert_into + ", ".join([table.row_placeholders] * len(records)),
                 *[value for record in records for value in table.values_of(record)])


def _update_sql(record_type: type, names: Iterable[str]) -> str:
    """`UPDATE <table> SET <names> WHERE <key> = ?`, for more conditions to be appended."""
    table = table_of(record_type)
    assignments = ", ".join(f"{quoted(name)} = ?" for name in names)
    return f"UPDATE {table.name} SET {assignments} WHERE {quoted(table.key)} = ?"


def _transition_sql(record_type: type, names: Iterable[str], expected: int) -> str:
    """`_update_sql` for a row in one of `expected` statuses: parameters are the values, the key, the statuses."""
    return f"{_update_sql(record_type, names)} AND status IN ({placeholders(expected)})"


async def update(tx: Transaction, record_type: type, key: Any, **values: Any) -> int:
    return await tx.run(_update_sql(record_type, values), *values.values(), key)


async def transition(tx: Transaction, record_type: type, key: Any, expected: Sequence[str], **values: Any) -> bool:
    """Conditional update: set `values` on the row whose status is one of `expected`; True if it did."""
    return await tx.run(_transition_sql(record_type, values, len(expected)), *values.values(), key, *expected) == 1


async def select(tx: Transaction, record_type: type[R], where: str, *args: Any, order_by: str = "",
                 limit: int | None = None) -> list[R]:
    """Records matching `where` (SQL over the table's columns, `?` placeholders)."""
    table = table_of(record_type)
    sql = f"{table.select_sql} WHERE {where}"
    if order_by:
        sql += f" ORDER BY {order_by}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [table.decode(row) for row in await tx.all(sql, *args)]


async def owned(tx: Transaction, record_type: type[R], key: Any, account_id: str, what: str) -> R:
    """The record `key` if it belongs to `account_id`: 404 if it does not exist, 403 if another's."""
    return check_owned(await get(tx, record_type, key), account_id, what)


def check_owned(record: R | None, account_id: str, what: str) -> R:
    if record is None:
        raise not_found(what)
    if record.account_id != account_id:  # type: ignore[attr-defined]
        raise Unauthorized(f"the {what} belongs to a different account")
    return record


# --- settings -----------------------------------------------------------------------------------

async def get_or_create_setting(store: Store, name: str, make: bytes) -> bytes:
    """Return the shared value of `name`, creating it with `make` if no replica has yet."""
    async with store.transaction() as tx:
        await tx.run('INSERT INTO "setting" (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING', name, make)
        row = await get(tx, Setting, name)
    assert row is not None
    return row.value


# --- nonces -------------------------------------------------------------------------------------

async def redeem_nonce(tx: Transaction, value: str, expires: datetime) -> bool:
    """Mark a nonce used, in the caller's transaction; False if any replica redeemed it before."""
    inserted = await tx.run('INSERT INTO "used_nonce" (value, expires) VALUES (?, ?) ON CONFLICT (value) DO NOTHING',
                            value, expires)
    return inserted == 1


async def redeem_nonce_as(store: Store, account_id: str, thumbprint: str, value: str,
                          expires: datetime) -> tuple[Account | None, bool]:
    """Redeem a nonce for a request of `account_id` signed with the key `thumbprint`, atomically
    with reading the account: the nonce is used up only if the account is valid and still has
    that key. Returns the account as read (None: no such account) and whether this call
    redeemed the nonce (False: the account did not qualify, or the nonce was used before)."""
    if store.is_sqlite:
        # not durable: a redemption lost to a power cut cannot be replayed, as the nonces
        # minted before the machine started are refused (`NonceService`, `not_before`)
        async with store.transaction(durable=False) as tx:
            account = await get(tx, Account, account_id)
            if account is None or account.status != "valid" or account.key_thumbprint != thumbprint:
                return account, False
            return account, await redeem_nonce(tx, value, expires)
    # PostgreSQL: one statement, atomic on its own, is one round trip instead of four.
    table = table_of(Account)
    async with store.read() as tx:
        row = await tx.one(_REDEEM_AS_SQL, account_id, value, expires, thumbprint)
    if row is None:
        return None, False
    return table.decode(row[:-1]), row[-1] == 1


_REDEEM_AS_SQL = (
    f'WITH acct AS ({table_of(Account).select_sql} WHERE id = ?), '
    'redeemed AS (INSERT INTO "used_nonce" (value, expires) SELECT CAST(? AS VARCHAR), CAST(? AS TIMESTAMP) '
    "FROM acct WHERE acct.status = 'valid' AND acct.key_thumbprint = ? ON CONFLICT (value) DO NOTHING RETURNING 1) "
    'SELECT acct.*, (SELECT count(*) FROM redeemed) FROM acct'
)


PRUNE_BATCH = 500  # expired nonces deleted by one transaction


async def prune_nonces(store: Store, now: datetime, *, batch: int = PRUNE_BATCH) -> int:
    """Delete the redeemed nonces that have expired; returns how many.

    In batches, each its own transaction, with the event loop free in between: under load a
    housekeeping round finds tens of thousands, and deleting 33 000 at once held the event loop
    and SQLite's write lock for 145 ms. A prune that a power cut undoes is simply done again the
    next round, so the batches do not wait for the disk."""
    pruned = 0
    while True:
        async with store.statement(durable=False) as tx:
            deleted = await tx.run(_PRUNE_SQL, now, batch)
        pruned += deleted
        if deleted < batch:
            return pruned
        await asyncio.sleep(0)


_PRUNE_SQL = ('DELETE FROM "used_nonce" WHERE value IN '
              '(SELECT value FROM "used_nonce" WHERE expires < ? ORDER BY expires LIMIT ?)')


# --- accounts -----------------------------------------------------------------------------------

async def account_by_thumbprint(tx: Transaction, thumbprint: str) -> Account | None:
    found = await select(tx, Account, "key_thumbprint = ?", thumbprint)
    return found[0] if found else None


async def orders_created_since(tx: Transaction, account_id: str, since: datetime) -> int:
    (count,) = await tx.one('SELECT count(*) FROM "acme_order" WHERE account_id = ? AND created_at >= ?', account_id, since)
    return count


async def orders_of_account(tx: Transaction, account_id: str, *, after: str | None, limit: int) -> list[Order]:
    if after is None:
        return await select(tx, Order, "account_id = ?", account_id, order_by="id", limit=limit)
    return await select(tx, Order, "account_id = ? AND id > ?", account_id, after, order_by="id", limit=limit)


# --- orders, authorizations, challenges -----------------------------------------------------------

async def mark_order_ready_if_authorized(tx: Transaction, order_id: str) -> bool:
    """Move a pending order to ready if every one of its authorizations is valid (one statement)."""
    return await tx.run(
        'UPDATE "acme_order" SET status = \'ready\' WHERE id = ? AND status = \'pending\' AND NOT EXISTS '
        '(SELECT 1 FROM "authorization" WHERE order_id = ? AND status <> \'valid\')', order_id, order_id) == 1


async def record_certificate(store: Store, cert: Certificate) -> bool:
    """Move the certificate's order from processing to valid and store the certificate, at once;
    False (and nothing stored) if the order is not processing: another replica stored its
    certificate, or its issuance failed."""
    if store.is_sqlite:
        async with store.transaction() as tx:
            if not await transition(tx, Order, cert.order_id, [Status.PROCESSING.value],
                                    status=Status.VALID.value, certificate_id=cert.serial):
                return False
            await insert(tx, cert)
            return True
    # PostgreSQL: one statement (a data-modifying WITH) instead of BEGIN, two statements and COMMIT;
    # its first parameters are those `transition` would pass
    moved = (Status.VALID.value, cert.serial, cert.order_id, Status.PROCESSING.value)
    async with store.statement() as tx:
        return await tx.one(_RECORD_CERTIFICATE_SQL, *moved, *table_of(Certificate).values_of(cert)) is not None


_RECORD_CERTIFICATE_SQL = (
    f'WITH moved AS ({_transition_sql(Order, ("status", "certificate_id"), 1)} RETURNING id) '
    f'{table_of(Certificate).insert_into.removesuffix(" VALUES ")} '
    f'SELECT {table_of(Certificate).typed_placeholders_pg} FROM moved RETURNING 1'
)


async def authorizations_of_order(tx: Transaction, order_id: str) -> list[Authorization]:
    return await select(tx, Authorization, "order_id = ?", order_id, order_by="id")


# One statement for a record and what hangs off it: on PostgreSQL every statement is a round
# trip (and a wake-up of both processes), and these reads come with most requests of a flow.

def _parent_and_children(rows: Sequence[Sequence[Any]], parent: type[R], child: type) -> tuple[R, list] | None:
    """Decode the rows of `parent LEFT JOIN child`: the parent's columns first, then the child's."""
    if not rows:
        return None
    parents, children = table_of(parent), table_of(child)
    found = [children.decode(row[parents.width:]) for row in rows if row[parents.width] is not None]
    return parents.decode(rows[0][:parents.width]), found


async def order_with_authorizations(tx: Transaction, order_id: str) -> tuple[Order, list[Authorization]] | None:
    return _parent_and_children(await tx.all(_ORDER_WITH_AUTHORIZATIONS_SQL, order_id), Order, Authorization)


async def authorization_with_challenges(tx: Transaction, authz_id: str) -> tuple[Authorization, list[Challenge]] | None:
    return _parent_and_children(await tx.all(_AUTHORIZATION_WITH_CHALLENGES_SQL, authz_id), Authorization, Challenge)


async def challenge_with_authorization(tx: Transaction, challenge_id: str) -> tuple[Challenge, Authorization, str] | None:
    """The challenge, its authorization, and the key thumbprint of the account that owns them."""
    row = await tx.one(_CHALLENGE_WITH_AUTHORIZATION_SQL, challenge_id)
    if row is None:
        return None
    challenges, authorizations = table_of(Challenge), table_of(Authorization)
    authz_end = challenges.width + authorizations.width
    return challenges.decode(row[:challenges.width]), authorizations.decode(row[challenges.width:authz_end]), row[authz_end]


def _join_sql(parent: type, child: type, foreign_key: str) -> str:
    parents, children = table_of(parent), table_of(child)
    return (f"SELECT {parents.columns_sql}, {children.columns_sql} FROM {parents.name} "
            f"LEFT JOIN {children.name} ON {children.name}.{quoted(foreign_key)} = {parents.name}.{quoted(parents.key)} "
            f"WHERE {parents.name}.{quoted(parents.key)} = ? ORDER BY {children.name}.{quoted(children.key)}")


_ORDER_WITH_AUTHORIZATIONS_SQL = _join_sql(Order, Authorization, "order_id")
_AUTHORIZATION_WITH_CHALLENGES_SQL = _join_sql(Authorization, Challenge, "authz_id")
_CHALLENGE_WITH_AUTHORIZATION_SQL = (
    f'SELECT {table_of(Challenge).columns_sql}, {table_of(Authorization).columns_sql}, "account".key_thumbprint '
    'FROM "challenge" JOIN "authorization" ON "authorization".id = "challenge".authz_id '
    'JOIN "account" ON "account".id = "authorization".account_id WHERE "challenge".id = ?'
)



async def stale_processing_challenges(tx: Transaction, older_than: datetime, limit: int = 50) -> list[Challenge]:
    return await select(tx, Challenge, "status = 'processing' AND processing_since < ?", older_than, limit=limit)


async def claim_stale_challenge(tx: Transaction, challenge_id: str, seen_since: datetime, now: datetime) -> bool:
    """Move a stale `processing` challenge's timestamp to `now` if it still is `seen_since`."""
    return await tx.run('UPDATE "challenge" SET processing_since = ? '
                        "WHERE id = ? AND status = 'processing' AND processing_since = ?",
                        now, challenge_id, seen_since) == 1


async def stale_processing_orders(tx: Transaction, older_than: datetime, limit: int = 50) -> list[Order]:
    return await select(tx, Order, "status = 'processing' AND issuance_started < ?", older_than, limit=limit)

