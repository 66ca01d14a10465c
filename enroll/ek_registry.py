"""The operator's endorsement-key registry: which identifier a TPM enrolls under, and pinned EKs.

A machine's permanent identifier must come from something the operator can trust, never
from the device's say-so. By default it is the EK hash (`attestation.tpm.ek.ek_hash`) of
an EK whose certificate chained to a TPM maker. The operator may register, per EK hash, an
identifier of their own (an asset tag), the TPM manufacturer, model and version (when the EK
certificate lacks them), and may *pin* an EK: admit it without a certificate, for machines
whose TPM has none (`tpm_allow_pinned_ek`). `acmeda tpm register-ek` and `acmeda tpm pin-ek`
write here; `enroll.tpm_enrollment` reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asn1crypto import pem
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from attestation.errors import AttestationError
from attestation.tpm.ek import canonical_spki, certificate_spki, ek_hash, pinned_ek
from ca.clock import Clock
from ca.san import OtherNameError, split_permanent_identifier
from ca.storage import repository as repo
from ca.storage.repository import Store
from enroll.records import TpmEndorsementKey

_STATED = ("pinned", "identifier", "assigner", "manufacturer", "model", "version", "label")

_EK_HASH = re.compile(r"[0-9a-f]{64}")
_TPM_VALUE_MAX = 64


@dataclass(frozen=True)
class EkEntry:
    """What the operator states about one EK; every field but the hash is optional."""

    ek_hash: str
    identifier: str | None = None
    assigner: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    version: str | None = None
    pinned: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        if not _EK_HASH.fullmatch(self.ek_hash):
            raise ValueError(f"EK hash {self.ek_hash!r} is not 64 lowercase hex digits (SHA-256 of the EK public key)")
        if self.assigner is not None and self.identifier is None:
            raise ValueError("an assigner needs an identifier")
        if self.identifier is not None:
            if "/" in self.identifier:  # the text form of the identifier puts the assigner after a '/'
                raise ValueError(f"identifier {self.identifier!r} may not contain '/'")
            try:
                split_permanent_identifier(self.identifier + (f"/{self.assigner}" if self.assigner else ""))
            except OtherNameError as exc:
                raise ValueError(str(exc)) from None
        for label, value in (("manufacturer", self.manufacturer), ("model", self.model), ("version", self.version)):
            if value is not None and not 0 < len(value) <= _TPM_VALUE_MAX:
                raise ValueError(f"TPM {label} must be 1 to {_TPM_VALUE_MAX} characters")


class EkRegistry:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def put(self, entry: EkEntry) -> None:
        """Record what the operator states about `entry.ek_hash`: stated fields replace what was
        registered before, unstated ones (None) are kept, and a pin stays once given."""
        async with self._store.transaction() as tx:
            row = await repo.get(tx, TpmEndorsementKey, entry.ek_hash)
            known = row is not None
            if row is None:
                row = TpmEndorsementKey(ek_hash=entry.ek_hash, created_at=self._clock.now())
            if entry.identifier is not None:
                row.identifier, row.assigner = entry.identifier, entry.assigner
            for field in ("manufacturer", "model", "version"):
                if getattr(entry, field) is not None:
                    setattr(row, field, getattr(entry, field))
            row.pinned = row.pinned or entry.pinned
            row.label = entry.label or row.label
            if known:
                await repo.update(tx, TpmEndorsementKey, row.ek_hash, **{f: getattr(row, f) for f in _STATED})
            else:
                await repo.insert(tx, row)

    async def get(self, ek_hash_value: str) -> TpmEndorsementKey | None:
        async with self._store.read() as tx:
            return await repo.get(tx, TpmEndorsementKey, ek_hash_value)


def ek_hash_of_file(data: bytes) -> str:
    """The EK hash of an EK given as a file an operator has at hand.

    Accepted: a PEM or DER EK certificate, a PEM or DER public key (`tpm2_readpublic -f pem|der`),
    or the EK's TPM2B_PUBLIC / TPMT_PUBLIC (`tpm2_createek -u`, `tpm2_readpublic -o`).
    """
    if data.lstrip().startswith(b"-----BEGIN"):
        kind, _headers, der = pem.unarmor(data.strip())
        if kind != "CERTIFICATE":
            return ek_hash(canonical_spki(serialization.load_der_public_key(der)))  # type: ignore[arg-type]
        data = der
    return ek_hash(ek_spki_of(data))


def ek_spki_of(data: bytes) -> bytes:
    """The canonical SPKI of a DER EK certificate, a DER public key, a TPM2B_PUBLIC or a TPMT_PUBLIC."""
    sized = int.from_bytes(data[:2], "big") == len(data) - 2
    for candidate in ((data[2:], data) if sized else (data,)):
        try:
            return pinned_ek(candidate).spki
        except AttestationError:
            pass
    try:
        return canonical_spki(serialization.load_der_public_key(data))  # type: ignore[arg-type]
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    try:
        return certificate_spki(data)
    except AttestationError as exc:
        raise ValueError(f"neither an EK certificate, an EK public key nor an EK's TPMT_PUBLIC: {exc}") from None
