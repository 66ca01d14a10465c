"""The store without the ORM (`ca.storage.sql`, `ca.storage.records`), on SQLite and PostgreSQL.

Rows must read the same whichever path wrote them: databases of earlier releases were written
through SQLAlchemy with the schema's column types, and `acmeda db upgrade` still migrates
through it. SQLite's write lock is taken here by a second connection, standing in for another
process (an operator command, another worker) on the same file.
"""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert as sa_insert, select as sa_select

from ca.storage import repository as repo, tables
from ca.storage.db import is_sqlite_url, make_postgres_engine, make_sqlite_engine
from ca.storage.records import Account, Authorization, Certificate, Challenge, Order, Table
from ca.storage.repository import Conflict, Store
from ca.storage.sql import SqliteDatabase, postgres_sql

NOW = datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _order(order_id: str, **changes) -> Order:
    values = dict(id=order_id, account_id="acct", status="pending", identifiers=[{"type": "ip", "value": "127.0.0.1"}],
                  profile="server", expires=NOW + timedelta(hours=1), created_at=NOW, csr=b"\x30\x00",
                  error={"type": "urn:ietf:params:acme:error:malformed", "detail": "ü"})
    return Order(**{**values, **changes})


@pytest.fixture
async def store(database_url):
    store = await Store.open(database_url)
    yield store
    await store.close()


async def test_a_record_round_trips_every_column_kind(store):
    order_id = repo.new_id()
    async with store.transaction() as tx:
        await repo.insert(tx, _order(order_id))
    async with store.read() as tx:
        back = await repo.get(tx, Order, order_id)
    assert back == _order(order_id)
    assert back.expires.tzinfo is timezone.utc and back.not_before is None


async def test_rows_read_the_same_whichever_path_wrote_them(store, database_url):
    """SQLAlchemy (the previous releases, and migrations) and the driver path agree on storage."""
    orm_written, driver_written = repo.new_id(), repo.new_id()
    row = {"id": orm_written, "key_thumbprint": f"t-{orm_written}", "jwk": {"kty": "EC", "crv": "P-256"},
           "status": "valid", "contact": ["mailto:a@example.org"], "tos_agreed": True, "created_at": NOW}
    await _orm_execute(database_url, sa_insert(tables.Account.__table__).values(**row))
    async with store.transaction() as tx:
        await repo.insert(tx, Account(**{**row, "id": driver_written, "key_thumbprint": f"t-{driver_written}",
                                         "tos_agreed": False}))
    async with store.read() as tx:
        assert await repo.get(tx, Account, orm_written) == Account(**row)
    read_back = await _orm_execute(database_url, sa_select(tables.Account.__table__)
                                   .where(tables.Account.__table__.c.id == driver_written))
    assert read_back["contact"] == ["mailto:a@example.org"] and read_back["tos_agreed"] is False
    assert read_back["created_at"].replace(tzinfo=timezone.utc) == NOW


async def _orm_execute(url: str, statement):
    if is_sqlite_url(url):
        engine = make_sqlite_engine(url)
        with engine.begin() as conn:
            result = conn.execute(statement)
            row = result.mappings().first() if result.returns_rows else None
        engine.dispose()
        return row
    engine = make_postgres_engine(url, pool_size=1)
    async with engine.begin() as conn:
        result = await conn.execute(statement)
        row = result.mappings().first() if result.returns_rows else None
    await engine.dispose()
    return row


async def test_a_taken_key_is_a_conflict_and_the_transaction_rolls_back(store):
    order_id, other = repo.new_id(), repo.new_id()
    async with store.transaction() as tx:
        await repo.insert(tx, _order(order_id))
    with pytest.raises(Conflict):
        async with store.transaction() as tx:
            await repo.insert(tx, _order(other))
            await repo.insert(tx, _order(order_id))
    async with store.read() as tx:
        assert await repo.get(tx, Order, other) is None, "the first insert of the failed transaction was rolled back"


