"""android-key: real chains and WebAuthn objects at their own time, the fleet's table of
rejections and facts, and fuzzing of the KeyDescription parser and of verify().

Real evidence: ../shared/vectors (MANIFEST.md §2a, §2b). Negative cases: tests/fleet/android_key.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone

import cbor2
import pytest
from asn1crypto import core, x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.asn1.android_key import AnyPublicKeyInfo, parse_key_description
from attestation.context import Binding, TrustStore, VerificationContext
from attestation.errors import (AttestationError, CertificateRevoked, ChainExpired, ChallengeMismatch, InvalidSignature,
                                MalformedStatement, RequirementFailed, UnsupportedFormat, UntrustedChain)
from attestation.evidence import PermanentIdentifier, TrustLevel
from attestation.formats import android_key
from attestation.formats.android_key import FMT, default_roots, load_revocation_list, software_roots, verify, verify_x5c
from tests import vectors
from tests.fleet.android_key import Knobs, attest, for_acme, key_description

CHAINS = "android-key-chains/"
ACCEPTED = [
    "android-keyattestation/akita__sdk34__SB_RSA_NONE.pem",
    "android-keyattestation/akita__sdk34__TEE_EC_NONE.pem",
    "android-keyattestation/akita__sdk34__TEE_RSA_NONE.pem",
    "android-keyattestation/akita__sdk34__TEE_RSA_NONE_USERAUTH.pem",
    "android-keyattestation/blueline__sdk28__SB_RSA_NONE.pem",
    "android-keyattestation/blueline__sdk28__TEE_EC_NONE.pem",
    "android-keyattestation/blueline__sdk28__TEE_RSA_BASE+IMEI.pem",
    "android-keyattestation/blueline__sdk28__TEE_RSA_NONE.pem",
    "android-keyattestation/caiman__sdk36__TEE_EC_RKP.pem",
    "android-keyattestation/sony-xperia10-iii__sdk33__TEE_EC.pem",
    "android-keyattestation/tegu__sdk36__TEE_EC_2026_ROOT.pem",
    "android-keyattestation/tegu__sdk37__TEE_MAX_USAGE_COUNT.pem",
    "android-keyattestation/tegu__sdk37__TEE_TRUSTED_CONF.pem",
    "android-keyattestation/tokay__sdk37__TEE_MLDSA_FACTORY.pem",
    "google-android-key-attestation/algorithm_EC_SecurityLevel_TEE.chain.pem",
]
_LEVEL = {"SOFTWARE": TrustLevel.SOFTWARE, "TRUSTED_ENVIRONMENT": TrustLevel.TEE, "STRONG_BOX": TrustLevel.HARDWARE}
_PROTECTION = {"SOFTWARE": "software", "TRUSTED_ENVIRONMENT": "tee", "STRONG_BOX": "strongbox"}
_BOOT = {"VERIFIED": "verified", "SELF_SIGNED": "self-signed", "UNVERIFIED": "unverified", "FAILED": "failed"}


def _chain_case(relative: str, roots=None, *, challenge: bytes | None = None, now: datetime | None = None):
    entry = vectors.entry(CHAINS + relative)
    checks = entry["checks"]
    suggested = checks.get("verification_time_suggested")
    at = vectors.parse_time(suggested or checks["validity_window_all_certs"][0])
    at += timedelta(hours=0 if suggested else 1)
    expected_challenge = bytes.fromhex(checks["keyDescription"]["attestationChallenge_hex"])
    ctx = VerificationContext(
        binding=Binding(att_to_be_signed=b"", challenge=expected_challenge if challenge is None else challenge),
        now=now or at,
        trust=TrustStore(roots={FMT: tuple(default_roots() if roots is None else roots)}),
    )
    return vectors.pem_chain(CHAINS + relative), ctx, entry


def _expected_json(relative: str) -> dict:
    text = vectors.read(CHAINS + relative.replace(".pem", ".expected.json")).decode()
    return json.loads("\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//")))


@pytest.mark.parametrize("relative", ACCEPTED)
def test_real_chain_accepted_at_its_time(relative):
    chain, ctx, entry = _chain_case(relative)
    evidence = verify_x5c(chain, ctx)
    assert evidence.fmt == FMT
    assert len(evidence.chain) == len(chain)
    assert hashlib.sha256(evidence.chain[-1]).hexdigest() == entry["certs"][-1]["sha256"]
    assert evidence.chain[-1] in default_roots()
    assert evidence.permanent_identifiers == ()  # none of these devices attested its serial
    assert evidence.attested_at == ctx.now


@pytest.mark.parametrize("relative", [r for r in ACCEPTED if "android-keyattestation" in r])
def test_real_chain_facts_match_expected_json(relative):
    chain, ctx, _ = _chain_case(relative)
    evidence = verify_x5c(chain, ctx)
    expected = _expected_json(relative)
    tee = expected["hardwareEnforced"]
    posture = evidence.posture
    assert evidence.trust_level == _LEVEL[expected["attestationSecurityLevel"]]
    assert posture.key_protection == _PROTECTION[expected["attestationSecurityLevel"]]
    assert posture.verified_boot == _BOOT[tee["rootOfTrust"]["verifiedBootState"]]
    assert posture.bootloader_locked is tee["rootOfTrust"]["deviceLocked"]
    major, rest = divmod(int(tee["osVersion"]), 10000)
    assert posture.os_version == f"{major}.{rest // 100}.{rest % 100}"
    assert (posture.os_patch_level, posture.vendor_patch_level, posture.boot_patch_level) == (
        tee["osPatchLevel"], tee["vendorPatchLevel"], tee["bootPatchLevel"])
    extra = dict(posture.extra)
    assert extra["android.attestation_version"] == expected["attestationVersion"]
    assert extra["android.verified_boot_hash"] == base64.b64decode(tee["rootOfTrust"]["verifiedBootHash"]).hex()
    for name in ("brand", "device", "product", "manufacturer", "model"):
        assert extra.get(f"android.id.{name}") == tee.get(f"attestationId{name.title()}")
    assert "android.imei" not in extra and "moduleHash" not in str(extra)  # never softwareEnforced facts


def test_ml_dsa_leaf_is_supported():
    chain, ctx, _ = _chain_case("android-keyattestation/tokay__sdk37__TEE_MLDSA_FACTORY.pem")
    evidence = verify_x5c(chain, ctx)
    assert AnyPublicKeyInfo.load(evidence.public_key)["algorithm"]["algorithm"].dotted == "2.16.840.1.101.3.4.3.18"


def test_single_leaf_allow_while_on_body_parses_but_has_no_chain():
    chain, ctx, _ = _chain_case("android-keyattestation/allow_while_on_body.pem")
    with pytest.raises(UntrustedChain, match="only the leaf"):
        verify_x5c(chain, ctx)
    ext = next(e for e in x509.Certificate.load(chain[0])["tbs_certificate"]["extensions"]
               if e["extn_id"].dotted == "1.3.6.1.4.1.11129.2.1.17")
    description = parse_key_description(ext["extn_value"].contents)
    assert isinstance(description["software_enforced"]["allow_while_on_body"], core.Null)  # present
    assert isinstance(description["hardware_enforced"]["allow_while_on_body"], core.Void)  # absent
    assert description["attestation_version"].native == 3


def test_malformed_root_of_trust_is_refused():
    chain, ctx, _ = _chain_case("android-keyattestation/invalid__malformed_rot_device_locked.pem")
    with pytest.raises(MalformedStatement, match="BOOLEAN is not DER-encoded"):
        verify_x5c(chain, ctx)


def test_preproduction_strongbox_root_is_untrusted():
    chain, ctx, _ = _chain_case("google-android-key-attestation/algorithm_EC_SecurityLevel_StrongBox.chain.pem")
    with pytest.raises(UntrustedChain, match="does not chain to a configured root"):
        verify_x5c(chain, ctx)


def test_software_root_is_refused_by_default_and_reported_as_software_when_opted_in():
    relative = "android-keyattestation/marlin__sdk29__TEE_EC_NONE.pem"
    chain, ctx, _ = _chain_case(relative)
    with pytest.raises(UntrustedChain, match="Software Attestation Root"):
        verify_x5c(chain, ctx)
    chain, ctx, _ = _chain_case(relative, roots=default_roots() + software_roots())
    evidence = verify_x5c(chain, ctx)
    assert evidence.trust_level == TrustLevel.SOFTWARE and evidence.posture.key_protection == "software"
    assert evidence.posture.verified_boot is None and evidence.permanent_identifiers == ()


def test_wrong_challenge_on_real_chain():
    chain, ctx, _ = _chain_case(ACCEPTED[0], challenge=b"not the challenge")
    with pytest.raises(ChallengeMismatch, match="attestationChallenge"):
        verify_x5c(chain, ctx)


def test_reissued_rsa_root_after_2016_issuance_expired():
    """Google's 2016 root expired 2026-05-24; chains under the same key still verify via 2019/2021/2022."""
    relative = "android-keyattestation/tokay__sdk37__TEE_MLDSA_FACTORY.pem"
    later = datetime(2026, 6, 1, tzinfo=timezone.utc)
    chain, ctx, _ = _chain_case(relative, now=later)
    assert verify_x5c(chain, ctx).chain[-1] in default_roots()
    chain_without_root, ctx, _ = _chain_case(relative, now=later)
    assert verify_x5c(chain_without_root[:-1], ctx).trust_level == TrustLevel.TEE


