"""Enrollment aliases: map an ordered ClientIdentifier to the identifier the device attests.

The check runs after the attestation verified: the alias must be registered, the evidence
must prove the identifier it stands for, and a single-use alias is consumed atomically
(a conditional update), so a token enrolls one device once, across replicas.
"""

from __future__ import annotations

from attestation.evidence import Evidence
from ca.clock import Clock
from ca.identifiers import Identifier, IdentifierType
from ca.problems import BadAttestationStatement
from ca.storage import repository as repo
from ca.storage.repository import Store
from enroll.records import DeviceAlias


class AliasExists(Exception):
    """The alias is registered already: an operator's mistake, reported without a traceback."""


class AliasRegistry:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def add(self, alias: str, attested_value: str, *, single_use: bool = True, label: str = "") -> None:
        try:
            async with self._store.transaction() as tx:
                await repo.insert(tx, DeviceAlias(alias=alias, attested_value=attested_value, single_use=single_use,
                                                  label=label, created_at=self._clock.now()))
        except repo.Conflict:
            async with self._store.read() as tx:
                row = await repo.get(tx, DeviceAlias, alias)
            held = f" for {row.attested_value}" if row is not None else ""
            raise AliasExists(f"alias {alias} is registered already{held}; choose another alias") from None

    async def admits(self, identifier: Identifier, evidence: Evidence) -> bool:
        """True if `identifier` is a registered alias of an identifier `evidence` proves (consuming it)."""
        if identifier.type is not IdentifierType.PERMANENT_IDENTIFIER:
            return False
        async with self._store.transaction() as tx:
            row = await repo.get(tx, DeviceAlias, identifier.value)
            if row is None:
                return False
            if row.attested_value not in {p.value for p in evidence.permanent_identifiers}:
                raise BadAttestationStatement(
                    f"enrollment alias {identifier.value!r} is registered for another device than the one attested")
            if not row.single_use:
                return True
            consumed = await tx.run('UPDATE "device_alias" SET used_at = ? WHERE alias = ? AND used_at IS NULL',
                                    self._clock.now(), row.alias)
            if consumed != 1:
                raise BadAttestationStatement(f"enrollment alias {identifier.value!r} has already been used")
            return True
