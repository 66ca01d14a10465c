"""fmt "step" (YubiKey PIV): real YubiKey chains at their own time, one row per rejection, fuzzing."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import timedelta

import cbor2
import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.context import TrustStore, VerificationContext
from attestation.errors import (
    AttestationError,
    CertificateRevoked,
    ChainExpired,
    IdentifierMissing,
    InvalidSignature,
    MalformedStatement,
    RequirementFailed,
    UnsupportedFormat,
    UntrustedChain,
)
from attestation.evidence import PermanentIdentifier, TrustLevel
from attestation.formats import step
from attestation.format import key_authorization_binding
from tests import vectors
from tests.fleet import step as fleet

PIV = sorted(e["path"] for e in vectors.manifest() if e.get("path", "").startswith("yubikey-piv/") and e["path"].endswith(".chain.pem"))
NEW_PKI = "yubikey-piv/tamemycerts-fw574-newpki.chain.pem"
OLD_PKI = "yubikey-piv/pivgo-yubikey-valid.chain.pem"
BINDING = key_authorization_binding("fleet-token-0001", b"fleet-token-0001.thumbprint")
PIN = {1: "never", 2: "once", 3: "always"}
TOUCH = {1: "never", 2: "always", 3: "cached"}
ALG_FOR_KEY = {"secp256r1": -7, "secp384r1": -35, 2048: -257}


def bundled_trust() -> TrustStore:
    return TrustStore(roots={"step": step.default_roots()}, intermediates={"step": step.default_intermediates()})


def real_context(path: str, trust: TrustStore | None = None) -> VerificationContext:
    at = vectors.parse_time(vectors.entry(path)["checks"]["verification_time_suggested"])
    return VerificationContext(BINDING, at, trust or bundled_trust())


def real_statement(path: str, sig: bytes = b"\x30\x00") -> dict:
    alg = ALG_FOR_KEY[vectors.entry(path)["checks"]["attested_key_curve_or_bits"]]
    return {"alg": alg, "sig": sig, "x5c": vectors.pem_chain(path)}


# --- real YubiKey chains ---------------------------------------------------------------


def test_bundled_roots_are_the_manifest_roots():
    def sha(name):
        return vectors.entry(f"roots/yubico/{name}.pem")["cert"]["sha256"]

    roots = {hashlib.sha256(der).hexdigest() for der in step.default_roots()}
    intermediates = {hashlib.sha256(der).hexdigest() for der in step.default_intermediates()}
    assert roots == {sha("yubico-piv-root-ca-serial-263751"), sha("yubico-attestation-root-1")}
    names = ["yubico-attestation-intermediate-a-1", "yubico-attestation-intermediate-b-1", "yubico-piv-attestation-a-1", "yubico-piv-attestation-b-1"]
    assert intermediates == {sha(name) for name in names}


@pytest.mark.parametrize("path", PIV)
def test_real_slot_certificate_matches_manifest(path):
    expected = vectors.entry(path)["checks"]["yubikey_properties"]
    props = step.parse_piv_attestation(vectors.pem_chain(path)[0])
    assert props.serial == expected["serial"]
    assert props.firmware_version == expected["firmware"]
    assert props.pin_policy == PIN[expected["pin_policy"]]
    assert props.touch_policy == TOUCH[expected["touch_policy"]]
    assert props.form_factor_code == expected["formfactor"]
    assert props.fips is bool(expected["formfactor"] & 0x80)
    subject = vectors.entry(path)["checks"]["slot_cert"]["subject"]
    assert props.slot == subject.rsplit(" ", 1)[1]


@pytest.mark.parametrize("path", PIV)
def test_real_chain_passes_and_sig_check_runs(path):
    """No real step statement exists: the chain passes at the sample's time, then `sig` is refused."""
    with pytest.raises(InvalidSignature, match=r"sig \((ES256|ES384|RS256)\) does not verify over attToBeSigned"):
        step.verify(real_statement(path), real_context(path))


@pytest.mark.parametrize("path", PIV)
def test_real_chain_before_its_validity(path):
    ctx = real_context(path)
    with pytest.raises(ChainExpired, match="not yet valid"):
        step.verify(real_statement(path), replace(ctx, now=ctx.now - timedelta(days=1)))


def test_real_new_pki_needs_the_bundled_intermediates():
    trust = TrustStore(roots={"step": step.default_roots()})
    with pytest.raises(UntrustedChain, match="does not chain to a configured root"):
        step.verify(real_statement(NEW_PKI), real_context(NEW_PKI, trust))


