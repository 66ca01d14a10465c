"""When `acmeda device renew` renews (client/enroll.py): at a point of the CA's ARI window that
is stable for one certificate and spread across a fleet; without ARI at two thirds of the
lifetime; always with --force."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from client.enroll import _renewal_due, renewal_time

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
KEY = ec.generate_private_key(ec.SECP256R1())


def _certificate(serial: int, lifetime: timedelta = timedelta(hours=24)) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(KEY.public_key())
            .serial_number(serial).not_valid_before(START).not_valid_after(START + lifetime).sign(KEY, hashes.SHA256()))


class NoAri:
    directory = {"newOrder": "https://ca/acme/new-order"}


def test_renewal_time_is_inside_the_window_stable_and_spread():
    start, end = START + timedelta(hours=16), START + timedelta(hours=20)
    points = [renewal_time(start, end, _certificate(serial)) for serial in range(1, 201)]
    assert all(start <= point <= end for point in points)
    assert renewal_time(start, end, _certificate(7)) == points[6]  # same certificate, same point
    first_half = sum(point < start + (end - start) / 2 for point in points)
    assert 60 < first_half < 140  # spread over the window, not bunched at its start


@pytest.mark.parametrize(("hours", "due"), [(15, False), (16.1, True), (30, True)])
def test_without_ari_renewal_starts_at_two_thirds_of_the_lifetime(hours, due):
    cert = _certificate(5)
    renew, reason = _renewal_due(NoAri(), cert, START + timedelta(hours=hours), force=False)
    assert renew is due
    assert "no renewal information" in reason


def test_force_renews_at_any_time():
    assert _renewal_due(NoAri(), _certificate(5), START, force=True) == (True, "forced")
