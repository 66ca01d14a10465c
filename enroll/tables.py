"""SQLModel tables of the enrollment service (same database and migrations as the CA)."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from ca.storage.tables import _time


class DeviceAlias(SQLModel, table=True):
    """An identifier a device may order under that its attestation does not state itself.

    Apple's MDM profile sends its ClientIdentifier as the `permanent-identifier`; when that is
    an enrollment token rather than the serial or UDID, the operator registers here which
    attested identifier (the device's serial or UDID) the token stands for.
    """

    __tablename__ = "device_alias"
    alias: str = Field(primary_key=True, max_length=1024)
    attested_value: str = Field(max_length=1024)  # the permanent identifier the evidence must prove
    single_use: bool = True
    label: str = Field(default="", max_length=256)
    created_at: datetime = _time(nullable=False)
    used_at: Optional[datetime] = _time(nullable=True)


class TpmEndorsementKey(SQLModel, table=True):
    """The operator's word about one TPM, named by its EK hash (`attestation.tpm.ek.ek_hash`).

    A row lets a machine enroll under `identifier` instead of the EK hash, and supplies the
    TPM manufacturer, model and version when its EK certificate does not state them. A
    `pinned` row also admits the EK without a certificate (a machine whose TPM has none),
    when `tpm_allow_pinned_ek` is on.
    """

    __tablename__ = "tpm_endorsement_key"
    ek_hash: str = Field(primary_key=True, max_length=64)  # lowercase hex SHA-256 of the EK SPKI DER
    pinned: bool = False
    identifier: Optional[str] = Field(default=None, max_length=1024)  # None: the EK hash itself
    assigner: Optional[str] = Field(default=None, max_length=256)  # dotted OID, with `identifier`
    manufacturer: Optional[str] = Field(default=None, max_length=64)
    model: Optional[str] = Field(default=None, max_length=64)
    version: Optional[str] = Field(default=None, max_length=64)
    label: str = Field(default="", max_length=256)
    created_at: datetime = _time(nullable=False)


class TpmActivation(SQLModel, table=True):
    """One credential activation: begun with MakeCredential, answered once, before it expires.

    Only a digest of the secret is kept. The AK certificate's contents are decided at begin
    (from the verified EK and the registry) and stored, so the answer only has to sign them.
    """

    __tablename__ = "tpm_activation"
    id: str = Field(primary_key=True, max_length=32)
    account_id: str = Field(index=True, max_length=32)
    status: str = Field(max_length=16)  # pending → valid | invalid
    ak_public: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))  # TPMT_PUBLIC
    ak_name: str = Field(max_length=140)  # hex of nameAlg || H(TPMT_PUBLIC)
    ek_hash: str = Field(index=True, max_length=64)
    identifier: str = Field(max_length=1024)
    assigner: Optional[str] = Field(default=None, max_length=256)
    manufacturer: str = Field(max_length=64)
    model: str = Field(max_length=64)
    version: str = Field(max_length=64)
    secret_sha256: str = Field(max_length=64)
    expires: datetime = _time(nullable=False)
    created_at: datetime = _time(nullable=False)
    answered_at: Optional[datetime] = _time(nullable=True)
    certificate: Optional[bytes] = Field(default=None, sa_column=sa.Column(sa.LargeBinary(), nullable=True))
    error: Optional[str] = Field(default=None, max_length=1024)


class ReplayableFirstUse(SQLModel, table=True):
    """The account that owns a device identifier: the first to validate it, or the last with bound
    evidence (`enroll.first_use`). The table keeps its first name (a rename needs a migration)."""

    __tablename__ = "replayable_first_use"
    identifier: str = Field(primary_key=True, max_length=1100)  # "<type>:<value>"
    fmt: str = Field(max_length=64)
    account_thumbprint: str = Field(max_length=64)  # RFC 7638 thumbprint of the first account key
    used_at: datetime = _time(nullable=False)
