"""TPM AK enrollment over HTTP (ca/handlers/tpm.py), on both databases: begin → TPM2_ActivateCredential
on a real software TPM → answer → an AK certificate that the CA's own `tpm` trust store accepts
under a real TPM2_Certify; and every refusal as the problem document the contract names."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from types import SimpleNamespace

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from tpm2_pytss.constants import TPM2_ALG
from tpm2_pytss.types import TPMT_SIG_SCHEME

from attestation.assigners import TPM_EK_HASH
from attestation.tpm.constants import Alg, ObjectAttr
from attestation.tpm.credential import MadeCredential
from attestation.tpm.ek import certificate_spki, ek_hash
from ca.challenges import ChallengeType
from ca.nonces import b64url_decode
from enroll.ek_registry import EkEntry, EkRegistry
from tests.acme_client import AcmeSession, b64
from tests.enroll import soft_tpm
from tests.enroll.real_tpm import ECC_EK, RSA_EK, real_tpm
from tests.enroll.device import EK_HASH, machine, payload, tpm_answer

PROBLEM = "urn:ietf:params:acme:error:"


@pytest.fixture
def ek_roots(tmp_path):
    folder = tmp_path / "ek-roots"
    folder.mkdir()
    (folder / "test-maker.pem").write_bytes(soft_tpm.maker().root_pem)
    return folder


@pytest.fixture
async def enroll_app(start_app, ek_roots):
    async def start(**overrides) -> AcmeSession:
        client, services = await start_app(tpm_ek_roots=ek_roots, **overrides)
        session = AcmeSession(client)
        await session.load_directory()
        assert (await session.new_account()).status == 201
        session.services = services  # type: ignore[attr-defined]
        return session

    return start


async def _problem(response, status: int, kind: str, *details: str) -> dict:
    body = await response.json()
    assert response.status == status and body["type"] == PROBLEM + kind, body
    for detail in details:
        assert detail in body["detail"], body
    return body


def _certify(tpm, ak, ak_kind: str, key_authorization: str) -> dict:
    """The `tpm` attStmt a device sends: TPM2_Certify of a fresh key by the AK, extraData = SHA-256(keyAuthz)."""
    key, key_public = tpm.attestation_key("ecc", attributes=soft_tpm.AK_ATTRIBUTES & ~ObjectAttr.RESTRICTED)
    scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.RSASSA if ak_kind == "rsa" else TPM2_ALG.ECDSA)
    scheme.details.any.hashAlg = TPM2_ALG.SHA256
    info, signature = tpm.esapi.certify(key, ak, hashlib.sha256(key_authorization.encode()).digest(), scheme)
    if ak_kind == "rsa":
        sig, alg = bytes(signature.signature.rsassa.sig), -257
    else:
        ecdsa = signature.signature.ecdsa
        sig, alg = encode_dss_signature(int.from_bytes(bytes(ecdsa.signatureR), "big"),
                                        int.from_bytes(bytes(ecdsa.signatureS), "big")), -7
    return {"ver": "2.0", "alg": alg, "sig": sig, "certInfo": bytes(info.attestationData), "pubArea": key_public}


@pytest.mark.parametrize(("template", "ak_kind"), [(RSA_EK, "rsa"), (ECC_EK, "ecc")])
async def test_enrollment_with_a_real_tpm(enroll_app, ek_roots, clock, swtpm, template, ak_kind):
    ek_der = swtpm.ek_certificate_der if template == RSA_EK else swtpm.ecc_ek_certificate_der
    clock.set(x509.load_der_x509_certificate(ek_der).not_valid_before_utc + timedelta(hours=1))
    (ek_roots / "swtpm-maker.pem").write_bytes(swtpm.ek_ca_root_pem)
    acme = await enroll_app()
    assert acme.directory["newTpmAk"] == acme.url("/acme/tpm/new-ak")
    with real_tpm(swtpm.tcti) as tpm:
        ek, _ = tpm.endorsement_key(template)
        ak, ak_public = tpm.attestation_key(ak_kind)
        intermediate = x509.load_pem_x509_certificate(swtpm.ek_ca_intermediate_pem).public_bytes(Encoding.DER)
        begun = await acme.post(acme.directory["newTpmAk"], {
            "akPublic": b64(ak_public), "ekCertificate": b64(ek_der), "ekChain": [b64(intermediate)]})
        body = await begun.json()
        assert begun.status == 201 and body["status"] == "pending", body
        assert begun.headers["Location"].startswith(acme.url("/acme/tpm/ak/"))
        secret = tpm.activate(ak, ek, _begun(body).made, template)
        answered = await acme.post(begun.headers["Location"], {"secret": b64(secret)})
        result = await answered.json()
        assert answered.status == 200 and result["status"] == "valid", result
        identifier = ek_hash(certificate_spki(ek_der))
        assert result["permanentIdentifier"] == {"value": identifier, "assigner": TPM_EK_HASH}
        token = "tpm-token"
        att_stmt = {**_certify(tpm, ak, ak_kind, acme.key_authorization(token)),
                    "x5c": [b64url_decode(c) for c in (result["akCertificate"], *result["chain"])]}
    validator = acme.services.validators.validator_for(ChallengeType.DEVICE_ATTEST_01)
    evidence = validator.verify(cbor2.dumps({"fmt": "tpm", "attStmt": att_stmt}), token, acme.key_authorization(token))
    assert [(p.value, p.assigner) for p in evidence.permanent_identifiers] == [(identifier, TPM_EK_HASH)]
    assert dict(evidence.posture.extra)["tpm_model"] == "swtpm"


async def test_a_wrong_answer_from_the_device_invalidates_the_activation(enroll_app):
    acme = await enroll_app()
    begun = await acme.post(acme.directory["newTpmAk"], payload())
    activation = begun.headers["Location"]
    wrong = await acme.post(activation, {"secret": b64(b"\x01" * 32)})
    await _problem(wrong, 400, "badAttestationStatement", "not the one sealed to the EK", "now invalid")
    right = await acme.post(activation, {"secret": b64(b"\x01" * 32)})
    await _problem(right, 400, "badAttestationStatement", "already answered", "single use")


AK = soft_tpm.AK_ATTRIBUTES


@pytest.mark.parametrize(("body", "kind", "detail"), [
    (payload(ek_certificate=soft_tpm.maker("untrusted").ek_certificate(soft_tpm.private_key("rsa", 3).public_key()),
             chain=(soft_tpm.der(soft_tpm.maker("untrusted").intermediate),)),
     "badAttestationStatement", "EK certificate: certificate"),
    (payload(ak=soft_tpm.ak_public(attributes=AK & ~ObjectAttr.RESTRICTED)), "badAttestationStatement", "lack RESTRICTED"),
    (payload(ak=soft_tpm.ak_public(attributes=AK | ObjectAttr.DECRYPT)), "badAttestationStatement", "set decrypt"),
    (payload(ak=soft_tpm.ak_public(name_alg=Alg.SHA1)), "badAttestationStatement", "SHA-256 or stronger"),
    (payload(chain=()), "badAttestationStatement", "does not chain to a configured root"),
    ({**payload(), "akPublic": "AAAA*"}, "malformed", "akPublic is not unpadded base64url"),
    ({"akPublic": b64(soft_tpm.ak_public().to_bytes())}, "malformed", "exactly one of ekCertificate and ekPublic"),
])
async def test_begin_refusals(enroll_app, body, kind, detail):
    acme = await enroll_app()
    await _problem(await acme.post(acme.directory["newTpmAk"], body), 400, kind, detail)


async def test_a_replayed_answer_is_refused(enroll_app):
    acme = await enroll_app()
    begun = await acme.post(acme.directory["newTpmAk"], payload())
    answer = tpm_answer(_begun(await begun.json()))
    assert (await acme.post(begun.headers["Location"], answer)).status == 200
    replayed = await acme.post(begun.headers["Location"], answer)
    await _problem(replayed, 400, "badAttestationStatement", "already answered")


async def test_an_expired_activation_is_refused(enroll_app, clock):
    acme = await enroll_app(tpm_activation_lifetime=timedelta(minutes=1))
    begun = await acme.post(acme.directory["newTpmAk"], payload())
    clock.advance(timedelta(seconds=61))
    late = await acme.post(begun.headers["Location"], tpm_answer(_begun(await begun.json())))
    await _problem(late, 400, "badAttestationStatement", "expired at")


async def test_another_accounts_activation_is_unauthorized(enroll_app):
    acme = await enroll_app()
    begun = await acme.post(acme.directory["newTpmAk"], payload())
    other = AcmeSession(acme.http)
    await other.load_directory()
    await other.new_account()
    stolen = await other.post(begun.headers["Location"], tpm_answer(_begun(await begun.json())))
    await _problem(stolen, 403, "unauthorized", "different account")
    unknown = await acme.post(acme.url("/acme/tpm/ak/unknown"), {"secret": b64(b"x")})
    await _problem(unknown, 404, "malformed", "does not exist")


@pytest.mark.parametrize(("allow", "detail", "slot"), [(False, "tpm_allow_pinned_ek", 21), (True, None, 22)])
async def test_pinned_eks(enroll_app, allow, detail, slot):
    key, _certificate, hash_ = machine(slot)
    acme = await enroll_app(tpm_allow_pinned_ek=allow)
    await EkRegistry(acme.services.store, acme.services.clock).put(
        EkEntry(hash_, identifier="lab-7", pinned=True, manufacturer="id:4E544300", model="NPCT75x", version="id:1"))
    body = payload(ek_certificate=None, ekPublic=b64(soft_tpm.ek_public("rsa", slot).to_bytes()))
    begun = await acme.post(acme.directory["newTpmAk"], body)
    if detail:
        await _problem(begun, 400, "badAttestationStatement", detail)
        return
    answered = await acme.post(begun.headers["Location"], tpm_answer(_begun(await begun.json()), ek_key=key))
    assert (await answered.json())["permanentIdentifier"] == {"value": "lab-7"}


def _begun(body: dict) -> SimpleNamespace:
    """What the device decodes from begin's body: the credential blob and encrypted secret."""
    return SimpleNamespace(made=MadeCredential(b64url_decode(body["credentialBlob"]), b64url_decode(body["encryptedSecret"])))


async def test_the_device_cannot_name_itself(enroll_app):
    """The identity comes from the EK (or the operator); a field the device adds is ignored."""
    acme = await enroll_app()
    begun = await acme.post(acme.directory["newTpmAk"], {**payload(), "permanentIdentifier": "chosen-by-device"})
    assert begun.status == 201
    answered = await (await acme.post(begun.headers["Location"], tpm_answer(_begun(await begun.json())))).json()
    assert answered["permanentIdentifier"]["value"] == EK_HASH != "chosen-by-device"
