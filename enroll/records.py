"""Records of the enrollment tables (`enroll.tables`), read and written through `ca.storage.repository`."""

from __future__ import annotations

from datetime import datetime

from ca.storage.records import record_of
from enroll import tables


@record_of(tables.DeviceAlias)
class DeviceAlias:
    alias: str
    attested_value: str
    single_use: bool = True
    label: str = ""
    created_at: datetime
    used_at: datetime | None = None


@record_of(tables.TpmEndorsementKey)
class TpmEndorsementKey:
    ek_hash: str
    pinned: bool = False
    identifier: str | None = None
    assigner: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    version: str | None = None
    label: str = ""
    created_at: datetime


@record_of(tables.TpmActivation)
class TpmActivation:
    id: str
    account_id: str
    status: str
    ak_public: bytes
    ak_name: str
    ek_hash: str
    identifier: str
    assigner: str | None = None
    manufacturer: str
    model: str
    version: str
    secret_sha256: str
    expires: datetime
    created_at: datetime
    answered_at: datetime | None = None
    certificate: bytes | None = None
    error: str | None = None


@record_of(tables.ReplayableFirstUse)
class ReplayableFirstUse:
    identifier: str
    fmt: str
    account_thumbprint: str
    used_at: datetime
