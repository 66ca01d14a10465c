"""Challenge validation (RFC 8555 §8): the types every validator shares.

A validator is handed a `ValidationRequest` (what the CA expects for one challenge) and
either returns a `ValidationResult` (the validationRecord to show on the challenge, and
for device-attest-01 the attestation Evidence) or raises an `AcmeProblem` naming the check
that failed. Validators never touch storage or HTTP-server code; `ca.validation` runs them
and records the outcome. Which validator runs for which challenge type is decided in
`ca.challenges.registry`.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, Protocol

from ca.identifiers import Identifier


class ChallengeType(str, Enum):
    HTTP_01 = "http-01"
    DNS_01 = "dns-01"
    TLS_ALPN_01 = "tls-alpn-01"
    DEVICE_ATTEST_01 = "device-attest-01"


@dataclass(frozen=True)
class ValidationRequest:
    """Everything a validator needs; the identifier never carries a wildcard label."""

    identifier: Identifier
    token: str
    key_authorization: str
    payload: Mapping[str, Any]  # the client's POST body; empty for http/dns/tls-alpn
    account_thumbprint: str


@dataclass(frozen=True)
class ValidationResult:
    """A successful validation.

    `record` is the RFC 8555 §8 validationRecord entry of the first request the CA made
    (e.g. for http-01: url, hostname, port, addressesResolved, addressUsed).
    `further_records` holds one entry per redirect the CA followed, in order; `records`
    gives them all, ready for the challenge's `validationRecord` array.
    """

    record: Mapping[str, Any]
    evidence: Any = None  # device-attest-01: the attestation Evidence
    further_records: tuple[Mapping[str, Any], ...] = field(default=())

    @property
    def records(self) -> tuple[Mapping[str, Any], ...]:
        return (self.record, *self.further_records)


class Validator(Protocol):
    async def validate(self, request: ValidationRequest) -> ValidationResult:
        """Validate one challenge; raise an `AcmeProblem` naming the failed check."""
        ...


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def key_authorization(token: str, account_thumbprint: str) -> str:
    """RFC 8555 §8.1: token || '.' || base64url(JWK thumbprint of the account key)."""
    return f"{token}.{account_thumbprint}"


def dns01_txt_value(key_authorization: str) -> str:
    """RFC 8555 §8.4: base64url(SHA-256(key authorization)), without padding."""
    return _b64url(hashlib.sha256(key_authorization.encode("utf-8")).digest())


def key_authorization_digest(key_authorization: str) -> bytes:
    """SHA-256 of the key authorization: the tls-alpn-01 acmeIdentifier value (RFC 8737 §3)."""
    return hashlib.sha256(key_authorization.encode("utf-8")).digest()
