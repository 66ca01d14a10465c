"""client/tpm.py against a real software TPM (swtpm): the EK from NV, an AK under it, credential
activation, the certificate key, TPM2_Certify and TPM2_Sign, and blobs that reload later.

The statement built from them is checked with the CA's own verifier (attestation/formats/tpm.py)
and an AK certificate from the test fleet's AK CA, so the client and the server read the same
bytes the same way without a running CA."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from hypothesis import given, settings, strategies as st
from tpm2_pytss import ESAPI, TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPMT_PUBLIC
from tpm2_pytss.constants import TPM2_CAP, TPM2_HT
from tpm2_pytss.utils import make_credential

from attestation import decode_attestation_object
from attestation.context import TrustStore, VerificationContext
from attestation.format import key_authorization_binding
from attestation.formats import tpm as tpm_format
from attestation.tpm.constants import ObjectAttr
from attestation.tpm.structs import TpmsAttest, TpmtPublic
from client.csr import PermanentIdentifier
from client.enroll import attestation_object
from client.state import AkRecord
from client.tpm import COSE_ALG, KeyBlob, Tpm, TpmError, _unmarshal, split_certificates
from tests.fleet import tpm as fleet

AK_ATTRIBUTES = (ObjectAttr.FIXED_TPM | ObjectAttr.FIXED_PARENT | ObjectAttr.SENSITIVE_DATA_ORIGIN
                 | ObjectAttr.USER_WITH_AUTH | ObjectAttr.RESTRICTED | ObjectAttr.SIGN_ENCRYPT)
KEY_ATTRIBUTES = AK_ATTRIBUTES & ~ObjectAttr.RESTRICTED


def _make_credential(ek_public_area: bytes, ak: KeyBlob, secret: bytes) -> tuple[bytes, bytes]:
    """What the CA does at AK enrollment (TPM 2.0 Part 1 §24), with tpm2-pytss's implementation."""
    ek, _ = TPMT_PUBLIC.unmarshal(ek_public_area)
    blob, encrypted = make_credential(ek, secret, TpmtPublic.parse(ak.public_area).name())
    return blob.marshal(), encrypted.marshal()


def _transients_and_sessions(tcti: str) -> int:
    with ESAPI(tcti) as esapi:
        count = 0
        for first in (TPM2_HT.TRANSIENT << 24, TPM2_HT.HMAC_SESSION << 24, TPM2_HT.POLICY_SESSION << 24):
            _, data = esapi.get_capability(TPM2_CAP.HANDLES, first, 64)
            count += len([h for h in data.data.handles if h >> 24 == first >> 24])
        return count


def test_ek_certificate_and_public_key_come_from_the_tpm(swtpm):
    with Tpm(swtpm.tcti) as tpm:
        assert tpm.ek_certificate() == swtpm.ek_certificate_der
        ek_public = TpmtPublic.parse(tpm.ek_public_area()).public_key()
        assert tpm.ek_chain() == []  # swtpm_setup stores no EK chain in NV
    certified = x509.load_der_x509_certificate(swtpm.ek_certificate_der).public_key()
    assert ek_public.public_numbers() == certified.public_numbers()


@pytest.mark.parametrize("ak_type", ["ecc", "rsa"])
def test_ak_is_a_restricted_signing_key_that_activates_its_credential(swtpm, ak_type):
    with Tpm(swtpm.tcti) as tpm:
        ak = tpm.create_ak(ak_type)
        public = TpmtPublic.parse(ak.public_area)
        assert public.object_attributes == AK_ATTRIBUTES
        assert ak.key_type == ak_type
        secret = bytes(range(32))
        assert tpm.activate_credential(ak, *_make_credential(tpm.ek_public_area(), ak, secret)) == secret
        other = tpm.create_ak("ecc")  # a credential bound to another AK's Name does not open
        with pytest.raises(TpmError, match="TPM2_ActivateCredential failed"):
            tpm.activate_credential(ak, *_make_credential(tpm.ek_public_area(), other, secret))
    assert _transients_and_sessions(swtpm.tcti) == 0  # no resource manager: nothing may be left loaded


def test_credential_for_another_tpm_does_not_activate(swtpm, swtpm_factory):
    other_machine = swtpm_factory()
    with Tpm(swtpm.tcti) as tpm, Tpm(other_machine.tcti) as other:
        ak = tpm.create_ak()
        blob, secret = _make_credential(other.ek_public_area(), ak, b"s" * 32)
        with pytest.raises(TpmError, match="TPM2_ActivateCredential failed"):
            tpm.activate_credential(ak, blob, secret)


