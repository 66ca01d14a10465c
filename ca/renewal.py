"""ACME Renewal Information (RFC 9773): certificate identifiers and suggested renewal windows.

A certID is base64url(AKI keyIdentifier) "." base64url(serial number DER content octets).
Short-lived certificates need this most: the window opens at two thirds of the lifetime
and closes at five sixths, and a revoked certificate's window is already open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

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
    if not octets or octets[0] & 0x80:
        raise Malformed(f"{text!r} does not encode a positive serial number")
    return serial_hex(int.from_bytes(octets, "big"))


def authority_key_id_of(cert_id_text: str) -> bytes:
    return b64url_decode(cert_id_text.partition(".")[0])


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