def test_real_old_pki_is_not_trusted_by_the_new_root_alone():
    new_root = tuple(vectors.pem_chain("roots/yubico/yubico-attestation-root-1.pem"))
    trust = TrustStore(roots={"step": new_root}, intermediates={"step": step.default_intermediates()})
    with pytest.raises(UntrustedChain, match="does not chain to a configured root"):
        step.verify(real_statement(OLD_PKI), real_context(OLD_PKI, trust))


@pytest.mark.parametrize("path", [p for p in PIV if vectors.entry(p)["companion_files"]])
def test_real_csr_carries_the_attested_key(path):
    """What the CA checks at finalize, on real data: the CSR key is the slot certificate's key."""
    (csr_path,) = vectors.entry(path)["companion_files"]
    csr = x509.load_pem_x509_csr(vectors.read(csr_path))
    csr_spki = csr.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert csr_spki == asn1_x509.Certificate.load(vectors.pem_chain(path)[0]).public_key.dump()


# --- the test fleet: acceptance ---------------------------------------------------------


def fleet_context(att: fleet.StepAttestation) -> VerificationContext:
    return VerificationContext(BINDING, fleet.NOW, att.trust)


@pytest.mark.parametrize("generation", ["piv-2016", "attestation-2024"])
@pytest.mark.parametrize("key_type, alg", [("p256", -7), ("p384", -35), ("rsa2048", -257), ("rsa2048", -37), ("ed25519", -8)])
@pytest.mark.parametrize("sig_form", ["wrapped", "raw"])
def test_fleet_statement_verifies(generation, key_type, alg, sig_form):
    att = fleet.attest(BINDING, generation=generation, key_type=key_type, alg=alg, sig_form=sig_form)
    evidence = step.verify(att.att_stmt, fleet_context(att))
    assert evidence.fmt == "step" and evidence.trust_level is TrustLevel.HARDWARE
    assert evidence.permanent_identifiers == (PermanentIdentifier("20251101"),)
    public = att.key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert evidence.public_key == public
    assert evidence.chain[0] == att.leaf and len(evidence.chain) == (3 if generation == "piv-2016" else 5)
    assert evidence.attested_at is None
    posture = evidence.posture
    assert (posture.firmware_version, posture.pin_policy, posture.touch_policy, posture.key_protection) == ("5.4.3", "once", "never", "piv")
    assert dict(posture.extra) == {"yubikey.form_factor": "usb-c-keychain", "yubikey.fips": "false", "yubikey.piv_slot": "9a"}


def test_fleet_attestation_object_roundtrip():
    att = fleet.for_acme("fleet-token-0001", b"fleet-token-0001.thumbprint")
    statement = cbor2.loads(att.att_obj())
    assert statement["fmt"] == "step" and cbor2.loads(statement["attStmt"]["sig"])  # the step CLI form
    assert step.verify(statement["attStmt"], fleet_context(att)).permanent_identifiers == (PermanentIdentifier("20251101"),)


def test_yubikey4_f9_without_basic_constraints_is_accepted():
    att = fleet.attest(BINDING, f9="absent")
    assert len(step.verify(att.att_stmt, fleet_context(att)).chain) == 3


@pytest.mark.parametrize(
    "yubikey, field, value",
    [
        (fleet.YubiKey(pin_policy=1, touch_policy=2), "pin_policy", "never"),
        (fleet.YubiKey(pin_policy=3, touch_policy=2), "touch_policy", "always"),
        (fleet.YubiKey(pin_policy=4, touch_policy=3), "pin_policy", "match-once"),
        (fleet.YubiKey(pin_policy=5, touch_policy=3), "touch_policy", "cached"),
        (fleet.YubiKey(pin_policy=9, touch_policy=1), "pin_policy", "unknown-0x09"),
        (fleet.YubiKey(pin_policy=None), "pin_policy", None),
        (fleet.YubiKey(firmware=None), "firmware_version", None),
        (fleet.YubiKey(form_factor=0x83), "yubikey.fips", "true"),
        (fleet.YubiKey(form_factor=0x87), "yubikey.form_factor", "usb-c-bio"),
        (fleet.YubiKey(form_factor=None), "yubikey.form_factor", None),
        (fleet.YubiKey(slot="9C"), "yubikey.piv_slot", "9c"),
    ],
)
def test_fleet_posture(yubikey, field, value):
    att = fleet.attest(BINDING, yubikey=yubikey)
    posture = step.verify(att.att_stmt, fleet_context(att)).posture
    got = dict(posture.extra).get(field) if field.startswith("yubikey.") else getattr(posture, field)
    assert got == value


# --- the test fleet: one row per rejection reason ---------------------------------------


