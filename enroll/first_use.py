"""Trust on first use for replayable evidence: an identifier belongs to the first account.

An EC2 instance identity document carries no nonce, so anyone who has seen one can present
it again. Like SPIRE's aws_iid node attestor, acmeda trusts such evidence on first use: the
first ACME account key to enroll an identifier (the instance id) with it owns that
identifier, and may enroll it again (renewal); every other account is refused, across
replicas, because the first use is a row whose primary key is the identifier. An account
key rollover therefore needs the operator to release the identifier first
(`acmeda first-use forget IDENTIFIER`).
"""

from __future__ import annotations

import hmac
from datetime import datetime

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from attestation.evidence import Evidence
from ca.clock import Clock
from ca.identifiers import Identifier
from ca.storage.repository import Store
from ca.storage.tables import _time


class ReplayableFirstUse(SQLModel, table=True):
    """The first enrollment of an identifier with replayable evidence."""

    __tablename__ = "replayable_first_use"
    identifier: str = Field(primary_key=True, max_length=1100)  # "<type>:<value>"
    fmt: str = Field(max_length=64)
    account_thumbprint: str = Field(max_length=64)  # RFC 7638 thumbprint of the first account key
    used_at: datetime = _time(nullable=False)


class FirstUseRegistry:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def forget(self, identifier: Identifier) -> bool:
        """Release `identifier` (an operator's decision, e.g. after an account key rollover); False if unknown."""
        key = f"{identifier.type.value}:{identifier.value}"
        async with self._store.transaction() as session:
            gone = await session.execute(delete(ReplayableFirstUse).where(ReplayableFirstUse.identifier == key))
        return gone.rowcount == 1

    async def admit(self, identifier: Identifier, evidence: Evidence, account_thumbprint: str) -> bool:
        """True for the first use of `identifier` (recorded) and for later uses by the same
        account key; False when another account used it first (on any replica)."""
        key = f"{identifier.type.value}:{identifier.value}"
        row = {"identifier": key, "fmt": evidence.fmt, "account_thumbprint": account_thumbprint,
               "used_at": self._clock.now()}
        try:
            async with self._store.transaction() as session:
                await session.execute(insert(ReplayableFirstUse).values(**row))
            return True
        except IntegrityError:
            async with self._store.transaction() as session:
                first = await session.get(ReplayableFirstUse, key)
            return first is not None and hmac.compare_digest(first.account_thumbprint, account_thumbprint)