# --- WebAuthn attestation objects ---------------------------------------------------------


def _webauthn(name: str, roots=None, *, tamper: bytes = b""):
    relative = f"android-key-webauthn/{name}.attObj.cbor"
    obj = cbor2.loads(vectors.read(relative))
    client_data_hash = hashlib.sha256(vectors.read(f"android-key-webauthn/{name}.clientDataJSON")).digest()
    ctx = VerificationContext(
        binding=Binding(att_to_be_signed=obj["authData"] + client_data_hash + tamper, challenge=client_data_hash),
        now=vectors.parse_time(vectors.entry(relative)["checks"]["verification_time_suggested"]),
        trust=TrustStore(roots={FMT: tuple(default_roots() if roots is None else roots)}),
    )
    return obj["attStmt"], ctx


def test_pixel8a_webauthn_object_verifies():
    att_stmt, ctx = _webauthn("pixel8a-rkp-2025-01")
    evidence = verify(att_stmt, ctx)
    assert evidence.trust_level == TrustLevel.TEE
    assert (evidence.posture.verified_boot, evidence.posture.bootloader_locked) == ("verified", True)
    assert evidence.posture.os_version == "15.0.0" and evidence.posture.os_patch_level == "202501"
    assert evidence.chain[-1] in default_roots()


