"""fmt "aws-iid": real EC2 identity documents at their own time, the bundled region pins, one row per refusal, fuzzing."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.assigners import AWS_EC2_INSTANCE_ID
from attestation.context import Binding, TrustStore, VerificationContext
from attestation.errors import (
    AttestationError, CertificateRevoked, ChainExpired, InvalidSignature, MalformedStatement, RequirementFailed,
    UnsupportedFormat, UntrustedChain,
)
from attestation.evidence import PermanentIdentifier, TrustLevel
from attestation.formats import aws_iid
from tests import vectors
from tests.fleet import aws_iid as fleet
from tests.fleet.pkcs7 import der

PKCS7 = ["aws-ec2-iid/node-us-east-1-2018-01-22.pkcs7.b64", "aws-ec2-iid/grail1-us-west-2-2016-09-09.pkcs7.b64"]
SIGNATURE = "aws-ec2-iid/coder-us-east-1-2022-03-25.signature.b64"
BINDING = Binding(att_to_be_signed=b"unused", challenge=b"unused")  # the document binds nothing
BUNDLED = TrustStore(roots={"aws-iid": aws_iid.default_roots()})


def real_statement(path: str) -> dict:
    member = "pkcs7" if path.endswith(".pkcs7.b64") else "signature"
    document = vectors.read(path.rsplit(".", 2)[0] + ".document.json")
    return {"document": document, member: base64.b64decode(vectors.read(path))}


def at(moment: datetime, trust: TrustStore = BUNDLED) -> VerificationContext:
    return VerificationContext(BINDING, moment, trust)


def bundled(kind: str, name: str) -> bytes:
    (found,) = [d for d, pin in aws_iid.bundled_pins().items() if pin.kind == kind and name in pin.regions]
    return found


# --- the bundled certificates ----------------------------------------------------------------


def test_bundled_certificates_are_the_vector_sets():
    ders = {hashlib.sha256(d).hexdigest() for d in aws_iid.default_roots()}
    expected = set()
    for name in ("ec2-iid-pkcs7-dsa-generic-regions", "ec2-iid-rsa1024-default-ec2.amazonaws.com-2014",
                 "ec2-iid-rsa1024-per-region-bundle", "ec2-iid-rsa2048-per-region-bundle"):
        expected |= {hashlib.sha256(d).hexdigest() for d in vectors.pem_chain(f"roots/aws/{name}.pem")}
    assert ders == expected and len(ders) == 79
    assert vectors.entry("roots/aws/ec2-iid-pkcs7-dsa-generic-regions.pem")["cert"]["sha256"] in ders


def test_bundled_region_pins():
    pins = aws_iid.bundled_pins()
    assert pins[vectors.pem_chain("roots/aws/ec2-iid-pkcs7-dsa-generic-regions.pem")[0]] == aws_iid.Pin("pkcs7-dsa", frozenset({"*"}))
    assert pins[vectors.pem_chain("roots/aws/ec2-iid-rsa1024-default-ec2.amazonaws.com-2014.pem")[0]].regions == {"*"}
    china = bundled("rsa", "cn-north-1")
    assert pins[china] == aws_iid.Pin("rsa", frozenset({"cn-north-1", "cn-northwest-1"}))  # one certificate for both
    assert sum(1 for p in pins.values() if p.kind == "rsa2048") == 39
    assert all(len(p.regions) == 1 for d, p in pins.items() if d != china)


# --- real documents, at their own time ---------------------------------------------------------


@pytest.mark.parametrize("path", PKCS7)
def test_real_pkcs7_document_at_its_signing_time(path):
    checks = vectors.entry(path)["checks"]
    evidence = aws_iid.verify(real_statement(path), at(vectors.parse_time(checks["signing_time"])))
    assert evidence.fmt == "aws-iid" and evidence.public_key is None and evidence.trust_level is TrustLevel.CLOUD
    assert evidence.replayable is True
    assert evidence.permanent_identifiers == (PermanentIdentifier(checks["document_instanceId"], AWS_EC2_INSTANCE_ID),)
    assert evidence.attested_at == vectors.parse_time(checks["pendingTime"])
    facts = dict(evidence.posture.extra)
    assert facts["aws_account_id"] == checks["document_accountId"] and facts["aws_signature"] == "pkcs7-dsa-sha1"
    assert evidence.chain == (vectors.pem_chain("roots/aws/ec2-iid-pkcs7-dsa-generic-regions.pem")[0],)


def test_real_signature_document_at_its_time_verifies_with_the_2014_certificate():
    evidence = aws_iid.verify(real_statement(SIGNATURE), at(datetime(2022, 3, 26, tzinfo=timezone.utc)))
    assert evidence.permanent_identifiers == (PermanentIdentifier("i-076e9b91f7c420782", AWS_EC2_INSTANCE_ID),)
    assert evidence.chain == (vectors.pem_chain("roots/aws/ec2-iid-rsa1024-default-ec2.amazonaws.com-2014.pem")[0],)
    assert dict(evidence.posture.extra) == {
        "aws_account_id": "628783029487", "aws_availability_zone": "us-east-1b", "aws_image_id": "ami-0c02fb55956c7d316",
        "aws_instance_type": "t2.micro", "aws_region": "us-east-1", "aws_signature": "rsa-sha256"}


def test_real_signature_document_today_verifies_with_the_reissued_regional_certificate():
    """AWS re-issued us-east-1's RSA certificate in 2024 over the same key: the 2022 document still verifies."""
    evidence = aws_iid.verify(real_statement(SIGNATURE), at(fleet.NOW))
    assert evidence.chain == (bundled("rsa", "us-east-1"),)