async def test_a_transition_moves_only_from_the_expected_states(store):
    order_id = repo.new_id()
    async with store.transaction() as tx:
        await repo.insert(tx, _order(order_id))
    async with store.transaction() as tx:
        assert not await repo.transition(tx, Order, order_id, ["ready"], status="processing")
        assert await repo.transition(tx, Order, order_id, ["pending", "ready"], status="invalid", error=None)
    async with store.read() as tx:
        back = await repo.get(tx, Order, order_id)
    assert (back.status, back.error) == ("invalid", None)


async def test_select_filters_orders_and_limits(store):
    account = f"acct-{repo.new_id()}"
    ids = sorted(repo.new_id() for _ in range(3))
    async with store.transaction() as tx:
        for order_id in ids:
            await repo.insert(tx, _order(order_id, account_id=account))
    async with store.read() as tx:
        assert [o.id for o in await repo.orders_of_account(tx, account, after=None, limit=2)] == ids[:2]
        assert [o.id for o in await repo.orders_of_account(tx, account, after=ids[0], limit=5)] == ids[1:]


def test_a_record_that_does_not_match_its_table_is_refused():
    @dataclass
    class Partial:
        id: str

    with pytest.raises(TypeError, match="does not match table account"):
        Table(Partial, tables.Account)


def test_placeholders_become_numbered_for_postgresql():
    assert postgres_sql("UPDATE t SET a = ? WHERE b = ? AND c IN (?, ?)") == "UPDATE t SET a = $1 WHERE b = $2 AND c IN ($3, $4)"


# --- SQLite's write lock, held by another process ----------------------------------------------

