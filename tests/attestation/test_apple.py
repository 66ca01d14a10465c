"""fmt "apple": real Apple evidence at its own point in time, one row per rejection, fuzzing."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import timedelta

import cbor2
import pytest
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.context import Binding, TrustStore, VerificationContext
from attestation.errors import (
    AttestationError,
    CertificateRevoked,
    ChainExpired,
    ChallengeMismatch,
    IdentifierMissing,
    MalformedStatement,
    UntrustedChain,
)
from attestation.evidence import PermanentIdentifier, TrustLevel
from attestation.formats import apple
from tests import vectors
from tests.fleet import apple as fleet

MDA = sorted(e["path"] for e in vectors.manifest() if e.get("path", "").startswith("apple-mda/"))
WEBAUTHN = sorted(e["path"] for e in vectors.manifest() if e.get("path", "").startswith("apple-webauthn/"))
KNOWN_PREIMAGE = "apple-mda/darkbloom-f99b7905-M2Max-2026-04-28.chain.pem"
BINDING = apple.acme_binding("fleet-token-0001", b"fleet-token-0001.thumbprint")
SIP = {"020100": 0, "020101": 1}  # the manifest shows the raw extnValue: DER INTEGER 0 / 1


def bundled_trust() -> TrustStore:
    return TrustStore(roots={"apple": apple.default_roots()}, intermediates={"apple": apple.default_intermediates()})


def real_context(path: str, challenge: bytes, trust: TrustStore | None = None) -> VerificationContext:
    at = vectors.parse_time(vectors.entry(path)["checks"]["verification_time_suggested"])
    return VerificationContext(Binding(att_to_be_signed=b"", challenge=challenge), at, trust or bundled_trust())


# --- real Managed Device Attestation chains -------------------------------------------


def test_bundled_roots_are_the_manifest_roots():
    root = vectors.entry("roots/apple/apple-enterprise-attestation-root-ca.pem")["cert"]["sha256"]
    sub_ca = vectors.entry("roots/apple/apple-enterprise-attestation-sub-ca-1.pem")["cert"]["sha256"]
    assert [hashlib.sha256(der).hexdigest() for der in apple.default_roots()] == [root]
    assert [hashlib.sha256(der).hexdigest() for der in apple.default_intermediates()] == [sub_ca]


@pytest.mark.parametrize("path", MDA)
def test_real_device_properties_match_manifest(path):
    expected = vectors.entry(path)["checks"]["device_properties"]
    props = apple.parse_device_properties(vectors.pem_chain(path)[0])
    assert props.serial_number == expected["serialNumber"]
    assert props.udid == expected["UDID"]
    assert props.os_version == expected["osVersion"]
    assert props.sep_os_version == expected["sepOSVersion"]
    assert props.llb_version == expected["LLBVersion"]
    assert props.software_update_device_id == expected["softwareUpdateDeviceID"]
    assert props.secure_boot == expected["secureBootLevel"]
    assert props.sip_status == SIP[expected["SIPStatus"]]
    assert props.third_party_kexts == SIP[expected["kextStatus"]]
    assert props.freshness_code.hex() == expected["freshnessCode(nonce)"]
    assert props.webauthn_nonce is None


def test_real_chain_with_known_preimage_verifies():
    entry = vectors.entry(KNOWN_PREIMAGE)
    chain = vectors.pem_chain(KNOWN_PREIMAGE)
    evidence = apple.verify({"x5c": chain}, real_context(KNOWN_PREIMAGE, entry["checks"]["nonce_preimage"].encode()))
    props = entry["checks"]["device_properties"]
    assert evidence.fmt == "apple"
    assert evidence.trust_level is TrustLevel.HARDWARE
    assert evidence.permanent_identifiers == (PermanentIdentifier(props["serialNumber"]), PermanentIdentifier(props["UDID"]))
    assert evidence.public_key == asn1_x509.Certificate.load(chain[0]).public_key.dump()
    assert evidence.chain == (*chain, apple.default_roots()[0])
    assert evidence.attested_at == vectors.parse_time(entry["checks"]["validity_window_all_certs"][0])
    posture = evidence.posture
    assert (posture.os_version, posture.sep_os_version, posture.llb_version) == ("26.2", "26.2", "26.2")
    assert posture.secure_boot == "full" and posture.key_protection == "secure-enclave"
    assert dict(posture.extra) == {
        "apple.attestation": "managed-device",
        "apple.sip": "enabled",
        "apple.software_update_device_id": "J416cAP",
        "apple.third_party_kexts": "disallowed",
    }


def test_real_leaf_alone_chains_through_the_bundled_sub_ca():
    preimage = vectors.entry(KNOWN_PREIMAGE)["checks"]["nonce_preimage"].encode()
    leaf = vectors.pem_chain(KNOWN_PREIMAGE)[0]
    evidence = apple.verify({"x5c": [leaf]}, real_context(KNOWN_PREIMAGE, preimage))
    assert len(evidence.chain) == 3


@pytest.mark.parametrize("path", MDA)
def test_real_chain_passes_and_nonce_check_runs(path):
    """Pre-images are unknown for most samples: the chain passes, then the nonce check refuses."""
    with pytest.raises(ChallengeMismatch, match=r"1\.2\.840\.113635\.100\.8\.11\.1\) does not equal SHA-256"):
        apple.verify({"x5c": vectors.pem_chain(path)}, real_context(path, b"not-the-pre-image"))


@pytest.mark.parametrize("shift, detail", [(timedelta(days=-1), "not yet valid"), (timedelta(days=120), "expired")])
def test_real_chain_outside_its_validity(shift, detail):
    ctx = real_context(KNOWN_PREIMAGE, b"")
    with pytest.raises(ChainExpired, match=detail):
        apple.verify({"x5c": vectors.pem_chain(KNOWN_PREIMAGE)}, replace(ctx, now=ctx.now + shift))


def test_real_chain_does_not_chain_to_the_webauthn_root():
    trust = TrustStore(roots={"apple": tuple(vectors.pem_chain("roots/apple/apple-webauthn-root-ca.pem"))})
    with pytest.raises(UntrustedChain, match="does not chain to a configured root"):
        apple.verify({"x5c": vectors.pem_chain(KNOWN_PREIMAGE)}, real_context(KNOWN_PREIMAGE, b"", trust))


# --- real WebAuthn anonymous attestations (same fmt, nonce OID 1.2.840.113635.100.8.2) -----


def webauthn_case(path: str) -> tuple[dict, bytes, VerificationContext]:
    obj = cbor2.loads(vectors.read(path))
    (companion,) = vectors.entry(path)["companion_files"]
    to_be_signed = obj["authData"] + hashlib.sha256(vectors.read(companion)).digest()
    trust = TrustStore(roots={"apple": tuple(vectors.pem_chain("roots/apple/apple-webauthn-root-ca.pem"))})
    at = vectors.parse_time(vectors.entry(path)["checks"]["verification_time_suggested"])
    return obj, to_be_signed, VerificationContext(Binding(to_be_signed, to_be_signed), at, trust)


def credential_point(auth_data: bytes) -> tuple[int, int]:
    """Test-side check only: the COSE EC2 key of authData's attested credential data (WebAuthn §6.5.1)."""
    id_length = int.from_bytes(auth_data[53:55], "big")
    cose = cbor2.loads(auth_data[55 + id_length :])
    return int.from_bytes(cose[-2], "big"), int.from_bytes(cose[-3], "big")