def test_certify_binds_the_certificate_key_to_the_qualifying_data(swtpm):
    with Tpm(swtpm.tcti) as tpm:
        ak, key = tpm.create_ak(), tpm.create_certificate_key()
        qualifying = hashlib.sha256(b"token.thumbprint").digest()
        cert_info, signature = tpm.certify(key, ak, qualifying)
    attest, public = TpmsAttest.parse(cert_info), TpmtPublic.parse(key.public_area)
    assert attest.extra_data == qualifying
    assert attest.attested.name == public.name()
    assert public.object_attributes == KEY_ATTRIBUTES
    TpmtPublic.parse(ak.public_area).public_key().verify(signature, cert_info, ec.ECDSA(hashes.SHA256()))


def test_sign_digest_is_an_ecdsa_signature_of_the_certificate_key(swtpm):
    digest = hashlib.sha256(b"CertificationRequestInfo").digest()
    with Tpm(swtpm.tcti) as tpm:
        key = tpm.create_certificate_key()
        signature = tpm.sign_digest(key, digest)
    TpmtPublic.parse(key.public_area).public_key().verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_blobs_reload_in_a_later_session_and_only_in_their_tpm(swtpm, swtpm_factory):
    with Tpm(swtpm.tcti) as tpm:
        ak, key = tpm.create_ak("rsa"), tpm.create_certificate_key()
    with Tpm(swtpm.tcti) as tpm:  # a later run: the EK is re-created, the blobs load under it
        cert_info, signature = tpm.certify(key, ak, b"\x01" * 32)
    TpmtPublic.parse(ak.public_area).public_key().verify(signature, cert_info, padding.PKCS1v15(), hashes.SHA256())
    with Tpm(swtpm_factory().tcti) as other, pytest.raises(TpmError, match="TPM2_Load"):
        other.load(key)
    tampered = replace(key, private=key.private[:-1] + bytes([key.private[-1] ^ 1]))
    with Tpm(swtpm.tcti) as tpm, pytest.raises(TpmError, match="TPM2_Load"):
        tpm.load(tampered)
    assert _transients_and_sessions(swtpm.tcti) == 0


@pytest.mark.parametrize("ak_type", ["ecc", "rsa"])
def test_attestation_object_verifies_with_the_ca_verifier(swtpm, ak_type):
    key_authorization = "token-123.thumbprint-456"
    root, intermediate, ca_key = fleet.pki()
    identifier = PermanentIdentifier("ek-0123", "2.25.1")
    with Tpm(swtpm.tcti) as tpm:
        ak, key = tpm.create_ak(ak_type), tpm.create_certificate_key()
        knobs = replace(fleet.Knobs(), ak_other_names=(fleet.permanent_identifier(identifier.value, identifier.assigner),))
        ak_der = fleet.ak_certificate(knobs, TpmtPublic.parse(ak.public_area).public_key(), intermediate, ca_key)
        record = AkRecord("https://ca.test/directory", ak, ak_der, (intermediate.public_bytes(serialization.Encoding.DER),), identifier)
        att_obj = attestation_object(tpm, key, record, key_authorization)
    obj = decode_attestation_object(att_obj)
    assert obj.fmt == "tpm" and obj.att_stmt["alg"] == COSE_ALG[ak_type]
    ctx = VerificationContext(key_authorization_binding("token-123", key_authorization.encode()), fleet.NOW,
                              TrustStore(roots={"tpm": (root.public_bytes(serialization.Encoding.DER),)}))
    evidence = tpm_format.verify(obj.att_stmt, ctx)
    assert evidence.public_key == key.spki_der()
    assert [(p.value, p.assigner) for p in evidence.permanent_identifiers] == [("ek-0123", "2.25.1")]
    assert cbor2.loads(att_obj)["attStmt"]["x5c"][0] == ak_der


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), kind=st.sampled_from([TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET]))
def test_credential_from_the_ca_parses_or_fails_as_tpm_error(data, kind):
    """credentialBlob and encryptedSecret are untrusted bytes from the network."""
    try:
        value = _unmarshal(kind, data, "credential")
    except TpmError:
        return
    assert value.marshal() == data


def test_ek_chain_nv_contents_split_into_certificates():
    root, intermediate, _ = fleet.pki()
    first, second = (c.public_bytes(serialization.Encoding.DER) for c in (root, intermediate))
    assert split_certificates(first + second + b"\xff" * 16) == [first, second]
    assert split_certificates(b"\x00" * 8) == []
    with pytest.raises(TpmError, match="not a certificate"):
        split_certificates(first[:-10])


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400).map(lambda b: b"\x30" + b))
def test_ek_chain_nv_garbage_is_a_tpm_error(data):
    try:
        assert all(isinstance(c, bytes) for c in split_certificates(data))
    except TpmError:
        pass
