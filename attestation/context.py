"""What a verifier is given besides the statement: the binding, the time, the trust store.

`Binding` carries the two values an attestation can be bound to. In ACME
device-attest-01 (draft §5) `att_to_be_signed` is the key authorization; formats that
bind a nonce or challenge field (Apple's freshness code, Android's attestationChallenge)
compare it with `challenge`, whose ACME value each format's `acme_binding` chooses.
Real WebAuthn vectors set both from authData and clientDataHash instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Mapping


@dataclass(frozen=True)
class TrustStore:
    """Trust anchors and helper intermediates (DER bytes), and raw trusted key documents, by
    format name (or a format's named trust domain, such as the `tpm` format's "tpm-gcp").

    `keys` serves formats whose authority signs with bare keys rather than certificates:
    each entry is one key document as published, e.g. a JWK or JWK Set as JSON bytes for
    "gcp-iit". The format parses them; an empty or absent entry trusts nothing.
    """

    roots: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    intermediates: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    keys: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)

    def roots_for(self, fmt: str) -> tuple[bytes, ...]:
        return tuple(self.roots.get(fmt, ()))

    def intermediates_for(self, fmt: str) -> tuple[bytes, ...]:
        return tuple(self.intermediates.get(fmt, ()))

    def keys_for(self, fmt: str) -> tuple[bytes, ...]:
        return tuple(self.keys.get(fmt, ()))


@dataclass(frozen=True)
class Binding:
    att_to_be_signed: bytes
    challenge: bytes


# Given a certificate's serial number (as an int) and its issuer-less identity, say whether
# the vendor lists it revoked. Returns a reason string when revoked, else None.
RevocationCheck = Callable[[int], "str | None"]


@dataclass(frozen=True)
class VerificationContext:
    binding: Binding
    now: datetime
    trust: TrustStore
    revocation: Mapping[str, RevocationCheck] = field(default_factory=dict)  # by format
