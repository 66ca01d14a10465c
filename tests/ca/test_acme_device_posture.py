"""The posture extension of a device certificate through the whole ACME app: one certificate
states one posture, so an order whose identifiers were proven by evidence stating different
facts is refused at finalize; and attestedAt is when the CA verified the attestation, not a
time the format reports (an Apple leaf's notBefore, Azure createdOn, an EC2 launch time).

The formats here are TEST-ONLY stand-ins (real formats are tested on vendor evidence in
tests/attestation): "test-hw" proves an ECDSA P-256 key by a signature over the key
authorization and reports the serials its statement lists; "test-iid" attests no key, checks
no binding (replayable, like an EC2 identity document) and reports the attested_at its
statement names.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import secrets

import cbor2
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.errors import InvalidSignature
from attestation.evidence import Evidence, PermanentIdentifier, Posture, TrustLevel
from attestation.format import Format, key_authorization_binding
from ca.certificates import _posture_extensions
from ca.posture import posture_from_certificate
from ca.san import decode_other_name
from tests.acme_client import AcmeSession, b64
from tests.ca.flow import poll
from tests.ca.test_acme_jws import problem

LAUNCH = datetime(2024, 1, 1, tzinfo=timezone.utc)  # an old time a format reports as attested_at


def _verify_hw(stmt: Mapping[str, Any], ctx) -> Evidence:
    key = serialization.load_der_public_key(stmt["spki"])
    try:
        key.verify(stmt["sig"], ctx.binding.att_to_be_signed, ec.ECDSA(hashes.SHA256()))
    except _BadSignature:
        raise InvalidSignature("test-hw: sig does not verify over the key authorization") from None
    return Evidence(fmt="test-hw", public_key=stmt["spki"], trust_level=TrustLevel.HARDWARE,
                    permanent_identifiers=tuple(PermanentIdentifier(s) for s in stmt["serials"]),
                    posture=Posture(os_version=stmt["os"], key_protection="secure-enclave"), attested_at=ctx.now)


def _verify_iid(stmt: Mapping[str, Any], ctx) -> Evidence:
    attested_at = datetime.fromisoformat(stmt["at"]) if stmt.get("at") else None
    return Evidence(fmt="test-iid", public_key=None, trust_level=TrustLevel.CLOUD,
                    permanent_identifiers=(PermanentIdentifier(stmt["instance"]),),
                    attested_at=attested_at, replayable=True)


FORMATS = {"test-hw": Format("test-hw", _verify_hw, key_authorization_binding),
           "test-iid": Format("test-iid", _verify_iid, key_authorization_binding)}


class Device:
    def __init__(self, *serials: str, os: str = "26.2") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.serials, self.os = list(serials), os

    def att_obj(self, key_authorization: str) -> str:
        spki = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        stmt = {"spki": spki, "sig": self.key.sign(key_authorization.encode(), ec.ECDSA(hashes.SHA256())),
                "serials": self.serials, "os": self.os}
        return b64(cbor2.dumps({"fmt": "test-hw", "attStmt": stmt}))

    def csr(self) -> str:
        csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(self.key, hashes.SHA256())
        return b64(csr.public_bytes(serialization.Encoding.DER))


def _unique(instance: str) -> str:
    """Replayable evidence is admitted on first use per identifier, and the PostgreSQL database
    lives for the whole test session: each test enrolls an instance of its own."""
    return f"{instance}-{secrets.token_hex(4)}"


def _instance_att_obj(instance: str, attested_at: datetime | None) -> str:
    stmt = {"instance": instance, "at": attested_at.isoformat() if attested_at else None}
    return b64(cbor2.dumps({"fmt": "test-iid", "attStmt": stmt}))


@pytest.fixture
async def acme(start_app) -> AcmeSession:
    client, _services = await start_app(formats=FORMATS, device_min_trust_level="cloud")
    session = AcmeSession(client)
    await session.load_directory()
    await session.new_account()
    return session


async def _order(acme: AcmeSession, *values: str) -> tuple[str, dict, dict[str, dict]]:
    response = await acme.new_order([{"type": "permanent-identifier", "value": v} for v in values])
    assert response.status == 201, await response.text()
    order = await response.json()
    authzs = {}
    for url in order["authorizations"]:
        authz = await (await acme.get(url)).json()
        authzs[authz["identifier"]["value"]] = {"url": url, "challenge": authz["challenges"][0]}
    return response.headers["Location"], order, authzs


async def _answer(acme: AcmeSession, authz: dict, att_obj) -> None:
    challenge = authz["challenge"]
    answered = await acme.post(challenge["url"], {"attObj": att_obj(acme.key_authorization(challenge["token"]))})
    assert answered.status == 200, await answered.text()
    assert (await poll(acme, authz["url"], {"valid", "invalid"}))["status"] == "valid"


async def _leaf(acme: AcmeSession, order_url: str, order: dict, csr: str) -> x509.Certificate:
    finalized = await acme.post(order["finalize"], {"csr": csr})
    assert finalized.status == 200, await finalized.text()
    done = await poll(acme, order_url, {"valid", "invalid"})
    assert done["status"] == "valid", done
    return x509.load_pem_x509_certificates(await (await acme.get(done["certificate"])).read())[0]


def _any_csr() -> str:
    key = ec.generate_private_key(ec.SECP256R1())  # keyless evidence: the account binds the key
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, hashes.SHA256())
    return b64(csr.public_bytes(serialization.Encoding.DER))


async def test_identifiers_proven_by_hardware_and_by_replayable_keyless_evidence_are_refused(acme):
    device, instance = Device("MAC-1"), _unique("i-victim")
    order_url, order, authzs = await _order(acme, "MAC-1", instance)
    await _answer(acme, authzs["MAC-1"], device.att_obj)
    await _answer(acme, authzs[instance], lambda _ka: _instance_att_obj(instance, None))
    assert (await poll(acme, order_url, {"ready", "invalid"}))["status"] == "ready"

    doc = await problem(await acme.post(order["finalize"], {"csr": device.csr()}), "rejectedIdentifier", 400)
    assert "states different facts" in doc["detail"] and "order them separately" in doc["detail"]
    assert "trustLevel hardware" in doc["detail"] and "trustLevel cloud" in doc["detail"], doc
    assert "replayable TRUE" in doc["detail"] and "keyAttested FALSE" in doc["detail"], doc
    assert {s["identifier"]["value"] for s in doc["subproblems"]} == {"MAC-1", instance}
    assert all(s["type"].endswith(":rejectedIdentifier") for s in doc["subproblems"])
    after = await (await acme.get(order_url)).json()
    assert after["status"] == "ready" and "certificate" not in after, "nothing was stored"


async def test_identifiers_of_devices_whose_facts_differ_are_refused(acme):
    first, second = Device("SN-A", os="26.2"), Device("SN-B", os="15.1")
    second.key = first.key  # the same key, so only the stated facts differ
    order_url, order, authzs = await _order(acme, "SN-A", "SN-B")
    await _answer(acme, authzs["SN-A"], first.att_obj)
    await _answer(acme, authzs["SN-B"], second.att_obj)
    doc = await problem(await acme.post(order["finalize"], {"csr": first.csr()}), "rejectedIdentifier", 400)
    assert "osVersion 26.2" in doc["detail"] and "osVersion 15.1" in doc["detail"], doc
    assert "trustLevel" not in doc["detail"], "only the facts that differ are named"


async def test_identifiers_proven_by_one_device_attestation_share_one_certificate(acme, clock):
    device = Device("C02SERIAL", "00008112-UDID")
    verified_at = clock.now()
    order_url, order, authzs = await _order(acme, "C02SERIAL", "00008112-UDID")
    await _answer(acme, authzs["C02SERIAL"], device.att_obj)
    clock.advance(timedelta(minutes=5))
    await _answer(acme, authzs["00008112-UDID"], device.att_obj)
    clock.advance(timedelta(minutes=5))
    leaf = await _leaf(acme, order_url, order, device.csr())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(decode_other_name(n).value for n in san) == ["00008112-UDID", "C02SERIAL"]
    posture = posture_from_certificate(leaf)
    assert posture.trust_level is TrustLevel.HARDWARE and posture.posture.key_attested is True
    assert posture.attested_at == verified_at, "attestedAt is the earliest verification of the order"


@pytest.mark.parametrize("format_time", [LAUNCH, None], ids=["old-format-time", "no-format-time"])
async def test_attested_at_is_when_the_ca_verified_the_attestation(acme, clock, format_time):
    verified_at, instance = clock.now(), _unique("i-0launched")
    order_url, order, authzs = await _order(acme, instance)
    await _answer(acme, authzs[instance], lambda _ka: _instance_att_obj(instance, format_time))
    clock.advance(timedelta(hours=1))  # finalize later: issuance time is not the verification time either
    posture = posture_from_certificate(await _leaf(acme, order_url, order, _any_csr()))
    assert posture.attested_at == verified_at


def test_stored_evidences_stating_different_postures_are_not_issued():
    """An order that reached `processing` before finalize refused such orders is failed by issuance
    (`issue` stores serverInternal) rather than certified under one of its postures."""
    hw = Evidence(fmt="test-hw", public_key=b"spki", trust_level=TrustLevel.HARDWARE, attested_at=LAUNCH)
    iid = Evidence(fmt="test-iid", public_key=None, trust_level=TrustLevel.CLOUD, attested_at=LAUNCH, replayable=True)
    with pytest.raises(ValueError, match="different postures"):
        _posture_extensions([hw, iid], LAUNCH)
    assert len(_posture_extensions([hw, hw], LAUNCH)) == 1
