"""What an attestation key must be before acmeda certifies it (AK enrollment).

The AK's TPMT_PUBLIC (TPM 2.0 Part 2 §12.2.4) comes from the device. Credential activation
proves that an object with exactly this public area is loaded in the TPM that holds the
EK, because the TPM recomputes the Name (nameAlg || H(TPMT_PUBLIC)); the attributes below
then say what kind of object that is, and the TPM enforced them when it created the key:

- fixedTPM, fixedParent: the key cannot be duplicated out of this TPM (`ak-attributes`);
- sensitiveDataOrigin: the TPM generated the private key itself, nobody imported it;
- restricted and sign: a restricted signing key signs only digests the TPM computed
  itself, or TPM-generated structures (TPMS_ATTEST), so it cannot be made to sign an
  outside message that looks like a quote or a certification (Part 1 §25.2);
- decrypt clear: an attestation key is not also a decryption key (`ak-decrypt`);
- nameAlg SHA-256 or stronger: the Name is what activation binds, and a SHA-1 Name could
  be matched by a second public area (`ak-name-alg`);
- key: RSA of at least 2048 bits, or ECC on NIST P-256 or P-384 (`ak-key`).

Every refusal is a `RequirementFailed` naming the attribute; a public area that does not
parse raises what `TpmtPublic.parse` raises (`tpm-public`).
"""

from __future__ import annotations

from attestation.errors import RequirementFailed, catch_builtins
from attestation.tpm.constants import Alg, EccCurve, ObjectAttr, alg_name
from attestation.tpm.structs import EccParms, RsaParms, TpmtPublic

REQUIRED_ATTRIBUTES = (
    ObjectAttr.FIXED_TPM | ObjectAttr.FIXED_PARENT | ObjectAttr.SENSITIVE_DATA_ORIGIN
    | ObjectAttr.RESTRICTED | ObjectAttr.SIGN_ENCRYPT
)
NAME_ALGORITHMS = frozenset({Alg.SHA256, Alg.SHA384, Alg.SHA512, Alg.SHA3_256, Alg.SHA3_384, Alg.SHA3_512})
MIN_RSA_BITS = 2048
CURVES = {EccCurve.NIST_P256: "P-256", EccCurve.NIST_P384: "P-384"}


@catch_builtins
def check_ak_public(public_area: bytes) -> TpmtPublic:
    """Parse the AK's TPMT_PUBLIC (without its TPM2B size) and check it can be certified."""
    public = TpmtPublic.parse(public_area)
    attributes = public.object_attributes
    missing = ObjectAttr(REQUIRED_ATTRIBUTES & ~attributes)
    if missing:
        raise RequirementFailed(
            f"AK objectAttributes {attributes:#010x} lack {missing.name}: an AK must be a restricted signing key "
            "generated in and fixed to its TPM (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign)",
            check="ak-attributes")
    if attributes & ObjectAttr.DECRYPT:
        raise RequirementFailed(f"AK objectAttributes {attributes:#010x} set decrypt: an AK must not be a decryption key",
                                check="ak-decrypt")
    if public.name_alg not in NAME_ALGORITHMS:
        raise RequirementFailed(f"AK nameAlg {alg_name(public.name_alg)} is refused: SHA-256 or stronger is required",
                                check="ak-name-alg")
    _check_key(public)
    public.public_key()  # the unique field must be a valid key (MalformedStatement otherwise)
    return public


def _check_key(public: TpmtPublic) -> None:
    parameters = public.parameters
    if isinstance(parameters, RsaParms):
        if parameters.key_bits < MIN_RSA_BITS:
            raise RequirementFailed(f"AK is RSA {parameters.key_bits}: at least {MIN_RSA_BITS} bits are required",
                                    check="ak-key")
        return
    assert isinstance(parameters, EccParms)
    if parameters.curve_id not in CURVES:
        raise RequirementFailed(f"AK curve {EccCurve(parameters.curve_id).name} is not supported: NIST P-256 or P-384",
                                check="ak-key")
