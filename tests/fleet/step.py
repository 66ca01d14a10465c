"""Fleet for fmt "step": mini Yubico PIV attestation PKIs and step-format statements.

`attest(binding, ...)` returns a `StepAttestation` whose `att_stmt` is what the step CLI
sends for a YubiKey slot (`{"alg", "sig", "x5c": [slot certificate, f9 certificate]}`),
`sig` being the attested key's signature over `binding.att_to_be_signed`, with the slot's
private key (for the CSR) and the `TrustStore` a correctly configured CA would use.
Two PKI generations, as Yubico runs them:

- "piv-2016": Yubico PIV Root CA -> device f9 "Yubico PIV Attestation" -> slot certificate.
- "attestation-2024" (firmware 5.7.4+): Yubico Attestation Root 1 -> Intermediate B 1 ->
  PIV Attestation B 1 -> device f9 "YubiKey PIV Attestation" -> slot certificate; the two
  middle certificates are `TrustStore` intermediates, not sent by the client.

Knobs for every checked field:

- `yubikey`: a `YubiKey`; a field set to None omits its extension.
- `extensions`: raw extnValue bytes by OID, added or replacing; a None value removes it.
- `key_type`: "p256", "p384", "rsa2048", "ed25519" or "x25519" (cannot sign).
- `alg`: the COSE alg stated (default: the one fitting the key); `sign_alg`: the one used.
- `sig_form`: "wrapped" (the step CLI's CBOR byte string in a byte string), "raw", "double".
- `message`: what is signed (default `binding.att_to_be_signed`); `tamper_sig` flips a bit.
- `f9`: the f9 certificate's basicConstraints: "ca", "absent" (YubiKey 4 quirk), "not-ca".
- `validity`: the slot certificate's dates (default: the f9's, as a YubiKey does).
- `issuer`: a `Pki` whose issuing CA signs the f9 (`pki(name="Rogue")`: wrong root).
- `stmt`: attStmt members replaced (a None value removes the member).

`forged_under_slot` builds the attack the chain rules exist for: a genuine slot
certificate's key (which signs anything its holder asks) issuing a "slot certificate" with
another serial for a software key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Mapping

import cbor2
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, x25519
from cryptography.x509.oid import NameOID

from attestation.context import Binding, TrustStore
from attestation.formats import step as fmt
from attestation.format import key_authorization_binding

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)  # = tests/conftest.py START
_VALIDITY = {
    "piv-2016": (datetime(2016, 3, 14, tzinfo=timezone.utc), datetime(2052, 4, 17, tzinfo=timezone.utc)),
    "attestation-2024": (datetime(2024, 12, 1, tzinfo=timezone.utc), datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),
}
_F9_SUBJECT = {"piv-2016": "Yubico PIV Attestation", "attestation-2024": "YubiKey PIV Attestation"}
NATURAL_ALG = {"p256": -7, "p384": -35, "rsa2048": -257, "ed25519": -8, "x25519": -8}


@dataclass(frozen=True)
class YubiKey:
    """What the slot certificate states (None: extension omitted)."""

    serial: int | None = 20251101
    firmware: tuple[int, int, int] | None = (5, 4, 3)
    pin_policy: int | None = 2  # once
    touch_policy: int | None = 1  # never
    form_factor: int | None = 0x03  # USB-C keychain
    slot: str = "9a"


@dataclass(frozen=True)
class Pki:
    generation: str
    root: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]  # above the f9 issuer, root side first
    issuer: x509.Certificate  # signs the devices' f9 certificates
    issuer_key: Any

    def trust(self) -> TrustStore:
        chain = tuple(der(cert) for cert in (*self.intermediates, self.issuer) if cert is not self.root)
        return TrustStore(roots={fmt.FMT: (der(self.root),)}, intermediates={fmt.FMT: chain})


@dataclass(frozen=True)
class StepAttestation:
    att_stmt: dict[str, Any]
    key: Any  # the attested private key: the CSR at finalize must carry its public key
    leaf: bytes
    trust: TrustStore  # what a correctly configured CA trusts (the fleet's legitimate roots)

    def att_obj(self) -> bytes:
        return cbor2.dumps({"fmt": fmt.FMT, "attStmt": self.att_stmt})


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _cert(subject: str, public_key, issuer: x509.Name, issuer_key, validity, extensions=()) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _ca_extensions(path_length: int | None):
    usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    return [(x509.BasicConstraints(ca=True, path_length=path_length), True), (usage, True)]


@lru_cache(maxsize=None)
def pki(generation: str = "piv-2016", name: str = "Fleet") -> Pki:
    """A Yubico-like hierarchy; EC P-256 keys throughout (the real RSA ones are in the vectors)."""
    validity = _VALIDITY[generation]
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = f"{name} Yubico PIV Root CA Serial 263751" if generation == "piv-2016" else f"{name} Yubico Attestation Root 1"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, root_name)])
    root = _cert(root_name, root_key.public_key(), subject, root_key, validity, _ca_extensions(None))
    if generation == "piv-2016":
        return Pki(generation, root, (), root, root_key)
    middle_key = ec.generate_private_key(ec.SECP256R1())
    middle = _cert(f"{name} Yubico Attestation Intermediate B 1", middle_key.public_key(), root.subject, root_key, validity, _ca_extensions(2))
    issuer_key = ec.generate_private_key(ec.SECP256R1())
    issuer = _cert(f"{name} Yubico PIV Attestation B 1", issuer_key.public_key(), middle.subject, middle_key, validity, _ca_extensions(1))
    return Pki(generation, root, (middle,), issuer, issuer_key)


@lru_cache(maxsize=None)
def _f9(issuer: Pki, basic_constraints: str, firmware: tuple[int, int, int] | None) -> tuple[x509.Certificate, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    extensions = []
    if firmware is not None:
        extensions.append((x509.UnrecognizedExtension(x509.ObjectIdentifier(fmt.OID_FIRMWARE), bytes(firmware)), False))
    if basic_constraints != "absent":
        extensions.append((x509.BasicConstraints(ca=basic_constraints == "ca", path_length=0 if basic_constraints == "ca" else None), True))
    subject = _F9_SUBJECT[issuer.generation]
    return _cert(subject, key.public_key(), issuer.issuer.subject, issuer.issuer_key, _VALIDITY[issuer.generation], extensions), key


@lru_cache(maxsize=None)
def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_key(key_type: str) -> Any:
    return {
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "rsa2048": _rsa_key,
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "x25519": x25519.X25519PrivateKey.generate,
    }[key_type]()


def slot_extensions(yubikey: YubiKey) -> dict[str, bytes]:
    """extnValue contents by OID, encoded as a YubiKey does: raw octets, serial a DER INTEGER."""
    values: dict[str, bytes] = {}
    if yubikey.firmware is not None:
        values[fmt.OID_FIRMWARE] = bytes(yubikey.firmware)
    if yubikey.serial is not None:
        values[fmt.OID_SERIAL] = core.Integer(yubikey.serial).dump()
    if yubikey.pin_policy is not None and yubikey.touch_policy is not None:
        values[fmt.OID_POLICY] = bytes((yubikey.pin_policy, yubikey.touch_policy))
    if yubikey.form_factor is not None:
        values[fmt.OID_FORM_FACTOR] = bytes((yubikey.form_factor,))
    return values


def sign(key: Any, alg: int, message: bytes) -> bytes:
    """The raw COSE-alg signature of `message` (DER for ECDSA)."""
    if alg == -7:
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if alg == -35:
        return key.sign(message, ec.ECDSA(hashes.SHA384()))
    if alg == -257:
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if alg == -37:
        return key.sign(message, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH), hashes.SHA256())
    if alg == -8:
        return key.sign(message)
    raise ValueError(f"fleet cannot sign with alg {alg}")


def wrap(signature: bytes, form: str) -> bytes:
    if form == "raw":
        return signature
    if form == "wrapped":
        return cbor2.dumps(signature)
    if form == "double":
        return cbor2.dumps(cbor2.dumps(signature))
    raise ValueError(form)


def attest(
    binding: Binding,
    *,
    yubikey: YubiKey = YubiKey(),
    generation: str = "piv-2016",
    extensions: Mapping[str, bytes | None] | None = None,
    key_type: str = "p256",
    alg: int | None = None,
    sign_alg: int | None = None,
    sig_form: str = "wrapped",
    message: bytes | None = None,
    tamper_sig: bool = False,
    f9: str = "ca",
    validity: tuple[datetime, datetime] | None = None,
    issuer: Pki | None = None,
    stmt: Mapping[str, Any] | None = None,
) -> StepAttestation:
    """A step statement for `binding` (see the module docstring for the knobs)."""
    issuer = issuer or pki(generation)
    f9_cert, f9_key = _f9(issuer, f9, yubikey.firmware)
    key = new_key(key_type)
    values = slot_extensions(yubikey)
    for oid, value in (extensions or {}).items():
        if value is None:
            values.pop(oid, None)
        else:
            values[oid] = value
    leaf = _cert(
        f"YubiKey PIV Attestation {yubikey.slot}",
        key.public_key(),
        f9_cert.subject,
        f9_key,
        validity or _VALIDITY[issuer.generation],
        [(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), False) for oid, value in values.items()],
    )
    alg = NATURAL_ALG[key_type] if alg is None else alg
    signature = _signature(key, key_type, sign_alg if sign_alg is not None else alg, message, binding, tamper_sig)
    att_stmt: dict[str, Any] = {"alg": alg, "sig": wrap(signature, sig_form), "x5c": [der(leaf), der(f9_cert)]}
    for member, value in (stmt or {}).items():
        if value is None:
            att_stmt.pop(member, None)
        else:
            att_stmt[member] = value
    return StepAttestation(att_stmt=att_stmt, key=key, leaf=der(leaf), trust=pki(issuer.generation).trust())


def for_acme(token: str, key_authorization: bytes, **knobs: Any) -> StepAttestation:
    """`attest` bound the way the CA binds it (the key authorization)."""
    return attest(key_authorization_binding(token, key_authorization), **knobs)


def _signature(key, key_type: str, alg: int, message: bytes | None, binding: Binding, tamper: bool) -> bytes:
    if key_type == "x25519":
        return bytes(64)  # an X25519 key cannot sign; the verifier must refuse it before looking
    signature = bytearray(sign(key, alg, binding.att_to_be_signed if message is None else message))
    if tamper:
        signature[-1] ^= 0x01
    return bytes(signature)


def forged_under_slot(binding: Binding, *, victim_serial: int = 11111111, f9: str = "ca") -> StepAttestation:
    """x5c = [forged leaf, genuine slot certificate, f9]: the forged leaf is signed by the slot key."""
    genuine = attest(binding, f9=f9)
    slot = x509.load_der_x509_certificate(genuine.leaf)
    forged_key = ec.generate_private_key(ec.SECP256R1())
    forged = _cert(
        "YubiKey PIV Attestation 9a",
        forged_key.public_key(),
        slot.subject,
        genuine.key,
        _VALIDITY["piv-2016"],
        [(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value), False)
         for oid, value in slot_extensions(YubiKey(serial=victim_serial)).items()],
    )
    att_stmt = {"alg": -7, "sig": wrap(sign(forged_key, -7, binding.att_to_be_signed), "wrapped"),
                "x5c": [der(forged), genuine.leaf, genuine.att_stmt["x5c"][1]]}
    return StepAttestation(att_stmt=att_stmt, key=forged_key, leaf=der(forged), trust=genuine.trust)
