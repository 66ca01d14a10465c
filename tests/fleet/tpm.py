"""A fleet of simulated TPM devices for mutation tests of the "tpm" format.

`make(knobs, binding)` builds a complete, valid attestation statement: a real TPMT_PUBLIC
for a freshly keyed RSA or ECC object, a real TPMS_ATTEST certifying it with extraData =
H_alg(attToBeSigned), the AK's signature over it, and an AK certificate issued by a
generated test root through an intermediate, following the WebAuthn §8.3.1 profile. Every
field the verifier checks has a knob in `Knobs`, so each rejection reason is one
`dataclasses.replace` away from a valid statement.

The "TPM" here is `cryptography` signing with the AK key; a real software TPM (swtpm with
tpm2-pytss) proves the same path end to end in a later issue. Keys are cached per process:
RSA generation is slow and the tests do not depend on fresh keys.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier

from attestation.context import Binding, TrustStore, VerificationContext
from attestation.format import key_authorization_binding
from attestation.tpm.constants import TPM_GENERATED_VALUE, Alg, EccCurve, St
from attestation.tpm.san import Asn1HardwareModuleName, Asn1PermanentIdentifier
from attestation.tpm.structs import (
    CertifyInfo, ClockInfo, EccParms, EccPoint, PcrSelection, QuoteInfo, RsaParms, Scheme,
    SymDefObject, TpmsAttest, TpmtPublic,
)

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)
OID_AIK = ObjectIdentifier("2.23.133.8.3")
OID_MANUFACTURER, OID_MODEL, OID_VERSION = (ObjectIdentifier(f"2.23.133.2.{i}") for i in (1, 2, 3))
OID_AAGUID = ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")
WINDOWS_ATTRIBUTES = 0x00060472  # as Windows Hello keys: fixedTPM fixedParent sensitiveDataOrigin userWithAuth noDA decrypt sign
SAN_FORMS = ("multi-rdn", "rdn-per-attribute", "printable", "missing", "no-model", "not-critical")
_CURVES = {"p256": (ec.SECP256R1, EccCurve.NIST_P256, 32), "p384": (ec.SECP384R1, EccCurve.NIST_P384, 48),
           "p521": (ec.SECP521R1, EccCurve.NIST_P521, 66)}
_ALG_HASH = {-257: hashes.SHA256, -37: hashes.SHA256, -7: hashes.SHA256, -35: hashes.SHA384, -65535: hashes.SHA1}
_ALG_AK_KEY = {-257: "rsa", -37: "rsa", -65535: "rsa", -7: "p256", -35: "p384"}


@lru_cache(maxsize=None)
def private_key(kind: str, slot: int = 0):
    """A cached private key: "rsa" (2048) or "p256" / "p384" / "p521"; `slot` tells keys apart."""
    if kind == "rsa":
        return rsa.generate_private_key(65537, 2048)
    return ec.generate_private_key(_CURVES[kind][0]())


@dataclass(frozen=True)
class Knobs:
    """Every field the verifier checks. The defaults build a valid RS256 statement."""

    # attStmt
    ver: Any = "2.0"
    alg: Any = -257
    drop: str | None = None  # remove this attStmt key
    add: tuple[tuple[str, Any], ...] = ()  # add (or overwrite) attStmt keys, e.g. ecdaaKeyId
    sign_alg: int | None = None  # sign certInfo with this alg instead of `alg`
    corrupt_sig: bool = False
    # pubArea
    key: str = "rsa"  # the attested key: "rsa", "p256", "p384", "p521"
    name_alg: int = Alg.SHA256
    object_attributes: int = WINDOWS_ATTRIBUTES
    pub_area_trailing: bytes = b""
    # certInfo
    magic: int = TPM_GENERATED_VALUE
    attest_type: int = St.ATTEST_CERTIFY  # ATTEST_QUOTE builds a real quote body
    extra_data: bytes | None = None  # None: H_alg(att_to_be_signed)
    attested_name: bytes | None = None  # None: the Name of pubArea
    cert_info_trailing: bytes = b""
    firmware_version: int = 0x0007000200000000
    # AK certificate and chain
    ak_key: str | None = None  # None: what `alg` needs
    foreign_ak: bool = False  # the AK certificate certifies another key than the one that signs
    ak_subject: x509.Name = x509.Name([])
    ak_eku: tuple[ObjectIdentifier, ...] = (OID_AIK,)
    ak_ca: bool | None = False  # None: no basicConstraints extension
    ak_san: str = "multi-rdn"  # one of SAN_FORMS
    ak_tpm: tuple[str, str, str] = ("id:4E544300", "NPCT75x", "id:00070002")
    ak_other_names: tuple[x509.OtherName, ...] = ()
    ak_aaguid: bool = False
    ak_version: int = 3  # 1 re-signs the certificate as X.509 v1
    ak_not_before: datetime = NOW - timedelta(days=1)
    ak_not_after: datetime = NOW + timedelta(days=365)
    untrusted_root: bool = False  # issue the chain from a root the TrustStore does not hold
    ak_tbs: Callable[[asn1_x509.TbsCertificate], None] | None = None  # raw mutation, re-signed


@dataclass(frozen=True)
class Sample:
    att_stmt: dict
    ctx: VerificationContext
    public: TpmtPublic
    attested_key: Any = field(repr=False)
    ak_certificate: bytes = field(repr=False)


def permanent_identifier(value: str, assigner: str | None = None) -> x509.OtherName:
    der = Asn1PermanentIdentifier({"identifier_value": value, "assigner": assigner}).dump()
    return x509.OtherName(ObjectIdentifier("1.3.6.1.5.5.7.8.3"), der)


def hardware_module(hw_type: str, serial: bytes) -> x509.OtherName:
    der = Asn1HardwareModuleName({"hw_type": hw_type, "hw_serial_num": serial}).dump()
    return x509.OtherName(ObjectIdentifier("1.3.6.1.5.5.7.8.4"), der)


def public_area(knobs: Knobs) -> tuple[TpmtPublic, Any]:
    """The attested object's TPMT_PUBLIC and private key."""
    key = private_key(knobs.key, slot=1)
    if knobs.key == "rsa":
        n = key.public_key().public_numbers().n
        parms = RsaParms(SymDefObject(), Scheme(), 2048, 0)
        return TpmtPublic(Alg.RSA, knobs.name_alg, knobs.object_attributes, b"", parms, n.to_bytes(256, "big")), key
    _curve, curve_id, size = _CURVES[knobs.key]
    numbers = key.public_key().public_numbers()
    point = EccPoint(numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big"))
    parms = EccParms(SymDefObject(), Scheme(), curve_id, Scheme())
    return TpmtPublic(Alg.ECC, knobs.name_alg, knobs.object_attributes, b"", parms, point), key


def cert_info(knobs: Knobs, public: TpmtPublic, binding: Binding) -> bytes:
    extra = knobs.extra_data
    if extra is None:
        extra = hashlib.new(_ALG_HASH[knobs.alg].name, binding.att_to_be_signed).digest() if knobs.alg in _ALG_HASH else b""
    name = knobs.attested_name if knobs.attested_name is not None else public.name()
    if knobs.attest_type == St.ATTEST_QUOTE:
        attested = QuoteInfo((PcrSelection(Alg.SHA256, b"\xff\xff\xff"),), hashlib.sha256(b"pcrs").digest())
    else:
        attested = CertifyInfo(name, b"\x00\x0b" + hashlib.sha256(b"qualified" + name).digest())
    signer = b"\x00\x0b" + hashlib.sha256(b"ak").digest()
    clock = ClockInfo(123456789, 7, 3, True)
    attest = TpmsAttest(knobs.magic, knobs.attest_type, signer, extra, clock, knobs.firmware_version, attested)
    return attest.to_bytes() + knobs.cert_info_trailing


def sign(key, alg: int, data: bytes) -> bytes:
    """What the TPM does in TPM2_Certify: sign certInfo with the AK under `alg`."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(_ALG_HASH[alg]()))
    if alg == -37:
        return key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH), hashes.SHA256())
    return key.sign(data, padding.PKCS1v15(), _ALG_HASH.get(alg, hashes.SHA256)())


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _ca(name: str, key, issuer: x509.Name | None, issuer_key, now: datetime) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=3650)).not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
    )
    return builder.sign(issuer_key, hashes.SHA256())


@lru_cache(maxsize=None)
def pki(untrusted: bool = False) -> tuple[x509.Certificate, x509.Certificate, Any]:
    """(root, intermediate, intermediate key) of the test AK CA; `untrusted` is a look-alike."""
    slot = 13 if untrusted else 3
    root_key, ca_key = private_key("p256", slot=slot), private_key("p256", slot=slot + 1)
    root = _ca("acmeda test TPM AK Root", root_key, None, root_key, NOW)
    intermediate = _ca("acmeda test AK CA KEYID-01", ca_key, root.subject, root_key, NOW)
    return root, intermediate, ca_key


def _tpm_name(knobs: Knobs) -> list[x509.GeneralName]:
    manufacturer, model, version = knobs.ak_tpm
    kind = _ASN1Type.PrintableString if knobs.ak_san == "printable" else _ASN1Type.UTF8String
    attributes = [x509.NameAttribute(OID_MANUFACTURER, manufacturer, kind), x509.NameAttribute(OID_VERSION, version, kind)]
    if knobs.ak_san != "no-model":
        attributes.insert(1, x509.NameAttribute(OID_MODEL, model, kind))
    if knobs.ak_san == "rdn-per-attribute":
        name = x509.Name(attributes)
    else:
        name = x509.Name([x509.RelativeDistinguishedName(attributes)])
    return [x509.DirectoryName(name), *knobs.ak_other_names]


def ak_certificate(knobs: Knobs, ak_public, issuer: x509.Certificate, issuer_key) -> bytes:
    builder = (
        x509.CertificateBuilder().subject_name(knobs.ak_subject).issuer_name(issuer.subject).public_key(ak_public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(knobs.ak_not_before).not_valid_after(knobs.ak_not_after)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
    )
    if knobs.ak_ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=knobs.ak_ca, path_length=None), critical=True)
    if knobs.ak_eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(knobs.ak_eku)), critical=False)
    if knobs.ak_san != "missing":
        critical = knobs.ak_san != "not-critical"
        builder = builder.add_extension(x509.SubjectAlternativeName(_tpm_name(knobs)), critical=critical)
    if knobs.ak_aaguid:
        builder = builder.add_extension(x509.UnrecognizedExtension(OID_AAGUID, b"\x04\x10" + bytes(range(16))), critical=False)
    der = _der(builder.sign(issuer_key, hashes.SHA256()))
    if knobs.ak_version != 3 or knobs.ak_tbs is not None:
        der = resign(der, issuer_key, knobs)
    return der


def resign(der: bytes, issuer_key, knobs: Knobs) -> bytes:
    """Mutate a certificate's TBS with asn1crypto (what `cryptography` refuses to build) and sign it again."""
    cert = asn1_x509.Certificate.load(der)
    tbs = cert["tbs_certificate"]
    if knobs.ak_version != 3:
        tbs["version"] = f"v{knobs.ak_version}"
    if knobs.ak_tbs is not None:
        knobs.ak_tbs(tbs)
    body = tbs.dump()  # re-encodes what changed, keeps every other field's bytes
    return asn1_x509.Certificate({
        "tbs_certificate": asn1_x509.TbsCertificate.load(body),
        "signature_algorithm": cert["signature_algorithm"],
        "signature_value": issuer_key.sign(body, ec.ECDSA(hashes.SHA256())),
    }).dump()


def make(knobs: Knobs = Knobs(), binding: Binding | None = None, now: datetime = NOW) -> Sample:
    """A "tpm" attestation statement for `binding` (default: an ACME key authorization)."""
    binding = binding or key_authorization_binding("token", b"token.thumbprint")
    public, attested_key = public_area(knobs)
    pub_area = public.to_bytes() + knobs.pub_area_trailing
    info = cert_info(knobs, public, binding)
    ak_key = private_key(knobs.ak_key or _ALG_AK_KEY.get(knobs.alg, "rsa"), slot=2)
    signature = sign(ak_key, knobs.sign_alg or knobs.alg, info)
    if knobs.corrupt_sig:
        signature = signature[:-1] + bytes([signature[-1] ^ 1])
    root, intermediate, ca_key = pki(knobs.untrusted_root)
    certified = private_key(knobs.ak_key or _ALG_AK_KEY.get(knobs.alg, "rsa"), slot=5) if knobs.foreign_ak else ak_key
    ak_der = ak_certificate(knobs, certified.public_key(), intermediate, ca_key)
    att_stmt = {"ver": knobs.ver, "alg": knobs.alg, "x5c": [ak_der, _der(intermediate)],
                "sig": signature, "certInfo": info, "pubArea": pub_area}
    att_stmt.update(dict(knobs.add))
    if knobs.drop:
        att_stmt.pop(knobs.drop)
    trust = TrustStore(roots={"tpm": (_der(pki()[0]),)})
    return Sample(att_stmt, VerificationContext(binding, now, trust), public, attested_key, ak_der)


def mutate(**changes: Any) -> Sample:
    """`make(replace(Knobs(), **changes))`."""
    return make(replace(Knobs(), **changes))