@pytest.mark.parametrize("path", WEBAUTHN)
def test_real_webauthn_sample_verifies(path):
    obj, _, ctx = webauthn_case(path)
    evidence = apple.verify(obj["attStmt"], ctx)
    assert evidence.permanent_identifiers == ()
    assert dict(evidence.posture.extra) == {"apple.attestation": "webauthn-anonymous"}
    numbers = serialization.load_der_public_key(evidence.public_key).public_numbers()
    assert (numbers.x, numbers.y) == credential_point(obj["authData"])  # the caller's key-binding check


@pytest.mark.parametrize("path", WEBAUTHN)
def test_real_webauthn_sample_bound_to_other_client_data(path):
    obj, to_be_signed, ctx = webauthn_case(path)
    other = Binding(to_be_signed, to_be_signed[:-1] + bytes([to_be_signed[-1] ^ 1]))
    with pytest.raises(ChallengeMismatch, match=r"1\.2\.840\.113635\.100\.8\.2\) does not equal"):
        apple.verify(obj["attStmt"], replace(ctx, binding=other))


@pytest.mark.parametrize("path", WEBAUTHN)
def test_real_webauthn_sample_is_not_trusted_by_default(path):
    obj, _, ctx = webauthn_case(path)
    with pytest.raises(UntrustedChain):
        apple.verify(obj["attStmt"], replace(ctx, trust=bundled_trust()))


# --- the test fleet: acceptance ---------------------------------------------------------


def fleet_context(att: fleet.AppleAttestation, binding: Binding = BINDING) -> VerificationContext:
    return VerificationContext(binding, fleet.NOW, att.trust)


