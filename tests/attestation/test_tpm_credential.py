"""MakeCredential (attestation.tpm.credential), proven against a real software TPM: what the CA
seals to the EK for an AK's Name is what TPM2_ActivateCredential releases, for the RSA EK
(low-range template, SHA-256 / AES-128) and swtpm's ECC P-384 EK (high range, SHA-384 /
AES-256), with the parameters taken from the EK certificate's key as the CA does, or from
the EK's TPMT_PUBLIC for a pinned EK; and the TPM refuses it for any other AK or EK."""

from __future__ import annotations

import secrets

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import TSS2_Exception
from tpm2_pytss.internal import crypto as pytss_crypto

from attestation.errors import MalformedStatement, UnsupportedFormat
from attestation.tpm.constants import Alg
from attestation.tpm.credential import Protector, kdfa, kdfe, make_credential
from attestation.tpm.structs import SymDefObject, TpmtPublic
from tests.enroll import soft_tpm
from tests.enroll.real_tpm import ECC_EK, RSA_EK, real_tpm

EK_CERTIFICATE = {RSA_EK: "ek_certificate_der", ECC_EK: "ecc_ek_certificate_der"}


@pytest.mark.parametrize("template", [RSA_EK, ECC_EK])
@pytest.mark.parametrize("ak_kind", ["rsa", "ecc"])
def test_the_tpm_releases_the_secret_sealed_to_its_ek_certificate_key(swtpm, template, ak_kind):
    ek_key = x509.load_der_x509_certificate(getattr(swtpm, EK_CERTIFICATE[template])).public_key()
    secret = secrets.token_bytes(32)
    with real_tpm(swtpm.tcti) as tpm:
        ek, ek_public = tpm.endorsement_key(template)
        assert TpmtPublic.parse(ek_public).public_key().public_numbers() == ek_key.public_numbers()
        ak, ak_public = tpm.attestation_key(ak_kind)
        made = make_credential(Protector.for_key(ek_key), TpmtPublic.parse(ak_public).name(), secret)
        assert tpm.activate(ak, ek, made, template) == secret


@pytest.mark.parametrize("template", [RSA_EK, ECC_EK])
def test_a_pinned_eks_own_parameters_work_too(swtpm, template):
    secret = secrets.token_bytes(32)
    with real_tpm(swtpm.tcti) as tpm:
        ek, ek_public = tpm.endorsement_key(template)
        ak, ak_public = tpm.attestation_key("ecc")
        protector = Protector.from_public_area(TpmtPublic.parse(ek_public))
        assert protector == Protector.for_key(protector.public_key), "the TCG template is what the TPM used"
        made = make_credential(protector, TpmtPublic.parse(ak_public).name(), secret)
        assert tpm.activate(ak, ek, made, template) == secret


def test_the_tpm_refuses_a_credential_made_for_another_ak(swtpm):
    with real_tpm(swtpm.tcti) as tpm:
        ek, ek_public = tpm.endorsement_key()
        ak, _ = tpm.attestation_key("rsa")
        _other, other_public = tpm.attestation_key("ecc")
        protector = Protector.from_public_area(TpmtPublic.parse(ek_public))
        made = make_credential(protector, TpmtPublic.parse(other_public).name(), secrets.token_bytes(32))
        with pytest.raises(TSS2_Exception, match="integrity"):
            tpm.activate(ak, ek, made)


def test_the_tpm_refuses_a_credential_sealed_to_another_ek(swtpm):
    other_ek = soft_tpm.private_key("rsa", slot=41).public_key()
    with real_tpm(swtpm.tcti) as tpm:
        ek, _ = tpm.endorsement_key()
        ak, ak_public = tpm.attestation_key("rsa")
        made = make_credential(Protector.for_key(other_ek), TpmtPublic.parse(ak_public).name(), secrets.token_bytes(32))
        with pytest.raises(TSS2_Exception):
            tpm.activate(ak, ek, made)


# --- the derivations, against tpm2-pytss's own composition of the same primitives -------------


