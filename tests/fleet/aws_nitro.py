"""Fleet for fmt "aws-nitro": a stand-in AWS Nitro PKI and the attestation documents an NSM returns.

`attest(binding, ...)` returns a `NitroAttestation` whose `att_stmt` is `{"attDoc": ...}`,
an untagged COSE_Sign1 (ES384) signed by a per-enclave P-384 leaf, with the enclave's key
(for the CSR) and the `TrustStore` a correctly configured CA would use. The PKI is a
generated test root -> intermediate -> leaf standing in for AWS's root -> regional ->
zonal -> instance -> enclave chain (the real one is in ../shared/vectors/aws-nitro).
By default the document is what a production enclave sends for an ACME challenge: nonce =
`binding.challenge` (SHA-256 of the key authorization), public_key = the enclave key's SPKI,
timestamp = `now`, measured PCRs 0-4 with PCR4 the instance id's measurement.

Knobs for every checked field (`REMOVE` deletes a map entry or array member):

- document: `module_id`, `digest`, `timestamp` (a datetime, or raw ms via `fields`),
  `pcrs` (registers replaced or removed), `debug` (PCR0-2 zero), `nonce` (default
  `binding.challenge`), `public_key` (default the SPKI of a `key_type` key: "p256",
  "p384", "rsa2048", "ed25519", "x25519"), `user_data` (default null, as a real NSM
  writes it), `fields` (any payload member replaced, or null, or removed), `payload` (the
  signed payload bytes as given);
- COSE: `alg` (protected header), `protected` (header bytes as given), `unprotected`,
  `tag` (None, 18, or another tag number), `members` (array members replaced or removed
  after signing), `tamper_payload` (payload fields changed after signing), `tamper_sig`,
  `signer` ("leaf", "other": another P-384 key), `der_sig`
  (DER instead of r || s), `leaf_curve` ("p384", "p256");
- certificates: `leaf_validity`, `leaf_ca`, `leaf_key_usage` ("signature", "cert-sign"),
  `issuer` (a `Pki`; `pki("Rogue")` is an untrusted one), `cabundle_root` (DER placed in
  cabundle[0] instead of the issuer's root), `cabundle` (the bundle as given);
- statement: `stmt` (attStmt members replaced or removed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Mapping

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from attestation.context import Binding, TrustStore
from attestation.formats import aws_nitro as fmt

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)  # = tests/conftest.py START
INSTANCE_ID = "i-0f1ee7000000000a1"
MODULE_ID = f"{INSTANCE_ID}-enc019a3f0c5d7e8b21"
IMAGE = hashlib.sha384(b"fleet enclave image").digest()
REMOVE = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_CA_VALIDITY = (datetime(2019, 10, 28, tzinfo=timezone.utc), datetime(2049, 10, 28, tzinfo=timezone.utc))


def measure(data: bytes) -> bytes:
    """A PCR extended once from zero with `data`, as the NSM measures PCR3 and PCR4."""
    return hashlib.sha384(bytes(48) + data).digest()


def pcrs_for(instance_id: str = INSTANCE_ID, *, debug: bool = False) -> dict[int, bytes]:
    """The 16 registers a real NSM reports: image PCR0-2 (zero in debug mode), role, instance."""
    registers = {index: bytes(48) for index in range(16)}
    if not debug:
        registers[0] = IMAGE
        registers[1] = hashlib.sha384(b"fleet kernel").digest()
        registers[2] = hashlib.sha384(b"fleet application").digest()
    registers[3] = measure(b"arn:aws:iam::123456789012:role/fleet-enclave")
    registers[4] = measure(instance_id.encode())
    return registers


@dataclass(frozen=True)
class Pki:
    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: Any

    def trust(self) -> TrustStore:
        return TrustStore(roots={fmt.FMT: (der(self.root),)})


@dataclass(frozen=True)
class NitroAttestation:
    att_stmt: dict[str, Any]
    att_doc: bytes
    key: Any  # the enclave's private key: the CSR at finalize must carry its public key
    document: dict[str, Any]  # the payload fields as signed
    trust: TrustStore  # what a correctly configured CA trusts (the fleet's legitimate root)

    def att_obj(self) -> bytes:
        return cbor2.dumps({"fmt": fmt.FMT, "attStmt": self.att_stmt})


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def spki(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "AWS"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(subject: x509.Name, public_key, issuer: x509.Name, issuer_key, validity, extensions) -> x509.Certificate:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(validity[0]).not_valid_after(validity[1]))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA384())


def _usage(kind: str) -> x509.KeyUsage:
    if kind == "cert-sign":
        return x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    return x509.KeyUsage(True, True, False, False, False, False, False, False, False)


def _ca(path_length: int | None):
    return [(x509.BasicConstraints(ca=True, path_length=path_length), True), (_usage("cert-sign"), True)]


@lru_cache(maxsize=None)
def pki(name: str = "Fleet") -> Pki:
    """A root and a regional intermediate on P-384, as AWS's are."""
    root_key = ec.generate_private_key(ec.SECP384R1())
    root_name = _name(f"{name.lower()}.nitro-enclaves")
    root = _cert(root_name, root_key.public_key(), root_name, root_key, _CA_VALIDITY, _ca(None))
    key = ec.generate_private_key(ec.SECP384R1())
    intermediate = _cert(_name(f"{name.lower()}.us-east-1.aws.nitro-enclaves"), key.public_key(), root_name, root_key,
                         _CA_VALIDITY, _ca(1))
    return Pki(root, intermediate, key)


