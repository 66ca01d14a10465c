"""The "tpm" format: real Windows Hello statements, real EK/AK certificates, one row per
rejection reason through the test fleet, and fuzzing of verify()."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import replace
from functools import lru_cache
from datetime import datetime, timedelta, timezone

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import Name, NameAttribute
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.context import Binding, TrustStore, VerificationContext
from attestation.errors import (
    AttestationError, CertificateRevoked, ChainExpired, ChallengeMismatch, InvalidSignature,
    MalformedStatement, RequirementFailed, UnsupportedFormat, UntrustedChain,
)
from attestation.evidence import Evidence, HardwareModule, PermanentIdentifier, TrustLevel
from attestation.formats import tpm
from attestation.tpm.san import certificate_san
from attestation.tpm.structs import TpmsAttest
from tests import vectors
from tests.fleet import tpm as fleet

WEBAUTHN = sorted(e["path"] for e in vectors.manifest() if e["path"].startswith("tpm-webauthn/"))
EK_CERTS = sorted(e["path"] for e in vectors.manifest() if e["path"].startswith("tpm-ek/"))
AK_CERT = "tpm-quote/go-tpm-tools-gce-cos-85-nonce9009.ak-cert.der"


# --- real Windows Hello statements -----------------------------------------------------------


def webauthn_case(path: str, now: datetime | None = None, roots=None):
    """(attStmt, ctx, attObj) for a real sample, at its manifest time, with the bundled root."""
    entry = vectors.entry(path)
    att_obj = cbor2.loads(vectors.read(path))
    client_data_hash = hashlib.sha256(vectors.read(entry["companion_files"][0])).digest()
    binding = Binding(att_to_be_signed=att_obj["authData"] + client_data_hash, challenge=client_data_hash)
    when = now or vectors.parse_time(entry["checks"]["verification_time_suggested"])
    trust = TrustStore(roots={"tpm": tpm.default_roots() if roots is None else roots})
    return att_obj["attStmt"], VerificationContext(binding, when, trust), att_obj


def credential_spki(auth_data: bytes) -> bytes:
    """The credentialPublicKey of authenticatorData (WebAuthn §6.1) as SPKI DER."""
    id_length = int.from_bytes(auth_data[53:55], "big")
    cose = cbor2.CBORDecoder(io.BytesIO(auth_data[55 + id_length:])).decode()
    if cose[1] == 3:
        key = rsa.RSAPublicNumbers(int.from_bytes(cose[-2], "big"), int.from_bytes(cose[-1], "big")).public_key()
    else:
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + cose[-2] + cose[-3])
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def vendor_text(manufacturer: str) -> str:
    return bytes.fromhex(manufacturer[3:]).rstrip(b"\x00 ").decode()


@pytest.mark.parametrize("path", WEBAUTHN)
def test_real_statement_at_its_manifest_time(path):
    entry = vectors.entry(path)
    stmt, ctx, att_obj = webauthn_case(path)
    if entry["negative"]:
        with pytest.raises(AttestationError):
            tpm.verify(stmt, ctx)
        return
    evidence = tpm.verify(stmt, ctx)
    checks = entry["checks"]
    assert evidence.fmt == "tpm" and evidence.trust_level is TrustLevel.HARDWARE
    assert evidence.public_key == credential_spki(att_obj["authData"])
    extra = dict(evidence.posture.extra)
    assert extra["tpm_manufacturer"] == vendor_text(checks["tpm_manufacturer"])
    assert extra["tpm_model"] == checks["tpm_model"]
    assert evidence.posture.firmware_version == checks["tpm_version"]
    assert evidence.posture.key_protection == "tpm" and extra["tpm_sig_alg"] == "RS1"
    assert evidence.chain[0] == stmt["x5c"][0] and evidence.chain[-1] == tpm.default_roots()[0]
    assert evidence.attested_at == ctx.now


def test_real_manufacturers_cover_intel_nuvoton_and_stmicro():
    found = {dict(tpm.verify(*webauthn_case(p)[:2]).posture.extra)["tpm_manufacturer"] for p in WEBAUTHN}
    assert found == {"INTC", "NTC", "STM"}


@pytest.mark.parametrize("path", WEBAUTHN[:2])
def test_real_statement_after_its_ak_chain_expired(path):
    with pytest.raises(ChainExpired):
        tpm.verify(*webauthn_case(path, now=datetime(2030, 1, 1, tzinfo=timezone.utc))[:2])


def test_real_statement_without_configured_roots_fails_closed():
    with pytest.raises(UntrustedChain):
        tpm.verify(*webauthn_case(WEBAUTHN[0], roots=())[:2])


def test_real_statement_bound_to_another_challenge():
    stmt, ctx, _ = webauthn_case(WEBAUTHN[0])
    other = replace(ctx, binding=Binding(ctx.binding.att_to_be_signed + b"x", ctx.binding.challenge))
    with pytest.raises(ChallengeMismatch):
        tpm.verify(stmt, other)


# --- real EK / AK certificates through the SAN decoder ------------------------------------------


@pytest.mark.parametrize("path", EK_CERTS + [AK_CERT])
def test_real_ek_and_ak_certificates_san(path):
    san = certificate_san(vectors.read(path))
    expected = vectors.entry(path).get("checks", {}).get("ek_properties", {}).get("san") if path in EK_CERTS else None
    if san is None:  # the GCE "EK/AK CA" certificates name the VM in the subject instead
        assert "gce-pca" in path
        return
    assert san.manufacturer.startswith("id:") and san.model and san.version.startswith("id:")
    assert san.vendor == vendor_text(san.manufacturer)
    if expected:
        assert f"'tpm_manufacturer', '{san.manufacturer}'" in expected and f"'tpm_model', '{san.model}'" in expected


def test_printable_string_and_multi_rdn_ek_san_decodes():
    san = certificate_san(vectors.read("tpm-ek/nuvoton-ecc-ek-malformed-keylime.der"))
    assert (san.vendor, san.model, san.version) == ("NTC", "NPCT75x", "id:00070002")


# --- the fleet: acceptance -------------------------------------------------------------------

ACCEPT = {
    "RS256 rsa": {}, "RS1 rsa": {"alg": -65535}, "PS256 rsa": {"alg": -37},
    "ES256 p256": {"alg": -7, "key": "p256"}, "ES384 p384": {"alg": -35, "key": "p384"}, "RS256 p521": {"key": "p521"},
    "nameAlg SHA1": {"name_alg": 0x0004}, "nameAlg SHA384": {"name_alg": 0x000C}, "nameAlg SHA3-256": {"name_alg": 0x0027},
    "SAN rdn per attribute": {"ak_san": "rdn-per-attribute"}, "SAN not critical": {"ak_san": "not-critical"},
    "FIDO AAGUID extension ignored": {"ak_aaguid": True}, "ECC AK signs RSA key": {"alg": -7, "key": "rsa"},
}


@pytest.mark.parametrize("changes", ACCEPT.values(), ids=ACCEPT.keys())
def test_fleet_accepts(changes):
    sample = fleet.mutate(**changes)
    evidence = tpm.verify(sample.att_stmt, sample.ctx)
    assert evidence.public_key == sample.public.spki()
    assert dict(evidence.posture.extra)["tpm_manufacturer"] == "NTC"


def test_acme_binding_is_sha256_of_the_key_authorization():
    key_authorization = b"tok.thumb"
    binding = tpm.FORMAT.acme_binding("tok", key_authorization)
    sample = fleet.make(binding=binding)
    assert TpmsAttest.parse(sample.att_stmt["certInfo"]).extra_data == hashlib.sha256(key_authorization).digest()
    assert tpm.verify(sample.att_stmt, sample.ctx).public_key == sample.public.spki()
    assert tpm.FORMAT.name == "tpm" and tpm.FORMAT.verify is tpm.verify


def test_identifiers_from_the_ak_san():
    names = (fleet.permanent_identifier("ACME-42", "1.3.6.1.4.1.99999"), fleet.hardware_module("1.3.6.1.4.1.99999.1", b"\x0a\x0b"),
             fleet.permanent_identifier("no-assigner"))
    evidence = tpm.verify(*_stmt_ctx(fleet.mutate(ak_other_names=names)))
    assert evidence.permanent_identifiers == (PermanentIdentifier("ACME-42", "1.3.6.1.4.1.99999"), PermanentIdentifier("no-assigner"))
    assert evidence.hardware_modules == (HardwareModule("1.3.6.1.4.1.99999.1", b"\x0a\x0b"),)


def _stmt_ctx(sample):
    return sample.att_stmt, sample.ctx


def test_revoked_ak_certificate():
    sample = fleet.make()
    serial = fleet.asn1_x509.Certificate.load(sample.ak_certificate).serial_number
    ctx = replace(sample.ctx, revocation={"tpm": lambda s: "key compromise" if s == serial else None})
    with pytest.raises(CertificateRevoked):
        tpm.verify(sample.att_stmt, ctx)


# --- the fleet: one row per rejection reason -----------------------------------------------------

SUBJECT = Name([NameAttribute(NameOID.COMMON_NAME, "aik")])
PAST = {"ak_not_before": fleet.NOW - timedelta(days=30), "ak_not_after": fleet.NOW - timedelta(days=1)}
REJECT = [
    ("sig missing", {"drop": "sig"}, MalformedStatement, "tpm-statement"),
    ("certInfo missing", {"drop": "certInfo"}, MalformedStatement, "tpm-statement"),
    ("pubArea missing", {"drop": "pubArea"}, MalformedStatement, "tpm-statement"),
    ("x5c missing", {"drop": "x5c"}, MalformedStatement, "tpm-statement"),
    ("x5c empty", {"add": (("x5c", []),)}, MalformedStatement, "tpm-statement"),
    ("alg not an integer", {"alg": "RS256"}, MalformedStatement, "tpm-statement"),
    ("alg a boolean", {"alg": True}, MalformedStatement, "tpm-statement"),
    ("ver missing", {"drop": "ver"}, MalformedStatement, "tpm-statement"),
    ("ecdaaKeyId", {"add": (("ecdaaKeyId", b"\x01"),)}, UnsupportedFormat, "tpm-ecdaa"),
    ("ver 1.0", {"ver": "1.0"}, UnsupportedFormat, "tpm-ver"),
    ("alg EdDSA", {"alg": -8}, UnsupportedFormat, "tpm-alg"),
    ("pubArea trailing bytes", {"pub_area_trailing": b"\x00"}, MalformedStatement, "tpm-public"),
    ("pubArea nameAlg SM3", {"name_alg": 0x0012, "attested_name": b"\x00\x12" + bytes(32)}, UnsupportedFormat, "tpm-public"),
    ("certInfo trailing bytes", {"cert_info_trailing": b"\x00"}, MalformedStatement, "tpm-attest"),
    ("certInfo magic", {"magic": 0xFF544348}, MalformedStatement, "tpm-attest-magic"),
    ("certInfo type unknown", {"attest_type": 0x8099}, MalformedStatement, "tpm-attest-type"),
    ("certInfo type quote", {"attest_type": 0x8018}, RequirementFailed, "tpm-attest-type"),
    ("extraData other challenge", {"extra_data": hashlib.sha256(b"other").digest()}, ChallengeMismatch, "tpm-extra-data"),
    ("extraData hash of wrong alg", {"alg": -65535, "extra_data": hashlib.sha256(b"tok").digest()}, ChallengeMismatch, "tpm-extra-data"),
    ("attested name of another key", {"attested_name": b"\x00\x0b" + bytes(32)}, RequirementFailed, "tpm-attested-name"),
    ("attested name other nameAlg", {"attested_name": b"\x00\x04" + bytes(20)}, RequirementFailed, "tpm-attested-name"),
    ("key not fixedTPM", {"object_attributes": 0x00060470}, RequirementFailed, "tpm-object-attributes"),
    ("key imported", {"object_attributes": 0x00060452}, RequirementFailed, "tpm-object-attributes"),
    ("key cannot sign", {"object_attributes": 0x00020472}, RequirementFailed, "tpm-object-attributes"),
    ("untrusted root", {"untrusted_root": True}, UntrustedChain, "chain-untrusted"),
    ("AK expired", PAST, ChainExpired, "chain-expired"),
    ("AK not yet valid", {"ak_not_before": fleet.NOW + timedelta(days=1)}, ChainExpired, "chain-expired"),
    ("AK version 1", {"ak_version": 1}, RequirementFailed, "tpm-aik-version"),
    ("AK subject not empty", {"ak_subject": SUBJECT}, RequirementFailed, "tpm-aik-subject"),
    ("AK EKU missing", {"ak_eku": ()}, RequirementFailed, "tpm-aik-eku"),
    ("AK EKU without AIK", {"ak_eku": (ObjectIdentifier("1.3.6.1.5.5.7.3.2"),)}, RequirementFailed, "tpm-aik-eku"),
    ("AK is a CA", {"ak_ca": True}, RequirementFailed, "tpm-aik-basic-constraints"),
    ("AK basicConstraints missing", {"ak_ca": None}, RequirementFailed, "tpm-aik-basic-constraints"),
    ("AK SAN missing", {"ak_san": "missing"}, RequirementFailed, "tpm-aik-san"),
    ("AK SAN without model", {"ak_san": "no-model"}, RequirementFailed, "tpm-aik-san"),
    ("AK SAN not DER", {"ak_tbs": lambda tbs: _set_san(tbs, b"\x30\x03\x02\x01\x05")}, MalformedStatement, "tpm-san"),
    ("sig corrupted", {"corrupt_sig": True}, InvalidSignature, "tpm-sig"),
    ("sig made with another alg", {"sign_alg": -65535}, InvalidSignature, "tpm-sig"),
    ("PS256 declared, PKCS#1 signed", {"alg": -37, "sign_alg": -257}, InvalidSignature, "tpm-sig"),
    ("sig by another AK than certified", {"foreign_ak": True}, InvalidSignature, "tpm-sig"),
    ("RS256 with an EC AK", {"ak_key": "p256"}, InvalidSignature, "tpm-sig-alg"),
    ("ES256 with an RSA AK", {"alg": -7, "ak_key": "rsa"}, InvalidSignature, "tpm-sig-alg"),
]


def _set_san(tbs, value: bytes) -> None:
    for extension in tbs["extensions"]:
        if extension["extn_id"].dotted == "2.5.29.17":
            extension["extn_value"] = fleet.asn1_x509.ParsableOctetString(value)


@pytest.mark.parametrize("changes, error, check", [r[1:] for r in REJECT], ids=[r[0] for r in REJECT])
def test_fleet_rejects(changes, error, check):
    sample = fleet.mutate(**changes)
    with pytest.raises(error) as info:
        tpm.verify(sample.att_stmt, sample.ctx)
    assert type(info.value) is error and info.value.check == check


@pytest.mark.parametrize("stmt", [[("ver", "2.0")], None, b"\xa0", "tpm"])
def test_statement_that_is_not_a_map(stmt):
    with pytest.raises(MalformedStatement) as info:
        tpm.verify(stmt, fleet.make().ctx)
    assert info.value.check == "tpm-statement"


def test_fleet_accepts_printable_string_san():
    evidence = tpm.verify(*_stmt_ctx(fleet.mutate(ak_san="printable")))
    assert evidence.fmt == "tpm"


# --- fuzzing verify(): nothing but AttestationError escapes ------------------------------------

FUZZ = settings(max_examples=int(os.environ.get("ACMEDA_FUZZ_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=64) | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8,
)
KEYS = ["ver", "alg", "x5c", "sig", "certInfo", "pubArea", "ecdaaKeyId"]


def _verify_or_error(stmt, ctx):
    try:
        assert isinstance(tpm.verify(stmt, ctx), Evidence)
    except AttestationError:
        pass


@FUZZ
@given(st.dictionaries(st.sampled_from(KEYS), cbor_values, max_size=7))
def test_fuzz_arbitrary_statements(stmt):
    _verify_or_error(stmt, fleet.make().ctx)


@lru_cache(maxsize=None)
def _fuzz_base(source: str):
    """A fixed valid statement: hypothesis needs the same bytes on every replay."""
    if source == "fleet":
        sample = fleet.make()
        return sample.att_stmt, sample.ctx
    return webauthn_case(WEBAUTHN[0] if source == "rsa1" else WEBAUTHN[2])[:2]


@FUZZ
@given(st.sampled_from(["certInfo", "pubArea", "sig", "x5c0", "x5c1"]), st.sampled_from(["fleet", "rsa1", "ecc"]), st.data())
def test_fuzz_mutated_valid_statements(field, source, data):
    base, ctx = _fuzz_base(source)
    stmt = dict(base, x5c=list(base["x5c"]))
    target = stmt["x5c"][int(field[-1])] if field.startswith("x5c") else stmt[field]
    offset = data.draw(st.integers(0, len(target) - 1))
    mutated = target[:offset] + data.draw(st.binary(min_size=1, max_size=3)) + target[offset + 1:]
    if field.startswith("x5c"):
        stmt["x5c"][int(field[-1])] = mutated
    else:
        stmt[field] = mutated
    _verify_or_error(stmt, ctx)
