"""`Services`: everything a request needs, built once by the app factory and injected.

Handlers take what they need from here; tests build it with a frozen clock and their
own store. Nothing below this reads the wall clock or global state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from ca.challenges.registry import Validators
from ca.clock import Clock
from ca.config import Config
from ca.csr import KeyPolicy
from ca.issuance import Issuer, Profile
from ca.nonces import NonceService
from ca.pki import CertificateAuthority
from ca.storage.repository import Store

if TYPE_CHECKING:
    from enroll.tpm_enrollment import TpmEnrollment


@dataclass
class Services:
    config: Config
    clock: Clock
    store: Store
    nonces: NonceService
    authority: CertificateAuthority
    issuer: Issuer
    profiles: Mapping[str, Profile]
    validators: Validators
    key_policy: KeyPolicy = field(default_factory=KeyPolicy)
    pseudonym_key: bytes = b""  # keys the device pseudonyms of privacy-preserving certificates
    tpm_enrollment: "TpmEnrollment | None" = None  # None: no attestation CA, so no AK enrollment
