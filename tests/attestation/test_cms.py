"""attestation.cms: the tolerant SignedData reader on real cloud blobs, one row per refusal, fuzzing."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timezone

import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation import cms
from attestation.errors import AttestationError, InvalidSignature, MalformedStatement, RequirementFailed, UnsupportedFormat
from tests import vectors
from tests.fleet import aws_iid as aws_fleet
from tests.fleet.pkcs7 import DIGEST_OIDS, DSA_WITH_SHA1, ECDSA_WITH_SHA256, SHA1_WITH_RSA, SHA256_WITH_RSA, der, signed_data

AWS_PKCS7 = ["aws-ec2-iid/node-us-east-1-2018-01-22.pkcs7.b64", "aws-ec2-iid/grail1-us-west-2-2016-09-09.pkcs7.b64"]
AZURE = ["azure-imds/azure-usgov-virginia-2023-03-08.attested.json", "azure-imds/azure-eastus-2026-06-25.attested.json"]
AWS_DSA_CERT = vectors.pem_chain("roots/aws/ec2-iid-pkcs7-dsa-generic-regions.pem")[0]
CONTENT = b'{"hello" : "cms"}'
ALL = {cms.RSA_SHA256, cms.RSA_SHA1, cms.DSA_SHA1}


def aws_blob(path: str) -> bytes:
    return base64.b64decode(vectors.read(path))


def azure_blob(path: str) -> bytes:
    return base64.b64decode(json.loads(vectors.read(path))["signature"])


# --- real blobs ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", AWS_PKCS7)
def test_real_aws_pkcs7_is_indefinite_length_ber_and_verifies(path):
    blob = aws_blob(path)
    assert blob[:2] == b"\x30\x80", "the vector is indefinite-length BER, which strict DER parsers refuse"
    signed = cms.parse_signed_data(blob)
    document = vectors.read(path.replace(".pkcs7.b64", ".document.json"))
    assert signed.content == document  # the constructed OCTET STRING chunks, joined
    assert signed.certificates == ()  # AWS embeds no certificate
    assert signed.algorithm == cms.DSA_SHA1
    assert signed.message_digest == hashlib.sha1(document).digest()
    assert signed.signing_time == vectors.parse_time(vectors.entry(path)["checks"]["signing_time"])
    assert cms.signer_certificate(signed, [AWS_DSA_CERT]) == AWS_DSA_CERT
    cms.verify_signer(signed, AWS_DSA_CERT, document, allowed={cms.DSA_SHA1})


@pytest.mark.parametrize("path", AWS_PKCS7)
def test_real_aws_pkcs7_over_other_content_fails_the_message_digest(path):
    signed = cms.parse_signed_data(aws_blob(path))
    with pytest.raises(InvalidSignature) as info:
        cms.verify_signer(signed, AWS_DSA_CERT, signed.content + b" ", allowed={cms.DSA_SHA1})
    assert info.value.check == "cms-message-digest"


@pytest.mark.parametrize("path", AZURE)
def test_real_azure_pkcs7_digest_algorithm_quirk_and_no_signed_attributes(path):
    blob = azure_blob(path)
    signed = cms.parse_signed_data(blob)
    assert signed.signer["digest_algorithm"]["algorithm"].dotted == SHA256_WITH_RSA  # the quirk, read as sha256
    assert signed.algorithm == cms.RSA_SHA256
    assert signed.signed_attributes is None and signed.message_digest is None
    assert len(signed.certificates) == 1
    leaf = cms.signer_certificate(signed, signed.certificates)
    assert leaf == signed.certificates[0]
    cms.verify_signer(signed, leaf, signed.content, allowed={cms.RSA_SHA256})
    assert json.loads(signed.content)["vmId"] == vectors.entry(path)["checks"]["vmId"]


@pytest.mark.parametrize("path", AZURE)
def test_real_azure_signature_covers_the_content(path):
    signed = cms.parse_signed_data(azure_blob(path))
    with pytest.raises(InvalidSignature) as info:
        cms.verify_signer(signed, signed.certificates[0], signed.content.replace(b"nonce", b"NONCE"), allowed={cms.RSA_SHA256})
    assert info.value.check == "cms-signature"


def test_real_aws_blob_refused_when_dsa_is_not_allowed():
    signed = cms.parse_signed_data(aws_blob(AWS_PKCS7[0]))
    with pytest.raises(UnsupportedFormat, match=r"dsa-sha1 is not accepted here \(accepted: rsa-sha256\)"):
        cms.verify_signer(signed, AWS_DSA_CERT, signed.content, allowed={cms.RSA_SHA256})


# --- generated blobs: acceptance -------------------------------------------------------------

DSA = aws_fleet.key("dsa")
RSA = aws_fleet.key("rsa2048:us-east-1")
RSA_1024 = aws_fleet.key("rsa:us-east-1")


@pytest.mark.parametrize("signer, digest, signed_attributes", [
    (RSA, "sha256", True), (RSA, "sha256", False), (RSA, "sha1", True), (RSA_1024, "sha256", False),
    (DSA, "sha1", True), (DSA, "sha1", False),
])
def test_generated_blob_verifies(signer, digest, signed_attributes):
    blob = signed_data(CONTENT, signer.certificate, signer.private_key, digest=digest, signed_attributes=signed_attributes)
    signed = cms.parse_signed_data(blob)
    assert (signed.content, signed.algorithm.digest) == (CONTENT, digest)
    assert (signed.signed_attributes is not None) is signed_attributes
    cms.verify_signer(signed, der(signer.certificate), CONTENT, allowed=ALL)


def test_detached_content_is_verified_over_the_given_bytes():
    signed = cms.parse_signed_data(signed_data(CONTENT, RSA.certificate, RSA.private_key, embed_content=False))
    assert signed.content is None
    cms.verify_signer(signed, der(RSA.certificate), CONTENT, allowed=ALL)


def test_subject_key_identifier_designates_the_signer():
    cert = RSA.certificate
    with_ski = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer).public_key(cert.public_key())
                .serial_number(cert.serial_number).not_valid_before(cert.not_valid_before_utc)
                .not_valid_after(cert.not_valid_after_utc)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(cert.public_key()), critical=False)
                .sign(RSA.private_key, hashes.SHA256()))
    signed = cms.parse_signed_data(signed_data(CONTENT, with_ski, RSA.private_key, sid="ski"))
    assert cms.signer_certificate(signed, [der(DSA.certificate), der(with_ski)]) == der(with_ski)
    cms.verify_signer(signed, der(with_ski), CONTENT, allowed=ALL)


def test_signing_time_and_unsorted_input_attributes():
    when = datetime(2026, 10, 1, 8, 0, tzinfo=timezone.utc)
    signed = cms.parse_signed_data(signed_data(CONTENT, DSA.certificate, DSA.private_key, digest="sha1", signing_time=when))
    assert signed.signing_time == when
    assert signed.signed_attributes[:1] == b"\x31"  # the SET OF tag, not the [0] IMPLICIT one
    cms.verify_signer(signed, der(DSA.certificate), CONTENT, allowed=ALL)


# --- one row per refusal ---------------------------------------------------------------------

_MD = "1.2.840.113549.1.9.4"
REFUSALS = [
    pytest.param(dict(outer_type="data"), None, MalformedStatement, "cms-malformed", "content type is 1.2.840.113549.1.7.1, not signedData", id="not-signed-data"),
    pytest.param(dict(signers=2), None, MalformedStatement, "cms-malformed", "has 2 SignerInfos; exactly one", id="two-signers"),
    pytest.param(dict(signers=0), None, MalformedStatement, "cms-malformed", "has 0 SignerInfos", id="no-signer"),
    pytest.param(dict(digest_oid=DIGEST_OIDS["sha512"]), None, UnsupportedFormat, "cms-algorithm", "digestAlgorithm 2.16.840.1.101.3.4.2.3 is not supported", id="digest-sha512"),
    pytest.param(dict(digest_oid=SHA1_WITH_RSA, digest="sha1"), None, UnsupportedFormat, "cms-algorithm", "digestAlgorithm 1.2.840.113549.1.1.5 is not supported", id="quirk-only-for-sha256-with-rsa"),
    pytest.param(dict(signature_oid=ECDSA_WITH_SHA256), None, UnsupportedFormat, "cms-algorithm", "signatureAlgorithm 1.2.840.10045.4.3.2 is not supported", id="signature-ecdsa"),
    pytest.param(dict(signature_oid=SHA256_WITH_RSA, digest="sha1"), None, UnsupportedFormat, "cms-algorithm", "names sha256 but digestAlgorithm 1.3.14.3.2.26 is sha1", id="hash-mismatch"),
    pytest.param(dict(message_digest=None), None, MalformedStatement, "cms-malformed", "signed attributes but no messageDigest", id="message-digest-missing"),
    pytest.param(dict(message_digest=[b"\x00" * 32, b"\x01" * 32]), None, MalformedStatement, "cms-malformed", f"signed attribute {_MD} has 2 values", id="message-digest-two-values"),
    pytest.param(dict(extra_attributes=[{"type": "message_digest", "values": [b"\x00" * 32]}]), None, MalformedStatement, "cms-malformed", f"signed attribute {_MD} appears more than once", id="attribute-twice"),
    pytest.param(dict(content_type_attr="1.2.840.113549.1.7.5"), None, MalformedStatement, "cms-malformed", "contentType signed attribute differs from eContentType", id="content-type-attribute"),
    pytest.param(dict(message_digest=b"\x00" * 32), None, InvalidSignature, "cms-message-digest", "messageDigest signed attribute is not the sha256 of the content", id="message-digest-wrong"),
    pytest.param(dict(signed_content=b"other"), None, InvalidSignature, "cms-message-digest", "is not the sha256 of the content", id="signed-other-content"),
    pytest.param(dict(signed_content=b"other", signed_attributes=False), None, InvalidSignature, "cms-signature", "over the content does not verify", id="signed-other-content-no-attributes"),
    pytest.param(dict(tamper=True), None, InvalidSignature, "cms-signature", "over the signed attributes does not verify", id="signature-tampered"),
    pytest.param(dict(sid=12345), None, RequirementFailed, "cms-signer", "does not designate the certificate", id="signer-serial-other"),
    pytest.param({}, {cms.DSA_SHA1}, UnsupportedFormat, "cms-algorithm", "rsa-sha256 is not accepted here (accepted: dsa-sha1)", id="algorithm-not-allowed"),
    pytest.param(dict(signature_oid=DSA_WITH_SHA1, digest="sha1"), None, UnsupportedFormat, "cms-algorithm", "dsa-sha1 does not fit the signer certificate's RSA key", id="dsa-stated-rsa-key"),
]


@pytest.mark.parametrize("knobs, allowed, error, check, detail", REFUSALS)
def test_refuses(knobs, allowed, error, check, detail):
    blob = signed_data(CONTENT, RSA.certificate, RSA.private_key, **knobs)
    with pytest.raises(AttestationError) as info:
        signed = cms.parse_signed_data(blob)
        cms.verify_signer(signed, der(RSA.certificate), CONTENT, allowed=allowed or ALL)
    assert type(info.value) is error, info.value
    assert info.value.check == check
    assert detail in str(info.value)


@pytest.mark.parametrize("data, detail", [
    (b"", "not a non-empty byte string"), ("text", "not a non-empty byte string"),
    (b"\x30\x03\x02\x01\x00", "does not parse"), (aws_blob(AWS_PKCS7[0]) + b"\x00", "does not parse"),
])
def test_refuses_bytes_that_are_not_signed_data(data, detail):
    with pytest.raises(MalformedStatement, match=detail) as info:
        cms.parse_signed_data(data)
    assert info.value.check == "cms-malformed"


def test_signer_certificate_is_none_when_no_candidate_matches():
    signed = cms.parse_signed_data(aws_blob(AWS_PKCS7[0]))
    assert cms.signer_certificate(signed, [der(DSA.certificate), der(RSA.certificate)]) is None
    assert not cms.names_certificate(signed, asn1_x509.Certificate.load(der(DSA.certificate)))


# --- fuzzing: only AttestationError leaves the reader ----------------------------------------

SEEDS = [aws_blob(p) for p in AWS_PKCS7] + [azure_blob(p) for p in AZURE] + [
    signed_data(CONTENT, RSA.certificate, RSA.private_key), signed_data(CONTENT, DSA.certificate, DSA.private_key, digest="sha1")]


def _read_and_verify(blob: bytes) -> None:
    try:
        signed = cms.parse_signed_data(blob)
        for candidate in (AWS_DSA_CERT, der(RSA.certificate), *signed.certificates):
            try:
                cms.verify_signer(signed, candidate, signed.content or CONTENT, allowed=ALL)
            except AttestationError:
                pass
    except AttestationError:
        pass


@given(data=st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_blobs(data):
    blob = bytearray(data.draw(st.sampled_from(SEEDS)))
    for _ in range(data.draw(st.integers(1, 6))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del blob[data.draw(st.integers(0, len(blob) - 1)):]
    _read_and_verify(bytes(blob))


@given(blob=st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_fuzz_random_bytes(blob):
    _read_and_verify(blob)


def test_embedded_certificate_with_a_broken_field_is_refused_not_crashed():
    """asn1crypto parses an embedded certificate lazily, so a bad serialNumber surfaces only when
    the signer is matched: it must be an AttestationError there too (found by the fuzzer)."""
    for seed in SEEDS:
        at = seed.find(b"\xa0\x03\x02\x01\x02\x02")  # [0] version v3, then the serialNumber INTEGER tag
        if at < 0:
            continue
        blob = bytearray(seed)
        blob[at + 5] = 0x42  # the INTEGER tag becomes an APPLICATION tag
        _read_and_verify(bytes(blob))  # raises anything but AttestationError if the bug returns
        signed = cms.parse_signed_data(bytes(blob))
        assert signed.certificates, "the mutated seed still embeds its certificate"
        with pytest.raises(AttestationError):
            cms.verify_signer(signed, signed.certificates[0], signed.content or CONTENT, allowed=ALL)
        return
    pytest.fail("no seed embeds a certificate")