def test_acme_binding_uses_the_token():
    assert apple.acme_binding("tok", b"tok.thumb") == Binding(att_to_be_signed=b"tok.thumb", challenge=b"tok")
    assert apple.FORMAT.name == "apple" and apple.FORMAT.verify is apple.verify


def test_fleet_attestation_object_verifies():
    att = fleet.for_acme("fleet-token-0001", b"fleet-token-0001.thumbprint")
    statement = cbor2.loads(att.att_obj())
    assert set(statement) == {"fmt", "attStmt"}
    evidence = apple.verify(statement["attStmt"], fleet_context(att))
    device = fleet.AppleDevice()
    assert evidence.permanent_identifiers == (PermanentIdentifier(device.serial_number), PermanentIdentifier(device.udid))
    public = att.key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert evidence.public_key == public
    assert evidence.attested_at == fleet.NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    "device, field, value",
    [
        (fleet.AppleDevice(secure_boot="Reduced Security"), "secure_boot", "reduced"),
        (fleet.AppleDevice(secure_boot="Permissive Security"), "secure_boot", "permissive"),
        (fleet.AppleDevice(secure_boot="Some Future Level"), "secure_boot", "Some Future Level"),
        (fleet.AppleDevice(secure_boot=None), "secure_boot", None),
        (fleet.AppleDevice(os_version=""), "os_version", None),  # blank: Apple could not verify it
        (fleet.AppleDevice(sip_status=1), "apple.sip", "disabled"),
        (fleet.AppleDevice(sip_status=None), "apple.sip", None),
        (fleet.AppleDevice(third_party_kexts=2), "apple.third_party_kexts", "allowed"),
    ],
)
def test_fleet_posture(device, field, value):
    att = fleet.attest(BINDING, device=device)
    posture = apple.verify(att.att_stmt, fleet_context(att)).posture
    got = dict(posture.extra).get(field) if field.startswith("apple.") else getattr(posture, field)
    assert got == value


@pytest.mark.parametrize(
    "device, expected",
    [(fleet.AppleDevice(serial_number=None), ("udid",)), (fleet.AppleDevice(udid=""), ("serial_number",))],
)
def test_fleet_one_identifier_is_enough(device, expected):
    att = fleet.attest(BINDING, device=device)
    evidence = apple.verify(att.att_stmt, fleet_context(att))
    assert evidence.permanent_identifiers == tuple(PermanentIdentifier(getattr(device, name)) for name in expected)


# --- the test fleet: one row per rejection reason ---------------------------------------


def _drop_x5c(stmt):
    return {}


def _x5c(value):
    return lambda stmt: {**stmt, "x5c": value}


REVOKED = {"apple": lambda serial: "listed by the operator"}

