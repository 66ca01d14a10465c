"""The interface every attestation format implements: a `Format` names its verifier and its ACME binding.

Kept apart from `attestation.registry` (which imports every format) so that format modules
can import it without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from attestation.context import Binding, VerificationContext
from attestation.evidence import Evidence

Verify = Callable[[Mapping[str, Any], VerificationContext], Evidence]
AcmeBinding = Callable[[str, bytes], Binding]  # (challenge token, key authorization) -> Binding


@dataclass(frozen=True)
class Format:
    name: str
    verify: Verify
    acme_binding: AcmeBinding


def key_authorization_binding(token: str, key_authorization: bytes) -> Binding:
    """draft-ietf-acme-device-attest §5: attToBeSigned and the challenge are the key authorization."""
    return Binding(att_to_be_signed=key_authorization, challenge=key_authorization)
