"""Fleet for fmt "apple": a mini Apple Enterprise Attestation PKI and MDA statements.

`attest(binding, ...)` returns an `AppleAttestation` whose `att_stmt` is what a Mac or
iPhone sends in ACME device-attest-01 (`{"x5c": [leaf, sub CA]}`), bound to
`binding.challenge` through the freshness code, with the leaf private key (for the CSR)
and the `TrustStore` a correctly configured CA would use. Every checked field has a knob:

- `nonce`: the freshness-code bytes (default SHA-256(binding.challenge)); None omits it.
- `device`: an `AppleDevice`; a field set to None omits its extension, "" makes it blank.
- `extensions`: raw extnValue bytes by OID, added or replacing; a None value removes it.
- `duplicate`: an OID whose extension is repeated in the leaf (re-signed, so it chains).
- `validity`: the leaf's (notBefore, notAfter); default one hour before `now` to 90 days on.
- `issuer`: a `Pki` to sign with (e.g. `pki("Rogue")`: wrong root, or
  `pki(intermediate_is_ca=False)`); the returned trust is always the legitimate one.
- `tamper_signature`: flip a bit of the leaf's signature.
- `send_intermediate`: False sends the leaf alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Mapping

import cbor2
from asn1crypto import core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from attestation.context import Binding, TrustStore
from attestation.formats import apple as fmt

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)  # = tests/conftest.py START
CA_NOT_BEFORE = datetime(2022, 2, 16, tzinfo=timezone.utc)
CA_NOT_AFTER = datetime(2047, 2, 20, tzinfo=timezone.utc)
_COMPUTE: Any = object()  # sentinel: "the correct value"


@dataclass(frozen=True)
class AppleDevice:
    """The device properties the leaf states (None: extension omitted)."""

    serial_number: str | None = "C02FLEET0001"
    udid: str | None = "00008103-001A2B3C4D5E6F70"
    software_update_device_id: str | None = "J516cAP"
    os_version: str | None = "26.1"
    sep_os_version: str | None = "26.1"
    llb_version: str | None = "26.1"
    secure_boot: str | None = "Full Security"
    sip_status: int | None = 0
    third_party_kexts: int | None = 0


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey

    def trust(self) -> TrustStore:
        return TrustStore(roots={fmt.FMT: (der(self.root),)})


@dataclass(frozen=True)
class AppleAttestation:
    att_stmt: dict[str, Any]
    key: Any  # the attested private key: the CSR at finalize must carry its public key
    leaf: bytes
    trust: TrustStore  # what a correctly configured CA trusts (the fleet's legitimate root)

    def att_obj(self) -> bytes:
        """The CBOR attestation object of draft-ietf-acme-device-attest: only fmt and attStmt."""
        return cbor2.dumps({"fmt": fmt.FMT, "attStmt": self.att_stmt})


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _name(common_name: str, *, leaf: bool = False) -> x509.Name:
    if leaf:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "California"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Apple Inc."),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "AAA Certification"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Apple Inc."),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _ca(subject: x509.Name, key, issuer: x509.Name, issuer_key, *, is_ca: bool = True, path_length: int | None = 0) -> x509.Certificate:
    usage = x509.KeyUsage(False, False, False, False, False, is_ca, is_ca, False, False) if is_ca else None
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(CA_NOT_BEFORE)
        .not_valid_after(CA_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    return builder.sign(issuer_key, hashes.SHA384())


@lru_cache(maxsize=None)
def _root(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = _name(f"{name} Apple Enterprise Attestation Root CA")
    return _ca(subject, key, subject, key, path_length=None), key


@lru_cache(maxsize=None)
def pki(name: str = "Fleet", *, intermediate_is_ca: bool = True) -> Pki:
    """A root and a sub CA; variants of the same `name` share the root."""
    root, root_key = _root(name)
    key = ec.generate_private_key(ec.SECP384R1())
    subject = _name(f"{name} Apple Enterprise Attestation Sub CA 1")
    intermediate = _ca(subject, key, root.subject, root_key, is_ca=intermediate_is_ca)
    return Pki(root=root, root_key=root_key, intermediate=intermediate, intermediate_key=key)


def device_extensions(device: AppleDevice, nonce: bytes | None) -> dict[str, bytes]:
    """extnValue contents by OID, encoded as Apple does: raw UTF-8 text, DER INTEGERs, raw nonce."""
    text = {
        fmt.OID_SEP_OS_VERSION: device.sep_os_version,
        fmt.OID_LLB_VERSION: device.llb_version,
        fmt.OID_OS_VERSION: device.os_version,
        fmt.OID_SOFTWARE_UPDATE_DEVICE_ID: device.software_update_device_id,
        fmt.OID_SECURE_BOOT: device.secure_boot,
    }
    values = {oid: value.encode("utf-8") for oid, value in text.items() if value is not None}
    for oid, number in ((fmt.OID_SIP_STATUS, device.sip_status), (fmt.OID_THIRD_PARTY_KEXTS, device.third_party_kexts)):
        if number is not None:
            values[oid] = core.Integer(number).dump()
    for oid, value in ((fmt.OID_SERIAL_NUMBER, device.serial_number), (fmt.OID_UDID, device.udid)):
        if value is not None:
            values[oid] = value.encode("utf-8")
    if nonce is not None:
        values[fmt.OID_FRESHNESS_CODE] = nonce
    return values


def attest(
    binding: Binding,
    *,
    now: datetime = NOW,
    device: AppleDevice = AppleDevice(),
    nonce: bytes | None = _COMPUTE,
    extensions: Mapping[str, bytes | None] | None = None,
    duplicate: str | None = None,
    validity: tuple[datetime, datetime] | None = None,
    issuer: Pki | None = None,
    key: Any = None,
    tamper_signature: bool = False,
    send_intermediate: bool = True,
) -> AppleAttestation:
    """An MDA statement for `binding` (see the module docstring for the knobs)."""
    issuer = issuer or pki()
    key = key or ec.generate_private_key(ec.SECP384R1())
    if nonce is _COMPUTE:
        nonce = hashlib.sha256(binding.challenge).digest()
    values = device_extensions(device, nonce)
    for oid, value in (extensions or {}).items():
        if value is None:
            values.pop(oid, None)
        else:
            values[oid] = value
    not_before, not_after = validity or (now - timedelta(hours=1), now + timedelta(days=90))
    leaf = _leaf(key, issuer, values, not_before, not_after)
    if duplicate is not None or tamper_signature:
        leaf = _resign(leaf, issuer.intermediate_key, duplicate=duplicate, tamper=tamper_signature)
    x5c = [leaf, der(issuer.intermediate)] if send_intermediate else [leaf]
    return AppleAttestation(att_stmt={"x5c": x5c}, key=key, leaf=leaf, trust=pki().trust())


def for_acme(token: str, key_authorization: bytes, **knobs: Any) -> AppleAttestation:
    """`attest` bound the way the CA binds it (`apple.acme_binding`)."""
    return attest(fmt.acme_binding(token, key_authorization), **knobs)


def _leaf(key, issuer: Pki, values: Mapping[str, bytes], not_before: datetime, not_after: datetime) -> bytes:
    public_der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(hashlib.sha256(public_der).hexdigest(), leaf=True))
        .issuer_name(issuer.intermediate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, True, False, False, False, False, False), critical=True)
    )
    for oid, value in values.items():
        builder = builder.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), critical=False)
    return der(builder.sign(issuer.intermediate_key, hashes.SHA256()))


def _resign(leaf: bytes, issuer_key, *, duplicate: str | None, tamper: bool) -> bytes:
    """Rebuild the leaf with asn1crypto (cryptography refuses duplicate extensions)."""
    cert = asn1_x509.Certificate.load(leaf)
    tbs = asn1_x509.TbsCertificate.load(cert["tbs_certificate"].dump())
    if duplicate is not None:
        extensions = [asn1_x509.Extension.load(ext.dump()) for ext in tbs["extensions"]]
        extensions += [asn1_x509.Extension.load(ext.dump()) for ext in extensions if ext["extn_id"].dotted == duplicate]
        tbs["extensions"] = asn1_x509.Extensions(extensions)
    signature = bytearray(issuer_key.sign(tbs.dump(), ec.ECDSA(hashes.SHA256())))
    if tamper:
        signature[-1] ^= 0x01
    rebuilt = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": cert["signature_algorithm"], "signature_value": bytes(signature)}
    )
    return rebuilt.dump()