def test_real_signature_before_any_certificate_was_valid():
    with pytest.raises(ChainExpired, match="is not yet valid"):
        aws_iid.verify(real_statement(SIGNATURE), at(datetime(2014, 1, 1, tzinfo=timezone.utc)))


def test_real_signature_with_only_another_regions_certificate_is_refused_by_the_pin():
    """eu-west-1's certificate holds the very key that signed this us-east-1 document; the pin still refuses it."""
    trust = TrustStore(roots={"aws-iid": (bundled("rsa", "eu-west-1"),)})
    with pytest.raises(UntrustedChain) as info:
        aws_iid.verify(real_statement(SIGNATURE), at(fleet.NOW, trust))
    assert info.value.check == "aws-region" and "serves region us-east-1" in str(info.value)


def test_real_pkcs7_with_another_document_is_refused():
    stmt = {**real_statement(PKCS7[0]), "document": real_statement(PKCS7[1])["document"]}
    with pytest.raises(MalformedStatement) as info:
        aws_iid.verify(stmt, at(fleet.NOW))
    assert info.value.check == "aws-document-mismatch"


def test_real_pkcs7_before_the_instance_launched_is_refused():
    pending = vectors.parse_time(vectors.entry(PKCS7[0])["checks"]["pendingTime"])
    with pytest.raises(RequirementFailed, match="pendingTime 2018-01-22T12:29:54Z is in the future") as info:
        aws_iid.verify(real_statement(PKCS7[0]), at(pending - timedelta(hours=1)))
    assert info.value.check == "aws-pending-time"


def test_real_pkcs7_without_the_dsa_certificate_is_untrusted():
    trust = TrustStore(roots={"aws-iid": tuple(d for d, p in aws_iid.bundled_pins().items() if p.kind != "pkcs7-dsa")})
    with pytest.raises(UntrustedChain, match="serial 0x96ba48d9e55e1a67.* is none of the trusted AWS certificates"):
        aws_iid.verify(real_statement(PKCS7[0]), at(fleet.NOW, trust))


# --- the fleet: acceptance ----------------------------------------------------------------------


def fleet_verify(att: fleet.AwsIidAttestation, **ctx):
    return att.fmt.verify(att.att_stmt, replace(at(fleet.NOW, att.trust), **ctx))