def _stmt(**members):
    return dict(stmt=members)


REVOKED = {"step": lambda serial: "listed by the operator"}

REJECTIONS = [
    pytest.param(dict(message=b"fleet-token-0001"), None, InvalidSignature, "sig (ES256) does not verify over attToBeSigned", id="sig-over-token"),
    pytest.param(dict(tamper_sig=True), None, InvalidSignature, "does not verify", id="sig-tampered"),
    pytest.param(dict(tamper_sig=True, sig_form="raw"), None, InvalidSignature, "does not verify", id="sig-tampered-unwrapped"),
    pytest.param(dict(sig_form="double"), None, InvalidSignature, "does not verify", id="sig-double-wrapped"),
    pytest.param(dict(key_type="rsa2048", alg=-37, sign_alg=-257), None, InvalidSignature, "sig (PS256) does not verify", id="ps256-stated-rs256-signed"),
    pytest.param(dict(alg=-35), None, RequirementFailed, "ES384 (-35) does not fit the attested key (EC secp256r1)", id="es384-on-p256"),
    pytest.param(dict(key_type="p384", alg=-7, sign_alg=-35), None, RequirementFailed, "ES256 (-7) does not fit the attested key (EC secp384r1)", id="es256-on-p384"),
    pytest.param(dict(alg=-257, sign_alg=-7), None, RequirementFailed, "RS256 (-257) does not fit", id="rs256-on-ec"),
    pytest.param(dict(key_type="x25519"), None, RequirementFailed, "EdDSA (-8) does not fit the attested key (X25519)", id="x25519-cannot-sign"),
    pytest.param(_stmt(alg=-65535), None, UnsupportedFormat, "attStmt.alg -65535 is not supported", id="alg-rs1"),
    pytest.param(_stmt(alg=None), None, MalformedStatement, "attStmt.alg is missing", id="alg-missing"),
    pytest.param(_stmt(alg="ES256"), None, MalformedStatement, "attStmt.alg is not an integer", id="alg-text"),
    pytest.param(_stmt(alg=True), None, MalformedStatement, "attStmt.alg is not an integer", id="alg-bool"),
    pytest.param(_stmt(sig=None), None, MalformedStatement, "attStmt.sig is missing", id="sig-missing"),
    pytest.param(_stmt(sig=b""), None, MalformedStatement, "attStmt.sig is not a non-empty byte string", id="sig-empty"),
    pytest.param(_stmt(sig="MEUCIQ"), None, MalformedStatement, "attStmt.sig is not a non-empty byte string", id="sig-text"),
    pytest.param(_stmt(x5c=None), None, MalformedStatement, "attStmt.x5c is missing", id="x5c-missing"),
    pytest.param(_stmt(x5c=[]), None, MalformedStatement, "attStmt.x5c is not a non-empty array", id="x5c-empty"),
    pytest.param(_stmt(x5c=[1, 2]), None, MalformedStatement, "not a byte string", id="x5c-entry-not-bytes"),
    pytest.param(_stmt(x5c=[b"\x30\x03\x02\x01\x00"]), None, MalformedStatement, "not a valid X.509 certificate", id="x5c-not-der"),
    pytest.param(dict(yubikey=fleet.YubiKey(serial=None)), None, IdentifierMissing, "serial number (1.3.6.1.4.1.41482.3.7) is missing", id="serial-missing"),
    pytest.param(dict(extensions={step.OID_SERIAL: b"\x01\x02\x03\x04"}), None, MalformedStatement, "(1.3.6.1.4.1.41482.3.7) is not a DER INTEGER", id="serial-raw-bytes"),
    pytest.param(dict(yubikey=fleet.YubiKey(serial=-5)), None, MalformedStatement, "(1.3.6.1.4.1.41482.3.7) is negative", id="serial-negative"),
    pytest.param(dict(extensions={step.OID_FIRMWARE: b"\x05\x04"}), None, MalformedStatement, "firmware version (1.3.6.1.4.1.41482.3.3) is 2 octets, not 3", id="firmware-short"),
    pytest.param(dict(extensions={step.OID_POLICY: b"\x02\x01\x00"}), None, MalformedStatement, "PIN and touch policy (1.3.6.1.4.1.41482.3.8) is 3 octets", id="policy-long"),
    pytest.param(dict(extensions={step.OID_FORM_FACTOR: b""}), None, MalformedStatement, "form factor (1.3.6.1.4.1.41482.3.9) is 0 octets", id="form-factor-empty"),
    pytest.param(dict(validity=(fleet.NOW - timedelta(days=30), fleet.NOW - timedelta(days=1))), None, ChainExpired, "leaf certificate", id="expired-slot-cert"),
    pytest.param(dict(issuer=fleet.pki(name="Rogue")), None, UntrustedChain, "does not chain to a configured root", id="wrong-root"),
    pytest.param(dict(issuer=fleet.pki("attestation-2024", name="Rogue"), generation="attestation-2024"), None, UntrustedChain, "does not chain", id="wrong-root-new-pki"),
    pytest.param(dict(f9="not-ca"), None, UntrustedChain, "is not a CA", id="f9-not-ca"),
    pytest.param(dict(f9="absent", generation="attestation-2024"), None, UntrustedChain, "(YubiKey 4 quirk)", id="f9-without-bc-outside-yk4-shape"),
    pytest.param(dict(generation="attestation-2024"), lambda ctx: replace(ctx, trust=TrustStore(roots=ctx.trust.roots)), UntrustedChain, "does not chain", id="new-pki-without-intermediates"),
    pytest.param({}, lambda ctx: replace(ctx, trust=TrustStore()), UntrustedChain, "no trust anchors", id="no-roots"),
    pytest.param({}, lambda ctx: replace(ctx, revocation=REVOKED), CertificateRevoked, "is revoked", id="revoked"),
]


