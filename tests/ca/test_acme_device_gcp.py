"""device-attest-01 on Google Compute Engine through the whole ACME app: a GCE identity token
("gcp-iit", key-less) and a Shielded VM vTPM ("tpm" under the Google Cloud profile), from
new order to certificate. Stand-ins from tests/fleet (a test JWK for Google's signing key, a
test "EK/AK CA" for Google's vTPM CA): no real VM can answer a fresh challenge here; the real
Google evidence is verified in tests/attestation/test_gcp_iit.py and test_tpm_gcp.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.assigners import GCE_INSTANCE_ID
from attestation.evidence import TrustLevel
from attestation.format import key_authorization_binding
from attestation.formats import gcp_iit, tpm
from ca.posture import posture_from_certificate
from ca.san import decode_other_name
from tests.acme_client import AcmeSession, b64
from tests.ca.flow import poll
from tests.fleet import gcp_iit as iit_fleet, tpm_gcp as vtpm_fleet

IIT_IDENTIFIER = f"{iit_fleet.INSTANCE_ID}/{GCE_INSTANCE_ID}"
VTPM_IDENTIFIER = f"{vtpm_fleet.INSTANCE_ID}/{GCE_INSTANCE_ID}"


def _iit(token: str, keyauth: bytes, **knobs: Any) -> tuple[bytes, Any]:
    """The VM's answer: a token for aud = <CA>/device-attest-01/<digest>; its key is any key."""
    return iit_fleet.for_acme(token, keyauth, **knobs).att_obj(), ec.generate_private_key(ec.SECP256R1())


def _vtpm(token: str, keyauth: bytes, **knobs: Any) -> tuple[bytes, Any]:
    sample = vtpm_fleet.make(vtpm_fleet.Knobs(**knobs), key_authorization_binding(token, keyauth))
    return vtpm_fleet.att_obj(sample), sample.attested_key


async def _session(start_app, fmt: str, **overrides: Any) -> AcmeSession:
    formats, trust = ({"gcp-iit": gcp_iit.FORMAT}, iit_fleet.trust()) if fmt == "gcp-iit" else ({"tpm": tpm.FORMAT}, vtpm_fleet.trust())
    client, _services = await start_app(formats=formats, trust=trust, **overrides)
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    return acme


async def _attest(acme: AcmeSession, identifier: str, attest: Callable, token: str | None = None) -> tuple[str, dict, dict, Any]:
    response = await acme.new_order([{"type": "permanent-identifier", "value": identifier}])
    assert response.status == 201, await response.text()
    order_url, order = response.headers["Location"], await response.json()
    challenge = (await (await acme.get(order["authorizations"][0])).json())["challenges"][0]
    answered_for = token or challenge["token"]
    att_obj, key = attest(answered_for, acme.key_authorization(answered_for).encode())
    answered = await acme.post(challenge["url"], {"attObj": b64(att_obj)})
    assert answered.status == 200, await answered.text()
    return order_url, order, await poll(acme, order["authorizations"][0], {"valid", "invalid"}), key


async def _certificate(acme: AcmeSession, order_url: str, order: dict, key) -> x509.Certificate:
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    finalized = await acme.post(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
    assert finalized.status == 200, await finalized.text()
    done = await poll(acme, order_url, {"valid", "invalid"})
    assert done["status"] == "valid", done
    return x509.load_pem_x509_certificates(await (await acme.get(done["certificate"])).read())[0]


FLOWS = [("gcp-iit", IIT_IDENTIFIER, _iit, False), ("tpm", VTPM_IDENTIFIER, _vtpm, True)]


@pytest.mark.parametrize("fmt, identifier, attest, key_attested", FLOWS, ids=["gcp-iit", "gce-vtpm"])
async def test_gce_device_gets_a_certificate(start_app, fmt, identifier, attest, key_attested):
    acme = await _session(start_app, fmt, device_min_trust_level="cloud")
    order_url, order, authz, key = await _attest(acme, identifier, attest)
    assert authz["status"] == "valid", authz["challenges"][0].get("error")
    record = authz["challenges"][0]["validationRecord"][0]
    assert record["fmt"] == fmt and record["trustLevel"] == "cloud"
    leaf = await _certificate(acme, order_url, order, key)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [decode_other_name(n).value for n in san.get_values_for_type(x509.OtherName)] == [identifier]
    posture = posture_from_certificate(leaf)
    assert posture.fmt == fmt and posture.trust_level is TrustLevel.CLOUD
    assert posture.posture.key_attested is key_attested
    assert dict(posture.posture.extra)["gce_project_id"] == "acmeda-fleet"


async def test_vtpm_csr_must_carry_the_attested_key(start_app):
    acme = await _session(start_app, "tpm", device_min_trust_level="cloud")
    order_url, order, authz, _key = await _attest(acme, VTPM_IDENTIFIER, _vtpm)
    assert authz["status"] == "valid"
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    finalized = await acme.post(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
    assert finalized.status == 400 and "attested key" in (await finalized.json())["detail"]


REFUSALS = [
    ("gcp-iit", IIT_IDENTIFIER, _iit, "A" * 43, "does not end with"),  # a token for another challenge
    ("gcp-iit", IIT_IDENTIFIER, lambda t, k: _iit(t, k, signer="rogue"), None, "does not verify"),
    ("tpm", VTPM_IDENTIFIER, _vtpm, "A" * 43, "extraData"),
    ("tpm", VTPM_IDENTIFIER, lambda t, k: _vtpm(t, k, style="webauthn"), None, "instance identity extension"),
    ("tpm", f"999/{GCE_INSTANCE_ID}", _vtpm, None, "does not match the attested identifiers"),
]


@pytest.mark.parametrize("fmt, identifier, attest, token, detail", REFUSALS,
                         ids=["iit other challenge", "iit rogue key", "vtpm other challenge", "vtpm webauthn cert",
                              "vtpm other instance"])
async def test_gce_attestation_refused(start_app, fmt, identifier, attest, token, detail):
    acme = await _session(start_app, fmt, device_min_trust_level="cloud")
    _url, _order, authz, _key = await _attest(acme, identifier, attest, token)
    error = authz["challenges"][0]["error"]
    assert authz["status"] == "invalid" and error["type"] == "urn:ietf:params:acme:error:badAttestationStatement"
    assert detail in error["detail"], error


@pytest.mark.parametrize("fmt, identifier, attest", [f[:3] for f in FLOWS], ids=["gcp-iit", "gce-vtpm"])
async def test_cloud_evidence_is_refused_by_the_default_policy(start_app, fmt, identifier, attest):
    acme = await _session(start_app, fmt)  # device_min_trust_level defaults to tee
    _url, _order, authz, _key = await _attest(acme, identifier, attest)
    assert authz["status"] == "invalid" and "cloud" in authz["challenges"][0]["error"]["detail"]


async def test_gcp_iit_keeps_its_keys_when_tpm_is_enabled_too(start_app):
    trust = replace(vtpm_fleet.trust(), keys=iit_fleet.trust().keys)
    client, _services = await start_app(formats={"gcp-iit": gcp_iit.FORMAT, "tpm": tpm.FORMAT}, trust=trust,
                                        device_min_trust_level="cloud")
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    _url, _order, authz, _key = await _attest(acme, IIT_IDENTIFIER, _iit)
    assert authz["status"] == "valid", authz["challenges"][0].get("error")
