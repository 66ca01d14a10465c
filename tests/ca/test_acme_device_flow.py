"""device-attest-01 through the whole ACME app: order for a device identifier, attObj response,
dispatch to the format registry, finalize bound to the attested key, a clientAuth certificate
with the identifier SAN and the posture extension.

The format used here is a TEST-ONLY stand-in registered just for this module (real formats
are tested on vendor evidence in tests/attestation): it proves an ECDSA P-256 key by a
signature over the key authorization and reports a serial number.
"""

from __future__ import annotations

from typing import Any, Mapping

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from attestation.errors import InvalidSignature
from attestation.evidence import Evidence, PermanentIdentifier, Posture, TrustLevel
from attestation.format import Format, key_authorization_binding
from ca.posture import posture_from_certificate
from ca.san import decode_other_name
from tests.acme_client import AcmeSession, b64
from tests.ca.flow import poll
from tests.ca.test_acme_jws import problem


def _verify(stmt: Mapping[str, Any], ctx) -> Evidence:
    key = serialization.load_der_public_key(stmt["spki"])
    try:
        key.verify(stmt["sig"], ctx.binding.att_to_be_signed, ec.ECDSA(hashes.SHA256()))
    except _BadSignature:
        raise InvalidSignature("test-ec: sig does not verify over the key authorization") from None
    return Evidence(fmt="test-ec", public_key=stmt["spki"], trust_level=TrustLevel.TEE,
                    permanent_identifiers=(PermanentIdentifier(stmt["serial"]),),
                    posture=Posture(os_version="15.1", bootloader_locked=True), attested_at=ctx.now)


TEST_FORMATS = {"test-ec": Format("test-ec", _verify, key_authorization_binding)}


def _att_obj(key: ec.EllipticCurvePrivateKey, key_authorization: str, serial: str) -> str:
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    stmt = {"spki": spki, "sig": key.sign(key_authorization.encode(), ec.ECDSA(hashes.SHA256())), "serial": serial}
    return b64(cbor2.dumps({"fmt": "test-ec", "attStmt": stmt}))


def _device_csr(key) -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


@pytest.fixture
async def device_acme(start_app):
    client, services = await start_app(formats=TEST_FORMATS)
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    return acme


async def _attest(acme: AcmeSession, serial: str, device_key, *, attested_serial: str | None = None) -> tuple[str, dict, dict]:
    response = await acme.new_order([{"type": "permanent-identifier", "value": serial}])
    assert response.status == 201, await response.text()
    order_url, order = response.headers["Location"], await response.json()
    authz = await (await acme.get(order["authorizations"][0])).json()
    assert [c["type"] for c in authz["challenges"]] == ["device-attest-01"]
    challenge = authz["challenges"][0]
    att = _att_obj(device_key, acme.key_authorization(challenge["token"]), attested_serial or serial)
    answered = await acme.post(challenge["url"], {"attObj": att})
    assert answered.status == 200, await answered.text()
    authz = await poll(acme, order["authorizations"][0], {"valid", "invalid"})
    return order_url, order, authz


async def test_device_certificate_carries_identifier_and_posture(device_acme):
    device_key = ec.generate_private_key(ec.SECP256R1())
    order_url, order, authz = await _attest(device_acme, "C02XYZ123", device_key)
    assert authz["status"] == "valid", authz
    finalized = await device_acme.post(order["finalize"], {"csr": b64(_device_csr(device_key))})
    assert finalized.status == 200, await finalized.text()
    done = await poll(device_acme, order_url, {"valid", "invalid"})
    leaf = x509.load_pem_x509_certificates(await (await device_acme.get(done["certificate"])).read())[0]
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert [decode_other_name(n).value for n in san.value.get_values_for_type(x509.OtherName)] == ["C02XYZ123"]
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    posture = posture_from_certificate(leaf)
    assert posture is not None and posture.fmt == "test-ec" and posture.trust_level is TrustLevel.TEE
    assert posture.posture.os_version == "15.1" and posture.posture.bootloader_locked is True
    assert posture.posture.verified_boot is None, "facts the evidence did not prove stay absent"
    assert posture.posture.key_attested is True and posture.posture.replayable is None


async def test_csr_key_must_be_the_attested_key(device_acme):
    order_url, order, authz = await _attest(device_acme, "SERIAL-2", ec.generate_private_key(ec.SECP256R1()))
    other = ec.generate_private_key(ec.SECP256R1())
    doc = await problem(await device_acme.post(order["finalize"], {"csr": b64(_device_csr(other))}), "badCSR", 400)
    assert "attested key" in doc["detail"]


async def test_attested_identifier_must_match_the_order(device_acme):
    _, _, authz = await _attest(device_acme, "SERIAL-3", ec.generate_private_key(ec.SECP256R1()), attested_serial="SERIAL-4")
    assert authz["status"] == "invalid"
    error = authz["challenges"][0]["error"]
    assert error["type"] == "urn:ietf:params:acme:error:badAttestationStatement"
    assert error["subproblems"][0]["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"
    assert error["subproblems"][0]["identifier"] == {"type": "permanent-identifier", "value": "SERIAL-3"}


async def test_unknown_format_lists_enabled_ones(device_acme):
    response = await device_acme.new_order([{"type": "permanent-identifier", "value": "SERIAL-5"}])
    authz_url = (await response.json())["authorizations"][0]
    challenge = (await (await device_acme.get(authz_url)).json())["challenges"][0]
    att = b64(cbor2.dumps({"fmt": "nope", "attStmt": {}}))
    await device_acme.post(challenge["url"], {"attObj": att})
    authz = await poll(device_acme, authz_url, {"valid", "invalid"})
    error = authz["challenges"][0]["error"]
    assert error["type"] == "urn:ietf:params:acme:error:badAttestationStatement"
    assert "test-ec" in error["detail"]


@pytest.mark.parametrize("payload", [{}, {"attObj": 5}, {"attObj": "not base64!"}])
async def test_malformed_response_is_refused_and_challenge_stays_pending(device_acme, payload):
    response = await device_acme.new_order([{"type": "permanent-identifier", "value": "SERIAL-6"}])
    authz_url = (await response.json())["authorizations"][0]
    challenge = (await (await device_acme.get(authz_url)).json())["challenges"][0]
    await problem(await device_acme.post(challenge["url"], payload), "malformed", 400)
    still = await (await device_acme.get(challenge["url"])).json()
    assert still["status"] == "pending"


async def test_privacy_mode_names_the_device_by_a_stable_pseudonym(start_app):
    client, _ = await start_app(formats=TEST_FORMATS, device_privacy=True)
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    names = []
    for _ in range(2):  # the same device twice: the pseudonym must not change across renewals
        device_key = ec.generate_private_key(ec.SECP256R1())
        order_url, order, authz = await _attest(acme, "C02PRIVATE1", device_key)
        await acme.post(order["finalize"], {"csr": b64(_device_csr(device_key))})
        done = await poll(acme, order_url, {"valid", "invalid"})
        leaf = x509.load_pem_x509_certificates(await (await acme.get(done["certificate"])).read())[0]
        with pytest.raises(x509.ExtensionNotFound):
            leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        cn = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert cn.startswith("device-") and "C02PRIVATE1" not in leaf.public_bytes(serialization.Encoding.PEM).decode()
        names.append(cn)
    assert names[0] == names[1]