@pytest.mark.parametrize("kind, name", [("pkcs7-dsa", "pkcs7-dsa-sha1"), ("pkcs7-rsa2048", "pkcs7-rsa2048"), ("signature", "rsa-sha256")])
@pytest.mark.parametrize("region", fleet.REGIONS)
def test_fleet_document_verifies(kind, name, region):
    document = fleet.Document(region=region, availability_zone=f"{region}b", pending_time="2026-11-01T12:04:00Z")
    evidence = fleet_verify(fleet.attest(kind, document))  # pendingTime 4 minutes ahead: within the clock skew
    assert evidence.permanent_identifiers == (PermanentIdentifier(fleet.INSTANCE_ID, AWS_EC2_INSTANCE_ID),)
    assert (evidence.public_key, evidence.trust_level, evidence.replayable) == (None, TrustLevel.CLOUD, True)
    assert evidence.attested_at == datetime(2026, 11, 1, 12, 4, tzinfo=timezone.utc)
    assert evidence.posture.extra == (
        ("aws_account_id", "123456789012"), ("aws_availability_zone", f"{region}b"), ("aws_image_id", "ami-0abcdef1234567890"),
        ("aws_instance_type", "t3.micro"), ("aws_region", region), ("aws_signature", name))


def test_fleet_pkcs7_rsa2048_without_signed_attributes_verifies():
    assert fleet_verify(fleet.attest("pkcs7-rsa2048", pkcs7={"signed_attributes": False})).fmt == "aws-iid"


def test_operator_certificate_serves_every_region():
    att = fleet.attest("signature", fleet.Document(region="ap-south-1", availability_zone="ap-south-1a"), signer="rogue-rsa")
    operator = fleet.keys().by_name["rogue-rsa"].certificate
    trust = TrustStore(roots={"aws-iid": att.trust.roots_for("aws-iid") + (der(operator),)})
    assert fleet_verify(att, trust=trust).chain == (der(operator),)


def test_bundled_format_uses_the_bundled_pins():
    assert aws_iid.FORMAT.verify is aws_iid.verify and aws_iid.FORMAT.name == "aws-iid"


# --- the fleet: one row per refusal -----------------------------------------------------------

_D = fleet.Document
PAST = (datetime(2010, 1, 1, tzinfo=timezone.utc), datetime(2020, 1, 1, tzinfo=timezone.utc))
FUTURE = (datetime(2027, 1, 1, tzinfo=timezone.utc), datetime(2030, 1, 1, tzinfo=timezone.utc))
REVOKED = {"aws-iid": lambda serial: "withdrawn by AWS"}


def row(kind, knobs, error, check, detail, ident, context=None):
    return pytest.param(kind, knobs, context, error, check, detail, id=ident)