def test_pixel8a_sig_over_other_bytes_is_refused():
    att_stmt, ctx = _webauthn("pixel8a-rkp-2025-01", tamper=b"x")
    with pytest.raises(InvalidSignature, match=r"sig does not verify .*ES256"):
        verify(att_stmt, ctx)


def test_software_webauthn_object():
    att_stmt, ctx = _webauthn("android-SOFTWARE-attestation-2018-12")
    with pytest.raises(UntrustedChain):
        verify(att_stmt, ctx)
    att_stmt, ctx = _webauthn("android-SOFTWARE-attestation-2018-12", default_roots() + software_roots())
    assert verify(att_stmt, ctx).trust_level == TrustLevel.SOFTWARE


# --- roots and revocation -----------------------------------------------------------------


def test_bundled_roots_are_the_documented_ones():
    fingerprints = {hashlib.sha256(der).hexdigest()[:16] for der in default_roots()}
    assert fingerprints == {"c1984a3ef45c1e2a", "1ef1a04b8ba58ab9", "ab6641178a36e179", "cedb1cb6dc896ae5",
                            "6d9db4ce6c5c0b29"}
    assert [hashlib.sha256(der).hexdigest()[:16] for der in software_roots()] == ["51d496ad4664190f"]
    assert not set(software_roots()) & set(default_roots())


def test_status_list_snapshot():
    status = load_revocation_list(vectors.read(CHAINS + "google-android-key-attestation/status.json"))
    assert status(int("6681152659205225093", 16)) == "REVOKED (KEY_COMPROMISE)"
    assert status(int("cc66e9a93713b6e643b26c15879786f7", 16)) == "SUSPENDED (KEY_COMPROMISE)"
    assert status(0x6681152659205225093 + 1) is None and status(-1) is None
    chain, ctx, _ = _chain_case(ACCEPTED[0])  # no real sample is listed: no false positive
    assert verify_x5c(chain, VerificationContext(ctx.binding, ctx.now, ctx.trust, {FMT: status}))


def test_status_list_revokes_a_real_intermediate():
    chain, ctx, _ = _chain_case(ACCEPTED[0])
    serial = x509.Certificate.load(chain[2]).serial_number
    status = load_revocation_list(json.dumps({"entries": {f"{serial:X}": {"status": "REVOKED"}}}).encode())
    with pytest.raises(CertificateRevoked, match=f"serial {serial:x} .*Droid CA3.*REVOKED"):
        verify_x5c(chain, VerificationContext(ctx.binding, ctx.now, ctx.trust, {FMT: status}))


