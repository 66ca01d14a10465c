"""SQLModel tables: the only place that knows the schema.

Rows are plain records; the ACME rules live in `ca.model` and the flow modules. Times are
stored as naive UTC and read back as aware UTC by `UTCDateTime`, so SQLite and
PostgreSQL behave the same.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator):
    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("refusing to store a naive datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=timezone.utc)


def _time(**kw: Any) -> Any:
    return Field(sa_column=sa.Column(UTCDateTime(), **kw))


def _json(**kw: Any) -> Any:
    return Field(sa_column=sa.Column(sa.JSON(), **kw))


class Setting(SQLModel, table=True):
    """Cluster-wide values every replica must share (the nonce key)."""

    __tablename__ = "setting"
    name: str = Field(primary_key=True, max_length=64)
    value: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))


class UsedNonce(SQLModel, table=True):
    """Nonces already redeemed; the primary key makes redemption single-use across replicas."""

    __tablename__ = "used_nonce"
    value: str = Field(primary_key=True, max_length=64)
    expires: datetime = _time(nullable=False, index=True)


class EabKey(SQLModel, table=True):
    __tablename__ = "eab_key"
    key_id: str = Field(primary_key=True, max_length=128)
    hmac_key: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    label: str = Field(default="", max_length=256)
    created_at: datetime = _time(nullable=False)
    account_id: Optional[str] = Field(default=None, max_length=32)
    bound_at: Optional[datetime] = _time(nullable=True)


class Account(SQLModel, table=True):
    __tablename__ = "account"
    id: str = Field(primary_key=True, max_length=32)
    key_thumbprint: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    jwk: dict = _json(nullable=False)
    status: str = Field(max_length=16)
    contact: list = _json(nullable=False)
    tos_agreed: bool = False
    eab_key_id: Optional[str] = Field(default=None, max_length=128)
    created_at: datetime = _time(nullable=False)


def _processing_index(name: str, since: str) -> sa.Index:
    """The rows left `processing`, by when that began: housekeeping looks for stale ones every
    30 s, and must not scan a table that keeps every order or challenge ever made. Partial, so
    it holds only the few rows in flight."""
    where = sa.text("status = 'processing'")
    return sa.Index(name, since, sqlite_where=where, postgresql_where=where)


class Order(SQLModel, table=True):
    __tablename__ = "acme_order"
    # An account's orders by time (the rate limit counts those of the last hour) and by id (the
    # orders list pages through them): both are ranges of one account's index entries, so their
    # cost does not grow with every order the account ever made.
    __table_args__ = (
        sa.Index("ix_acme_order_account_id_created_at", "account_id", "created_at"),
        sa.Index("ix_acme_order_account_id_id", "account_id", "id"),
        _processing_index("ix_acme_order_processing", "issuance_started"),
    )
    id: str = Field(primary_key=True, max_length=32)
    account_id: str = Field(max_length=32)
    status: str = Field(max_length=16)
    identifiers: list = _json(nullable=False)
    profile: str = Field(max_length=32)
    expires: datetime = _time(nullable=False)
    not_before: Optional[datetime] = _time(nullable=True)
    not_after: Optional[datetime] = _time(nullable=True)
    error: Optional[dict] = _json(nullable=True)
    csr: Optional[bytes] = Field(default=None, sa_column=sa.Column(sa.LargeBinary(), nullable=True))
    serial: Optional[str] = Field(default=None, max_length=40)
    issuance_started: Optional[datetime] = _time(nullable=True)
    certificate_id: Optional[str] = Field(default=None, max_length=40)
    replaces: Optional[str] = Field(default=None, max_length=200)
    created_at: datetime = _time(nullable=False)


class Authorization(SQLModel, table=True):
    __tablename__ = "authorization"
    id: str = Field(primary_key=True, max_length=32)
    order_id: str = Field(index=True, max_length=32)
    account_id: str = Field(index=True, max_length=32)
    identifier_type: str = Field(max_length=32)
    identifier_value: str = Field(max_length=1024)
    wildcard: bool = False
    status: str = Field(max_length=16)
    expires: datetime = _time(nullable=False)
    evidence: Optional[dict] = _json(nullable=True)


class Challenge(SQLModel, table=True):
    __tablename__ = "challenge"
    __table_args__ = (_processing_index("ix_challenge_processing", "processing_since"),)
    id: str = Field(primary_key=True, max_length=32)
    authz_id: str = Field(index=True, max_length=32)
    type: str = Field(max_length=32)
    token: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    status: str = Field(max_length=16)
    validated: Optional[datetime] = _time(nullable=True)
    processing_since: Optional[datetime] = _time(nullable=True)
    error: Optional[dict] = _json(nullable=True)
    record: Optional[list] = _json(nullable=True)
    payload: Optional[dict] = _json(nullable=True)  # the client's response (attObj), kept for a resumed validation


class Certificate(SQLModel, table=True):
    __tablename__ = "certificate"
    serial: str = Field(primary_key=True, max_length=40)  # lowercase hex, no leading zeros
    account_id: str = Field(index=True, max_length=32)
    order_id: str = Field(max_length=32)
    der: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    key_spki_sha256: str = Field(max_length=64, index=True)
    identifiers: list = _json(nullable=False)
    not_before: datetime = _time(nullable=False)
    not_after: datetime = _time(nullable=False)
    revoked_at: Optional[datetime] = _time(nullable=True)
    revocation_reason: Optional[int] = None
    replaced_by: Optional[str] = Field(default=None, max_length=32)
