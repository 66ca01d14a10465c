"""The AK enrollment service (enroll.tpm_enrollment) on both databases, with a software TPM:
the AK certificate it issues passes the `tpm` format; identity comes from the EK or the
operator, never from the device; activations are single use, expire, and belong to the
account that began them."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

import pytest
from cryptography import x509

from attestation.assigners import TPM_EK_HASH
from attestation.context import TrustStore, VerificationContext
from attestation.evidence import PermanentIdentifier
from attestation.format import key_authorization_binding
from attestation.formats import tpm as tpm_format
from attestation.tpm.ek import EkTrust
from ca.keys import KeyType
from ca.nonces import b64url, b64url_decode
from ca.pki import load_or_create_attestation_ca, load_or_create_ca
from ca.problems import BadAttestationStatement, Malformed, Unauthorized
from ca.storage import repository as repo
from ca.storage.repository import Store
from enroll.ek_registry import EkEntry, EkRegistry
from enroll.records import TpmActivation
from enroll.tpm_enrollment import TpmEnrollment, TpmSettings
from tests.enroll import soft_tpm
from tests.enroll.device import EK_CERT, EK_HASH, EK_KEY, machine, payload, tpm_answer
from tests.fleet import tpm as fleet

@pytest.fixture
async def enrollment(tmp_path, database_url, clock):
    clock.set(soft_tpm.NOW)
    ca, _ = load_or_create_ca(tmp_path / "data", key_type=KeyType.ECDSA_P256, passphrase=None, clock=clock)
    authority = load_or_create_attestation_ca(tmp_path / "data", ca, passphrase=None, clock=clock)
    store = await Store.open(database_url)
    trust = EkTrust((soft_tpm.der(soft_tpm.maker().root),))

    def make(**settings) -> TpmEnrollment:
        return TpmEnrollment(store, clock, authority, trust, TpmSettings(**settings))

    make.store, make.authority, make.registry = store, authority, EkRegistry(store, clock)  # type: ignore[attr-defined]
    yield make
    await store.close()


def certify(ak_certificate: bytes, chain: tuple[bytes, ...], now):
    """A `tpm` attestation statement the enrolled AK makes (TPM2_Certify of an attested key)."""
    binding = key_authorization_binding("token", b"token.thumbprint")
    public, _key = fleet.public_area(fleet.Knobs())
    info = fleet.cert_info(fleet.Knobs(), public, binding)
    ak_key = soft_tpm.private_key("rsa", 7)
    att_stmt = {"ver": "2.0", "alg": -257, "x5c": [ak_certificate, *chain], "sig": fleet.sign(ak_key, -257, info),
                "certInfo": info, "pubArea": public.to_bytes()}
    return tpm_format.verify(att_stmt, VerificationContext(binding, now, TrustStore(roots={"tpm": chain[-1:]})))


async def test_the_ak_certificate_passes_the_tpm_format(enrollment, clock):
    service = enrollment()
    begun = await service.begin("acct1", payload())
    body = begun.to_json()
    assert body["status"] == "pending" and body["expires"] == "2026-11-01T12:05:00Z"
    activated = await service.answer("acct1", begun.activation.id, tpm_answer(begun))
    assert activated.to_json()["permanentIdentifier"] == {"value": EK_HASH, "assigner": TPM_EK_HASH}
    evidence = certify(activated.certificate, activated.chain, clock.now())
    assert evidence.permanent_identifiers == (PermanentIdentifier(EK_HASH, TPM_EK_HASH),)
    assert dict(evidence.posture.extra)["tpm_model"] == "ST33HTPHAHB4" and evidence.posture.firmware_version == "id:00490004"
    certificate = x509.load_der_x509_certificate(activated.certificate)
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == timedelta(days=30)
    assert activated.chain == (enrollment.authority.der,)


async def test_only_a_digest_of_the_secret_is_stored(enrollment):
    service = enrollment()
    begun = await service.begin("acct1", payload())
    secret = b64url_decode(tpm_answer(begun)["secret"])
    async with enrollment.store.transaction() as tx:
        row = await repo.get(tx, TpmActivation, begun.activation.id)
    assert row.secret_sha256 == hashlib.sha256(secret).hexdigest() and secret not in (row.ak_public,)
    assert row.status == "pending" and row.identifier == EK_HASH and row.ek_hash == EK_HASH


async def test_an_operator_registered_identifier_replaces_the_ek_hash(enrollment, clock):
    key, certificate, hash_ = machine(11)
    await enrollment.registry.put(EkEntry(hash_, identifier="asset-0042", assigner="1.3.6.1.4.1.99999.1"))
    service = enrollment()
    begun = await service.begin("acct1", payload(ek_certificate=certificate))
    activated = await service.answer("acct1", begun.activation.id, tpm_answer(begun, ek_key=key))
    evidence = certify(activated.certificate, activated.chain, clock.now())
    assert evidence.permanent_identifiers == (PermanentIdentifier("asset-0042", "1.3.6.1.4.1.99999.1"),)


async def test_tpm_values_missing_from_the_ek_certificate_come_from_the_registry(enrollment):
    key, _certificate, hash_ = machine(12)
    bare = soft_tpm.maker().ek_certificate(key.public_key(), san=None)
    service = enrollment()
    with pytest.raises(BadAttestationStatement, match="manufacturer, model, version of EK .* neither in its certificate"):
        await service.begin("acct1", payload(ek_certificate=bare))
    await enrollment.registry.put(EkEntry(hash_, manufacturer="id:474F4F47", model="vTPM", version="id:20160511"))
    begun = await service.begin("acct1", payload(ek_certificate=bare))
    assert (begun.activation.manufacturer, begun.activation.model) == ("id:474F4F47", "vTPM")


async def test_a_wrong_secret_invalidates_the_activation(enrollment):
    service = enrollment()
    begun = await service.begin("acct1", payload())
    with pytest.raises(BadAttestationStatement, match="not the one sealed to the EK"):
        await service.answer("acct1", begun.activation.id, {"secret": b64url(b"\x00" * 32)})
    with pytest.raises(BadAttestationStatement, match="already answered .*invalid.*single use"):
        await service.answer("acct1", begun.activation.id, tpm_answer(begun))


async def test_an_answer_cannot_be_replayed(enrollment):
    service = enrollment()
    begun = await service.begin("acct1", payload())
    answer = tpm_answer(begun)
    await service.answer("acct1", begun.activation.id, answer)
    with pytest.raises(BadAttestationStatement, match="already answered .*valid"):
        await service.answer("acct1", begun.activation.id, answer)


async def test_two_racing_answers_issue_once(enrollment):
    service = enrollment()
    begun = await service.begin("acct1", payload())
    answer = tpm_answer(begun)
    results = await asyncio.gather(*(service.answer("acct1", begun.activation.id, answer) for _ in range(2)),
                                   return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["Activated", "BadAttestationStatement"]


async def test_an_activation_expires(enrollment, clock):
    service = enrollment(activation_lifetime=timedelta(minutes=2))
    begun = await service.begin("acct1", payload())
    clock.advance(timedelta(minutes=2))
    with pytest.raises(BadAttestationStatement, match="expired at 2026-11-01T12:02:00Z"):
        await service.answer("acct1", begun.activation.id, tpm_answer(begun))
    async with enrollment.store.transaction() as tx:
        assert (await repo.get(tx, TpmActivation, begun.activation.id)).status == "invalid"


async def test_an_activation_belongs_to_its_account(enrollment):
    service = enrollment()
    begun = await service.begin("acct1", payload())
    with pytest.raises(Unauthorized, match="different account"):
        await service.answer("acct2", begun.activation.id, tpm_answer(begun))
    with pytest.raises(Malformed, match="does not exist") as caught:
        await service.answer("acct1", "nope", tpm_answer(begun))
    assert caught.value.status == 404
    assert await service.answer("acct1", begun.activation.id, tpm_answer(begun))


@pytest.mark.parametrize(("settings", "pin", "match", "slot"), [
    ({}, False, "only EKs with a certificate .*tpm_allow_pinned_ek", 13),
    ({"allow_pinned_ek": True}, False, "is not pinned in the fleet registry", 14),
    ({"allow_pinned_ek": True}, True, None, 15),
])
async def test_pinned_eks(enrollment, clock, settings, pin, match, slot):
    key, _certificate, hash_ = machine(slot)
    ek = soft_tpm.ek_public("rsa", slot)
    if pin:
        await enrollment.registry.put(EkEntry(hash_, identifier="lab-7", pinned=True, manufacturer="id:4E544300",
                                              model="NPCT75x", version="id:00070002"))
    service = enrollment(**settings)
    body = payload(ek_certificate=None, ekPublic=b64url(ek.to_bytes()))
    if match:
        with pytest.raises(BadAttestationStatement, match=match):
            await service.begin("acct1", body)
        return
    begun = await service.begin("acct1", body)
    activated = await service.answer("acct1", begun.activation.id, tpm_answer(begun, ek_key=key))
    evidence = certify(activated.certificate, activated.chain, clock.now())
    assert evidence.permanent_identifiers == (PermanentIdentifier("lab-7", None),)
    assert dict(evidence.posture.extra)["tpm_manufacturer"] == "NTC"


async def test_refused_eks_and_aks(enrollment):
    service = enrollment()
    untrusted = soft_tpm.maker("untrusted")
    with pytest.raises(BadAttestationStatement, match="EK certificate: .*does not chain"):
        await service.begin("acct1", payload(ek_certificate=untrusted.ek_certificate(EK_KEY.public_key()),
                                             chain=(soft_tpm.der(untrusted.intermediate),)))
    decrypting = soft_tpm.ak_public(attributes=soft_tpm.AK_ATTRIBUTES | 1 << 17)
    with pytest.raises(BadAttestationStatement, match="set decrypt"):
        await service.begin("acct1", payload(ak=decrypting))


@pytest.mark.parametrize(("body", "match"), [
    ({"ekCertificate": b64url(EK_CERT)}, "lacks akPublic"),
    (payload(ekPublic=b64url(b"x")), "exactly one of ekCertificate and ekPublic"),
    (payload(ek_certificate=None), "exactly one of ekCertificate and ekPublic"),
    ({**payload(), "akPublic": "not base64url!"}, "akPublic is not unpadded base64url"),
    ({**payload(), "akPublic": ""}, "akPublic is empty"),
    ({**payload(), "ekChain": "abc"}, "ekChain must be a list"),
    ({**payload(), "ekChain": ["===="]}, "ekChain is not unpadded base64url"),
])
async def test_malformed_begin_payloads(enrollment, body, match):
    with pytest.raises(Malformed, match=match):
        await enrollment().begin("acct1", body)


@pytest.mark.parametrize(("body", "match"), [({}, "lacks secret"), ({"secret": "a+b"}, "not unpadded base64url")])
async def test_a_malformed_answer_does_not_consume_the_activation(enrollment, body, match):
    service = enrollment()
    begun = await service.begin("acct1", payload())
    with pytest.raises(Malformed, match=match):
        await service.answer("acct1", begun.activation.id, body)
    assert await service.answer("acct1", begun.activation.id, tpm_answer(begun))
