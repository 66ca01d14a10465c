"""A device-attest-01 flow from new order to certificate for every real format, driven by the
test fleet (tests/fleet: generated test roots standing in for Apple, Google, Yubico and TPM
makers, since no real device can answer a fresh challenge here). The real vendor evidence
is verified in tests/attestation at each sample's own time."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from attestation.evidence import TrustLevel
from attestation.format import key_authorization_binding
from attestation.registry import FORMATS
from ca.posture import posture_from_certificate
from ca.san import decode_other_name
from tests.acme_client import AcmeSession, b64
from tests.ca.flow import poll
from tests.fleet import android_key as android_fleet, apple as apple_fleet, step as step_fleet, tpm as tpm_fleet


@dataclass(frozen=True)
class Device:
    fmt: str
    identifier: str
    attest: Callable[[str, bytes], Any]  # (token, key authorization) -> (att_obj, private key)
    level: TrustLevel


def _apple(token: str, keyauth: bytes):
    att = apple_fleet.for_acme(token, keyauth)
    return att.att_obj(), att.key


def _step(token: str, keyauth: bytes):
    att = step_fleet.for_acme(token, keyauth)
    return att.att_obj(), att.key


def _android(token: str, keyauth: bytes):
    att = android_fleet.for_acme(token, keyauth)
    return att.att_obj(), att.key


_TPM_KNOBS = dict(key="p256", ak_other_names=(tpm_fleet.permanent_identifier("TPM-FLEET-0001"),))


def _tpm(token: str, keyauth: bytes):
    sample = tpm_fleet.make(replace(tpm_fleet.Knobs(), **_TPM_KNOBS), key_authorization_binding(token, keyauth))
    return cbor2.dumps({"fmt": "tpm", "attStmt": sample.att_stmt}), sample.attested_key


def _trust(fmt: str):
    if fmt == "apple":
        return apple_fleet.for_acme("t", b"t.x").trust
    if fmt == "step":
        return step_fleet.for_acme("t", b"t.x").trust
    if fmt == "android-key":
        return android_fleet.for_acme("t", b"t.x").trust
    return tpm_fleet.make(tpm_fleet.Knobs(**_TPM_KNOBS)).ctx.trust


DEVICES = [
    Device("apple", "C02FLEET0001", _apple, TrustLevel.HARDWARE),
    Device("step", "20251101", _step, TrustLevel.HARDWARE),
    Device("android-key", "FLEET-0001", _android, TrustLevel.TEE),
    Device("tpm", "TPM-FLEET-0001", _tpm, TrustLevel.HARDWARE),
]


def _csr(key) -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.fmt)
async def test_device_attest_flow_per_format(start_app, device: Device):
    client, _ = await start_app(formats=FORMATS, trust=_trust(device.fmt))
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    response = await acme.new_order([{"type": "permanent-identifier", "value": device.identifier}])
    order_url, order = response.headers["Location"], await response.json()
    authz_url = order["authorizations"][0]
    challenge = (await (await acme.get(authz_url)).json())["challenges"][0]
    att_obj, key = device.attest(challenge["token"], acme.key_authorization(challenge["token"]).encode())
    await acme.post(challenge["url"], {"attObj": b64(att_obj)})
    authz = await poll(acme, authz_url, {"valid", "invalid"})
    assert authz["status"] == "valid", authz["challenges"][0].get("error")
    assert authz["challenges"][0]["validationRecord"][0]["fmt"] == device.fmt
    finalized = await acme.post(order["finalize"], {"csr": b64(_csr(key))})
    assert finalized.status == 200, await finalized.text()
    done = await poll(acme, order_url, {"valid", "invalid"})
    leaf = x509.load_pem_x509_certificates(await (await acme.get(done["certificate"])).read())[0]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [decode_other_name(n).value for n in san.get_values_for_type(x509.OtherName)] == [device.identifier]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    posture = posture_from_certificate(leaf)
    assert posture.fmt == device.fmt and posture.trust_level is device.level


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.fmt)
async def test_statement_bound_to_another_challenge_is_refused(start_app, device: Device):
    client, _ = await start_app(formats=FORMATS, trust=_trust(device.fmt))
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    order = await (await acme.new_order([{"type": "permanent-identifier", "value": device.identifier}])).json()
    authz_url = order["authorizations"][0]
    challenge = (await (await acme.get(authz_url)).json())["challenges"][0]
    other_token = "A" * 43
    att_obj, _ = device.attest(other_token, acme.key_authorization(other_token).encode())
    await acme.post(challenge["url"], {"attObj": b64(att_obj)})
    authz = await poll(acme, authz_url, {"valid", "invalid"})
    error = authz["challenges"][0]["error"]
    assert authz["status"] == "invalid" and error["type"] == "urn:ietf:params:acme:error:badAttestationStatement"


async def _order_and_attest(acme: AcmeSession, identifier: str, attest) -> dict:
    order = await (await acme.new_order([{"type": "permanent-identifier", "value": identifier}])).json()
    authz_url = order["authorizations"][0]
    challenge = (await (await acme.get(authz_url)).json())["challenges"][0]
    att_obj, _ = attest(challenge["token"], acme.key_authorization(challenge["token"]).encode())
    await acme.post(challenge["url"], {"attObj": b64(att_obj)})
    return await poll(acme, authz_url, {"valid", "invalid"})


async def test_apple_client_identifier_mapped_through_the_fleet_registry(start_app):
    """An MDM profile whose ClientIdentifier is a one-time enrollment token: the operator maps
    the token to the device's serial; it enrolls that device once, and no other device."""
    from enroll.aliases import AliasRegistry

    client, services = await start_app(formats=FORMATS, trust=_trust("apple"))
    acme = AcmeSession(client)
    await acme.load_directory()
    await acme.new_account()
    unknown = await _order_and_attest(acme, "ENROLL-7f3a", _apple)
    assert unknown["status"] == "invalid", "an unregistered ClientIdentifier is refused"
    registry = AliasRegistry(services.store, services.clock)
    await registry.add("ENROLL-7f3a", "C02FLEET0001")
    await registry.add("ENROLL-other", "C02SOMEONEELSE")
    assert (await _order_and_attest(acme, "ENROLL-7f3a", _apple))["status"] == "valid"
    replay = await _order_and_attest(acme, "ENROLL-7f3a", _apple)
    assert replay["status"] == "invalid" and "already been used" in replay["challenges"][0]["error"]["detail"]
    foreign = await _order_and_attest(acme, "ENROLL-other", _apple)
    assert foreign["status"] == "invalid" and "another device" in foreign["challenges"][0]["error"]["detail"]
