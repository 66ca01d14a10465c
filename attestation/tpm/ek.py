"""Endorsement keys: verify a TPM's EK certificate, or read a pinned EK's public area.

An EK certificate says that a TPM maker put this endorsement key into a genuine TPM. It
attests nothing by itself (an EK never signs); AK enrollment binds an AK to it by credential
activation (`attestation.tpm.credential`). What this module proves:

- the certificate chains to a configured EK root (TPM makers' roots, bundled under
  `attestation/roots/tpm-ek/`) at `now`, through the intermediates the device sent or the
  bundled intermediate pool (`tpm-ek-intermediates/`): EK certificates usually arrive
  without their issuer. The chain walker is `attestation.x509chain`, with its strict policy:
  the EK certificate is the leaf, every issuer must be a CA;
- parsing is tolerant where real EK certificates need it: several do not parse with
  `cryptography` (non-DER SET ordering, extra data in AlgorithmIdentifier), so asn1crypto
  reads them; a certificate read from NV may be followed by the index's unwritten padding
  (0xFF or 0x00 octets), which is cut off, and nothing else may follow it;
- the TPM manufacturer, model and version come from the critical SAN directoryName
  (2.23.133.2.1/2/3, TCG EK Credential Profile §3.2.9), decoded by `attestation.tpm.san`;
  a certificate without them (Google's newer vTPM EK certificates) yields None for each;
- the EK public key as a canonical SubjectPublicKeyInfo (`cryptography`'s DER of the key:
  rsaEncryption or id-ecPublicKey with a named curve), whatever OID or parameter encoding
  the certificate used, so that the same key always has the same `ek_hash`: the lowercase
  hex SHA-256 of that DER. This hash names the EK in the operator's registry and is the
  default permanent identifier of the machine (assigner `attestation.assigners.TPM_EK_HASH`).

A pinned EK (a machine without an EK certificate, registered by the operator) is given as
its TPMT_PUBLIC; it must be a restricted decryption key (a storage key: what
TPM2_ActivateCredential requires of the EK).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from attestation.errors import AttestationError, MalformedStatement, RequirementFailed, catch_builtins
from attestation.roots import bundled
from attestation.tpm.constants import ObjectAttr
from attestation.tpm.credential import Protector, PublicKey
from attestation.tpm.san import TpmSan, decode_san, san_extension
from attestation.tpm.structs import TpmtPublic
from attestation.x509chain import MAX_CHAIN_LENGTH, parse_certificate, public_key_of, verify_chain

ROOTS_FOLDER, INTERMEDIATES_FOLDER = "tpm-ek", "tpm-ek-intermediates"
NV_PADDING = frozenset(b"\x00\xff")
STORAGE_KEY = ObjectAttr.RESTRICTED | ObjectAttr.DECRYPT


@dataclass(frozen=True)
class EkTrust:
    """EK trust anchors and the path-building pool of intermediates (DER)."""

    roots: tuple[bytes, ...]
    intermediates: tuple[bytes, ...] = ()


def default_ek_trust() -> EkTrust:
    """The bundled TPM maker roots (Infineon, STMicro, Nuvoton, Intel, AMD, Google vTPM) and intermediates."""
    return EkTrust(bundled(ROOTS_FOLDER), bundled(INTERMEDIATES_FOLDER))


@dataclass(frozen=True)
class EndorsementKey:
    """A verified EK: its key as MakeCredential targets it, and what its certificate states."""

    spki: bytes  # canonical DER SubjectPublicKeyInfo
    protector: Protector
    san: TpmSan  # manufacturer / model / version; all None for a pinned EK
    path: tuple[bytes, ...] = ()  # the verified chain (DER), EK certificate first; () when pinned

    @property
    def ek_hash(self) -> str:
        return ek_hash(self.spki)


def ek_hash(spki: bytes) -> str:
    """The EK's name in acmeda: lowercase hex SHA-256 of its canonical SubjectPublicKeyInfo DER."""
    return hashlib.sha256(spki).hexdigest()


