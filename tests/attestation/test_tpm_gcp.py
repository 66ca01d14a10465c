"""The "tpm" format on Google Compute Engine vTPMs: the real GCE AK certificates chain to the
bundled Google roots and their instance identity extension decodes; fleet statements with
Google-style AK certificates verify under the Google Cloud profile, one row per rejection."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.assigners import GCE_INSTANCE_ID
from attestation.context import TrustStore
from attestation.errors import (
    AttestationError, CertificateRevoked, ChainExpired, ChallengeMismatch, InvalidSignature, MalformedStatement,
    RequirementFailed, UntrustedChain,
)
from attestation.evidence import Evidence, PermanentIdentifier, TrustLevel
from attestation.formats import tpm
from attestation.tpm import gce
from attestation.tpm.constants import ObjectAttr
from attestation.x509chain import extension_values, parse_certificate, verify_chain
from tests import vectors
from tests.fleet import tpm as tpm_fleet, tpm_gcp as fleet, tpm_quote as quote_fleet

PROJECT, NUMBER, ZONE = "google.com:wuale-gcp-testing", 117478743145, "us-central1-a"
AK_CERTS = {  # path: (instance id, instance name, SAN model or None), MANIFEST §3b / §3c
    "tpm-ek/gce-pca-tpm-ecc-sign-cert.der": (218557372616137117, "cs-debug-pca", None),
    "tpm-ek/gce-uca-tpm-rsa-sign-cert.der": (5780156274199835632, "cs-debug", "vTPM"),
    "tpm-ek/gce-uca-tpm-ecc-sign-cert.der": (5780156274199835632, "cs-debug", "vTPM"),
    "tpm-quote/go-tpm-tools-gce-cos-85-nonce9009.ak-cert.der": (6797026933021542085, "cos-test", "vTPM"),
}
EK_CERTS = ["tpm-ek/gce-pca-tpm-rsa-enc-cert.der", "tpm-ek/gce-pca-tpm-ecc-enc-cert.der", "tpm-ek/gce-uca-tpm-rsa-enc-cert.der"]
WHEN = datetime(2023, 1, 1, tzinfo=timezone.utc)  # inside every GCE certificate's validity (2022-11-23 .. 2051)


def real_path(path: str):
    return verify_chain([vectors.read(path)], tpm.default_gcp_roots(), WHEN, intermediates=tpm.default_gcp_intermediates())


# --- bundled roots and real certificates --------------------------------------------------------


def test_bundled_google_roots_are_the_vector_roots():
    def ders(*names):
        return sorted(d for n in names for d in vectors.pem_chain(f"roots/gcp/{n}.pem"))

    assert sorted(tpm.default_gcp_roots()) == ders("gce-tpm-ek-root-1", "gce-gcp-ek-ak-ca-root")
    assert sorted(tpm.default_gcp_intermediates()) == ders("gce-tpm-ek-intermediate-2", "gce-tpm-ek-intermediate-3",
                                                           "gce-gcp-ek-ak-ca-intermediate-v3")
    assert not set(tpm.default_gcp_roots()) & set(tpm.default_roots())


@pytest.mark.parametrize("path", AK_CERTS, ids=lambda p: p.split("/")[-1])
def test_real_gce_ak_certificate_chains_and_names_its_vm(path):
    chain = real_path(path)
    assert chain[-1].dump() in tpm.default_gcp_roots() and len(chain) == 3
    ak = gce.check_ak_profile(chain[0])
    instance_id, name, model = AK_CERTS[path]
    assert (ak.instance.project_id, ak.instance.project_number, ak.instance.zone) == (PROJECT, NUMBER, ZONE)
    assert (ak.instance.instance_id, ak.instance.instance_name) == (instance_id, name)
    assert ak.instance.is_production is True and ak.instance.security_version == 0
    assert (ak.san.model if ak.san else None) == model
    if model is not None:
        assert ak.san.vendor == "GOOG" and ak.san.version == "id:20160511"


def test_real_ek_ak_ca_certificate_subject_names_the_same_vm():
    cert = parse_certificate(vectors.read("tpm-ek/gce-pca-tpm-ecc-sign-cert.der"))
    subject = cert.subject.native
    assert subject["common_name"] == "218557372616137117" == str(gce.check_ak_profile(cert).instance.instance_id)
    assert (subject["organizational_unit_name"], subject["locality_name"]) == (PROJECT, ZONE)


@pytest.mark.parametrize("path", EK_CERTS, ids=lambda p: p.split("/")[-1])
def test_real_gce_ek_certificate_is_not_an_ak(path):
    """Same CA, same instance extension: keyUsage is what keeps an EK certificate out."""
    chain = real_path(path)
    assert gce.OID_GCE_INSTANCE in extension_values(chain[0])
    with pytest.raises(RequirementFailed) as info:
        gce.check_ak_profile(chain[0])
    assert info.value.check == "tpm-gce-key-usage"


def test_real_gce_ak_is_a_restricted_signing_key():
    """The premise of the Google profile: Google's AK signs only TPM-generated structures."""
    real = quote_fleet.gce_cos()
    required = ObjectAttr.RESTRICTED | ObjectAttr.SIGN_ENCRYPT | ObjectAttr.FIXED_TPM | ObjectAttr.SENSITIVE_DATA_ORIGIN
    assert real.ak_public.object_attributes & required == required
    cert = parse_certificate(vectors.read("tpm-quote/go-tpm-tools-gce-cos-85-nonce9009.ak-cert.der"))
    assert cert.public_key.dump() == real.ak_public.spki()