REJECTIONS = [
    pytest.param(dict(nonce=bytes(32)), None, None, ChallengeMismatch, "8.11.1) does not equal SHA-256", id="wrong-nonce"),
    pytest.param(dict(nonce=hashlib.sha256(BINDING.att_to_be_signed).digest()), None, None, ChallengeMismatch, "8.11.1) does not equal", id="nonce-over-keyauth"),
    pytest.param(dict(nonce=b""), None, None, ChallengeMismatch, "8.11.1) does not equal", id="blank-nonce"),
    pytest.param(dict(nonce=None), None, None, ChallengeMismatch, "8.11.1) is missing", id="missing-nonce"),
    pytest.param(dict(extensions={apple.OID_WEBAUTHN_NONCE: b"0\x04\xa1\x02\x04\x00"}), None, None, MalformedStatement, "both the freshness code", id="both-nonces"),
    pytest.param(dict(device=fleet.AppleDevice(serial_number=None, udid=None)), None, None, IdentifierMissing, "neither serial number", id="missing-serial-and-udid"),
    pytest.param(dict(device=fleet.AppleDevice(serial_number="", udid="")), None, None, IdentifierMissing, "neither serial number", id="blank-serial-and-udid"),
    pytest.param(dict(validity=(fleet.NOW - timedelta(days=91), fleet.NOW - timedelta(days=1))), None, None, ChainExpired, "leaf certificate", id="expired-leaf"),
    pytest.param(dict(validity=(fleet.NOW + timedelta(hours=1), fleet.NOW + timedelta(days=90))), None, None, ChainExpired, "not yet valid", id="future-leaf"),
    pytest.param(dict(issuer=fleet.pki("Rogue")), None, None, UntrustedChain, "does not chain to a configured root", id="wrong-root"),
    pytest.param(dict(tamper_signature=True), None, None, UntrustedChain, "does not chain to a configured root", id="bad-leaf-signature"),
    pytest.param(dict(issuer=fleet.pki(intermediate_is_ca=False)), None, None, UntrustedChain, "is not a CA", id="sub-ca-not-ca"),
    pytest.param(dict(send_intermediate=False), None, None, UntrustedChain, "does not chain", id="sub-ca-not-sent"),
    pytest.param({}, None, lambda ctx: replace(ctx, trust=TrustStore()), UntrustedChain, "no trust anchors", id="no-roots"),
    pytest.param({}, None, lambda ctx: replace(ctx, revocation=REVOKED), CertificateRevoked, "is revoked", id="revoked"),
    pytest.param({}, _drop_x5c, None, MalformedStatement, "x5c is missing", id="x5c-missing"),
    pytest.param({}, _x5c([]), None, MalformedStatement, "x5c is not a non-empty array", id="x5c-empty"),
    pytest.param({}, _x5c(b"\x30\x00"), None, MalformedStatement, "x5c is not a non-empty array", id="x5c-not-array"),
    pytest.param({}, _x5c(["PEM text"]), None, MalformedStatement, "not a byte string", id="x5c-entry-not-bytes"),
    pytest.param({}, _x5c([b"\x30\x03\x02\x01\x00"]), None, MalformedStatement, "not a valid X.509 certificate", id="x5c-not-der"),
    pytest.param({}, lambda stmt: [stmt], None, MalformedStatement, "attStmt is not a map", id="stmt-not-map"),
    pytest.param(dict(extensions={apple.OID_SIP_STATUS: b"\x01"}), None, None, MalformedStatement, "sip_status (1.2.840.113635.100.8.13.1) is not a DER INTEGER", id="sip-not-integer"),
    pytest.param(dict(extensions={apple.OID_SERIAL_NUMBER: b"\xff\xfe"}), None, None, MalformedStatement, "serial_number (1.2.840.113635.100.8.9.1) is not UTF-8", id="serial-not-utf8"),
    pytest.param(dict(extensions={apple.OID_WEBAUTHN_NONCE: b"\x04\x00"}, nonce=None), None, None, MalformedStatement, "1.2.840.113635.100.8.2) does not parse", id="webauthn-nonce-malformed"),
    pytest.param(dict(duplicate=apple.OID_FRESHNESS_CODE), None, None, MalformedStatement, "more than once", id="duplicate-freshness-code"),
]


@pytest.mark.parametrize("knobs, mutate, context, error, detail", REJECTIONS)
def test_rejects(knobs, mutate, context, error, detail):
    att = fleet.attest(BINDING, **knobs)
    stmt = mutate(att.att_stmt) if mutate else att.att_stmt
    ctx = context(fleet_context(att)) if context else fleet_context(att)
    with pytest.raises(AttestationError) as info:
        apple.verify(stmt, ctx)
    assert type(info.value) is error, info.value
    assert detail in str(info.value)


# --- fuzzing: nothing but AttestationError may leave the verifier -----------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=48), st.text(max_size=12))
CBORISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
STATEMENTS = st.one_of(CBORISH, st.dictionaries(st.sampled_from(["x5c", "sig", "alg"]), CBORISH, max_size=3))


def verify_only_attestation_errors(stmt, ctx) -> None:
    try:
        apple.verify(stmt, ctx)
    except AttestationError:
        pass


@given(stmt=STATEMENTS)
@settings(max_examples=300, deadline=None)
def test_fuzz_statement_structure(stmt):
    verify_only_attestation_errors(stmt, real_context(KNOWN_PREIMAGE, b""))


@given(data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_real_chain(data):
    x5c = [bytearray(der) for der in vectors.pem_chain(KNOWN_PREIMAGE)]
    target = x5c[data.draw(st.integers(0, len(x5c) - 1))]
    for _ in range(data.draw(st.integers(1, 4))):
        target[data.draw(st.integers(0, len(target) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del target[data.draw(st.integers(0, len(target) - 1)) :]
    extra = data.draw(st.lists(st.binary(max_size=64), max_size=2))
    preimage = vectors.entry(KNOWN_PREIMAGE)["checks"]["nonce_preimage"].encode()
    verify_only_attestation_errors({"x5c": [bytes(der) for der in x5c] + extra}, real_context(KNOWN_PREIMAGE, preimage))


@given(oid=st.sampled_from(sorted({*apple._TEXT_PROPERTIES, *apple._INTEGER_PROPERTIES, apple.OID_FRESHNESS_CODE, apple.OID_WEBAUTHN_NONCE})), value=st.binary(max_size=40))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_device_property_values(oid, value):
    att = fleet.attest(BINDING, extensions={oid: value})
    verify_only_attestation_errors(att.att_stmt, fleet_context(att))
