"""client/csr.py: the CSR the TPM signs is one acmeda's finalize accepts (ca/csr.py), with the
PermanentIdentifier SAN the draft asks for, or none at all in privacy mode."""

from __future__ import annotations

import hashlib

import pytest
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from ca.csr import KeyPolicy, check_csr
from ca.identifiers import Identifier, IdentifierType
from ca.problems import BadCSR
from ca.san import decode_other_name
from client.csr import PermanentIdentifier, build_csr

ASSIGNER = "2.25.55515455809226192695543010104513035564.1"


def _key_and_signer():
    key = ec.generate_private_key(ec.SECP256R1())
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digests: list[bytes] = []

    def sign(digest: bytes) -> bytes:
        digests.append(digest)
        return key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    return spki, sign, digests


@pytest.mark.parametrize("identifier", [PermanentIdentifier("ek-3f2a", ASSIGNER), PermanentIdentifier("ek-3f2a")])
def test_csr_carries_the_tpm_key_and_the_permanent_identifier(identifier):
    spki, sign, digests = _key_and_signer()
    der = build_csr(spki, sign, identifier)
    csr = x509.load_der_x509_csr(der)
    assert csr.is_signature_valid
    assert csr.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == spki
    assert len(csr.subject) == 0
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # RFC 5280 §4.2.1.6: empty subject
    [name] = list(san.value)
    assert decode_other_name(name) == Identifier(IdentifierType.PERMANENT_IDENTIFIER, identifier.order_value)
    # the signer saw exactly the SHA-256 of the CertificationRequestInfo
    info = asn1_csr.CertificationRequest.load(der)["certification_request_info"].dump()
    assert digests == [hashlib.sha256(info).digest()]
    ordered = Identifier(IdentifierType.PERMANENT_IDENTIFIER, identifier.order_value)
    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    check_csr(der, identifiers=[ordered], account_public_key=other_key, key_policy=KeyPolicy())


def test_privacy_mode_csr_has_no_san_and_is_accepted():
    spki, sign, _ = _key_and_signer()
    der = build_csr(spki, sign, None)
    csr = x509.load_der_x509_csr(der)
    assert csr.is_signature_valid and len(csr.extensions) == 0
    ordered = Identifier(IdentifierType.PERMANENT_IDENTIFIER, "ek-3f2a")
    check_csr(der, identifiers=[ordered], account_public_key=ec.generate_private_key(ec.SECP256R1()).public_key(),
              key_policy=KeyPolicy())


def test_csr_for_another_identifier_is_refused_by_the_ca():
    spki, sign, _ = _key_and_signer()
    der = build_csr(spki, sign, PermanentIdentifier("someone-else"))
    with pytest.raises(BadCSR, match="not one of the order's identifiers"):
        check_csr(der, identifiers=[Identifier(IdentifierType.PERMANENT_IDENTIFIER, "ek-3f2a")],
                  account_public_key=ec.generate_private_key(ec.SECP256R1()).public_key(), key_policy=KeyPolicy())


def test_a_signer_that_signs_something_else_gives_an_invalid_csr():
    spki, sign, _ = _key_and_signer()
    der = build_csr(spki, lambda digest: sign(hashlib.sha256(b"other").digest()), None)
    assert not x509.load_der_x509_csr(der).is_signature_valid
