"""The explicit registry of attestation formats: `fmt` name → `Format`.

Adding a format is adding one module under `attestation/formats/` and one line here.
"""

from __future__ import annotations

from typing import Mapping

from attestation.context import TrustStore
from attestation.format import Format, key_authorization_binding  # noqa: F401  (re-exported)
from attestation.formats import android_key, apple, aws_iid, aws_nitro, azure_imds, step, tpm

FORMATS: Mapping[str, Format] = {
    "android-key": android_key.FORMAT,
    "apple": apple.FORMAT,
    "aws-iid": aws_iid.FORMAT,
    "aws-nitro": aws_nitro.FORMAT,
    "azure-imds": azure_imds.FORMAT,
    "step": step.FORMAT,
    "tpm": tpm.FORMAT,
}


def default_trust() -> TrustStore:
    """The vendor roots and path-building intermediates that ship with acmeda, by format."""
    return TrustStore(
        roots={
            "android-key": android_key.default_roots(),
            "apple": apple.default_roots(),
            "aws-iid": aws_iid.default_roots(),
            "aws-nitro": aws_nitro.default_roots(),
            "azure-imds": azure_imds.default_roots(),
            "step": step.default_roots(),
            "tpm": tpm.default_roots(),
        },
        intermediates={"apple": apple.default_intermediates(), "azure-imds": azure_imds.default_intermediates(),
                       "step": step.default_intermediates()},
    )
