"""Trust on first use for replayable evidence: an identifier enrolls with it once.

An EC2 instance identity document carries no nonce, so anyone who has seen one can present
it again. Like SPIRE's aws_iid node attestor, acmeda admits such evidence only the first time
an identifier (the instance id) shows up; a second enrollment with it is refused, across
replicas, because the first use is a row whose primary key is the identifier.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert
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
    used_at: datetime = _time(nullable=False)


class FirstUseRegistry:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def admit(self, identifier: Identifier, evidence: Evidence) -> bool:
        """Record the first use of `identifier`; False if it was used before (by any replica)."""
        row = {"identifier": f"{identifier.type.value}:{identifier.value}", "fmt": evidence.fmt,
               "used_at": self._clock.now()}
        try:
            async with self._store.transaction() as session:
                await session.execute(insert(ReplayableFirstUse).values(**row))
        except IntegrityError:
            return False
        return True
