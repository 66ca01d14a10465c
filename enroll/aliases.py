"""Enrollment aliases: map an ordered ClientIdentifier to the identifier the device attests.

The check runs after the attestation verified: the alias must be registered, the evidence
must prove the identifier it stands for, and a single-use alias is consumed atomically
(a conditional update), so a token enrolls one device once, across replicas.

An alias stands for an attested identifier in the text form orders use (draft-09 §3.1, §4.1;
`ca.challenges.device_attest.attested_identifiers`): `SERIAL` for a permanent identifier
without assigner (Apple, YubiKey, Android serials), `VALUE/ASSIGNER` with one (cloud instance
ids), `SERIAL/HWTYPE` for a hardware module. The match is octet for octet on that form, so
an alias for YubiKey serial 12345678 is not satisfied by a cloud instance whose id is
12345678 under its provider's assigner.
"""

from __future__ import annotations

from attestation.evidence import Evidence
from ca.challenges.device_attest import attested_identifiers
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

    async def admits(self, identifier: Identifier, evidence: Evidence) -> Identifier | None:
        """The attested identifier `identifier` is a registered alias of (consuming a single-use
        alias), None when it is no alias; `badAttestationStatement` when the evidence does not
        prove the identifier the alias stands for, or the alias has been used."""
        if identifier.type is not IdentifierType.PERMANENT_IDENTIFIER:
            return None
        async with self._store.transaction() as tx:
            row = await repo.get(tx, DeviceAlias, identifier.value)
            if row is None:
                return None
            device = next((i for i in attested_identifiers(evidence) if i.value == row.attested_value), None)
            if device is None:
                raise BadAttestationStatement(
                    f"enrollment alias {identifier.value!r} is registered for another device than the one attested")
            if not row.single_use:
                return device
            consumed = await tx.run('UPDATE "device_alias" SET used_at = ? WHERE alias = ? AND used_at IS NULL',
                                    self._clock.now(), row.alias)
            if consumed != 1:
                raise BadAttestationStatement(f"enrollment alias {identifier.value!r} has already been used")
            return device