REJECTIONS = [
    row("pkcs7-dsa", dict(stmt={"document": None}), MalformedStatement, "malformed", "attStmt.document is missing", "document-missing"),
    row("pkcs7-dsa", dict(stmt={"document": "{}"}), MalformedStatement, "malformed", "attStmt.document is not a non-empty byte string", "document-text"),
    row("pkcs7-dsa", dict(stmt={"signature": b"sig"}), MalformedStatement, "malformed", "exactly one of pkcs7 and signature", "pkcs7-and-signature"),
    row("pkcs7-dsa", dict(stmt={"pkcs7": None}), MalformedStatement, "malformed", "exactly one of pkcs7 and signature", "neither"),
    row("pkcs7-dsa", dict(stmt={"pkcs7": b""}), MalformedStatement, "malformed", "attStmt.pkcs7 is not a non-empty byte string", "pkcs7-empty"),
    row("signature", dict(stmt={"signature": "c2ln"}), MalformedStatement, "malformed", "attStmt.signature is not a non-empty byte string", "signature-text"),
    row("pkcs7-dsa", dict(document=_D(raw=b'{"a":"\xff"}')), MalformedStatement, "aws-document", "not strict UTF-8 JSON", "document-not-utf8"),
    row("pkcs7-dsa", dict(document=_D(raw=b"{not json")), MalformedStatement, "aws-document", "not strict UTF-8 JSON", "document-not-json"),
    row("pkcs7-dsa", dict(document=_D(raw=b'{"region":"a","region":"b"}')), MalformedStatement, "aws-document", "member 'region' appears more than once", "document-duplicate-member"),
    row("pkcs7-dsa", dict(document=_D(extra={"x": float("nan")})), MalformedStatement, "aws-document", "NaN is not JSON", "document-nan"),
    row("pkcs7-dsa", dict(document=_D(raw=b"[]")), MalformedStatement, "aws-document", "document is not a JSON object", "document-array"),
    row("pkcs7-dsa", dict(document=_D(drop=("instanceId",))), MalformedStatement, "aws-document", "instanceId is missing", "instance-id-missing"),
    row("pkcs7-dsa", dict(document=_D(account_id=123456789012)), MalformedStatement, "aws-document", "accountId is missing or not a string", "account-id-number"),
    row("pkcs7-dsa", dict(document=_D(instance_id="i-XYZ")), MalformedStatement, "aws-document", "instanceId 'i-XYZ' is not in AWS's form", "instance-id-form"),
    row("pkcs7-dsa", dict(document=_D(account_id="12345")), MalformedStatement, "aws-document", "accountId '12345'", "account-id-form"),
    row("pkcs7-dsa", dict(document=_D(region="US East", availability_zone="US East a")), MalformedStatement, "aws-document", "region 'US East'", "region-form"),
    row("pkcs7-dsa", dict(document=_D(availability_zone="eu-west-1a")), MalformedStatement, "aws-document", "availabilityZone 'eu-west-1a' is not in region 'us-east-1'", "zone-other-region"),
    row("pkcs7-dsa", dict(document=_D(image_id="ubuntu")), MalformedStatement, "aws-document", "imageId 'ubuntu'", "image-id-form"),
    row("pkcs7-dsa", dict(document=_D(instance_type="")), MalformedStatement, "aws-document", "instanceType ''", "instance-type-empty"),
    row("pkcs7-dsa", dict(document=_D(architecture="x86 64")), MalformedStatement, "aws-document", "architecture 'x86 64'", "architecture-form"),
    row("pkcs7-dsa", dict(document=_D(pending_time="2026-10-01 08:00:00")), MalformedStatement, "aws-document", "pendingTime '2026-10-01 08:00:00'", "pending-time-form"),
    row("pkcs7-dsa", dict(document=_D(pending_time="2026-13-01T08:00:00Z")), MalformedStatement, "aws-document", "pendingTime is not a date", "pending-time-month-13"),
    row("pkcs7-dsa", dict(stmt={"pkcs7": b"\x30\x03\x02\x01\x00"}), MalformedStatement, "cms-malformed", "attStmt.pkcs7 does not parse", "pkcs7-not-cms"),
    row("pkcs7-dsa", dict(pkcs7={"embed_content": False}), MalformedStatement, "aws-document-mismatch", "carries no content", "pkcs7-detached"),
    row("pkcs7-dsa", dict(signed_document=_D(instance_id="i-0123456789abcdef0").to_bytes()), MalformedStatement, "aws-document-mismatch", "differs from the content signed", "document-not-the-signed-one"),
    row("pkcs7-dsa", dict(signer="rogue-dsa"), UntrustedChain, "chain-untrusted", "is none of the trusted AWS certificates", "pkcs7-untrusted-signer"),
    row("pkcs7-rsa2048", dict(signer="rsa:us-east-1"), UntrustedChain, "aws-key-kind", "verifies rsa-sha256 signatures, not pkcs7-rsa2048", "pkcs7-by-the-signature-key"),
    row("pkcs7-rsa2048", dict(signer="rsa2048:eu-west-1"), UntrustedChain, "aws-region", "serves eu-west-1, not the document's region us-east-1", "pkcs7-other-region"),
    row("pkcs7-dsa", dict(pkcs7={"digest": "sha256", "signature_oid": "1.2.840.10040.4.1"}), UnsupportedFormat, "cms-algorithm", "dsa-sha256 is not accepted here (accepted: dsa-sha1)", "dsa-sha256"),
    row("pkcs7-rsa2048", dict(pkcs7={"digest": "sha1"}), UnsupportedFormat, "cms-algorithm", "rsa-sha1 is not accepted here (accepted: rsa-sha256)", "rsa-sha1"),
    row("pkcs7-dsa", dict(pkcs7={"message_digest": b"\x00" * 20}), InvalidSignature, "cms-message-digest", "messageDigest", "message-digest"),
    row("pkcs7-dsa", dict(pkcs7={"tamper": True}), InvalidSignature, "cms-signature", "does not verify", "pkcs7-signature-tampered"),
    row("pkcs7-dsa", dict(validity=PAST), ChainExpired, "chain-expired", "which expired (valid 2010-01-01T00:00:00Z .. 2020-01-01T00:00:00Z)", "pkcs7-certificate-expired"),
    row("signature", dict(validity=FUTURE), ChainExpired, "chain-expired", "which is not yet valid", "signature-certificate-not-yet-valid"),
    row("signature", dict(signed_document=b"another document"), InvalidSignature, "aws-signature", "verifies with none of the 1 trusted AWS RSA certificates of region us-east-1", "signature-over-other-bytes"),
    row("signature", dict(signer="rogue-rsa"), InvalidSignature, "aws-signature", "verifies with none", "signature-untrusted-key"),
    row("signature", dict(document=_D(region="ap-south-1", availability_zone="ap-south-1a"), signer="rsa:ap-south-1"), UntrustedChain, "aws-region", "no trusted AWS RSA certificate serves region ap-south-1", "signature-region-without-certificate"),
    row("pkcs7-dsa", dict(document=_D(pending_time="2026-11-01T12:06:00Z")), RequirementFailed, "aws-pending-time", "pendingTime 2026-11-01T12:06:00Z is in the future", "pending-time-future"),
    row("pkcs7-dsa", {}, UntrustedChain, "chain-untrusted", "no AWS certificates are configured", "no-roots",
        lambda ctx: replace(ctx, trust=TrustStore())),
    row("signature", {}, CertificateRevoked, "chain-revoked", "withdrawn by AWS", "revoked", lambda ctx: replace(ctx, revocation=REVOKED)),
]


