"""Trust on first use for replayable evidence: an identifier belongs to one account.

An EC2 instance identity document carries no nonce, so anyone who has seen one can present
it again. Like SPIRE's aws_iid node attestor, acmeda trusts such evidence on first use: the
first ACME account key to validate an identifier (the instance id) owns that identifier, and
may enroll it again (renewal) with replayable evidence; every other account is refused,
across replicas, because the owner is a row whose primary key is the identifier.

Every successful device-attest validation records its account as the owner when the
identifier has none, bound evidence (aws-nitro, a TPM quote) as well as replayable: an
instance first enrolled through aws-nitro is not free for a stranger holding its identity
document. Bound evidence by another account takes ownership over (it proves possession now,
for that account; see `ca.challenges.device_attest.DeviceAttestValidator._check_owner`).
An account key rollover with replayable evidence only therefore needs the operator to
release the identifier first (`acmeda first-use forget IDENTIFIER`). The table keeps its
historical name, `replayable_first_use`.
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
        """Record the account as the owner of `identifier` when it has none; True when the
        account owns it afterwards. A second account is refused ownership (False) for replayable
        evidence; bound evidence (`evidence.replayable` false) takes ownership over from another
        account and is always True. Atomic across replicas: the row's key is the identifier."""
        key = f"{identifier.type.value}:{identifier.value}"
        row = ReplayableFirstUse(identifier=key, fmt=evidence.fmt, account_thumbprint=account_thumbprint,
                                 used_at=self._clock.now())
        try:
            async with self._store.transaction() as tx:
                await repo.insert(tx, row)
            return True
        except Conflict:
            pass
        if not evidence.replayable:
            async with self._store.transaction() as tx:
                await tx.run('UPDATE "replayable_first_use" SET account_thumbprint = ?, fmt = ?, used_at = ? '
                             'WHERE identifier = ? AND account_thumbprint <> ?',
                             account_thumbprint, evidence.fmt, row.used_at, key, account_thumbprint)
            return True
        async with self._store.read() as tx:
            first = await repo.get(tx, ReplayableFirstUse, key)
        return first is not None and hmac.compare_digest(first.account_thumbprint, account_thumbprint)
