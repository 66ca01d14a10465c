"""Records: the rows the flows read and write, as plain dataclasses, and the statements for them.

Each record class mirrors one SQLModel table field for field; `Table` checks that when it is
built, and takes from the table's column types how each value is stored (`ca.storage.sql`).
The records carry no ORM state, so reading one costs a tuple and a constructor call. Writes are
explicit statements: `insert`, or `update`/`transition` by primary key (`ca.storage.repository`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Callable, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import SQLModel

from ca.storage import tables
from ca.storage.sql import decode_json, decode_time
from ca.storage.tables import UTCDateTime

R = TypeVar("R")


def _decode_bool(value: Any) -> Any:
    return None if value is None else bool(value)


def _decoder(column: sa.Column) -> Callable[[Any], Any] | None:
    if isinstance(column.type, UTCDateTime):
        return decode_time
    if isinstance(column.type, sa.JSON):
        return decode_json
    if isinstance(column.type, sa.Boolean):
        return _decode_bool
    return None


def quoted(name: str) -> str:
    return f'"{name}"'  # `authorization` is a reserved word in PostgreSQL


def placeholders(count: int) -> str:
    """`?, ?, …`: `count` statement parameters."""
    return ", ".join("?" * count)


class Table(Generic[R]):
    """A record class bound to its table: the column list, the key, and per-column decoding."""

    def __init__(self, record: type[R], schema: type[SQLModel]) -> None:
        columns = schema.__table__.columns  # type: ignore[attr-defined]
        names = [f.name for f in fields(record)]  # type: ignore[arg-type]
        if set(names) != set(columns.keys()):
            raise TypeError(f"record {record.__name__} does not match table {schema.__tablename__}: "
                            f"{sorted(set(names) ^ set(columns.keys()))}")
        keys = [c.name for c in columns if c.primary_key]
        if len(keys) != 1:
            raise TypeError(f"table {schema.__tablename__} needs exactly one primary-key column")
        self.record, self.names, self.key = record, tuple(names), keys[0]
        self.name = quoted(schema.__tablename__)  # type: ignore[attr-defined]
        self._decoders = tuple(_decoder(columns[n]) for n in names)
        column_list = ", ".join(quoted(n) for n in names)
        self.select_sql = f"SELECT {column_list} FROM {self.name}"
        self.columns_sql = ", ".join(f"{self.name}.{quoted(n)}" for n in names)  # for joins
        # `CAST(? AS <type>)` per column, for PostgreSQL statements whose parameters it cannot type
        # from their place (INSERT … SELECT)
        self.typed_placeholders_pg = ", ".join(
            f"CAST(? AS {columns[n].type.compile(dialect=postgresql.dialect())})" for n in names)
        self.width = len(names)
        self.get_sql = f"{self.select_sql} WHERE {quoted(self.key)} = ?"
        self.insert_into = f"INSERT INTO {self.name} ({column_list}) VALUES "
        self.row_placeholders = f"({placeholders(len(names))})"
        self.insert_sql = self.insert_into + self.row_placeholders

    def decode(self, row: Any) -> R:
        values = {name: (value if decode is None else decode(value))
                  for name, decode, value in zip(self.names, self._decoders, row)}
        return self.record(**values)

    def values_of(self, record: R) -> list[Any]:
        return [getattr(record, name) for name in self.names]


TABLES: dict[type, Table] = {}


def register(record: type[R], schema: type[SQLModel]) -> type[R]:
    TABLES[record] = Table(record, schema)
    return record


def table_of(record_type: type) -> Table:
    return TABLES[record_type]


def record_of(schema: type[SQLModel]) -> Callable[[type[R]], type[R]]:
    """Class decorator: a kw-only slotted dataclass registered as the record of `schema`."""

    def wrap(cls: type[R]) -> type[R]:
        return register(dataclass(kw_only=True, slots=True)(cls), schema)

    return wrap


# --- the CA's records --------------------------------------------------------------------------

@record_of(tables.Setting)
class Setting:
    name: str
    value: bytes


@record_of(tables.UsedNonce)
class UsedNonce:
    value: str
    expires: datetime


@record_of(tables.EabKey)
class EabKey:
    key_id: str
    hmac_key: bytes
    label: str = ""
    created_at: datetime
    account_id: str | None = None
    bound_at: datetime | None = None


@record_of(tables.Account)
class Account:
    id: str
    key_thumbprint: str
    jwk: dict
    status: str
    contact: list
    tos_agreed: bool = False
    eab_key_id: str | None = None
    created_at: datetime


@record_of(tables.Order)
class Order:
    id: str
    account_id: str
    status: str
    identifiers: list
    profile: str
    expires: datetime
    not_before: datetime | None = None
    not_after: datetime | None = None
    error: dict | None = None
    csr: bytes | None = None
    serial: str | None = None
    issuance_started: datetime | None = None
    certificate_id: str | None = None
    replaces: str | None = None
    created_at: datetime


@record_of(tables.Authorization)
class Authorization:
    id: str
    order_id: str
    account_id: str
    identifier_type: str
    identifier_value: str
    wildcard: bool = False
    status: str
    expires: datetime
    evidence: dict | None = None


@record_of(tables.Challenge)
class Challenge:
    id: str
    authz_id: str
    type: str
    token: str
    status: str
    validated: datetime | None = None
    processing_since: datetime | None = None
    error: dict | None = None
    record: list | None = None
    payload: dict | None = None


@record_of(tables.Certificate)
class Certificate:
    serial: str
    account_id: str
    order_id: str
    der: bytes
    key_spki_sha256: str
    identifiers: list
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    revocation_reason: int | None = None
    replaced_by: str | None = None