@pytest.mark.parametrize("document", [b"[]", b'{"entries": []}', b'{"entries": {"xyz": {"status": "REVOKED"}}}',
                                      b'{"entries": {"01": {"status": "MAYBE"}}}', b"not json"])
def test_status_list_refuses_bad_documents(document):
    with pytest.raises(ValueError):
        load_revocation_list(document)


# --- the fleet: one row per check ---------------------------------------------------------

BINDING = Binding(att_to_be_signed=b"token.thumbprint", challenge=b"token.thumbprint")

REJECTIONS = [
    ({"challenge": b"other"}, ChallengeMismatch, "attestationChallenge does not equal"),
    ({"sig": "wrong-data"}, InvalidSignature, "sig does not verify over attToBeSigned"),
    ({"sig": "garbage"}, InvalidSignature, "sig does not verify"),
    ({"alg": -257}, InvalidSignature, "alg RS256 does not match the attested ec key"),
    ({"key_type": "rsa", "alg": -7}, InvalidSignature, "alg ES256 does not match the attested rsa key"),
    ({"key_type": "rsa", "alg": -37}, InvalidSignature, r"\(PS256\)"),
    ({"key_type": "ml-dsa-65", "sig": "garbage"}, InvalidSignature, r"\(ML-DSA-65\)"),
    ({"key_type": "ml-dsa-65", "alg": -48}, InvalidSignature, "alg ML-DSA-44 does not match the attested ML-DSA-65"),
    ({"alg": -8}, UnsupportedFormat, "alg -8 is not supported"),
    ({"untrusted": True}, UntrustedChain, "does not chain to a configured root"),
    ({"expired": "leaf"}, ChainExpired, "leaf certificate 'Common Name: Android Keystore Key' expired"),
    ({"expired": "intermediate"}, ChainExpired, "Fleet TEE attestation key' expired"),
    ({"expired": "root"}, ChainExpired, "root certificate 'Common Name: Fleet Attestation Root' expired"),
    ({"revoked": "leaf"}, CertificateRevoked, "serial 1 .*REVOKED \\(KEY_COMPROMISE\\)"),
    ({"revoked": "intermediate", "revoked_status": "SUSPENDED"}, CertificateRevoked, "serial 2002 .*SUSPENDED"),
    ({"revoked": "root"}, CertificateRevoked, "serial 1001 .*Fleet Attestation Root"),
    ({"key_description": "absent"}, RequirementFailed, "no KeyDescription extension"),
    ({"key_description": "also-intermediate"}, RequirementFailed, "issuer .* carries a KeyDescription"),
    ({"key_description": "truncated"}, MalformedStatement, "parse_key_description"),
    ({"device_locked": "ber"}, MalformedStatement, "BOOLEAN is not DER-encoded"),
    ({"extra_tee": {"attestation_id_serial": b"\xff\xfe"}}, MalformedStatement, "UnicodeDecodeError"),
    # WebAuthn §8.4: origin GENERATED and purpose ∋ SIGN, from teeEnforced for a TEE/StrongBox key
    ({"extra_tee": {"origin": 2}}, RequirementFailed,
     r"key origin is IMPORTED \(2\), not GENERATED: the key may exist outside the device"),
    ({"extra_tee": {"origin": 4}}, RequirementFailed, r"key origin is SECURELY_IMPORTED \(4\), not GENERATED"),
    ({"extra_tee": {"origin": 1}, "security_level": "StrongBox"}, RequirementFailed, r"DERIVED \(1\)"),
    ({"extra_tee": {"purpose": {0, 1}}}, RequirementFailed,
     r"purpose in teeEnforced \(ENCRYPT \(0\), DECRYPT \(1\)\) does not include SIGN \(2\)"),
    ({"extra_tee": {"purpose": None}}, RequirementFailed, r"purpose in teeEnforced \(none\)"),
    ({"extra_tee": {"origin": None}, "extra_software": {"origin": 0}}, RequirementFailed,
     "teeEnforced has no key origin"),  # softwareEnforced proves nothing for a TEE key
    ({"extra_tee": {"purpose": None}, "extra_software": {"purpose": {2}}}, RequirementFailed,
     "purpose in teeEnforced"),
    ({"security_level": "Software", "extra_software": {"origin": 2}}, RequirementFailed,
     r"key origin is IMPORTED \(2\)"),  # a software key: the union of both lists
    ({"security_level": "Software", "extra_tee": {"origin": None}}, RequirementFailed,
     "teeEnforced or softwareEnforced has no key origin"),
]


