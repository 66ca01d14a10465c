"""TPM 2.0 building blocks of the attestation library (pure: no TPM access, no I/O).

- `structs`: TPMT_PUBLIC and TPMS_ATTEST (CERTIFY and QUOTE bodies) as dataclasses with a
  strict `parse()` and an exact `to_bytes()`, Names, and the public key of a TPMT_PUBLIC;
- `san`: the TCG subject alternative name of EK / AK certificates (TPM manufacturer, model,
  version) and the RFC 4043 / RFC 4108 device identifiers it may carry;
- `constants`, `wire`: the TPM_ALG_ID / TPM_ST / TPMA_OBJECT values and the wire encoding.

The "tpm" attestation statement format itself is `attestation.formats.tpm`.
"""

from attestation.tpm.san import TpmSan, certificate_san, decode_san
from attestation.tpm.structs import (
    CertifyInfo, ClockInfo, EccParms, EccPoint, PcrSelection, QuoteInfo, RsaParms, Scheme,
    SymDefObject, TpmsAttest, TpmtPublic, compute_name,
)

__all__ = [
    "CertifyInfo", "ClockInfo", "EccParms", "EccPoint", "PcrSelection", "QuoteInfo", "RsaParms", "Scheme",
    "SymDefObject", "TpmSan", "TpmsAttest", "TpmtPublic", "certificate_san", "compute_name", "decode_san",
]
