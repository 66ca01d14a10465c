"""device-attest-01 from new order to certificate with the cloud identity formats "aws-iid" and
"azure-imds", driven by their fleets (generated roots standing in for AWS and Microsoft, since
no real instance can answer a fresh challenge here; the real documents are verified in
tests/attestation at their own time).

Neither format attests a key: the certificate carries the CSR key the ACME account chose,
and says so (`keyAttested` FALSE). An EC2 document is replayable, so it enrolls an instance
once; an Azure document is bound to the challenge through the IMDS nonce.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from attestation.assigners import AWS_EC2_INSTANCE_ID, AZURE_VM_ID
from attestation.evidence import TrustLevel
from attestation.formats import azure_imds
from ca.posture import posture_from_certificate
from ca.san import decode_other_name
from tests.acme_client import AcmeSession, b64
from tests.ca.flow import poll
from tests.fleet import aws_iid as aws_fleet
from tests.fleet import azure_imds as azure_fleet

AWS_IDENTIFIER = f"{aws_fleet.INSTANCE_ID}/{AWS_EC2_INSTANCE_ID}"
AZURE_IDENTIFIER = f"{azure_fleet.VM_ID}/{AZURE_VM_ID}"


async def _session(start_app, formats, trust) -> AcmeSession:
    client, _services = await start_app(formats=formats, trust=trust, device_min_trust_level="cloud")
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    return acme


async def _attest(acme: AcmeSession, identifier: str, make_att_obj) -> tuple[str, dict, dict]:
    """Order `identifier`, answer its challenge with `make_att_obj(token, key authorization)`, poll the authorization."""
    response = await acme.new_order([{"type": "permanent-identifier", "value": identifier}])
    assert response.status == 201, await response.text()
    order_url, order = response.headers["Location"], await response.json()
    authz_url = order["authorizations"][0]
    challenge = (await (await acme.get(authz_url)).json())["challenges"][0]
    att_obj = make_att_obj(challenge["token"], acme.key_authorization(challenge["token"]).encode())
    answered = await acme.post(challenge["url"], {"attObj": b64(att_obj)})
    assert answered.status == 200, await answered.text()
    return order_url, order, await poll(acme, authz_url, {"valid", "invalid"})


async def _certificate(acme: AcmeSession, order_url: str, order: dict) -> tuple[x509.Certificate, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())  # the account's choice: no key is attested
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    finalized = await acme.post(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
    assert finalized.status == 200, await finalized.text()
    done = await poll(acme, order_url, {"valid", "invalid"})
    assert done["status"] == "valid", done
    leaf = x509.load_pem_x509_certificates(await (await acme.get(done["certificate"])).read())[0]
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return leaf, spki


def _check_certificate(leaf: x509.Certificate, csr_spki: bytes, identifier: str, fmt: str) -> None:
    assert leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == csr_spki
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [decode_other_name(n).value for n in san.get_values_for_type(x509.OtherName)] == [identifier]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    posture = posture_from_certificate(leaf)
    assert posture.fmt == fmt and posture.trust_level is TrustLevel.CLOUD
    assert posture.posture.key_attested is False


# --- aws-iid ------------------------------------------------------------------------------------


def _aws_att_obj(token: str, key_authorization: bytes) -> bytes:
    return aws_fleet.attest("pkcs7-dsa").att_obj()  # the document binds nothing: the same bytes every time


async def test_aws_iid_flow_to_a_certificate_for_the_first_account_only(start_app):
    att = aws_fleet.attest("pkcs7-dsa")
    acme = await _session(start_app, {"aws-iid": att.fmt}, att.trust)
    order_url, order, authz = await _attest(acme, AWS_IDENTIFIER, _aws_att_obj)
    assert authz["status"] == "valid", authz["challenges"][0].get("error")
    assert authz["challenges"][0]["validationRecord"][0]["fmt"] == "aws-iid"
    leaf, spki = await _certificate(acme, order_url, order)
    _check_certificate(leaf, spki, AWS_IDENTIFIER, "aws-iid")
    posture = posture_from_certificate(leaf)
    assert posture.posture.replayable is True
    assert dict(posture.posture.extra)["aws_signature"] == "pkcs7-dsa-sha1"

    _url, _order, renewal = await _attest(acme, AWS_IDENTIFIER, _aws_att_obj)
    assert renewal["status"] == "valid", "the account that enrolled the instance first may enroll it again"

    other = AcmeSession(acme.http)
    await other.load_directory()
    await other.new_account()
    _url, _order, replay = await _attest(other, AWS_IDENTIFIER, _aws_att_obj)
    assert replay["status"] == "invalid", "another account replaying the document is refused"
    assert "first enrolled by another account" in replay["challenges"][0]["error"]["detail"]


async def test_aws_iid_document_of_another_instance_is_refused(start_app):
    att = aws_fleet.attest("signature")
    acme = await _session(start_app, {"aws-iid": att.fmt}, att.trust)
    other = f"i-0123456789abcdef0/{AWS_EC2_INSTANCE_ID}"
    _url, _order, authz = await _attest(acme, other, lambda token, keyauth: att.att_obj())
    error = authz["challenges"][0]["error"]
    assert authz["status"] == "invalid" and error["type"] == "urn:ietf:params:acme:error:badAttestationStatement"
    assert error["subproblems"][0]["identifier"]["value"] == other


# --- azure-imds ---------------------------------------------------------------------------------


def _azure_att_obj(token: str, key_authorization: bytes) -> bytes:
    return azure_fleet.for_acme(token, key_authorization).att_obj()


async def test_azure_imds_flow_to_a_certificate(start_app):
    acme = await _session(start_app, {"azure-imds": azure_imds.FORMAT}, azure_fleet.pki().trust())
    order_url, order, authz = await _attest(acme, AZURE_IDENTIFIER, _azure_att_obj)
    assert authz["status"] == "valid", authz["challenges"][0].get("error")
    leaf, spki = await _certificate(acme, order_url, order)
    _check_certificate(leaf, spki, AZURE_IDENTIFIER, "azure-imds")
    posture = posture_from_certificate(leaf)
    assert posture.posture.replayable is None, "a nonce-bound document is not replayable"
    assert dict(posture.posture.extra)["azure_cloud"] == "AzureCloud"


@pytest.mark.parametrize("nonce_of", ["another-challenge", "imds-default-timestamp"])
async def test_azure_imds_document_not_bound_to_this_challenge_is_refused(start_app, nonce_of):
    acme = await _session(start_app, {"azure-imds": azure_imds.FORMAT}, azure_fleet.pki().trust())

    def att_obj(token: str, key_authorization: bytes) -> bytes:
        nonce = azure_imds.nonce_for(b"other." + key_authorization) if nonce_of == "another-challenge" else "20261101-120000"
        return azure_fleet.attest(azure_fleet.Document(nonce=nonce)).att_obj()

    _url, _order, authz = await _attest(acme, AZURE_IDENTIFIER, att_obj)
    error = authz["challenges"][0]["error"]
    assert authz["status"] == "invalid" and error["type"] == "urn:ietf:params:acme:error:badAttestationStatement"
    assert "nonce" in error["detail"] and "is not the challenge's" in error["detail"]


async def test_cloud_formats_are_refused_by_the_default_device_policy(start_app):
    client, _ = await start_app(formats={"azure-imds": azure_imds.FORMAT}, trust=azure_fleet.pki().trust())
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    _url, _order, authz = await _attest(acme, AZURE_IDENTIFIER, _azure_att_obj)
    assert authz["status"] == "invalid"
    assert "cloud" in authz["challenges"][0]["error"]["detail"]
