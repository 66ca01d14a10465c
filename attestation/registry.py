"""The explicit registry of attestation formats: `fmt` name → `Format`.

Adding a format is adding one module under `attestation/formats/` and one line here.
"""

from __future__ import annotations

from typing import Mapping

from attestation.context import TrustStore
from attestation.format import Format, key_authorization_binding  # noqa: F401  (re-exported)
from attestation.formats import android_key, apple, aws_iid, aws_nitro, azure_imds, gcp_iit, step, tpm

FORMATS: Mapping[str, Format] = {
    "android-key": android_key.FORMAT,
    "apple": apple.FORMAT,
    "aws-iid": aws_iid.FORMAT,
    "aws-nitro": aws_nitro.FORMAT,
    "azure-imds": azure_imds.FORMAT,
    "gcp-iit": gcp_iit.FORMAT,
    "step": step.FORMAT,
    "tpm": tpm.FORMAT,
}


# Trust-store entries a format reads besides its own name: `tpm` also trusts Google Compute
# Engine's vTPM AK CAs, kept apart so the cloud profile applies only below them.
TRUST_ENTRIES: Mapping[str, tuple[str, ...]] = {"tpm": ("tpm", tpm.GCP_TRUST)}


def trust_entries(fmt: str) -> tuple[str, ...]:
    return TRUST_ENTRIES.get(fmt, (fmt,))


def default_trust() -> TrustStore:
    """The vendor roots, path-building intermediates and signing keys that ship with acmeda."""
    return TrustStore(
        roots={
            "android-key": android_key.default_roots(),
            "apple": apple.default_roots(),
            "aws-iid": aws_iid.default_roots(),
            "aws-nitro": aws_nitro.default_roots(),
            "azure-imds": azure_imds.default_roots(),
            "step": step.default_roots(),
            "tpm": tpm.default_roots(),
            tpm.GCP_TRUST: tpm.default_gcp_roots(),
        },
        intermediates={"apple": apple.default_intermediates(), "azure-imds": azure_imds.default_intermediates(),
                       "step": step.default_intermediates(), tpm.GCP_TRUST: tpm.default_gcp_intermediates()},
        keys={"gcp-iit": gcp_iit.default_keys()},
    )
