"""The software TPM harness itself: the EK certificate the TPM holds in NV is the one the
test maker issued, and it chains to that maker's root through its intermediate."""

from __future__ import annotations

from cryptography import x509
from tpm2_pytss import ESAPI, TCTILdr

from tests.support.swtpm import RSA_EK_CERT_NV_INDEX


def _read_nv(tcti: str, index: int) -> bytes:
    with ESAPI(TCTILdr.parse(tcti)) as esapi:
        handle = esapi.tr_from_tpmpublic(index)
        public, _name = esapi.nv_read_public(handle)
        return bytes(esapi.nv_read(handle, public.nvPublic.dataSize))


def test_ek_certificate_in_nv_is_issued_by_the_test_maker(swtpm):
    assert _read_nv(swtpm.tcti, RSA_EK_CERT_NV_INDEX) == swtpm.ek_certificate_der
    ek = x509.load_der_x509_certificate(swtpm.ek_certificate_der)
    intermediate = x509.load_pem_x509_certificate(swtpm.ek_ca_intermediate_pem)
    root = x509.load_pem_x509_certificate(swtpm.ek_ca_root_pem)
    ek.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)


def test_each_manufactured_tpm_has_its_own_ek(swtpm, swtpm_factory):
    other = swtpm_factory()
    assert other.ek_certificate_der != swtpm.ek_certificate_der
    assert _read_nv(other.tcti, RSA_EK_CERT_NV_INDEX) == other.ek_certificate_der
