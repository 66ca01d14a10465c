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

from attestation.evidence import Evidence
from ca.clock import Clock
from ca.identifiers import Identifier
from ca.storage import repository as repo
from ca.storage.repository import Conflict, Store
from enroll.records import ReplayableFirstUse


class FirstUseRegistry:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def forget(self, identifier: Identifier) -> bool:
        """Release `identifier` (an operator's decision, e.g. after an account key rollover); False if unknown."""
        key = f"{identifier.type.value}:{identifier.value}"
        async with self._store.transaction() as tx:
            gone = await tx.run('DELETE FROM "replayable_first_use" WHERE identifier = ?', key)
        return gone == 1

    async def admit(self, identifier: Identifier, evidence: Evidence, account_thumbprint: str) -> bool:
        """True for the first use of `identifier` (recorded) and for later uses by the same
        account key; False when another account used it first (on any replica)."""
        key = f"{identifier.type.value}:{identifier.value}"
        row = ReplayableFirstUse(identifier=key, fmt=evidence.fmt, account_thumbprint=account_thumbprint,
                                 used_at=self._clock.now())
        try:
            async with self._store.transaction() as tx:
                await repo.insert(tx, row)
            return True
        except Conflict:
            async with self._store.read() as tx:
                first = await repo.get(tx, ReplayableFirstUse, key)
            return first is not None and hmac.compare_digest(first.account_thumbprint, account_thumbprint)
