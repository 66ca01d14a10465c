"""The explicit registry of attestation formats: `fmt` name → `Format`.

Adding a format is adding one module under `attestation/formats/` and one line here.
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


def _load() -> dict[str, Format]:
    formats: dict[str, Format] = {}
    # One line per format, added as each module lands:
    # from attestation.formats import apple; formats["apple"] = apple.FORMAT
    return formats


FORMATS: Mapping[str, Format] = _load()