def new_key(key_type: str) -> Any:
    return {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "rsa2048": lambda: _rsa_key(),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "x25519": x25519.X25519PrivateKey.generate,
    }[key_type]()


@lru_cache(maxsize=None)
def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _leaf(issuer: Pki, module_id: str, curve: str, validity, ca: bool, key_usage: str) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP384R1() if curve == "p384" else ec.SECP256R1())
    extensions = [(x509.BasicConstraints(ca=ca, path_length=None), True), (_usage(key_usage), False)]
    leaf = _cert(_name(f"{module_id}.us-east-1.aws"), key.public_key(), issuer.intermediate.subject, issuer.intermediate_key,
                 validity, extensions)
    return leaf, key


def _apply(target: dict | list, changes: Mapping[Any, Any] | None) -> None:
    for key, value in (changes or {}).items():
        if value is REMOVE:
            del target[key]
        else:
            target[key] = value


def _sign(key: Any, to_be_signed: bytes, *, der_sig: bool, tamper: bool) -> bytes:
    size = (key.curve.key_size + 7) // 8
    signature = key.sign(to_be_signed, ec.ECDSA(hashes.SHA384()))
    if not der_sig:
        r, s = decode_dss_signature(signature)
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if tamper:
        signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
    return signature


def attest(
    binding: Binding,
    *,
    now: datetime = NOW,
    timestamp: datetime | None = None,
    module_id: str = MODULE_ID,
    digest: str = "SHA384",
    debug: bool = False,
    pcrs: Mapping[int, Any] | None = None,
    nonce: Any = None,
    key_type: str = "p256",
    public_key: Any = None,
    user_data: Any = None,
    fields: Mapping[str, Any] | None = None,
    payload: bytes | None = None,
    alg: Any = fmt.ALG_ES384,
    protected: bytes | None = None,
    unprotected: Mapping[Any, Any] | None = None,
    tag: int | None = None,
    members: Mapping[int, Any] | None = None,
    tamper_payload: Mapping[str, Any] | None = None,
    tamper_sig: bool = False,
    signer: str = "leaf",
    der_sig: bool = False,
    leaf_curve: str = "p384",
    leaf_validity: tuple[datetime, datetime] | None = None,
    leaf_ca: bool = False,
    leaf_key_usage: str = "signature",
    issuer: Pki | None = None,
    cabundle_root: bytes | None = None,
    cabundle: list[Any] | None = None,
    stmt: Mapping[str, Any] | None = None,
) -> NitroAttestation:
    """An attestation document for `binding` (see the module docstring for the knobs)."""
    issuer = issuer or pki()
    key = new_key(key_type)
    leaf, leaf_key = _leaf(issuer, module_id, leaf_curve, leaf_validity or (now - timedelta(minutes=5), now + timedelta(hours=3)),
                           leaf_ca, leaf_key_usage)
    registers = pcrs_for(debug=debug)
    _apply(registers, pcrs)
    moment = timestamp or now
    document: dict[str, Any] = {
        "module_id": module_id,
        "digest": digest,
        "timestamp": (moment - _EPOCH) // timedelta(milliseconds=1),
        "pcrs": registers,
        "certificate": der(leaf),
        "cabundle": cabundle if cabundle is not None else [cabundle_root or der(issuer.root), der(issuer.intermediate)],
        "public_key": spki(key) if public_key is None else public_key,
        "user_data": user_data,  # a real NSM writes null for an absent optional field
        "nonce": binding.challenge if nonce is None else nonce,
    }
    _apply(document, {name: REMOVE for name, value in document.items() if value is REMOVE})
    _apply(document, fields)
    body = cbor2.dumps(document) if payload is None else payload
    header = cbor2.dumps({1: alg}) if protected is None else protected
    signing_key = leaf_key if signer == "leaf" else ec.generate_private_key(ec.SECP384R1())
    signature = _sign(signing_key, cbor2.dumps(["Signature1", header, b"", body]), der_sig=der_sig, tamper=tamper_sig)
    if tamper_payload:
        body = cbor2.dumps({**document, **tamper_payload})  # changed after signing
    sign1: list[Any] = [header, dict(unprotected or {}), body, signature]
    for index in sorted((members or {}), reverse=True):
        _apply(sign1, {index: members[index]})
    att_doc = cbor2.dumps(sign1 if tag is None else cbor2.CBORTag(tag, sign1))
    att_stmt: dict[str, Any] = {"attDoc": att_doc}
    _apply(att_stmt, stmt)
    return NitroAttestation(att_stmt=att_stmt, att_doc=att_doc, key=key, document=document, trust=pki().trust())


def for_acme(token: str, key_authorization: bytes, **knobs: Any) -> NitroAttestation:
    """`attest` bound the way the CA binds it (nonce = SHA-256 of the key authorization)."""
    return attest(fmt.acme_binding(token, key_authorization), **knobs)