@pytest.mark.parametrize(("knobs", "error", "detail"), REJECTIONS, ids=[str(k) for k, _, _ in REJECTIONS])
def test_fleet_rejection(knobs, error, detail):
    att = attest(BINDING, **knobs)
    with pytest.raises(error, match=detail) as raised:
        verify(att.att_stmt, att.context())
    assert type(raised.value) is error


@pytest.mark.parametrize(("att_stmt", "detail"), [
    ([], "not a map"), ({"sig": b"", "x5c": [b"x"]}, "no 'alg'"), ({"alg": True, "sig": b"", "x5c": [b"x"]}, "alg"),
    ({"alg": -7, "sig": "s", "x5c": [b"x"]}, "'sig'"), ({"alg": -7, "sig": b"", "x5c": []}, "'x5c'"),
    ({"alg": -7, "sig": b"", "x5c": [b"not a certificate"]}, "leaf certificate is not a valid X.509"),
])
def test_malformed_statements(att_stmt, detail):
    with pytest.raises(MalformedStatement, match=detail):
        verify(att_stmt, attest(BINDING).context())


def test_bytes_after_the_leaf_der_are_refused():
    att = attest(BINDING)
    x5c = [att.chain[0] + b"TRAILING", *att.chain[1:]]
    with pytest.raises(MalformedStatement, match="leaf certificate is not a valid X.509 .*trailing data"):
        verify(dict(att.att_stmt, x5c=x5c), att.context())
    with pytest.raises(MalformedStatement, match="trailing data"):
        verify_x5c(x5c, att.context())


def test_unknown_signature_algorithm_in_chain_is_an_attestation_error():
    att = attest(BINDING)
    ecdsa_sha256 = bytes.fromhex("06082a8648ce3d040302")
    intermediate = att.chain[1].replace(ecdsa_sha256, ecdsa_sha256[:-1] + b"\x09")
    with pytest.raises(AttestationError, match="signature algorithm .* is not supported"):
        verify(dict(att.att_stmt, x5c=[att.chain[0], intermediate, att.chain[2]]), att.context())


def test_no_roots_configured_fails_closed():
    att = attest(BINDING)
    with pytest.raises(UntrustedChain, match="no trust anchors"):
        verify(att.att_stmt, att.context(trust=TrustStore()))


def test_healthy_fleet_device_facts():
    att = attest(BINDING)
    evidence = verify(att.att_stmt, att.context())
    assert evidence.trust_level == TrustLevel.TEE and evidence.posture.key_protection == "tee"
    assert evidence.permanent_identifiers == (PermanentIdentifier("FLEET-0001"),)
    assert (evidence.posture.os_version, evidence.posture.os_patch_level) == ("15.0.0", "202501")
    assert (evidence.posture.vendor_patch_level, evidence.posture.boot_patch_level) == ("20250105", "20250105")
    assert (evidence.posture.verified_boot, evidence.posture.bootloader_locked) == ("verified", True)
    assert dict(evidence.posture.extra)["android.id.brand"] == "acmeda"
    assert evidence.chain == att.chain


