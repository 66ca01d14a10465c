"""ACME Renewal Information (RFC 9773): certificate identifiers and suggested renewal windows.

A certID is base64url(AKI keyIdentifier) "." base64url(serial number DER content octets).
Short-lived certificates need this most: the window opens at two thirds of the lifetime
and closes at five sixths, and a revoked certificate's window is already open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509

from ca.nonces import b64url, b64url_decode
from ca.problems import Malformed


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def _serial_octets(serial: int) -> bytes:
    """DER INTEGER content octets of a positive serial (a leading zero when the top bit is set)."""
    length = serial.bit_length() // 8 + 1
    return serial.to_bytes(length, "big")


def cert_id(authority_key_id: bytes, serial: int) -> str:
    return f"{b64url(authority_key_id)}.{b64url(_serial_octets(serial))}"


def parse_cert_id(text: str) -> str:
    """Return the serial (lowercase hex) a certID names; `malformed` if it is not a certID."""
    aki_part, dot, serial_part = text.partition(".")
    if not dot or not aki_part or not serial_part:
        raise Malformed(f"{text!r} is not an ARI certificate identifier (keyIdentifier.serial)")
    try:
        b64url_decode(aki_part)
        octets = b64url_decode(serial_part)
    except ValueError:
        raise Malformed(f"{text!r} is not base64url in both parts") from None
    serial = int.from_bytes(octets, "big")
    if not octets or octets[0] & 0x80 or serial == 0:
        raise Malformed(f"{text!r} does not encode a positive serial number")
    # One certificate, one certID: padded forms (00 00 ...) would name it under many spellings.
    if octets != _serial_octets(serial):
        raise Malformed(f"{text!r} does not encode its serial number as minimal DER INTEGER octets")
    return serial_hex(serial)


def authority_key_id_of(cert_id_text: str) -> bytes:
    return b64url_decode(cert_id_text.partition(".")[0])


def parse_own_cert_id(text: str, issuer_key_id: bytes) -> str:
    """`parse_cert_id`, and the certID must name this CA's issuer: both halves identify the certificate."""
    serial = parse_cert_id(text)
    if authority_key_id_of(text) != issuer_key_id:
        raise Malformed(f"{text!r} names a certificate of another issuer: its keyIdentifier is not this CA's",
                        status=404)
    return serial


def issuer_key_id(intermediate: x509.Certificate) -> bytes:
    """The keyIdentifier `ca.issuance.Issuer` writes into its leaves' authority key identifier."""
    try:
        return intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(intermediate.public_key()).digest


@dataclass(frozen=True)
class RenewalWindow:
    start: datetime
    end: datetime
    retry_after: timedelta


def suggested_window(not_before: datetime, not_after: datetime, revoked: bool, now: datetime) -> RenewalWindow:
    lifetime = not_after - not_before
    retry = max(timedelta(minutes=5), min(timedelta(hours=6), lifetime / 12))
    if revoked:
        return RenewalWindow(now - timedelta(minutes=1), now, retry)
    return RenewalWindow(not_before + lifetime * 2 / 3, not_before + lifetime * 5 / 6, retry)
