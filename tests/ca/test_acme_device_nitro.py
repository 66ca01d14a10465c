"""An AWS Nitro enclave through the whole ACME app: device-attest-01 to a certificate.

Driven by the test fleet (tests/fleet/aws_nitro.py: a generated root standing in for the
AWS Nitro Enclaves Root G1, since no real enclave can answer a fresh challenge here); the
real documents are verified in tests/attestation/test_aws_nitro.py at their own time.
The default device policy wants "tee" or stronger; Nitro evidence is "cloud", so the CA
runs with device_min_trust_level="cloud", as an operator enrolling enclaves would.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from attestation import assigners
from attestation.evidence import TrustLevel
from attestation.formats import aws_nitro
from ca.posture import posture_from_certificate
from ca.san import decode_other_name
from tests.acme_client import AcmeSession, b64
from tests.ca.flow import poll
from tests.fleet import aws_nitro as fleet

FORMATS = {"aws-nitro": aws_nitro.FORMAT}
INSTANCE = f"{fleet.INSTANCE_ID}/{assigners.AWS_EC2_INSTANCE_ID}"
IMAGE = f"{fleet.IMAGE.hex()}/{assigners.NITRO_ENCLAVE_IMAGE}"


async def _session(start_app, **overrides: Any) -> AcmeSession:
    client, _ = await start_app(formats=FORMATS, trust=fleet.pki().trust(), **overrides)
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    return acme


async def _attest(acme: AcmeSession, identifier: str, **knobs: Any) -> tuple[str, dict, dict, Any]:
    """Order `identifier`, answer its device-attest-01 challenge from the enclave; return the
    order URL, the order, the settled authorization and the enclave's key."""
    response = await acme.new_order([{"type": "permanent-identifier", "value": identifier}])
    assert response.status == 201, await response.text()
    order_url, order = response.headers["Location"], await response.json()
    authz_url = order["authorizations"][0]
    challenge = (await (await acme.get(authz_url)).json())["challenges"][0]
    att = fleet.for_acme(challenge["token"], acme.key_authorization(challenge["token"]).encode(), **knobs)
    await acme.post(challenge["url"], {"attObj": b64(att.att_obj())})
    return order_url, order, await poll(acme, authz_url, {"valid", "invalid"}), att.key


def _csr(key) -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


async def _certificate(acme: AcmeSession, order_url: str, order: dict, key) -> x509.Certificate:
    finalized = await acme.post(order["finalize"], {"csr": b64(_csr(key))})
    assert finalized.status == 200, await finalized.text()
    done = await poll(acme, order_url, {"valid", "invalid"})
    return x509.load_pem_x509_certificates(await (await acme.get(done["certificate"])).read())[0]


@pytest.mark.parametrize("identifier", [INSTANCE, IMAGE], ids=["instance-id", "image-pcr0"])
async def test_enclave_enrolls_to_a_certificate(start_app, identifier):
    acme = await _session(start_app, device_min_trust_level="cloud")
    order_url, order, authz, key = await _attest(acme, identifier)
    assert authz["status"] == "valid", authz["challenges"][0].get("error")
    record = authz["challenges"][0]["validationRecord"][0]
    assert record["fmt"] == "aws-nitro" and record["trustLevel"] == "cloud"
    assert {i["value"] for i in record["attestedIdentifiers"]} == {INSTANCE, IMAGE}
    leaf = await _certificate(acme, order_url, order, key)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(decode_other_name(n).value) for n in san.get_values_for_type(x509.OtherName)] == [identifier]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    posture = posture_from_certificate(leaf)
    assert posture.fmt == "aws-nitro" and posture.trust_level is TrustLevel.CLOUD
    assert posture.attested_at == fleet.NOW and posture.posture.key_protection == "nitro-enclave"
    assert posture.posture.key_attested is True
    facts = dict(posture.posture.extra)
    assert facts["nitro_module_id"] == fleet.MODULE_ID and facts["nitro_debug"] == "false"
    assert facts["nitro_pcr0"] == fleet.IMAGE.hex() and facts["nitro_pcr4"] == fleet.measure(fleet.INSTANCE_ID.encode()).hex()


async def test_debug_enclave_is_refused_by_default(start_app):
    acme = await _session(start_app, device_min_trust_level="cloud")
    _, _, authz, _ = await _attest(acme, INSTANCE, debug=True)
    error = authz["challenges"][0]["error"]
    assert authz["status"] == "invalid" and "allow-nitro-debug" in error["detail"], error


async def test_debug_enclave_is_marked_in_the_certificate_when_allowed(start_app):
    """With the operator's leave the debug fact must reach the gate, which can still refuse it."""
    acme = await _session(start_app, device_min_trust_level="cloud", device_allow_nitro_debug=True)
    order_url, order, authz, key = await _attest(acme, INSTANCE, debug=True)
    assert authz["status"] == "valid", authz["challenges"][0].get("error")
    facts = dict(posture_from_certificate(await _certificate(acme, order_url, order, key)).posture.extra)
    assert facts["nitro_debug"] == "true" and "nitro_pcr0" not in facts


async def test_debug_enclave_cannot_claim_an_image(start_app):
    acme = await _session(start_app, device_min_trust_level="cloud", device_allow_nitro_debug=True)
    _, _, authz, _ = await _attest(acme, f"{bytes(48).hex()}/{assigners.NITRO_ENCLAVE_IMAGE}", debug=True)
    error = authz["challenges"][0]["error"]
    assert authz["status"] == "invalid" and error["subproblems"][0]["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"


async def test_default_policy_refuses_cloud_evidence(start_app):
    acme = await _session(start_app)
    _, _, authz, _ = await _attest(acme, INSTANCE)
    error = authz["challenges"][0]["error"]
    assert authz["status"] == "invalid" and error["type"] == "urn:ietf:params:acme:error:badAttestationStatement"
    assert "min-trust-level" in error["detail"] and "proves cloud" in error["detail"]


@pytest.mark.parametrize("knobs, detail", [
    (dict(nonce=b"\x00" * 32), "nonce is not SHA-256 of the key authorization"),
    (dict(issuer=fleet.pki("Rogue")), "cabundle[0] is not a configured AWS Nitro root"),
    (dict(public_key=b"dummy"), "is not a DER SubjectPublicKeyInfo"),
], ids=["other-challenge", "untrusted-root", "no-spki"])
async def test_bad_document_is_refused_naming_the_check(start_app, knobs, detail):
    acme = await _session(start_app, device_min_trust_level="cloud")
    _, _, authz, _ = await _attest(acme, INSTANCE, **knobs)
    error = authz["challenges"][0]["error"]
    assert authz["status"] == "invalid" and error["type"] == "urn:ietf:params:acme:error:badAttestationStatement"
    assert detail in error["detail"]


async def test_csr_with_another_key_is_refused(start_app):
    acme = await _session(start_app, device_min_trust_level="cloud")
    _, order, authz, _ = await _attest(acme, INSTANCE)
    assert authz["status"] == "valid"
    refused = await acme.post(order["finalize"], {"csr": b64(_csr(ec.generate_private_key(ec.SECP256R1())))})
    problem = await refused.json()
    assert refused.status == 400 and problem["type"] == "urn:ietf:params:acme:error:badCSR"