ACCEPTS = [  # knobs → facts expected on Evidence (or on its posture)
    ({"key_type": "rsa"}, {"trust_level": TrustLevel.TEE}),
    ({"key_type": "ml-dsa-65"}, {"trust_level": TrustLevel.TEE}),
    ({"intermediate_is_ca": False}, {"chain_length": 3}),  # Sony's attestation key cert says cA=FALSE
    ({"include_root": False}, {"chain_length": 3}),
    ({"security_level": "StrongBox"}, {"trust_level": TrustLevel.HARDWARE, "key_protection": "strongbox"}),
    ({"security_level": "Software"}, {"trust_level": TrustLevel.SOFTWARE, "key_protection": "software"}),
    ({"keymint_level": "Software"}, {"trust_level": TrustLevel.SOFTWARE}),  # the weaker level wins
    ({"boot_state": "SelfSigned", "device_locked": False},
     {"verified_boot": "self-signed", "bootloader_locked": False}),
    ({"boot_state": "Unverified"}, {"verified_boot": "unverified"}),
    ({"boot_state": "Failed"}, {"verified_boot": "failed"}),
    ({"boot_state": None}, {"verified_boot": None, "bootloader_locked": None}),
    ({"serial_in": "software"}, {"permanent_identifiers": ()}),
    ({"serial_in": "absent"}, {"permanent_identifiers": ()}),
    ({"os_version": None, "extra_software": {"os_version": 160000, "os_patch_level": 202601, "root_of_trust": {
        "verified_boot_key": b"", "device_locked": False, "verified_boot_state": "Failed"}}},
     {"os_version": None, "os_patch_level": "202501", "verified_boot": "verified"}),  # softwareEnforced is ignored
    ({"os_version": 0, "os_patch_level": None}, {"os_version": None, "os_patch_level": None}),
    ({"os_patch_level": 202513, "vendor_patch_level": 2025}, {"os_patch_level": None, "vendor_patch_level": None}),
    ({"os_version": 170102, "boot_patch_level": 202601}, {"os_version": "17.1.2", "boot_patch_level": "202601"}),
    ({"extra_tee": {"purpose": {2, 3, 7}}}, {"trust_level": TrustLevel.TEE}),
    ({"extra_software": {"origin": 2, "purpose": {0}}}, {"trust_level": TrustLevel.TEE}),  # only teeEnforced counts
    ({"security_level": "Software", "extra_tee": {"origin": None, "purpose": None},
      "extra_software": {"origin": 0, "purpose": {2}}}, {"trust_level": TrustLevel.SOFTWARE}),
]


@pytest.mark.parametrize(("knobs", "facts"), ACCEPTS, ids=[str(k) for k, _ in ACCEPTS])
def test_fleet_accepts_and_reports_facts(knobs, facts):
    att = attest(BINDING, **knobs)
    evidence = verify(att.att_stmt, att.context())
    for name, value in facts.items():
        actual = len(evidence.chain) if name == "chain_length" else getattr(
            evidence.posture if hasattr(evidence.posture, name) else evidence, name)
        assert actual == value, name


def test_ps256():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    att = attest(BINDING, key_type="rsa", alg=-37)
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH)
    att_stmt = dict(att.att_stmt, sig=att.key.sign(BINDING.att_to_be_signed, pss, hashes.SHA256()))
    assert verify(att_stmt, att.context()).trust_level == TrustLevel.TEE


def test_format_entry_and_acme_binding():
    assert android_key.FORMAT.name == "android-key" and android_key.FORMAT.verify is verify
    att = for_acme("tok", b"tok.thumb")
    assert att.binding.att_to_be_signed == att.binding.challenge == b"tok.thumb"
    assert cbor2.loads(att.att_obj()) == {"fmt": "android-key", "attStmt": att.att_stmt}
    assert verify(att.att_stmt, att.context()).public_key == att.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- fuzzing: nothing but AttestationError may leave the verifier -------------------------

_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_VALID_KD = key_description(Knobs(), b"challenge")
_FLEET = attest(BINDING)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    buffer = bytearray(data)
    for position, value in edits:
        buffer[position % len(buffer)] = value
    return bytes(buffer[: max(1, len(buffer) - cut)])


@_FUZZ
@given(st.one_of(st.binary(max_size=300),
                 st.builds(_mutate, st.just(_VALID_KD), st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)),
                                                                 max_size=4), st.integers(0, 40))))
def test_fuzz_key_description_parser(data):
    try:
        parse_key_description(data)
    except MalformedStatement:
        pass


_certs = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(list(_FLEET.chain)),
    st.builds(_mutate, st.sampled_from(list(_FLEET.chain)),
              st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), min_size=1, max_size=3),
              st.integers(0, 8)),
)
_statements = st.one_of(
    st.fixed_dictionaries(
        {"alg": st.one_of(st.sampled_from([-7, -35, -36, -37, -257, -49, -8]), st.integers(), st.booleans()),
         "sig": st.one_of(st.binary(max_size=80), st.just(_FLEET.att_stmt["sig"])),
         "x5c": st.one_of(st.lists(_certs, max_size=4), st.builds(lambda c, rest: [c, *_FLEET.chain[1:]], _certs,
                                                                   st.none()))}),
    st.dictionaries(st.sampled_from(["alg", "sig", "x5c", "other"]),
                    st.one_of(st.none(), st.integers(), st.binary(max_size=20), st.text(max_size=5),
                              st.lists(st.binary(max_size=20), max_size=2))),
    st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2)),
)


@_FUZZ
@given(_statements)
def test_fuzz_verify(att_stmt):
    try:
        verify(att_stmt, _FLEET.context())
    except AttestationError:
        pass