# --- the fleet: acceptance -----------------------------------------------------------------------

ACCEPT = {
    "EK/AK CA style": {},
    "legacy style": {"style": "legacy"},
    "ES256 AK": {"tpm": tpm_fleet.Knobs(key="p256", alg=-7)},
    "intermediate sent": {"send_intermediate": True},
    "security properties as go-tpm-tools writes them": {"security": {"undocumented_2": None, "undocumented_3": None,
                                                                      "undocumented_4": None, "undocumented_5": None}},
    "no security version": {"security": {"security_version": None}},
}


@pytest.mark.parametrize("changes", ACCEPT.values(), ids=ACCEPT.keys())
def test_fleet_accepts_under_the_google_profile(changes):
    sample = fleet.mutate(**changes)
    evidence = tpm.verify(sample.att_stmt, sample.ctx)
    assert evidence.fmt == "tpm" and evidence.public_key == sample.public.spki()
    assert evidence.trust_level is TrustLevel.CLOUD and evidence.posture.key_protection == "vtpm"
    assert evidence.permanent_identifiers == (PermanentIdentifier(str(fleet.INSTANCE_ID), GCE_INSTANCE_ID),)
    assert evidence.chain[-1] == sample.ctx.trust.roots_for("tpm-gcp")[0]
    extra = dict(evidence.posture.extra)
    assert (extra["gce_project_id"], extra["gce_zone"], extra["gce_instance_name"]) == ("acmeda-fleet", "europe-west1-b", "fleet-vm-1")
    assert extra["gce_is_production"] == "true" and extra["gce_project_number"] == "123456789012"
    assert extra.get("gce_security_version") == (None if "security_version" in changes.get("security", {}) else "0")
    assert ("tpm_model" in extra) is (changes.get("style") == "legacy")


def test_webauthn_roots_keep_the_webauthn_profile():
    sample = tpm_fleet.make(replace(tpm_fleet.Knobs(), ak_other_names=(tpm_fleet.permanent_identifier("TPM-1"),)))
    evidence = tpm.verify(sample.att_stmt, replace(sample.ctx, trust=fleet.trust()))
    assert evidence.trust_level is TrustLevel.HARDWARE and evidence.posture.key_protection == "tpm"
    assert evidence.permanent_identifiers == (PermanentIdentifier("TPM-1"),)


def test_revoked_google_ak_certificate():
    sample = fleet.make()
    serial = parse_certificate(sample.ak_certificate).serial_number
    ctx = replace(sample.ctx, revocation={"tpm": lambda s: "superseded" if s == serial else None})
    with pytest.raises(CertificateRevoked):
        tpm.verify(sample.att_stmt, ctx)


def test_google_roots_not_configured_fails_closed():
    sample = fleet.make()
    with pytest.raises(UntrustedChain):
        tpm.verify(sample.att_stmt, replace(sample.ctx, trust=TrustStore(roots={"tpm": tpm.default_roots()})))


# --- the fleet: one row per rejection reason ----------------------------------------------------

