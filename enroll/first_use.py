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
from ca.storage.repository import Store
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
        values = (key, evidence.fmt, account_thumbprint, self._clock.now())
        # One statement either way, where an INSERT that failed on the key was followed by a
        # second transaction (an UPDATE for bound evidence, a read for replayable).
        async with self._store.statement() as tx:
            if not evidence.replayable:
                await tx.run(_INSERT_OR_TAKE_OVER_SQL, *values)
                return True
            recorded = await tx.run(_INSERT_IF_UNOWNED_SQL, *values)
        if recorded == 1:
            return True
        async with self._store.read() as tx:
            first = await repo.get(tx, ReplayableFirstUse, key)
        return first is not None and hmac.compare_digest(first.account_thumbprint, account_thumbprint)


_INSERT_IF_UNOWNED_SQL = ('INSERT INTO "replayable_first_use" (identifier, fmt, account_thumbprint, used_at) '
                          "VALUES (?, ?, ?, ?) ON CONFLICT (identifier) DO NOTHING")
_INSERT_OR_TAKE_OVER_SQL = (
    'INSERT INTO "replayable_first_use" (identifier, fmt, account_thumbprint, used_at) VALUES (?, ?, ?, ?) '
    "ON CONFLICT (identifier) DO UPDATE SET account_thumbprint = excluded.account_thumbprint, fmt = excluded.fmt, "
    'used_at = excluded.used_at WHERE "replayable_first_use".account_thumbprint <> excluded.account_thumbprint'
)
