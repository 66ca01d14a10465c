"""Drive a real (software) TPM through tpm2-pytss for AK enrollment: create the EK from its TCG
template, create an AK, and run TPM2_ActivateCredential on what the CA made.

The EK of the low-range RSA template (L-1) has userWithAuth clear: the TPM admits it only
through its policy, PolicySecret(TPM_RH_ENDORSEMENT). The high-range templates (H-3, ECC
P-384, swtpm's ECC EK) set userWithAuth, so the empty password works.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from tpm2_pytss import ESAPI, TCTILdr
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_OBJECT
from tpm2_pytss.internal.templates import ek_template
from tpm2_pytss.types import TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPM2B_PUBLIC, TPMT_SYM_DEF

from attestation.tpm.credential import MadeCredential

RSA_EK, ECC_EK = "EK-RSA2048", "EK-HIGH-ECC384"  # what swtpm_setup certifies (NV 0x01c00002, 0x01c00016)
AK_ATTRIBUTES = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
                 | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT)
AK_TEMPLATES = {"rsa": "rsa2048:rsassa-sha256:null", "ecc": "ecc256:ecdsa-sha256:null"}


class RealTpm:
    def __init__(self, esapi: ESAPI) -> None:
        self.esapi = esapi

    def endorsement_key(self, template: str = RSA_EK) -> tuple[ESYS_TR, bytes]:
        """The EK re-created from its template: (handle, TPMT_PUBLIC bytes)."""
        handle, public, *_ = self.esapi.create_primary(None, ek_template.lookup(template).template, ESYS_TR.ENDORSEMENT)
        return handle, public.publicArea.marshal()

    def attestation_key(self, kind: str = "rsa", attributes: int = AK_ATTRIBUTES) -> tuple[ESYS_TR, bytes]:
        """An AK (a primary key of the endorsement hierarchy): (handle, TPMT_PUBLIC bytes)."""
        template = TPM2B_PUBLIC.parse(AK_TEMPLATES[kind], objectAttributes=attributes)
        handle, public, *_ = self.esapi.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        return handle, public.publicArea.marshal()

    def activate(self, ak: ESYS_TR, ek: ESYS_TR, made: MadeCredential, template: str = RSA_EK) -> bytes:
        """TPM2_ActivateCredential: the secret, or TSS2_Exception where the TPM refuses."""
        blob, _ = TPM2B_ID_OBJECT.unmarshal(made.credential_blob)
        secret, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(made.encrypted_secret)
        if template == RSA_EK:
            session = self.esapi.start_auth_session(ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
                                                    TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
            try:
                self.esapi.policy_secret(ESYS_TR.ENDORSEMENT, session)
                return bytes(self.esapi.activate_credential(ak, ek, blob, secret, session1=ESYS_TR.PASSWORD, session2=session))
            finally:
                self.esapi.flush_context(session)
        return bytes(self.esapi.activate_credential(ak, ek, blob, secret, session1=ESYS_TR.PASSWORD,
                                                    session2=ESYS_TR.PASSWORD))


@contextmanager
def real_tpm(tcti: str) -> Iterator[RealTpm]:
    with ESAPI(TCTILdr.parse(tcti)) as esapi:
        yield RealTpm(esapi)