PAST = tpm_fleet.Knobs(key="p256", ak_not_before=fleet.NOW - timedelta(days=30), ak_not_after=fleet.NOW - timedelta(days=1))
REJECT = [
    ("WebAuthn AIK certificate under a Google root", {"style": "webauthn"}, RequirementFailed, "tpm-gce-instance-missing"),
    ("instance extension missing", {"instance_extension": False}, RequirementFailed, "tpm-gce-instance-missing"),
    ("instance extension not DER", {"instance_der": b"\x30\x03\x02\x01\x05"}, MalformedStatement, "tpm-gce-instance"),
    ("instance extension trailing bytes", {"instance_der": fleet.instance_extension(fleet.Knobs()) + b"\x00"},
     MalformedStatement, "tpm-gce-instance"),
    ("instance name missing", {"instance": {"instance_name": None}}, MalformedStatement, "tpm-gce-instance"),
    ("instance id negative", {"instance": {"instance_id": -5}}, MalformedStatement, "tpm-gce-instance"),
    ("zone empty", {"instance": {"zone": ""}}, MalformedStatement, "tpm-gce-instance"),
    ("not production", {"security": {"is_production": False}}, RequirementFailed, "tpm-gce-not-production"),
    ("no security properties", {"security": dict.fromkeys(fleet.SECURITY)}, RequirementFailed, "tpm-gce-not-production"),
    ("EK certificate (keyEncipherment)", {"key_usage": "encipher"}, RequirementFailed, "tpm-gce-key-usage"),
    ("keyUsage missing", {"key_usage": None}, RequirementFailed, "tpm-gce-key-usage"),
    ("AK is a CA", {"ak_ca": True}, RequirementFailed, "tpm-aik-basic-constraints"),
    ("basicConstraints missing", {"ak_ca": None}, RequirementFailed, "tpm-aik-basic-constraints"),
    ("Google look-alike CA", {"issuer": "lookalike", "send_intermediate": True}, UntrustedChain, "chain-untrusted"),
    ("Google-style certificate under a WebAuthn root", {"issuer": "webauthn", "send_intermediate": True},
     RequirementFailed, "tpm-aik-subject"),
    ("legacy Google certificate under a WebAuthn root", {"style": "legacy", "issuer": "webauthn", "send_intermediate": True},
     RequirementFailed, "tpm-aik-eku"),
    ("AK expired", {"tpm": PAST}, ChainExpired, "chain-expired"),
    ("extraData of another challenge", {"tpm": tpm_fleet.Knobs(key="p256", extra_data=bytes(32))}, ChallengeMismatch, "tpm-extra-data"),
    ("key not fixedTPM", {"tpm": tpm_fleet.Knobs(key="p256", object_attributes=0x00060470)}, RequirementFailed,
     "tpm-object-attributes"),
    ("sig corrupted", {"tpm": tpm_fleet.Knobs(key="p256", corrupt_sig=True)}, InvalidSignature, "tpm-sig"),
    ("sig by another AK than certified", {"tpm": tpm_fleet.Knobs(key="p256", foreign_ak=True)}, InvalidSignature, "tpm-sig"),
]


@pytest.mark.parametrize("changes, error, check", [r[1:] for r in REJECT], ids=[r[0] for r in REJECT])
def test_fleet_rejects(changes, error, check):
    sample = fleet.mutate(**changes)
    with pytest.raises(error) as info:
        tpm.verify(sample.att_stmt, sample.ctx)
    assert type(info.value) is error and info.value.check == check


# --- fuzzing the extension decoder and the Google path ------------------------------------------

FUZZ = settings(max_examples=int(os.environ.get("ACMEDA_FUZZ_EXAMPLES", 150)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
VALID_EXTENSION = fleet.instance_extension(fleet.Knobs())


@FUZZ
@given(st.binary(max_size=120) | st.integers(0, len(VALID_EXTENSION) - 1).flatmap(
    lambda i: st.binary(min_size=1, max_size=3).map(lambda b: VALID_EXTENSION[:i] + b + VALID_EXTENSION[i + 1:])))
def test_fuzz_instance_extension(data):
    try:
        assert isinstance(gce.decode_instance(data), gce.GceInstance)
    except MalformedStatement as exc:
        assert exc.check == "tpm-gce-instance"


BASE = fleet.make()


@FUZZ
@given(st.integers(0, len(BASE.ak_certificate) - 1), st.binary(min_size=1, max_size=3))
def test_fuzz_mutated_google_ak_certificate(offset, replacement):
    der = BASE.ak_certificate
    stmt = dict(BASE.att_stmt, x5c=[der[:offset] + replacement + der[offset + 1:]])
    try:
        assert isinstance(tpm.verify(stmt, BASE.ctx), Evidence)
    except AttestationError:
        pass