@pytest.mark.parametrize("knobs, context, error, detail", REJECTIONS)
def test_rejects(knobs, context, error, detail):
    att = fleet.attest(BINDING, **knobs)
    ctx = context(fleet_context(att)) if context else fleet_context(att)
    with pytest.raises(AttestationError) as info:
        step.verify(att.att_stmt, ctx)
    assert type(info.value) is error, info.value
    assert detail in str(info.value)


@pytest.mark.parametrize("f9, detail", [("ca", "path length constraint exceeded"), ("absent", "'Common Name: Yubico PIV Attestation' is not a CA")])
def test_rejects_slot_certificate_used_as_a_ca(f9, detail):
    """A slot key signs anything its holder asks: it must not mint a slot certificate with another serial."""
    att = fleet.forged_under_slot(BINDING, f9=f9)
    with pytest.raises(UntrustedChain) as info:
        step.verify(att.att_stmt, fleet_context(att))
    assert detail in str(info.value)


def test_rejects_statement_that_is_not_a_map():
    with pytest.raises(MalformedStatement, match="attStmt is not a map"):
        step.verify([b"x"], fleet_context(fleet.attest(BINDING)))


# --- fuzzing: nothing but AttestationError may leave the verifier -----------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=48), st.text(max_size=12))
CBORISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
STATEMENTS = st.one_of(CBORISH, st.fixed_dictionaries({}, optional={"x5c": CBORISH, "sig": CBORISH, "alg": CBORISH}))


def verify_only_attestation_errors(stmt, ctx) -> None:
    try:
        step.verify(stmt, ctx)
    except AttestationError:
        pass


@given(stmt=STATEMENTS)
@settings(max_examples=300, deadline=None)
def test_fuzz_statement_structure(stmt):
    verify_only_attestation_errors(stmt, real_context(OLD_PKI))


@given(data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_real_chain(data):
    x5c = [bytearray(der) for der in vectors.pem_chain(NEW_PKI)]
    target = x5c[data.draw(st.integers(0, len(x5c) - 1))]
    for _ in range(data.draw(st.integers(1, 4))):
        target[data.draw(st.integers(0, len(target) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del target[data.draw(st.integers(0, len(target) - 1)) :]
    stmt = {
        "alg": data.draw(st.sampled_from([-7, -35, -257, -37, -8])),
        "sig": data.draw(st.binary(min_size=1, max_size=80)),
        "x5c": [bytes(der) for der in x5c] + data.draw(st.lists(st.binary(max_size=64), max_size=2)),
    }
    verify_only_attestation_errors(stmt, real_context(NEW_PKI))


FLEET = {key_type: fleet.attest(BINDING, key_type=key_type) for key_type in ("p256", "rsa2048", "ed25519")}


@given(
    key_type=st.sampled_from(sorted(FLEET)),
    alg=st.one_of(st.sampled_from([-7, -35, -257, -37, -8]), st.integers()),
    sig=st.one_of(st.binary(min_size=1, max_size=300), st.builds(cbor2.dumps, st.binary(max_size=300)), st.builds(cbor2.dumps, CBORISH)),
)
@settings(max_examples=300, deadline=None)
def test_fuzz_sig_and_alg(key_type, alg, sig):
    att = FLEET[key_type]
    verify_only_attestation_errors({**att.att_stmt, "alg": alg, "sig": sig}, fleet_context(att))