@pytest.mark.parametrize("kind, knobs, context, error, check, detail", REJECTIONS)
def test_rejects(kind, knobs, context, error, check, detail):
    att = fleet.attest(kind, **knobs)
    ctx = at(fleet.NOW, att.trust)
    with pytest.raises(AttestationError) as info:
        att.fmt.verify(att.att_stmt, context(ctx) if context else ctx)
    assert type(info.value) is error, info.value
    assert info.value.check == check, info.value
    assert detail in str(info.value)


def test_rejects_statement_that_is_not_a_map():
    with pytest.raises(MalformedStatement, match="attStmt is not a map"):
        aws_iid.verify([b"document"], at(fleet.NOW))


# --- fuzzing: nothing but AttestationError leaves the verifier ----------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.binary(max_size=48), st.text(max_size=12))
CBORISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
STATEMENTS = st.one_of(CBORISH, st.fixed_dictionaries({}, optional={"document": CBORISH, "pkcs7": CBORISH, "signature": CBORISH}))


def only_attestation_errors(stmt, ctx) -> None:
    try:
        aws_iid.verify(stmt, ctx)
    except AttestationError:
        pass


@given(stmt=STATEMENTS)
@settings(max_examples=300, deadline=None)
def test_fuzz_statement_structure(stmt):
    only_attestation_errors(stmt, at(fleet.NOW))


@given(data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_real_statement(data):
    stmt = real_statement(data.draw(st.sampled_from(PKCS7 + [SIGNATURE])))
    member = data.draw(st.sampled_from(sorted(stmt)))
    blob = bytearray(stmt[member])
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    only_attestation_errors({**stmt, member: bytes(blob)}, at(fleet.NOW))


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6), max_leaves=15)
FIELDS = st.fixed_dictionaries({}, optional={name: st.one_of(st.text(max_size=24), JSONISH) for name in (
    "instanceId", "accountId", "region", "availabilityZone", "imageId", "instanceType", "pendingTime", "architecture")})


@given(document=st.one_of(st.binary(max_size=120), st.builds(lambda v: json.dumps(v).encode(), st.one_of(JSONISH, FIELDS))))
@settings(max_examples=300, deadline=None)
def test_fuzz_document_parser(document):
    try:
        aws_iid.parse_document(document)
    except AttestationError:
        pass
