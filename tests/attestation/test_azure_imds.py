"""fmt "azure-imds": real IMDS attested documents at their own time, the nonce binding, one row per refusal, fuzzing."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from asn1crypto import x509 as asn1_x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.assigners import AZURE_VM_ID
from attestation.context import Binding, TrustStore, VerificationContext
from attestation.errors import (
    AttestationError, CertificateRevoked, ChainExpired, ChallengeMismatch, InvalidSignature, MalformedStatement,
    RequirementFailed, UnsupportedFormat, UntrustedChain,
)
from attestation.evidence import PermanentIdentifier, TrustLevel
from attestation.formats import azure_imds
from attestation.x509chain import verify_chain
from tests import vectors
from tests.fleet import azure_imds as fleet

USGOV = "azure-imds/azure-usgov-virginia-2023-03-08.attested.json"
EASTUS = "azure-imds/azure-eastus-2026-06-25.attested.json"
OCSP_02 = "ea7a25255d111fc3ce4cb8fabe3adf9c27bbe6db203f955066bab4c5a71f3d08"
BUNDLED = TrustStore(roots={"azure-imds": azure_imds.default_roots()}, intermediates={"azure-imds": azure_imds.default_intermediates()})


def real_statement(path: str) -> dict:
    return {"signature": base64.b64decode(json.loads(vectors.read(path))["signature"])}


def real_time(path: str) -> datetime:
    stamp = vectors.entry(path)["checks"]["timeStamp"]["createdOn"]
    return datetime.strptime(stamp, "%m/%d/%y %H:%M:%S %z")


def real_context(path: str, *, now: datetime | None = None, trust: TrustStore = BUNDLED, nonce: str | None = None) -> VerificationContext:
    challenge = (nonce or vectors.entry(path)["checks"]["nonce"]).encode()
    return VerificationContext(Binding(b"unused", challenge), now or real_time(path), trust)


def sha(ders) -> set[str]:
    return {hashlib.sha256(d).hexdigest() for d in ders}


# --- bundled anchors ---------------------------------------------------------------------------


def test_bundled_roots_and_intermediates():
    def manifest(name):
        return vectors.entry(f"roots/azure/{name}.pem")["cert"]["sha256"]

    assert sha(azure_imds.default_roots()) == {manifest("digicert-global-root-g2"), manifest("digicert-global-root-ca"),
                                               manifest("microsoft-tls-rsa-root-g2")}
    assert sha(azure_imds.default_intermediates()) == {
        manifest("microsoft-azure-tls-issuing-ca-05"), manifest("microsoft-azure-rsa-tls-issuing-ca-08"),
        manifest("microsoft-tls-rsa-root-g2-cross-signed-by-digicert-global-root-g2"), OCSP_02}


def test_found_ocsp_02_intermediate_is_issued_by_microsoft_tls_rsa_root_g2():
    (ocsp,) = [d for d in azure_imds.default_intermediates() if hashlib.sha256(d).hexdigest() == OCSP_02]
    root = vectors.pem_chain("roots/azure/microsoft-tls-rsa-root-g2.pem")
    path = verify_chain([ocsp], root, datetime(2026, 6, 25, tzinfo=timezone.utc))
    assert path[0].subject.native["common_name"] == "Microsoft TLS G2 RSA CA OCSP 02"


# --- real documents, at their own time ----------------------------------------------------------


@pytest.mark.parametrize("path, cloud, chain", [
    (USGOV, "AzureUSGovernment", ["metadata.azure.us", "Microsoft Azure TLS Issuing CA 05", "DigiCert Global Root G2"]),
    (EASTUS, "AzureCloud", ["metadata.azure.com", "Microsoft TLS G2 RSA CA OCSP 02", "Microsoft TLS RSA Root G2"]),
])
def test_real_document_at_its_time(path, cloud, chain):
    checks = vectors.entry(path)["checks"]
    evidence = azure_imds.verify(real_statement(path), real_context(path))
    assert (evidence.fmt, evidence.public_key, evidence.trust_level, evidence.replayable) == ("azure-imds", None, TrustLevel.CLOUD, False)
    assert evidence.permanent_identifiers == (PermanentIdentifier(checks["vmId"], AZURE_VM_ID),)
    assert evidence.attested_at == real_time(path)
    assert dict(evidence.posture.extra) == {"azure_cloud": cloud, "azure_sku": checks["sku"],
                                            "azure_subscription_id": checks["subscriptionId"]}
    assert [asn1_x509.Certificate.load(d).subject.native["common_name"] for d in evidence.chain] == chain


def test_real_2026_document_needs_the_found_intermediate():
    trust = replace(BUNDLED, intermediates={"azure-imds": tuple(d for d in azure_imds.default_intermediates()
                                                                 if hashlib.sha256(d).hexdigest() != OCSP_02)})
    with pytest.raises(UntrustedChain) as info:
        azure_imds.verify(real_statement(EASTUS), real_context(EASTUS, trust=trust))
    assert type(info.value) is UntrustedChain
    assert "metadata.azure.com" in str(info.value) and "Microsoft TLS G2 RSA CA OCSP 02" in str(info.value)
    assert "does not chain to a configured root" in str(info.value)


def test_real_document_after_expires_on():
    expires = datetime.strptime(vectors.entry(USGOV)["checks"]["timeStamp"]["expiresOn"], "%m/%d/%y %H:%M:%S %z")
    with pytest.raises(RequirementFailed, match="expired at 2023-03-08T23:09:33Z") as info:
        azure_imds.verify(real_statement(USGOV), real_context(USGOV, now=expires + timedelta(seconds=1)))
    assert info.value.check == "azure-timestamp"


def test_real_document_once_its_certificates_expired():
    with pytest.raises(ChainExpired, match="expired at 2024-01-29T19:01:18Z"):
        azure_imds.verify(real_statement(USGOV), real_context(USGOV, now=datetime(2025, 1, 1, tzinfo=timezone.utc)))


@pytest.mark.parametrize("path", [USGOV, EASTUS])
def test_real_document_for_another_challenge(path):
    with pytest.raises(ChallengeMismatch, match="is not the challenge's '0123456789'"):
        azure_imds.verify(real_statement(path), real_context(path, nonce="0123456789"))


# --- the nonce binding ----------------------------------------------------------------------------


def test_nonce_is_ten_digits_of_the_key_authorization_digest():
    keyauth = b"token-1.thumbprint"
    expected = int.from_bytes(hashlib.sha256(keyauth).digest(), "big") % 10**10
    assert azure_imds.nonce_for(keyauth) == f"{expected:010d}"
    assert len(azure_imds.nonce_for(b"x")) == 10 and azure_imds.nonce_for(b"x").isdigit()
    assert azure_imds.nonce_for(b"token-2.thumbprint") != azure_imds.nonce_for(keyauth)
    binding = azure_imds.FORMAT.acme_binding("token-1", keyauth)
    assert binding == Binding(att_to_be_signed=keyauth, challenge=azure_imds.nonce_for(keyauth).encode())


# --- the fleet: acceptance -------------------------------------------------------------------------

NONCE = fleet.Document().nonce


def fleet_context(att: fleet.AzureAttestation, now: datetime = fleet.NOW, nonce: str = NONCE) -> VerificationContext:
    return VerificationContext(Binding(b"keyauth", nonce.encode()), now, att.trust)


def fleet_verify(att: fleet.AzureAttestation, **ctx):
    return azure_imds.verify(att.att_stmt, replace(fleet_context(att), **ctx))


@pytest.mark.parametrize("common_name, cloud", [
    ("metadata.azure.com", "AzureCloud"), ("metadata.azure.us", "AzureUSGovernment"), ("metadata.azure.cn", "AzureChinaCloud"),
    ("eastus.metadata.azure.com", "AzureCloud"), ("*.metadata.azure.com", "AzureCloud"), ("a.b-c.metadata.azure.us", "AzureUSGovernment"),
])
def test_fleet_document_verifies(common_name, cloud):
    evidence = fleet_verify(fleet.attest(common_name=common_name))
    assert evidence.permanent_identifiers == (PermanentIdentifier(fleet.VM_ID, AZURE_VM_ID),)
    assert evidence.attested_at == fleet.NOW - timedelta(minutes=1)
    assert dict(evidence.posture.extra) == {"azure_cloud": cloud, "azure_sku": "22_04-lts-gen2",
                                            "azure_subscription_id": "0f1ee700-1111-4222-8333-444444444444"}
    assert len(evidence.chain) == 3


def test_fleet_marketplace_plan_and_license_are_facts():
    document = fleet.Document(plan={"name": "pro", "product": "app-offer", "publisher": "contoso"}, license_type="Windows_Server",
                              drop=("subscriptionId", "sku"))
    facts = dict(fleet_verify(fleet.attest(document)).posture.extra)
    assert facts == {"azure_cloud": "AzureCloud", "azure_license_type": "Windows_Server", "azure_plan_name": "pro",
                     "azure_plan_product": "app-offer", "azure_plan_publisher": "contoso"}


@pytest.mark.parametrize("knobs", [
    dict(embed="intermediate"),  # the VM's PKCS#7 may carry the intermediate: then no bundled one is needed
    dict(pkcs7={"signed_attributes": True, "digest_oid": None}),  # signed attributes are verified, not required absent
    dict(document=fleet.Document(created_on=fleet.NOW + timedelta(minutes=4))),  # within the clock skew
    dict(document=fleet.Document(created_on="11/01/26 13:00:00 +0100")),  # an offset is honoured
])
def test_fleet_variants_verify(knobs):
    att = fleet.attest(**knobs)
    trust = TrustStore(roots=att.trust.roots) if knobs.get("embed") else att.trust
    assert fleet_verify(att, trust=trust).fmt == "azure-imds"


# --- the fleet: one row per refusal ----------------------------------------------------------------

_D = fleet.Document
REVOKED = {"azure-imds": lambda serial: "revoked by Microsoft"}


def row(knobs, error, check, detail, ident, context=None):
    return pytest.param(knobs, context, error, check, detail, id=ident)


REJECTIONS = [
    row(dict(stmt={"signature": None}), MalformedStatement, "malformed", "attStmt.signature is missing", "signature-missing"),
    row(dict(stmt={"signature": "TUlJ"}), MalformedStatement, "malformed", "not a non-empty byte string (the base64-decoded PKCS#7)", "signature-base64-text"),
    row(dict(stmt={"signature": b"\x30\x80\x00"}), MalformedStatement, "cms-malformed", "attStmt.signature does not parse", "signature-not-cms"),
    row(dict(embed="none"), MalformedStatement, "cms-signer", "no embedded certificate is the PKCS#7 signer", "signer-not-embedded"),
    row(dict(issuer=fleet.pki("Rogue")), UntrustedChain, "chain-untrusted", "does not chain to a configured root", "rogue-pki"),
    row(dict(validity=(fleet.NOW - timedelta(days=30), fleet.NOW - timedelta(days=1))), ChainExpired, "chain-expired", "leaf certificate", "signer-expired"),
    row({}, UntrustedChain, "chain-untrusted", "does not chain to a configured root", "intermediate-not-configured",
        lambda ctx: replace(ctx, trust=TrustStore(roots=ctx.trust.roots))),
    row({}, UntrustedChain, "chain-untrusted", "no trust anchors are configured", "no-roots", lambda ctx: replace(ctx, trust=TrustStore())),
    row(dict(common_name="metadata.azure.com.example.org"), RequirementFailed, "azure-signer-name", "'metadata.azure.com.example.org' is not metadata.azure.com", "cn-suffix"),
    row(dict(common_name="evilmetadata.azure.com"), RequirementFailed, "azure-signer-name", "'evilmetadata.azure.com'", "cn-no-label-boundary"),
    row(dict(common_name="METADATA.AZURE.COM"), RequirementFailed, "azure-signer-name", "'METADATA.AZURE.COM'", "cn-uppercase"),
    row(dict(common_name="metadata.microsoftazure.de"), RequirementFailed, "azure-signer-name", "'metadata.microsoftazure.de'", "cn-azure-germany"),
    row(dict(common_name=None), RequirementFailed, "azure-signer-name", "has 0 subject CNs", "cn-missing"),
    row(dict(extra_cn="metadata.azure.us"), RequirementFailed, "azure-signer-name", "has 2 subject CNs", "cn-twice"),
    row(dict(signer_key="intermediate"), InvalidSignature, "cms-signature", "over the content does not verify", "signed-by-another-key"),
    row(dict(pkcs7={"tamper": True}), InvalidSignature, "cms-signature", "does not verify", "signature-tampered"),
    row(dict(pkcs7={"digest": "sha1", "digest_oid": None}), UnsupportedFormat, "cms-algorithm", "rsa-sha1 is not accepted here", "sha1"),
    row(dict(pkcs7={"signed_attributes": True, "message_digest": b"\x00" * 32}), InvalidSignature, "cms-message-digest", "messageDigest", "message-digest"),
    row(dict(pkcs7={"embed_content": False}), MalformedStatement, "azure-document", "carries no content", "content-detached"),
    row(dict(document=_D(raw=b"vmId=1")), MalformedStatement, "azure-document", "not strict UTF-8 JSON", "content-not-json"),
    row(dict(document=_D(raw=b'{"nonce":"1","nonce":"2"}')), MalformedStatement, "azure-document", "member 'nonce' appears more than once", "duplicate-member"),
    row(dict(document=_D(raw=b'"0123456789"')), MalformedStatement, "azure-document", "is not a JSON object", "content-string"),
    row(dict(document=_D(drop=("nonce",))), MalformedStatement, "azure-document", "nonce is missing", "nonce-missing"),
    row(dict(document=_D(nonce="")), MalformedStatement, "azure-document", "nonce is missing or not a non-empty string", "nonce-empty"),
    row(dict(document=_D(drop=("vmId",))), MalformedStatement, "azure-document", "vmId is missing", "vm-id-missing"),
    row(dict(document=_D(vm_id="vm-1")), MalformedStatement, "azure-document", "vmId 'vm-1' is not a UUID", "vm-id-form"),
    row(dict(document=_D(drop=("timeStamp",))), MalformedStatement, "azure-document", "timeStamp is missing", "timestamp-missing"),
    row(dict(document=_D(created_on="2026-11-01T11:59:00Z")), MalformedStatement, "azure-document", "timeStamp.createdOn '2026-11-01T11:59:00Z'", "created-on-iso"),
    row(dict(document=_D(expires_on="13/40/26 17:00:00 -0000")), MalformedStatement, "azure-document", "timeStamp.expiresOn is not a date", "expires-on-month-13"),
    row(dict(document=_D(expires_on=fleet.NOW - timedelta(hours=1))), MalformedStatement, "azure-document", "expiresOn is before createdOn", "expires-before-created"),
    row(dict(document=_D(subscription_id="sub")), MalformedStatement, "azure-document", "subscriptionId 'sub' is not a UUID", "subscription-form"),
    row(dict(document=_D(sku=7)), MalformedStatement, "azure-document", "sku is not a string", "sku-number"),
    row(dict(document=_D(plan="pro")), MalformedStatement, "azure-document", "plan is not an object", "plan-text"),
    row(dict(document=_D(plan={"name": 1})), MalformedStatement, "azure-document", "name is not a string", "plan-name-number"),
    row(dict(document=_D(created_on=fleet.NOW + timedelta(minutes=6))), RequirementFailed, "azure-timestamp", "createdOn 2026-11-01T12:06:00Z is in the future", "created-in-the-future"),
    row(dict(document=_D(created_on=fleet.NOW - timedelta(hours=7), expires_on=fleet.NOW - timedelta(hours=1))), RequirementFailed, "azure-timestamp", "expired at 2026-11-01T11:00:00Z", "document-expired"),
    row(dict(document=_D(nonce="9876543210")), ChallengeMismatch, "challenge-mismatch", "nonce '9876543210' is not the challenge's '0123456789'", "nonce-other"),
    row({}, CertificateRevoked, "chain-revoked", "revoked by Microsoft", "revoked", lambda ctx: replace(ctx, revocation=REVOKED)),
]


@pytest.mark.parametrize("knobs, context, error, check, detail", REJECTIONS)
def test_rejects(knobs, context, error, check, detail):
    att = fleet.attest(**knobs)
    ctx = context(fleet_context(att)) if context else fleet_context(att)
    with pytest.raises(AttestationError) as info:
        azure_imds.verify(att.att_stmt, ctx)
    assert type(info.value) is error, info.value
    assert info.value.check == check, info.value
    assert detail in str(info.value)


def test_rejects_statement_that_is_not_a_map():
    with pytest.raises(MalformedStatement, match="attStmt is not a map"):
        azure_imds.verify(b"signature", real_context(USGOV))


# --- fuzzing: nothing but AttestationError leaves the verifier ----------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.binary(max_size=48), st.text(max_size=12))
CBORISH = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)


def only_attestation_errors(stmt, ctx) -> None:
    try:
        azure_imds.verify(stmt, ctx)
    except AttestationError:
        pass


@given(stmt=st.one_of(CBORISH, st.fixed_dictionaries({}, optional={"signature": CBORISH})))
@settings(max_examples=300, deadline=None)
def test_fuzz_statement_structure(stmt):
    only_attestation_errors(stmt, real_context(USGOV))


@given(data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_mutated_real_signature(data):
    path = data.draw(st.sampled_from([USGOV, EASTUS]))
    blob = bytearray(real_statement(path)["signature"])
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    only_attestation_errors({"signature": bytes(blob)}, real_context(path))


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6), max_leaves=15)
FIELDS = st.fixed_dictionaries({}, optional={name: JSONISH for name in (
    "nonce", "vmId", "subscriptionId", "sku", "licenseType", "plan", "timeStamp")})


@given(content=st.one_of(st.binary(max_size=120), st.builds(lambda v: json.dumps(v).encode(), st.one_of(JSONISH, FIELDS))))
@settings(max_examples=300, deadline=None)
def test_fuzz_document_parser(content):
    try:
        azure_imds.parse_document(content)
    except AttestationError:
        pass
