"""Evidence that attests no key (cloud identity tokens) and evidence that can be replayed (EC2
identity documents), through the whole ACME app.

The format here is a TEST-ONLY stand-in ("test-cloud"): a signature over the key
authorization by a "cloud" key stands for the provider's signed token, and the statement
says whether it is replayable. The real cloud formats are tested on recorded evidence in
tests/attestation and in their own flow tests.
"""

from __future__ import annotations

from typing import Any, Mapping

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.errors import InvalidSignature
from attestation.evidence import Evidence, PermanentIdentifier, TrustLevel
from attestation.format import Format, key_authorization_binding
from ca.posture import posture_from_certificate
from tests.acme_client import AcmeSession, b64
from tests.ca.flow import poll

CLOUD_KEY = ec.generate_private_key(ec.SECP256R1())


def _verify(stmt: Mapping[str, Any], ctx) -> Evidence:
    try:
        CLOUD_KEY.public_key().verify(stmt["sig"], ctx.binding.att_to_be_signed, ec.ECDSA(hashes.SHA256()))
    except _BadSignature:
        raise InvalidSignature("test-cloud: sig does not verify") from None
    return Evidence(fmt="test-cloud", public_key=None, trust_level=TrustLevel.CLOUD,
                    permanent_identifiers=(PermanentIdentifier(stmt["instance"]),),
                    attested_at=ctx.now, replayable=bool(stmt.get("replayable")))


FORMATS = {"test-cloud": Format("test-cloud", _verify, key_authorization_binding)}


async def _session(start_app, **overrides) -> AcmeSession:
    client, _services = await start_app(formats=FORMATS, **overrides)
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    return acme


async def _attest(acme: AcmeSession, instance: str, *, replayable: bool = False) -> tuple[str, dict, dict]:
    response = await acme.new_order([{"type": "permanent-identifier", "value": instance}])
    assert response.status == 201, await response.text()
    order_url, order = response.headers["Location"], await response.json()
    authz = await (await acme.get(order["authorizations"][0])).json()
    challenge = authz["challenges"][0]
    keyauth = acme.key_authorization(challenge["token"]).encode()
    stmt = {"sig": CLOUD_KEY.sign(keyauth, ec.ECDSA(hashes.SHA256())), "instance": instance, "replayable": replayable}
    answered = await acme.post(challenge["url"], {"attObj": b64(cbor2.dumps({"fmt": "test-cloud", "attStmt": stmt}))})
    assert answered.status == 200, await answered.text()
    return order_url, order, await poll(acme, order["authorizations"][0], {"valid", "invalid"})


async def _certificate(acme: AcmeSession, order_url: str, order: dict) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())  # any key: the account, not the evidence, binds it
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    finalized = await acme.post(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})
    assert finalized.status == 200, await finalized.text()
    done = await poll(acme, order_url, {"valid", "invalid"})
    assert done["status"] == "valid", done
    return x509.load_pem_x509_certificates(await (await acme.get(done["certificate"])).read())[0]


async def test_keyless_evidence_issues_a_certificate_that_says_the_key_was_not_attested(start_app):
    acme = await _session(start_app, device_min_trust_level="cloud")
    order_url, order, authz = await _attest(acme, "i-0abc")
    assert authz["status"] == "valid", authz
    posture = posture_from_certificate(await _certificate(acme, order_url, order))
    assert posture.trust_level is TrustLevel.CLOUD
    assert posture.posture.key_attested is False
    assert posture.posture.replayable is None, "only replayable evidence says so"


async def test_cloud_trust_level_is_refused_by_the_default_policy(start_app):
    acme = await _session(start_app)  # device_min_trust_level defaults to tee
    _url, _order, authz = await _attest(acme, "i-0abc")
    assert authz["status"] == "invalid"
    error = authz["challenges"][0]["error"]
    assert error["type"] == "urn:ietf:params:acme:error:badAttestationStatement"
    assert "cloud" in error["detail"] and "tee" in error["detail"], error


async def test_replayable_evidence_is_trusted_on_first_use_by_that_account(start_app):
    acme = await _session(start_app, device_min_trust_level="cloud")
    order_url, order, authz = await _attest(acme, "i-0first", replayable=True)
    assert authz["status"] == "valid", authz
    posture = posture_from_certificate(await _certificate(acme, order_url, order))
    assert posture.posture.replayable is True and posture.posture.key_attested is False

    _url, _order, renewal = await _attest(acme, "i-0first", replayable=True)
    assert renewal["status"] == "valid", "the first account may enroll its instance again"

    other = AcmeSession(acme.http)
    await other.load_directory()
    await other.new_account()
    _url, _order, again = await _attest(other, "i-0first", replayable=True)
    assert again["status"] == "invalid"
    assert "first enrolled by another account" in again["challenges"][0]["error"]["detail"]

    _url, _order, fresh = await _attest(other, "i-0second", replayable=True)
    assert fresh["status"] == "valid", "the first use of another identifier is admitted"


@pytest.mark.parametrize("replayable", [False])
async def test_non_replayable_evidence_may_enroll_again(start_app, replayable):
    acme = await _session(start_app, device_min_trust_level="cloud")
    for _ in range(2):
        _url, _order, authz = await _attest(acme, "i-0again", replayable=replayable)
        assert authz["status"] == "valid", authz
