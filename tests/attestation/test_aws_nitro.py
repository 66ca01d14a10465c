"""fmt "aws-nitro": real Nitro attestation documents at their own time, one row per rejection, fuzzing.

The real documents were made for other protocols: their nonces are not SHA-256 of an ACME
key authorization, and none carries a DER SubjectPublicKeyInfo in public_key (one has
b"dummy", one null). So they are checked with `verify_document` (COSE, payload, chain,
signature, freshness, nonce, identity) under a binding whose challenge is the document's
own nonce, which is exactly the comparison the verifier makes with an ACME binding; and
`verify` on them must then stop at the attested-key check, as a CA would.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import timedelta

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation import assigners, cose, verify_attestation
from attestation.context import Binding, TrustStore, VerificationContext
from attestation.errors import (
    AttestationError, CertificateRevoked, ChainExpired, ChallengeMismatch, IdentifierMissing, InvalidSignature,
    MalformedStatement, RequirementFailed, UnsupportedFormat, UntrustedChain,
)
from attestation.evidence import PermanentIdentifier, TrustLevel
from attestation.formats import aws_nitro
from attestation.roots import bundled
from attestation.x509chain import verify_chain
from tests import vectors
from tests.fleet import aws_nitro as fleet
from tests.fleet.aws_nitro import REMOVE

VALID = ["aws-nitro/eternis-2024-09-09.cose.cbor", "aws-nitro/evervault-2023-09-22.cose.cbor"]
INVALID = "aws-nitro/eternis-INVALID-signature-2024-07-23.cose.cbor"
BINDING = aws_nitro.acme_binding("fleet-token-0001", b"fleet-token-0001.thumbprint")


def bundled_trust() -> TrustStore:
    return TrustStore(roots={"aws-nitro": aws_nitro.default_roots()})


def real_document(path: str) -> aws_nitro.NitroDocument:
    return aws_nitro.parse_document(cose.decode_sign1(vectors.read(path)).payload)


def real_context(path: str, trust: TrustStore | None = None) -> VerificationContext:
    """At the sample's own time, with the sample's own nonce as the expected challenge."""
    at = vectors.parse_time(vectors.entry(path)["checks"]["verification_time_suggested"])
    return VerificationContext(Binding(b"", real_document(path).nonce), at, trust or bundled_trust())


# --- real documents ------------------------------------------------------------------------


def test_bundled_root_is_the_manifest_root():
    (root,) = aws_nitro.default_roots()
    assert hashlib.sha256(root).hexdigest() == vectors.entry("roots/aws/aws-nitro-enclaves-root-g1.pem")["cert"]["sha256"]


def test_acme_binding_is_sha256_of_the_key_authorization():
    assert BINDING.challenge == hashlib.sha256(b"fleet-token-0001.thumbprint").digest()
    assert BINDING.att_to_be_signed == b"fleet-token-0001.thumbprint"


@pytest.mark.parametrize("path", VALID)
def test_real_document_verifies_at_its_own_time(path):
    checks = vectors.entry(path)["checks"]
    verified = aws_nitro.verify_document(vectors.read(path), real_context(path))
    document = verified.document
    instance_id = vectors.entry(path)["device"].rsplit(" ", 1)[1].split("-enc")[0]
    assert verified.instance_id == instance_id and document.module_id.startswith(instance_id + "-enc")
    assert document.timestamp_ms == checks["timestamp_ms"] and document.digest == "SHA384"
    assert document.pcrs[0].hex() == checks["pcr0_hex"] and document.debug  # both samples run in debug mode
    assert document.pcrs[4] == hashlib.sha384(bytes(48) + instance_id.encode()).digest()
    assert [hashlib.sha256(der).hexdigest() for der in verified.chain] == [c["sha256"] for c in vectors.entry(path)["certs"]]
    assert aws_nitro.identifiers(verified) == (PermanentIdentifier(instance_id, assigners.AWS_EC2_INSTANCE_ID),)
    facts = dict(aws_nitro.posture(document).extra)
    assert facts["nitro_debug"] == "true" and facts["nitro_module_id"] == document.module_id
    assert facts["nitro_pcr4"] == document.pcrs[4].hex() and facts["nitro_pcr3"] == document.pcrs[3].hex()
    assert not {"nitro_pcr0", "nitro_pcr1", "nitro_pcr2", "nitro_pcr8"} & facts.keys()  # zero registers prove nothing


@pytest.mark.parametrize("path", VALID)
def test_real_document_tagged_18_verifies(path):
    tagged = cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(vectors.read(path))))
    assert aws_nitro.verify_document(tagged, real_context(path)).document == real_document(path)


@pytest.mark.parametrize("path, error, detail", [
    (VALID[0], MalformedStatement, "public_key (5 octets) is not a DER SubjectPublicKeyInfo"),
    (VALID[1], RequirementFailed, "public_key is absent"),
])
def test_real_document_attests_no_csr_key(path, error, detail):
    """All checks before pass; neither real document names a key a CSR could carry."""
    with pytest.raises(error, match=re.escape(detail)) as info:
        aws_nitro.verify({"attDoc": vectors.read(path)}, real_context(path))
    assert info.value.check == "nitro-public-key"


def test_real_invalid_document_is_refused_by_the_signature_check():
    ctx = real_context(INVALID)
    document = real_document(INVALID)
    path = verify_chain([document.certificate, *reversed(document.cabundle[1:])], aws_nitro.default_roots(), ctx.now)
    assert path[-1].dump() == document.cabundle[0]  # the chain is genuine: only the signature is bad
    with pytest.raises(InvalidSignature, match="ES384 signature does not verify") as info:
        aws_nitro.verify({"attDoc": vectors.read(INVALID)}, ctx)
    assert info.value.check == "cose-signature"


@pytest.mark.parametrize("change, error, check", [
    (lambda ctx: replace(ctx, binding=BINDING), ChallengeMismatch, "nitro-nonce"),
    (lambda ctx: replace(ctx, now=ctx.now + timedelta(minutes=6)), RequirementFailed, "nitro-timestamp-stale"),
    (lambda ctx: replace(ctx, now=ctx.now - timedelta(minutes=2)), RequirementFailed, "nitro-timestamp-future"),
    (lambda ctx: replace(ctx, now=ctx.now + timedelta(days=1)), ChainExpired, "chain-expired"),
    (lambda ctx: replace(ctx, trust=TrustStore()), UntrustedChain, "chain-untrusted"),
    (lambda ctx: replace(ctx, trust=TrustStore(roots={"aws-nitro": bundled("apple")})), UntrustedChain, "nitro-cabundle-root"),
], ids=["acme-binding", "stale", "future", "leaf-expired", "no-roots", "other-root"])
def test_real_document_refused_out_of_its_context(change, error, check):
    """On the evervault document, whose leaf was issued 13 minutes before the document."""
    with pytest.raises(AttestationError) as info:
        aws_nitro.verify_document(vectors.read(VALID[1]), change(real_context(VALID[1])))
    assert type(info.value) is error and info.value.check == check, info.value


# --- the test fleet: acceptance -----------------------------------------------------------


def fleet_context(att: fleet.NitroAttestation, now=fleet.NOW) -> VerificationContext:
    return VerificationContext(BINDING, now, att.trust)


@pytest.mark.parametrize("key_type", ["p256", "p384", "rsa2048", "ed25519"])
def test_fleet_document_verifies(key_type):
    att = fleet.attest(BINDING, key_type=key_type)
    evidence = aws_nitro.verify(att.att_stmt, fleet_context(att))
    assert evidence.fmt == "aws-nitro" and evidence.trust_level is TrustLevel.CLOUD
    assert evidence.public_key == fleet.spki(att.key)
    assert evidence.permanent_identifiers == (
        PermanentIdentifier(fleet.INSTANCE_ID, assigners.AWS_EC2_INSTANCE_ID),
        PermanentIdentifier(fleet.IMAGE.hex(), assigners.NITRO_ENCLAVE_IMAGE),
    )
    assert evidence.attested_at == fleet.NOW and evidence.hardware_modules == () and not evidence.replayable
    assert evidence.chain[0] == att.document["certificate"] and evidence.chain[-1] == att.document["cabundle"][0]
    facts = dict(evidence.posture.extra)
    assert evidence.posture.key_protection == "nitro-enclave"
    assert [name for name, _ in evidence.posture.extra] == sorted(facts)
    assert facts == {"nitro_debug": "false", "nitro_module_id": fleet.MODULE_ID,
                     **{f"nitro_pcr{i}": att.document["pcrs"][i].hex() for i in range(5)}}


def test_fleet_debug_enclave_is_stated_and_proves_no_image():
    att = fleet.attest(BINDING, debug=True, pcrs={8: hashlib.sha384(b"signer").digest()})
    evidence = aws_nitro.verify(att.att_stmt, fleet_context(att))
    assert evidence.permanent_identifiers == (PermanentIdentifier(fleet.INSTANCE_ID, assigners.AWS_EC2_INSTANCE_ID),)
    facts = dict(evidence.posture.extra)
    assert facts["nitro_debug"] == "true" and "nitro_pcr0" not in facts and "nitro_pcr8" in facts


@pytest.mark.parametrize("knobs", [
    dict(tag=18),
    dict(timestamp=fleet.NOW - aws_nitro.MAX_AGE),
    dict(timestamp=fleet.NOW + aws_nitro.MAX_FUTURE_SKEW),
    dict(user_data=b"\x00" * 512, fields={"nonce": BINDING.challenge}),
    dict(pcrs={index: REMOVE for index in range(5, 16)}),
    dict(fields={"user_data": REMOVE}),
    dict(module_id="i-0123abcd-enc0abc", pcrs={4: fleet.measure(b"i-0123abcd")}),
], ids=["tagged", "oldest", "newest", "max-user-data", "few-pcrs", "no-user-data", "short-instance-id"])
def test_fleet_variants_accepted(knobs):
    att = fleet.attest(BINDING, **knobs)
    assert aws_nitro.verify(att.att_stmt, fleet_context(att)).fmt == "aws-nitro"


def test_fleet_attestation_object_roundtrip():
    att = fleet.for_acme("fleet-token-0001", b"fleet-token-0001.thumbprint")
    evidence = verify_attestation(att.att_obj(), fleet_context(att), {"aws-nitro": aws_nitro.FORMAT})
    assert evidence.public_key == att.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- the test fleet: one row per rejection reason -----------------------------------------

OLD = fleet.NOW - timedelta(days=2)
REVOKED = {"aws-nitro": lambda serial: "listed by the operator"}


def _row(knobs, error, check, id, context=None):
    return pytest.param(knobs, context, error, check, id=id)


def _fields(**members):
    return dict(fields=members)


REJECTIONS = [
    # the statement
    _row(dict(stmt={"attDoc": REMOVE}), MalformedStatement, "nitro-statement", "attdoc-missing"),
    _row(dict(stmt={"attDoc": "text"}), MalformedStatement, "nitro-statement", "attdoc-text"),
    _row(dict(stmt={"attDoc": b""}), MalformedStatement, "nitro-statement", "attdoc-empty"),
    _row(dict(stmt={"x5c": [b"x"]}), MalformedStatement, "nitro-statement", "extra-member"),
    # COSE_Sign1
    _row(dict(members={3: REMOVE}), MalformedStatement, "cose-structure", "cose-three-members"),
    _row(dict(members={0: {1: -35}}), MalformedStatement, "cose-structure", "cose-protected-not-bytes"),
    _row(dict(protected=b"\xa1\x01"), MalformedStatement, "cose-structure", "cose-protected-truncated"),
    _row(dict(protected=b"\x80"), MalformedStatement, "cose-structure", "cose-protected-not-map"),
    _row(dict(members={1: []}), MalformedStatement, "cose-structure", "cose-unprotected-not-map"),
    _row(dict(members={2: None}), MalformedStatement, "cose-structure", "cose-detached-payload"),
    _row(dict(members={3: "sig"}), MalformedStatement, "cose-structure", "cose-signature-text"),
    _row(dict(protected=cbor2.dumps({1: -35, 2: [1]})), MalformedStatement, "cose-structure", "cose-crit"),
    _row(dict(unprotected={1: -35}), MalformedStatement, "cose-structure", "cose-alg-in-both-buckets"),
    _row(dict(tag=98), MalformedStatement, "cose-structure", "cose-sign-tag"),
    _row(dict(stmt={"attDoc": cbor2.dumps({"payload": b""})}), MalformedStatement, "cose-structure", "cose-map"),
    _row(dict(stmt={"attDoc": b"\x84\x40\xa0\x40"}), MalformedStatement, "cose-structure", "cose-truncated"),
    # protected alg
    _row(dict(alg=-7), UnsupportedFormat, "nitro-alg", "alg-es256"),
    _row(dict(alg="ES384"), UnsupportedFormat, "nitro-alg", "alg-text"),
    _row(dict(protected=b""), UnsupportedFormat, "nitro-alg", "alg-absent"),
    _row(dict(protected=b"", unprotected={1: -35}), UnsupportedFormat, "nitro-alg", "alg-only-unprotected"),
    # payload: AWS's field rules
    _row(dict(payload=b"\x80"), MalformedStatement, "nitro-document", "payload-array"),
    _row(dict(payload=cbor2.dumps({"module_id": "x"}) + b"\x00"), MalformedStatement, "nitro-document", "payload-trailing"),
    _row(dict(payload=cbor2.dumps(cbor2.CBORTag(1, 0))), MalformedStatement, "nitro-document", "payload-tagged"),
    _row(dict(payload=b"\xa2" + cbor2.dumps("digest") + cbor2.dumps("SHA384") + cbor2.dumps("digest") + cbor2.dumps("SHA512")),
         MalformedStatement, "nitro-document", "payload-duplicate-key"),
    *[_row(_fields(**{name: REMOVE}), MalformedStatement, "nitro-document", f"missing-{name}") for name in aws_nitro.MANDATORY_FIELDS],
    _row(_fields(cabundle=None), MalformedStatement, "nitro-document", "null-cabundle"),
    _row(_fields(extra=b"x"), MalformedStatement, "nitro-document", "unknown-field"),
    _row(dict(module_id=""), MalformedStatement, "nitro-document", "module-id-empty"),
    _row(_fields(module_id=b"i-0f1ee7000000000a1-enc01"), MalformedStatement, "nitro-document", "module-id-bytes"),
    _row(dict(digest="SHA256"), UnsupportedFormat, "nitro-digest", "digest-sha256"),
    _row(_fields(digest=384), MalformedStatement, "nitro-document", "digest-int"),
    _row(_fields(timestamp=0), MalformedStatement, "nitro-document", "timestamp-zero"),
    _row(_fields(timestamp=True), MalformedStatement, "nitro-document", "timestamp-bool"),
    _row(_fields(timestamp=2**63), MalformedStatement, "nitro-document", "timestamp-beyond-dates"),
    _row(_fields(timestamp="2026-11-01"), MalformedStatement, "nitro-document", "timestamp-text"),
    _row(_fields(pcrs={}), MalformedStatement, "nitro-document", "pcrs-empty"),
    _row(dict(pcrs={32: bytes(48)}), MalformedStatement, "nitro-document", "pcr-index-32"),
    _row(_fields(pcrs={"0": bytes(48)}), MalformedStatement, "nitro-document", "pcr-index-text"),
    _row(dict(pcrs={5: bytes(20)}), MalformedStatement, "nitro-document", "pcr-20-octets"),
    _row(_fields(certificate=b""), MalformedStatement, "nitro-document", "certificate-empty"),
    _row(_fields(cabundle=[]), MalformedStatement, "nitro-document", "cabundle-empty"),
    _row(_fields(cabundle=[b"x" * 1025]), MalformedStatement, "nitro-document", "cabundle-entry-too-long"),
    _row(dict(public_key="MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"), MalformedStatement, "nitro-document", "public-key-text"),
    _row(dict(public_key=b""), MalformedStatement, "nitro-document", "public-key-empty"),
    _row(dict(user_data=b"u" * 513), MalformedStatement, "nitro-document", "user-data-too-long"),
    _row(dict(nonce=b"n" * 513), MalformedStatement, "nitro-document", "nonce-too-long"),
    # certificates
    _row(dict(issuer=fleet.pki("Rogue")), UntrustedChain, "nitro-cabundle-root", "cabundle-root-untrusted"),
    _row(dict(issuer=fleet.pki("Rogue"), cabundle_root=fleet.der(fleet.pki().root)), UntrustedChain, "chain-untrusted",
         "trusted-root-rogue-intermediate"),
    _row(dict(cabundle=[fleet.der(fleet.pki().root)]), UntrustedChain, "chain-untrusted", "intermediate-missing"),
    _row({}, UntrustedChain, "chain-untrusted", "no-roots", lambda ctx: replace(ctx, trust=TrustStore())),
    _row(dict(leaf_validity=(OLD - timedelta(hours=3), OLD)), ChainExpired, "chain-expired", "leaf-expired"),
    _row(dict(leaf_validity=(fleet.NOW + timedelta(minutes=1), fleet.NOW + timedelta(hours=3))), ChainExpired,
         "chain-expired", "leaf-not-yet-valid"),
    _row({}, CertificateRevoked, "chain-revoked", "revoked", lambda ctx: replace(ctx, revocation=REVOKED)),
    _row(dict(leaf_ca=True), RequirementFailed, "nitro-leaf-profile", "leaf-is-ca"),
    _row(dict(leaf_key_usage="cert-sign"), RequirementFailed, "nitro-leaf-profile", "leaf-without-digital-signature"),
    # the signature
    _row(dict(tamper_sig=True), InvalidSignature, "cose-signature", "signature-tampered"),
    _row(dict(signer="other"), InvalidSignature, "cose-signature", "signed-by-another-key"),
    _row(dict(der_sig=True), InvalidSignature, "cose-signature", "signature-der-not-raw"),
    _row(dict(leaf_curve="p256"), InvalidSignature, "cose-signature", "leaf-p256"),
    _row(dict(tamper_payload={"pcrs": fleet.pcrs_for(debug=True)}), InvalidSignature, "cose-signature", "payload-changed"),
    # freshness and binding
    _row(dict(timestamp=fleet.NOW - aws_nitro.MAX_AGE - timedelta(seconds=1)), RequirementFailed, "nitro-timestamp-stale",
         "timestamp-stale"),
    _row(dict(timestamp=fleet.NOW + aws_nitro.MAX_FUTURE_SKEW + timedelta(seconds=1)), RequirementFailed,
         "nitro-timestamp-future", "timestamp-future"),
    _row(dict(nonce=hashlib.sha256(b"another-token.thumbprint").digest()), ChallengeMismatch, "nitro-nonce", "nonce-wrong"),
    _row(dict(nonce=b"fleet-token-0001.thumbprint"), ChallengeMismatch, "nitro-nonce", "nonce-unhashed"),
    _row(dict(nonce=REMOVE), ChallengeMismatch, "nitro-nonce", "nonce-absent"),
    _row(_fields(nonce=None), ChallengeMismatch, "nitro-nonce", "nonce-null"),
    # identity
    _row(dict(module_id="enclave-7"), IdentifierMissing, "nitro-module-id", "module-id-not-an-enclave-id"),
    _row(dict(module_id="i-0F1EE7000000000A1-enc019a"), IdentifierMissing, "nitro-module-id", "module-id-uppercase"),
    _row(dict(pcrs={0: REMOVE}), RequirementFailed, "nitro-pcr0", "pcr0-missing"),
    _row(dict(pcrs={4: fleet.measure(b"i-0aaaaaaaaaaaaaaaa")}), RequirementFailed, "nitro-pcr4", "pcr4-other-instance"),
    _row(dict(pcrs={4: REMOVE}), RequirementFailed, "nitro-pcr4", "pcr4-missing"),
    # the attested key
    _row(dict(public_key=REMOVE), RequirementFailed, "nitro-public-key", "public-key-absent"),
    _row(_fields(public_key=None), RequirementFailed, "nitro-public-key", "public-key-null"),
    _row(dict(public_key=b"dummy"), MalformedStatement, "nitro-public-key", "public-key-not-spki"),
    _row(dict(key_type="x25519"), UnsupportedFormat, "nitro-public-key", "public-key-x25519"),
]


@pytest.mark.parametrize("knobs, context, error, check", REJECTIONS)
def test_rejects(knobs, context, error, check):
    att = fleet.attest(BINDING, **knobs)
    ctx = context(fleet_context(att)) if context else fleet_context(att)
    with pytest.raises(AttestationError) as info:
        aws_nitro.verify(att.att_stmt, ctx)
    assert type(info.value) is error, info.value
    assert info.value.check == check, info.value


def test_rejects_statement_that_is_not_a_map():
    with pytest.raises(MalformedStatement, match="attStmt is not a map"):
        aws_nitro.verify([b"x"], fleet_context(fleet.attest(BINDING)))


# --- fuzzing: nothing but AttestationError may leave the verifier -------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=64), st.text(max_size=12))
CBORISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.one_of(st.text(max_size=12), st.integers(-40, 40)), inner, max_size=4), max_leaves=16)
FLEET = fleet.attest(BINDING)


def verify_only_attestation_errors(stmt, ctx) -> None:
    try:
        aws_nitro.verify(stmt, ctx)
    except AttestationError:
        pass


@given(stmt=st.one_of(CBORISH, st.fixed_dictionaries({"attDoc": st.one_of(CBORISH, st.builds(cbor2.dumps, CBORISH))})))
@settings(max_examples=300, deadline=None)
def test_fuzz_statement_and_cose_structure(stmt):
    verify_only_attestation_errors(stmt, fleet_context(FLEET))


@given(data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_real_document(data):
    path = data.draw(st.sampled_from([*VALID, INVALID]))
    raw = bytearray(vectors.read(path))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(1, len(raw) - 1)):]
    verify_only_attestation_errors({"attDoc": bytes(raw)}, real_context(path))


PAYLOAD_FIELDS = st.dictionaries(
    st.sampled_from([*aws_nitro.MANDATORY_FIELDS, *aws_nitro.OPTIONAL_FIELDS, "other"]),
    st.one_of(CBORISH, st.dictionaries(st.integers(-2, 40), st.binary(max_size=70), max_size=4)),
    max_size=9,
)


@given(fields=PAYLOAD_FIELDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_signed_payload_fields(fields):
    """Payloads the signature covers: the field rules, not the signature, must refuse them."""
    document = {**FLEET.document, **fields}
    att = fleet.attest(BINDING, payload=cbor2.dumps(document))
    verify_only_attestation_errors(att.att_stmt, fleet_context(att))
