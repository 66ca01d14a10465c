"""Certificate building and signing: plain values in, a signed certificate out.

The issuing core of the CA. It knows nothing of ACME messages or HTTP: the caller (the
finalize handler) has already checked the CSR and hands over a public key, the validated
identifiers, a profile, a serial and a notBefore. Time and randomness come from the caller.

Contents of every leaf: basicConstraints CA:FALSE (critical), keyUsage digitalSignature
(critical; plus keyEncipherment for RSA keys on server certificates, which RSA key
exchange needs), the profile's extendedKeyUsage, SKI from the key, AKI from the
intermediate's SKI. Server certificates carry the first identifier as subject CN;
device certificates have an empty subject and so a critical SAN (RFC 5280 §4.2.1.6).
SAN encodings, and the text forms of the device identifiers they come from, live in `ca.san`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

from ca.identifiers import Identifier
from ca.keys import PublicKey, signature_hash_for
from ca.problems import Malformed, RejectedIdentifier, ServerInternal
from ca.san import OtherNameError, encode_general_name

if TYPE_CHECKING:
    from ca.pki import CertificateAuthority

SERIAL_BITS = 128
_MAX_COMMON_NAME = 64  # ub-common-name, RFC 5280 Appendix A


@dataclass(frozen=True)
class Profile:
    """What kind of certificate to issue.

    `backdate` is how far before "now" the caller should set notBefore to absorb client
    clock skew; the issuer itself never moves notBefore.
    """

    name: str
    lifetime: timedelta
    extended_key_usages: tuple[ObjectIdentifier, ...]
    backdate: timedelta = timedelta(minutes=1)


SERVER_PROFILE = Profile("server", timedelta(days=7), (ExtendedKeyUsageOID.SERVER_AUTH,))
DEVICE_PROFILE = Profile("device", timedelta(hours=24), (ExtendedKeyUsageOID.CLIENT_AUTH,))
DEFAULT_PROFILES: Mapping[str, Profile] = MappingProxyType(
    {SERVER_PROFILE.name: SERVER_PROFILE, DEVICE_PROFILE.name: DEVICE_PROFILE}
)


def is_device_order(identifiers: Collection[Identifier]) -> bool:
    """True for device identifiers only, False for dns/ip only; an order may not mix them."""
    if not identifiers:
        raise Malformed("an order needs at least one identifier")
    kinds = {identifier.type.is_device for identifier in identifiers}
    if len(kinds) > 1:
        raise RejectedIdentifier(
            "an order may not mix device identifiers (permanent-identifier, hardware-module) "
            "with dns/ip identifiers: " + ", ".join(sorted(str(i) for i in identifiers))
        )
    return kinds.pop()


def profile_for(identifiers: Collection[Identifier], profiles: Mapping[str, Profile] = DEFAULT_PROFILES) -> Profile:
    name = "device" if is_device_order(identifiers) else "server"
    try:
        return profiles[name]
    except KeyError:
        raise ServerInternal(f"no {name!r} certificate profile is configured") from None


def new_serial(randbits: Callable[[int], int] = secrets.randbits) -> int:
    """A serial of 128 random bits: positive, non-zero, at most 17 DER octets (RFC 5280 allows 20)."""
    for _ in range(8):
        serial = randbits(SERIAL_BITS)
        if not 0 <= serial < 1 << SERIAL_BITS:
            raise ValueError(f"randomness source returned {serial}, outside {SERIAL_BITS} bits")
        if serial:
            return serial
    # Eight zeros in a row from a 128-bit source means the source is broken, not unlucky.
    raise ValueError("randomness source keeps returning 0")


@dataclass(frozen=True)
class ExtraExtension:
    """An extension the caller adds (posture, delegation); the issuer owns the standard ones."""

    value: x509.ExtensionType
    critical: bool = False


_ISSUER_OWNED = frozenset(
    {
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)


@dataclass(frozen=True)
class IssuanceRequest:
    public_key: PublicKey
    identifiers: tuple[Identifier, ...]
    profile: Profile
    serial: int
    not_before: datetime
    extra_extensions: tuple[ExtraExtension, ...] = ()
    subject_common_name: str | None = None
    # Privacy-preserving device certificates (draft-ietf-acme-device-attest §7.4): no device
    # identifier in the SAN; the subject names the device by this pseudonym instead.
    device_pseudonym: str | None = None

    def __post_init__(self) -> None:
        # Callers may hand over lists; freeze them so the request is a value.
        object.__setattr__(self, "identifiers", tuple(self.identifiers))
        object.__setattr__(self, "extra_extensions", tuple(self.extra_extensions))
        if self.not_before.tzinfo is None:
            raise ValueError("not_before must be timezone-aware")
        if not 0 < self.serial < 1 << 159:
            raise ValueError("serial must be positive and fit in 20 DER octets (RFC 5280 §4.1.2.2)")
        for extra in self.extra_extensions:
            if extra.value.oid in _ISSUER_OWNED:
                raise ValueError(f"extension {extra.value.oid.dotted_string} is set by the issuer, not the caller")


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate
    der: bytes
    serial: int
    not_before: datetime
    not_after: datetime
    pem_chain: str = field(repr=False)  # leaf then intermediate: application/pem-certificate-chain


class Issuer:
    """Signs leaf certificates with the intermediate CA."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self._ca = ca
        self._hash = signature_hash_for(ca.intermediate_key)
        # What every certificate takes from the intermediate, read once.
        self._issuer_name = ca.intermediate.subject
        self._ca_end = ca.intermediate.not_valid_after_utc
        self._aki = self._authority_key_identifier()

    def issue(self, request: IssuanceRequest) -> IssuedCertificate:
        device = is_device_order(request.identifiers)
        not_after = self._not_after(request)
        subject = _subject(request, device)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._issuer_name)
            .public_key(request.public_key)
            .serial_number(request.serial)
            .not_valid_before(request.not_before)
            .not_valid_after(not_after)
        )
        for extension, critical in self._extensions(request, device, empty_subject=not subject,
                                                    with_names=not (device and request.device_pseudonym)):
            builder = builder.add_extension(extension, critical=critical)
        certificate = builder.sign(self._ca.intermediate_key, self._hash)
        return IssuedCertificate(
            certificate=certificate,
            der=certificate.public_bytes(serialization.Encoding.DER),
            serial=request.serial,
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
            pem_chain=(certificate.public_bytes(serialization.Encoding.PEM) + self._ca.intermediate_pem).decode(),
        )

    def _not_after(self, request: IssuanceRequest) -> datetime:
        # A leaf must not outlive the certificate that vouches for it.
        ca_end = self._ca_end
        not_after = min(request.not_before + request.profile.lifetime, ca_end)
        if not_after <= request.not_before:
            raise ServerInternal(f"the intermediate CA certificate expires at {ca_end.isoformat()}; re-issue it")
        return not_after

    def _extensions(
        self, request: IssuanceRequest, device: bool, *, empty_subject: bool, with_names: bool = True
    ) -> list[tuple[x509.ExtensionType, bool]]:
        try:
            names = [encode_general_name(identifier) for identifier in request.identifiers] if with_names else []
        except OtherNameError as exc:
            # The draft (§3.1, §4.1) makes a value outside its ABNF a "malformed" identifier.
            raise Malformed(str(exc)) from None
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(request.public_key, server=not device), True),
            (x509.SubjectKeyIdentifier.from_public_key(request.public_key), False),
            (self._aki, False),
        ]
        if names:
            extensions.insert(2, (x509.SubjectAlternativeName(names), empty_subject))
        if request.profile.extended_key_usages:
            extensions.append((x509.ExtendedKeyUsage(list(request.profile.extended_key_usages)), False))
        extensions.extend((extra.value, extra.critical) for extra in request.extra_extensions)
        return extensions

    def _authority_key_identifier(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self._ca.intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca.intermediate_key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _subject(request: IssuanceRequest, device: bool) -> x509.Name:
    if device:
        if request.subject_common_name is not None:
            raise ValueError("device certificates have an empty subject; subject_common_name must be None")
        if request.device_pseudonym:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, request.device_pseudonym)])
        return x509.Name([])
    common_name = request.subject_common_name
    if common_name is None:
        common_name = next((i.value for i in request.identifiers if len(i.value) <= _MAX_COMMON_NAME), None)
    elif common_name not in {i.value for i in request.identifiers}:
        raise RejectedIdentifier(f"subject common name {common_name!r} is not one of the identifiers")
    elif len(common_name) > _MAX_COMMON_NAME:
        raise RejectedIdentifier(f"subject common name is longer than {_MAX_COMMON_NAME} characters")
    if common_name is None:
        # No identifier fits in a CN: the SAN alone names the subject (and becomes critical).
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(public_key: PublicKey, *, server: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=server and isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