class _LoopTurns:
    """Counts how often a task that yields every `every` seconds got to run inside the block:
    whether the event loop stayed free while the block's work went on."""

    def __init__(self, every: float = 0.0) -> None:
        self.count, self._every = 0, every

    async def __aenter__(self) -> "_LoopTurns":
        self._task = asyncio.create_task(self._turn())
        await asyncio.sleep(0)  # started: its first turn is not counted
        self.count = 0
        return self

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()

    async def _turn(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(self._every)


async def _sqlite_store(tmp_path: Path) -> Store:
    return await Store.open(str(tmp_path / "acmeda.db"))


async def test_a_writer_waits_for_another_process_without_blocking_the_event_loop(tmp_path):
    store = await _sqlite_store(tmp_path)
    other = sqlite3.connect(tmp_path / "acmeda.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the other process holds the write lock

    async def write() -> None:
        async with store.transaction() as tx:
            await repo.insert(tx, _order("waited"))

    async with _LoopTurns(every=0.001) as turns:
        writing = asyncio.create_task(write())
        await asyncio.sleep(0.2)
        assert not writing.done(), "the write must wait while the other process holds the lock"
        async with store.read() as tx:  # reads do not wait for writers
            assert await repo.get(tx, Order, "waited") is None
        other.execute("COMMIT")
        await asyncio.wait_for(writing, 2)
    assert turns.count > 50, f"the event loop ran only {turns.count} times while the write waited"
    async with store.read() as tx:
        assert (await repo.get(tx, Order, "waited")) is not None
    other.close()
    await store.close()


async def test_a_writer_gives_up_after_the_lock_timeout_with_the_database_usable(tmp_path):
    await (await _sqlite_store(tmp_path)).close()  # the schema
    database = SqliteDatabase(str(tmp_path / "acmeda.db"), write_lock_timeout=0.1)
    other = sqlite3.connect(tmp_path / "acmeda.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        async with database.transaction() as tx:
            await tx.run("DELETE FROM used_nonce")
    other.execute("ROLLBACK")
    async with database.transaction() as tx:
        assert await tx.run("DELETE FROM used_nonce") == 0
    other.close()
    await database.close()


async def test_the_wal_is_checkpointed_off_the_request_path(tmp_path):
    """Committed pages reach the database file by the background thread, never by a request's COMMIT."""
    store = await _sqlite_store(tmp_path)
    main_file = tmp_path / "acmeda.db"
    before = main_file.stat().st_size
    async with store.transaction() as tx:
        assert await tx.one("PRAGMA wal_autocheckpoint") == (0,)
        for _ in range(300):
            await repo.insert(tx, _order(repo.new_id()))
    assert main_file.stat().st_size == before, "the COMMIT itself must not have checkpointed"
    for _ in range(100):  # the thread checkpoints every CHECKPOINT_INTERVAL
        await asyncio.sleep(0.05)
        if main_file.stat().st_size > before:
            break
    assert main_file.stat().st_size > before, "the background thread did not checkpoint"
    await store.close()
    wal = tmp_path / "acmeda.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "closing folds the rest of the WAL into the database"
    assert sqlite3.connect(main_file).execute("SELECT count(*) FROM acme_order").fetchone() == (300,)


def _wal_restarts(wal: Path) -> int:
    """The WAL header's checkpoint sequence number: SQLite adds one each time it restarts the WAL."""
    with wal.open("rb") as f:
        header = f.read(16)
    return int.from_bytes(header[12:16], "big") if len(header) == 16 else 0


async def test_the_wal_restarts_under_sustained_writes(tmp_path):
    """With writes going on at every moment, the WAL is still rewound to its start and does not
    grow without bound (as it did with PASSIVE checkpoints, which a writer always outran). Writes
    into a WAL that only grows also cost the kernel a fresh page for each."""
    store = await _sqlite_store(tmp_path)
    wal = tmp_path / "acmeda.db-wal"
    first = _wal_restarts(wal)
    deadline = asyncio.get_running_loop().time() + 1.5  # six checkpoint intervals
    written = 0
    while asyncio.get_running_loop().time() < deadline:
        async with store.transaction(durable=False) as tx:
            await tx.run("INSERT INTO used_nonce (value, expires) VALUES (?, ?)", repo.new_id(), NOW)
        written += 1
        await asyncio.sleep(0)
    restarts = _wal_restarts(wal) - first
    await store.close()
    assert written > 1000, f"only {written} writes: the load was not sustained"
    assert restarts >= 2, f"the WAL restarted {restarts} times in 1.5 s of writes"


class _WalFsyncs:
    """Stands in for os.fsync to watch and hold the WAL's fsyncs (a power cut cannot be staged
    in a test; what is checked is that no write returns before an fsync that began after its
    COMMIT has finished). Other descriptors (the directory, at start) are fsynced for real."""

    def __init__(self, wal: Path) -> None:
        self.wal, self.calls, self.fail = wal, 0, False
        self.release = threading.Event()
        self.release.set()

    def __call__(self, fd: int) -> None:
        if not self.wal.exists() or os.fstat(fd).st_ino != self.wal.stat().st_ino:
            return os.fsync(fd)
        self.calls += 1
        if not self.release.wait(10):
            raise TimeoutError("the test never released the fsync")
        if self.fail:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(fd)


async def _watched_database(tmp_path: Path) -> tuple[SqliteDatabase, _WalFsyncs]:
    await (await _sqlite_store(tmp_path)).close()  # the schema
    fsyncs = _WalFsyncs(tmp_path / "acmeda.db-wal")
    return SqliteDatabase(str(tmp_path / "acmeda.db"), fsync=fsyncs), fsyncs


def _rows_seen_by_another_connection(tmp_path: Path) -> int:
    other = sqlite3.connect(tmp_path / "acmeda.db")
    try:
        return other.execute("SELECT count(*) FROM used_nonce").fetchone()[0]
    finally:
        other.close()


async def _until(condition, seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the WAL was never fsynced")


async def _insert_nonce(database: SqliteDatabase, nonce: str) -> None:
    async with database.transaction() as tx:
        await tx.run("INSERT INTO used_nonce (value, expires) VALUES (?, ?)", nonce, NOW)


async def test_a_write_returns_only_once_its_commit_is_fsynced(tmp_path):
    database, fsyncs = await _watched_database(tmp_path)
    fsyncs.release.clear()
    writing = asyncio.ensure_future(_insert_nonce(database, "n1"))
    await _until(lambda: fsyncs.calls)
    assert _rows_seen_by_another_connection(tmp_path) == 1, "the COMMIT has happened"
    assert fsyncs.calls == 1 and not writing.done(), "the block must wait for the WAL's fsync"
    fsyncs.release.set()
    await asyncio.wait_for(writing, 5)
    async with database.read() as tx:
        assert await tx.one("SELECT count(*) FROM used_nonce") == (1,)
    assert fsyncs.calls == 1, "a read fsyncs nothing"
    await database.close()


async def test_concurrent_writes_share_one_fsync(tmp_path):
    database, fsyncs = await _watched_database(tmp_path)
    fsyncs.release.clear()
    first = asyncio.ensure_future(_insert_nonce(database, "first"))
    await _until(lambda: fsyncs.calls)
    # these commit while the first fsync runs: it began before them, so it cannot cover them
    rest = [asyncio.ensure_future(_insert_nonce(database, f"n{i}")) for i in range(20)]
    await asyncio.sleep(0.05)
    assert _rows_seen_by_another_connection(tmp_path) == 21
    assert not any(t.done() for t in [first, *rest])
    fsyncs.release.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert fsyncs.calls == 2, f"21 commits, {fsyncs.calls} fsyncs: the 20 later ones should share one"
    await database.close()


async def test_a_nonce_redemption_does_not_wait_for_the_disk(tmp_path):
    """Named in ca.storage.sql as the one write that need not be durable (ca.nonces says why)."""
    database, fsyncs = await _watched_database(tmp_path)
    store = Store(database)
    account = Account(id="acct", key_thumbprint="thumb", jwk={"kty": "EC"}, status="valid", contact=[], created_at=NOW)
    async with store.transaction() as tx:
        await repo.insert(tx, account)
    fsyncs.release.clear()
    redeemed = await asyncio.wait_for(repo.redeem_nonce_as(store, "acct", "thumb", "n", NOW + timedelta(hours=1)), 2)
    assert redeemed == (account, True) and fsyncs.calls == 1, "only the account's insert fsynced"
    fsyncs.release.set()
    await database.close()


async def test_a_failed_fsync_fails_the_write(tmp_path):
    database, fsyncs = await _watched_database(tmp_path)
    fsyncs.fail = True
    with pytest.raises(OSError, match="Input/output error"):
        await _insert_nonce(database, "lost")
    fsyncs.fail = False
    await _insert_nonce(database, "kept")  # the next write runs its own fsync
    assert fsyncs.calls == 2
    await database.close()


async def test_a_nonce_is_redeemed_for_an_account_only_while_it_is_valid_and_holds_the_key(store):
    """One atomic step on either database: the nonce is used up only when the account qualifies."""
    account_id = repo.new_id()
    account = Account(id=account_id, key_thumbprint=f"key-{account_id}", jwk={"kty": "EC"}, status="valid",
                      contact=[], created_at=NOW)
    async with store.transaction() as tx:
        await repo.insert(tx, account)
    expires, nonce = NOW + timedelta(hours=1), f"nonce-{account_id}"
    assert await repo.redeem_nonce_as(store, "no-such-account", account.key_thumbprint, nonce, expires) == (None, False)
    assert await repo.redeem_nonce_as(store, account_id, "another-key", nonce, expires) == (account, False)
    async with store.transaction() as tx:
        await repo.update(tx, Account, account_id, status="deactivated")
    deactivated, redeemed = await repo.redeem_nonce_as(store, account_id, account.key_thumbprint, nonce, expires)
    assert (deactivated.status, redeemed) == ("deactivated", False)
    async with store.transaction() as tx:
        await repo.update(tx, Account, account_id, status="valid")
    assert await repo.redeem_nonce_as(store, account_id, account.key_thumbprint, nonce, expires) == (account, True), \
        "none of the refusals above may have used up the nonce"
    assert await repo.redeem_nonce_as(store, account_id, account.key_thumbprint, nonce, expires) == (account, False)


async def _redeemed_nonces(store: Store, prefix: str) -> set[str]:
    async with store.read() as tx:
        return {row[0] for row in await tx.all('SELECT value FROM "used_nonce" WHERE value LIKE ?', prefix + "%")}


async def test_pruning_deletes_the_expired_nonces_only_in_batches_that_free_the_event_loop(store):
    """Under load a housekeeping round finds tens of thousands of expired nonces; one DELETE of
    them all held SQLite's write lock and the event loop for a fifth of a second."""
    prefix = f"prune-{repo.new_id()}-"
    async with store.transaction() as tx:
        for i in range(250):
            assert await repo.redeem_nonce(tx, f"{prefix}old-{i}", NOW - timedelta(seconds=i + 1))
        for i in range(30):
            assert await repo.redeem_nonce(tx, f"{prefix}live-{i}", NOW + timedelta(seconds=i))
    async with _LoopTurns() as turns:
        assert await repo.prune_nonces(store, NOW, batch=100) == 250
    assert turns.count >= 2, "the event loop must run between the batches (100, 100, then 50)"
    assert await _redeemed_nonces(store, prefix) == {f"{prefix}live-{i}" for i in range(30)}
    assert await repo.prune_nonces(store, NOW, batch=100) == 0


async def test_a_record_is_read_with_what_hangs_off_it_in_one_statement(store):
    """The joined reads (one round trip on PostgreSQL) give what the separate reads give."""
    account = Account(id=repo.new_id(), key_thumbprint=f"key-{repo.new_id()}", jwk={"kty": "EC"}, status="valid",
                      contact=[], created_at=NOW)
    order, lone = _order(repo.new_id(), account_id=account.id), _order(repo.new_id(), account_id=account.id)
    authzs = [Authorization(id=f"{order.id}-{n}", order_id=order.id, account_id=account.id, identifier_type="dns",
                            identifier_value=f"{n}.example", status="pending", expires=NOW, evidence={"n": n})
              for n in (2, 1)]
    challenges = [Challenge(id=f"{authzs[0].id}-{kind}", authz_id=authzs[0].id, type=kind, token=repo.new_id(),
                            status="pending") for kind in ("http-01", "dns-01")]
    async with store.transaction() as tx:
        for record in (account, order, lone, *authzs, *challenges):
            await repo.insert(tx, record)
    async with store.read() as tx:
        assert await repo.order_with_authorizations(tx, order.id) == (order, sorted(authzs, key=lambda a: a.id))
        assert await repo.order_with_authorizations(tx, lone.id) == (lone, [])
        assert await repo.order_with_authorizations(tx, "no-such-order") is None
        assert await repo.authorization_with_challenges(tx, authzs[0].id) == (authzs[0], sorted(challenges, key=lambda c: c.id))
        assert await repo.authorization_with_challenges(tx, authzs[1].id) == (authzs[1], [])
        assert await repo.authorization_with_challenges(tx, "no-such-authz") is None
        assert await repo.challenge_with_authorization(tx, challenges[1].id) == (challenges[1], authzs[0], account.key_thumbprint)
        assert await repo.challenge_with_authorization(tx, "no-such-challenge") is None


async def test_an_order_is_marked_ready_only_once_all_its_authorizations_are_valid(store):
    order = _order(repo.new_id(), account_id="acct")
    authzs = [Authorization(id=f"{order.id}-{n}", order_id=order.id, account_id="acct", identifier_type="dns",
                            identifier_value=f"{n}.example", status="pending", expires=NOW) for n in range(2)]
    async with store.transaction() as tx:
        await repo.insert(tx, order)
        await repo.insert_all(tx, authzs)
    for authz, ready in ((authzs[0], False), (authzs[1], True)):
        async with store.transaction() as tx:
            await repo.update(tx, Authorization, authz.id, status="valid")
            assert await repo.mark_order_ready_if_authorized(tx, order.id) is ready
    async with store.transaction() as tx:
        assert await repo.mark_order_ready_if_authorized(tx, order.id) is False, "ready already"
        assert (await repo.get(tx, Order, order.id)).status == "ready"


async def test_records_inserted_together_go_in_all_or_none(store):
    authz_id = repo.new_id()
    challenges = [Challenge(id=f"{authz_id}-{n}", authz_id=authz_id, type="http-01", token=f"{authz_id}-{n}",
                            status="pending") for n in range(3)]
    taken = Challenge(id=f"{authz_id}-x", authz_id=authz_id, type="dns-01", token=challenges[0].token, status="pending")
    with pytest.raises(Conflict):
        async with store.transaction() as tx:
            await repo.insert_all(tx, [*challenges[1:], taken, challenges[0]])
    async with store.transaction() as tx:
        await repo.insert_all(tx, challenges)
        assert await repo.select(tx, Challenge, "authz_id = ?", authz_id, order_by="id") == challenges
        with pytest.raises(TypeError):
            await repo.insert_all(tx, [challenges[0], _order("o")])


async def test_a_statement_block_runs_one_statement_on_either_database(store):
    """On PostgreSQL it runs without BEGIN and COMMIT, so a second statement would not share the
    first one's transaction: it is refused on both databases alike."""
    nonce = f"single-{repo.new_id()}"
    async with store.statement() as tx:
        assert await repo.redeem_nonce(tx, nonce, NOW)
        with pytest.raises(RuntimeError, match="one statement"):
            await tx.run('DELETE FROM "used_nonce" WHERE value = ?', nonce)
    assert await _redeemed_nonces(store, nonce) == {nonce}, "the first statement stands"
    with pytest.raises(Conflict):
        async with store.statement() as tx:
            await repo.insert(tx, Account(id="dup", key_thumbprint=f"k-{nonce}", jwk={}, status="valid",
                                          contact=[], created_at=NOW))
            raise Conflict("stand-in for a later failure")  # the block raises after its statement
    async with store.read() as tx:
        kept = await repo.get(tx, Account, "dup")
    assert kept is not None, "the statement is atomic on its own: a block that raises after it does not undo it"


async def test_a_certificate_is_recorded_only_for_an_order_in_processing(store):
    """One statement on PostgreSQL, one transaction on SQLite: the order moves to valid and the
    certificate is stored together, or neither happens."""
    order = _order(repo.new_id(), status="processing", serial="0a")

    def certificate(serial: str) -> Certificate:
        return Certificate(serial=serial, account_id="acct", order_id=order.id, der=b"\x30\x03\x02\x01\x01",
                           key_spki_sha256="ab" * 32, identifiers=[{"type": "ip", "value": "127.0.0.1"}],
                           not_before=NOW, not_after=NOW + timedelta(days=7))

    first, second = certificate(repo.new_id()[:20]), certificate(repo.new_id()[:20])
    async with store.transaction() as tx:
        await repo.insert(tx, order)
    assert await repo.record_certificate(store, first) is True
    assert await repo.record_certificate(store, second) is False, "the order is valid now, not processing"
    async with store.read() as tx:
        stored_order = await repo.get(tx, Order, order.id)
        assert (stored_order.status, stored_order.certificate_id) == ("valid", first.serial)
        assert await repo.get(tx, Certificate, first.serial) == first
        assert await repo.get(tx, Certificate, second.serial) is None
