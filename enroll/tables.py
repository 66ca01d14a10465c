"""SQLModel tables of the enrollment service (same database and migrations as the CA)."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

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