def canonical_spki(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _strip_nv_padding(data: bytes) -> bytes:
    """The certificate's own octets: a DER value followed by nothing but NV padding."""
    try:
        der = asn1_x509.Certificate.load(bytes(data)).dump()  # non-strict: reads the first value only
    except Exception as exc:  # asn1crypto raises ValueError, TypeError and friends
        raise MalformedStatement(f"EK certificate does not parse: {exc}", check="ek-certificate") from exc
    if not set(data[len(der):]) <= NV_PADDING:
        raise MalformedStatement(
            f"EK certificate is followed by {len(data) - len(der)} octets that are not NV padding (0x00 / 0xFF)",
            check="ek-certificate")
    return der


def _ek_public_key(spki: asn1_keys.PublicKeyInfo) -> PublicKey:
    # Some EK certificates name the RSA key id-RSAES-OAEP (RFC 4055) instead of rsaEncryption.
    if spki["algorithm"]["algorithm"].native == "rsaes_oaep":
        numbers = spki["public_key"].parsed
        return rsa.RSAPublicNumbers(numbers["public_exponent"].native, numbers["modulus"].native).public_key()
    return public_key_of(spki)


def _relabel(exc: AttestationError, prefix: str) -> AttestationError:
    """The same error class and check, its message saying it is about the EK."""
    return type(exc)(f"{prefix}: {exc}", check=exc.check)


@catch_builtins
def verify_ek_certificate(
    certificate: bytes, trust: EkTrust, now: datetime, *, chain: Sequence[bytes] = ()
) -> EndorsementKey:
    """Verify an EK certificate (as read from NV) against `trust` at `now`.

    `chain` holds intermediates the device sent; they are candidates, never anchors.
    """
    if len(chain) >= MAX_CHAIN_LENGTH:
        raise MalformedStatement(f"ekChain holds more than {MAX_CHAIN_LENGTH - 1} certificates", check="ek-chain")
    der = _strip_nv_padding(certificate)
    try:
        path = verify_chain([der, *chain], trust.roots, now, intermediates=trust.intermediates)
    except AttestationError as exc:
        raise _relabel(exc, "EK certificate") from exc
    leaf = path[0]
    _check_ek_usage(leaf)
    public_key = _ek_public_key(leaf["tbs_certificate"]["subject_public_key_info"])
    extension = san_extension(leaf)
    san = decode_san(extension[0]) if extension is not None else TpmSan()
    return EndorsementKey(canonical_spki(public_key), Protector.for_key(public_key), san,
                          tuple(cert.dump() for cert in path))


_EK_CERTIFICATE_EKU = "2.23.133.8.1"  # tcg-kp-EKCertificate (TCG EK Credential Profile)
_EK_KEY_USAGES = {"key_encipherment", "key_agreement"}


def _check_ek_usage(leaf: asn1_x509.Certificate) -> None:
    """The leaf must be an EK certificate, not any certificate a TPM maker's root signed: the
    CA seals the activation secret to its key, so a CA certificate, a signing key's certificate
    (an AK's, a GCE signing key's) or a server certificate under the same root would let whoever
    holds that key answer the activation in software. The TCG profile's marks are checked where
    present: Google's EK certificates carry no EKU, and a Nuvoton ECC EK certificate says
    keyEncipherment where keyAgreement belongs, so either encryption usage passes."""
    constraints = leaf.basic_constraints_value
    if constraints is not None and constraints["ca"].native:
        raise RequirementFailed("the EK certificate is a CA certificate (basicConstraints cA TRUE)", check="ek-certificate")
    usage = leaf.key_usage_value
    if usage is not None and not usage.native & _EK_KEY_USAGES:
        raise RequirementFailed(f"the EK certificate's keyUsage ({', '.join(sorted(usage.native)) or 'none'}) allows "
                                "neither keyEncipherment nor keyAgreement: it certifies no encryption key",
                                check="ek-certificate")
    purposes = leaf.extended_key_usage_value
    if purposes is not None and _EK_CERTIFICATE_EKU not in [p.dotted for p in purposes]:
        raise RequirementFailed("the EK certificate's extendedKeyUsage lacks tcg-kp-EKCertificate (2.23.133.8.1)",
                                check="ek-certificate")


@catch_builtins
def certificate_spki(certificate: bytes) -> bytes:
    """The canonical SPKI of an EK certificate's key, WITHOUT verifying the certificate (operator tools)."""
    leaf = parse_certificate(_strip_nv_padding(certificate), "EK certificate")
    return canonical_spki(_ek_public_key(leaf["tbs_certificate"]["subject_public_key_info"]))


@catch_builtins
def pinned_ek(public_area: bytes) -> EndorsementKey:
    """An EK given as its TPMT_PUBLIC (marshalled without the TPM2B size)."""
    public = TpmtPublic.parse(public_area)
    missing = ObjectAttr(STORAGE_KEY & ~public.object_attributes)
    if missing or public.object_attributes & ObjectAttr.SIGN_ENCRYPT:
        raise RequirementFailed(
            f"the EK's objectAttributes {public.object_attributes:#010x} are not those of a restricted decryption "
            "key (restricted and decrypt set, sign clear), which TPM2_ActivateCredential requires", check="ek-attributes")
    protector = Protector.from_public_area(public)
    return EndorsementKey(canonical_spki(protector.public_key), protector, TpmSan())


def check_protector_is_ek(ek: EndorsementKey, protector: Protector) -> None:
    """MakeCredential must seal to the verified EK itself, never to another key."""
    if canonical_spki(protector.public_key) != ek.spki:
        raise RequirementFailed("the credential would be sealed to a key that is not the verified EK",
                                check="ek-protector")