@pytest.mark.parametrize("name_alg", [Alg.SHA256, Alg.SHA384])
def test_kdfa_and_kdfe_agree_with_tpm2_pytss(name_alg):
    key, u, v = secrets.token_bytes(32), secrets.token_bytes(34), secrets.token_bytes(20)
    assert kdfa(name_alg, key, b"STORAGE", u, v, 256) == pytss_crypto._kdfa(name_alg, key, b"STORAGE", u, v, 256)
    assert kdfa(name_alg, key, b"INTEGRITY", b"", b"", 128) == pytss_crypto._kdfa(name_alg, key, b"INTEGRITY", b"", b"", 128)
    assert kdfe(name_alg, key, b"IDENTITY", u, v, 384) == pytss_crypto.kdfe(name_alg, key, b"IDENTITY\x00", u, v, 384)


@pytest.mark.parametrize("bits", [0, 12, -8])
def test_kdf_output_must_be_whole_octets(bits):
    with pytest.raises(ValueError):
        kdfa(Alg.SHA256, b"k", b"STORAGE", b"", b"", bits)
    with pytest.raises(ValueError):
        kdfe(Alg.SHA256, b"z", b"IDENTITY", b"", b"", bits)


# --- parameters and inputs -------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "expected"), [
    ("rsa", (Alg.SHA256, 128)), ("rsa3072", (Alg.SHA384, 256)), ("p256", (Alg.SHA256, 128)),
    ("p384", (Alg.SHA384, 256)), ("p521", (Alg.SHA512, 256)),
])
def test_tcg_default_templates(kind, expected):
    protector = Protector.for_key(soft_tpm.private_key(kind).public_key())
    assert (protector.name_alg, protector.sym_key_bits) == expected


def test_an_ek_key_without_a_template_is_unsupported():
    with pytest.raises(UnsupportedFormat, match="RSA 1024") as caught:
        Protector.for_key(soft_tpm.private_key("rsa1024").public_key())
    assert caught.value.check == "ek-key"


def test_only_aes_cfb_protects_a_credential():
    public = soft_tpm.public_area(soft_tpm.private_key("p256", 3), soft_tpm.EK_ATTRIBUTES,
                                  symmetric=SymDefObject(Alg.AES, 128, Alg.CBC))
    with pytest.raises(UnsupportedFormat, match="not AES-CFB") as caught:
        Protector.from_public_area(public)
    assert caught.value.check == "ek-symmetric"


@pytest.mark.parametrize(("credential", "name", "match"), [
    (b"", None, "1 to 32 bytes"),
    (b"x" * 33, None, "1 to 32 bytes"),
    (b"x" * 32, b"\x00\x0b" + b"\x00" * 31, "not a hash algorithm and its digest"),
    (b"x" * 32, b"\x12\x34" + b"\x00" * 32, "not a hash algorithm and its digest"),
])
def test_credential_and_name_sizes(credential, name, match):
    protector = Protector.for_key(soft_tpm.private_key("p256").public_key())
    name = name if name is not None else soft_tpm.ak_public().name()
    with pytest.raises(MalformedStatement, match=match):
        make_credential(protector, name, credential)


@pytest.mark.parametrize("kind", ["rsa", "p256", "p384"])
def test_software_round_trip_and_fixed_randomness(kind):
    ek = soft_tpm.private_key(kind, slot=3)
    protector = Protector.for_key(ek.public_key())
    name, secret = soft_tpm.ak_public().name(), secrets.token_bytes(32)
    made = make_credential(protector, name, secret)
    assert soft_tpm.activate(ek, protector, name, made) == secret
    with pytest.raises(ValueError, match="integrity"):
        soft_tpm.activate(ek, protector, soft_tpm.ak_public("p256").name(), made)
    if kind != "rsa":  # ECC: the ephemeral key fixes the whole output
        ephemeral = ec.generate_private_key(ek.curve)
        assert make_credential(protector, name, secret, ephemeral=ephemeral) == make_credential(
            protector, name, secret, ephemeral=ephemeral)
