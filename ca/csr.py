"""Finalize-time CSR checks (RFC 8555 §7.4; draft-ietf-acme-device-attest §3.2, §4.2).

`check_csr` either returns the parsed CSR or raises `BadCSR` whose detail names the
check that failed: DER, signature, key policy, account key reuse, identifier set.

Identifier rules differ by order kind. For dns/ip orders the CSR's dNSName and iPAddress
SANs plus its subject CN must be exactly the order's identifiers. For device orders the
CSR may carry no SAN at all (the draft's privacy mode; Apple devices send a subject taken
from the MDM profile, which is ignored), but any SAN it carries must be one of the order's
device identifiers, and it must carry no dNSName or iPAddress.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ca.identifiers import Identifier, IdentifierType
from ca.issuance import is_device_order
from ca.keys import PublicKey, public_key_der
from ca.problems import BadCSR
from ca.san import OtherNameError, decode_other_name

_RSA_FLOOR, _RSA_CEILING = 2048, 8192


@dataclass(frozen=True)
class KeyPolicy:
    """Which certificate keys the CA accepts. Curves by their cryptography name."""

    ecdsa_curves: frozenset[str] = frozenset({"secp256r1", "secp384r1"})
    rsa_min_bits: int = 2048
    rsa_max_bits: int = 4096

    def __post_init__(self) -> None:
        if not _RSA_FLOOR <= self.rsa_min_bits <= self.rsa_max_bits <= _RSA_CEILING:
            raise ValueError(f"RSA key sizes must satisfy {_RSA_FLOOR} <= min <= max <= {_RSA_CEILING}")

    def check(self, public_key: PublicKey) -> None:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            curve = public_key.curve.name
            if curve not in self.ecdsa_curves:
                allowed = ", ".join(sorted(self.ecdsa_curves)) or "none"
                raise BadCSR(f"ECDSA key on curve {curve} is not allowed; allowed curves: {allowed}")
        elif isinstance(public_key, rsa.RSAPublicKey):
            bits = public_key.key_size
            if not self.rsa_min_bits <= bits <= self.rsa_max_bits:
                raise BadCSR(
                    f"RSA key of {bits} bits is not allowed; allowed: {self.rsa_min_bits} to {self.rsa_max_bits} bits"
                )
        else:
            raise BadCSR(f"key type {type(public_key).__name__} is not allowed; only ECDSA and RSA keys are")


def check_csr(
    csr_der: bytes,
    *,
    identifiers: Collection[Identifier],
    account_public_key: PublicKey,
    key_policy: KeyPolicy,
) -> x509.CertificateSigningRequest:
    csr = _parse(csr_der)
    public_key = _public_key(csr)
    _check_signature(csr)
    key_policy.check(public_key)
    if public_key_der(public_key) == public_key_der(account_public_key):
        raise BadCSR("CSR public key is the ACME account key; the certificate needs a key of its own")
    names = _subject_alternative_names(csr)
    if is_device_order(identifiers):
        _check_device_names(names, set(identifiers))
    else:
        _check_server_names(names, _common_names(csr), set(identifiers))
    return csr


def _parse(csr_der: bytes) -> x509.CertificateSigningRequest:
    try:
        return x509.load_der_x509_csr(csr_der)
    except ValueError:
        raise BadCSR("CSR is not a parseable DER PKCS#10 certification request") from None
    except x509.InvalidVersion as exc:  # not a ValueError: it must be caught by name
        raise BadCSR(f"CSR version field is {exc.parsed_version}, not 0 (v1, the only PKCS#10 version)") from None


def _public_key(csr: x509.CertificateSigningRequest) -> PublicKey:
    try:
        return csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadCSR(f"CSR public key cannot be read: {exc}") from None


def _check_signature(csr: x509.CertificateSigningRequest) -> None:
    try:
        valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadCSR(f"CSR signature cannot be checked: {exc}") from None
    if not valid:
        raise BadCSR("CSR signature does not verify with the CSR's public key")


def _subject_alternative_names(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise BadCSR(f"CSR extension request cannot be parsed: {exc}") from None
    return list(san)


def _common_names(csr: x509.CertificateSigningRequest) -> list[str]:
    try:
        attributes = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError as exc:
        raise BadCSR(f"CSR subject cannot be parsed: {exc}") from None
    return [str(attribute.value) for attribute in attributes]


def _check_server_names(names: list[x509.GeneralName], common_names: list[str], wanted: set[Identifier]) -> None:
    requested: set[Identifier] = set()
    unsupported: list[str] = []
    for name in names:
        identifier = _server_identifier(name)
        if identifier is None:
            unsupported.append(_describe(name))
        else:
            requested.add(identifier)
    if unsupported:
        raise BadCSR("CSR requests names of a type this order cannot cover: " + ", ".join(unsupported))
    for common_name in common_names:
        identifier = _identifier_from_text(common_name)
        if identifier not in wanted:
            raise BadCSR(f"CSR subject common name {common_name!r} is not one of the order's identifiers")
        requested.add(identifier)
    _require_equal(requested, wanted)


def _server_identifier(name: x509.GeneralName) -> Identifier | None:
    if isinstance(name, x509.DNSName):
        return Identifier(IdentifierType.DNS, name.value.lower())
    if isinstance(name, x509.IPAddress):
        return Identifier(IdentifierType.IP, str(name.value))
    return None


def _identifier_from_text(common_name: str) -> Identifier:
    try:
        return Identifier(IdentifierType.IP, str(ipaddress.ip_address(common_name)))
    except ValueError:
        return Identifier(IdentifierType.DNS, common_name.lower())


def _require_equal(requested: set[Identifier], wanted: set[Identifier]) -> None:
    missing, extra = sorted(wanted - requested), sorted(requested - wanted)
    problems = []
    if missing:
        problems.append("missing " + ", ".join(map(str, missing)))
    if extra:
        problems.append("not in the order " + ", ".join(map(str, extra)))
    if problems:
        raise BadCSR("CSR names do not match the order's identifiers: " + "; ".join(problems))


def _check_device_names(names: list[x509.GeneralName], wanted: set[Identifier]) -> None:
    network = [_describe(n) for n in names if isinstance(n, (x509.DNSName, x509.IPAddress))]
    if network:
        raise BadCSR("a device CSR must not carry dNSName or iPAddress SANs: " + ", ".join(network))
    for name in names:
        if not isinstance(name, x509.OtherName):
            raise BadCSR(f"CSR SAN {_describe(name)} is not one of the order's identifiers")
        try:
            identifier = decode_other_name(name)
        except OtherNameError as exc:
            raise BadCSR(f"CSR SAN cannot be read: {exc}") from None
        if identifier not in wanted:
            raise BadCSR(f"CSR SAN {identifier} is not one of the order's identifiers")


def _describe(name: x509.GeneralName) -> str:
    if isinstance(name, x509.OtherName):
        return f"otherName {name.type_id.dotted_string}"
    if isinstance(name, x509.DirectoryName):
        return f"directoryName {name.value.rfc4514_string()}"
    return f"{type(name).__name__} {name.value}"
