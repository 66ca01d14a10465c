"""The device's TPM 2.0 through tpm2-pytss (ESAPI): EK, AK, credential activation, the
certificate key, TPM2_Certify, TPM2_Sign, and the PCRs (TPM2_PCR_Read, TPM2_Quote).

Key hierarchy. Everything lives under the endorsement key (EK), re-created on every run from
the TCG default template (EK Credential Profile §2.1.5, `tpm2_pytss.utils.create_ek_template`,
which also applies a template or nonce the maker stored in NV): it is the same key every
time, because a primary key derives from the hierarchy's seed. The EK's authPolicy is
PolicySecret(TPM_RH_ENDORSEMENT), so each use of it as a parent (Create, Load) or in
ActivateCredential needs a fresh policy session satisfied with the endorsement auth (empty
by default). Children persist as their public and private blobs (`KeyBlob`): the private
blob is wrapped by the EK's storage key and is useless outside this TPM.

- the AK: a restricted signing key, RSA-2048 RSASSA-SHA256 or ECC P-256 ECDSA-SHA256,
  fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign;
- the certificate key: ECC P-256, unrestricted, fixedTPM|fixedParent|sensitiveDataOrigin|
  userWithAuth|sign: TPM2_Certify proves these attributes to the CA, and TPM2_Sign signs
  the CSR (and later TLS handshakes) with it.

A TPM without a resource manager (swtpm over TCP, /dev/tpm0) keeps whatever a client leaves
loaded, so `Tpm` flushes every transient object and session it creates, also on errors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from asn1crypto import x509 as asn1_x509
from cryptography import x509

from tpm2_pytss import (
    ESAPI, TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPM2B_PRIVATE, TPM2B_PUBLIC, TPMS_ECC_PARMS,
    TPMS_RSA_PARMS, TPMS_SCHEME_HASH, TPMT_ECC_SCHEME, TPMT_KDF_SCHEME, TPMT_PUBLIC, TPMT_RSA_SCHEME,
    TPML_PCR_SELECTION, TPMS_PCR_SELECTION, TPMT_SIG_SCHEME, TPMT_SYM_DEF, TPMT_SYM_DEF_OBJECT, TPMT_TK_HASHCHECK,
    TPMU_ASYM_SCHEME, TPMU_PUBLIC_PARMS, TPMU_SIG_SCHEME, TSS2_Exception,
)
from tpm2_pytss.constants import (
    ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_ECC, TPM2_RC, TPM2_RH, TPM2_SE, TPM2_ST, TPM2_SU, TPMA_OBJECT,
    TPMA_SESSION,
)
from tpm2_pytss.utils import NVReadEK, create_ek_template

DEFAULT_TCTI = "device:/dev/tpmrm0"
EK_TYPES = ("EK-RSA2048", "EK-ECC256")  # NV 0x01c00002 and 0x01c0000a, in this order of preference
EK_CHAIN_NV_FIRST, EK_CHAIN_NV_LAST = 0x01C00100, 0x01C001FF  # TCG EK profile 2.5 §2.2.1.5: EK chain
SIGNING_KEY = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
               | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT)
AK_TYPES = ("ecc", "rsa")
COSE_ALG = {"ecc": -7, "rsa": -257}  # ES256, RS256: what the AK's scheme signs certInfo with
PCR_SELECT_SIZE = 3  # bytes of a PCR bitmap: the 24 PCRs of a PC Client TPM


class TpmError(Exception):
    """A TPM operation failed: the message names the operation and the TPM's answer."""


@dataclass(frozen=True)
class KeyBlob:
    """A TPM key as it persists: marshalled TPM2B_PUBLIC and TPM2B_PRIVATE (TPM-wrapped)."""

    public: bytes
    private: bytes

    @property
    def public_area(self) -> bytes:
        """TPMT_PUBLIC, marshalled, without the TPM2B size (what the CA and the `tpm` format take)."""
        return self._public().publicArea.marshal()

    @property
    def key_type(self) -> str:
        return "rsa" if self._public().publicArea.type == TPM2_ALG.RSA else "ecc"

    def spki_der(self) -> bytes:
        return self._public().publicArea.to_der()

    def _public(self) -> TPM2B_PUBLIC:
        return _unmarshal(TPM2B_PUBLIC, self.public, "key public blob")


def _unmarshal(kind, data: bytes, what: str):
    try:
        value, used = kind.unmarshal(data)
    except (TSS2_Exception, ValueError, TypeError) as exc:
        raise TpmError(f"the {what} is not a marshalled {kind.__name__}: {exc}") from None
    if used != len(data):
        raise TpmError(f"the {what} has {len(data) - used} bytes after its {kind.__name__}")
    return value


def split_certificates(data: bytes) -> list[bytes]:
    """The DER certificates an NV index holds back to back, without the index's padding."""
    found = []
    while data[:1] == b"\x30":  # a SEQUENCE; NV padding is 0x00 or 0xff
        try:
            encoded = asn1_x509.Certificate.load(data, strict=False).dump()  # the first one: its length
            x509.load_der_x509_certificate(encoded)  # and it must be a whole certificate
        except (ValueError, TypeError) as exc:
            raise TpmError(f"an EK chain NV index holds something that is not a certificate: {exc}") from None
        found.append(encoded)
        data = data[len(encoded):]
    return found


def pcr_selection(bank: int, indices) -> TPML_PCR_SELECTION:
    """One bank's PCRs as a TPML_PCR_SELECTION (a bitmap, PCR n at bit n % 8 of byte n // 8)."""
    bitmap = bytearray(PCR_SELECT_SIZE)
    for index in indices:
        bitmap[index // 8] |= 1 << index % 8
    return TPML_PCR_SELECTION([TPMS_PCR_SELECTION(hash=bank, sizeofSelect=PCR_SELECT_SIZE, pcrSelect=bytes(bitmap))])


def _selected(selection: TPMS_PCR_SELECTION) -> list[int]:
    bitmap = bytes(selection.pcrSelect)[:selection.sizeofSelect]
    return [index for index in range(8 * len(bitmap)) if bitmap[index // 8] >> index % 8 & 1]


def _hash_scheme(alg: int) -> TPMU_ASYM_SCHEME:
    details = TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)
    return TPMU_ASYM_SCHEME(ecdsa=details) if alg == TPM2_ALG.ECDSA else TPMU_ASYM_SCHEME(rsassa=details)


def ecc_signing_template(restricted: bool) -> TPM2B_PUBLIC:
    parameters = TPMS_ECC_PARMS(
        symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
        scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.ECDSA, details=_hash_scheme(TPM2_ALG.ECDSA)),
        curveID=TPM2_ECC.NIST_P256, kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL))
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
        type=TPM2_ALG.ECC, nameAlg=TPM2_ALG.SHA256,
        objectAttributes=SIGNING_KEY | (TPMA_OBJECT.RESTRICTED if restricted else 0),
        parameters=TPMU_PUBLIC_PARMS(eccDetail=parameters)))


def rsa_ak_template() -> TPM2B_PUBLIC:
    parameters = TPMS_RSA_PARMS(
        symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
        scheme=TPMT_RSA_SCHEME(scheme=TPM2_ALG.RSASSA, details=_hash_scheme(TPM2_ALG.RSASSA)),
        keyBits=2048, exponent=0)
    return TPM2B_PUBLIC(publicArea=TPMT_PUBLIC(
        type=TPM2_ALG.RSA, nameAlg=TPM2_ALG.SHA256, objectAttributes=SIGNING_KEY | TPMA_OBJECT.RESTRICTED,
        parameters=TPMU_PUBLIC_PARMS(rsaDetail=parameters)))


class Tpm:
    """One open TPM connection (`with Tpm(tcti) as tpm:`)."""

    def __init__(self, tcti: str = DEFAULT_TCTI) -> None:
        self.tcti = tcti
        # libtss2 logs every expected miss (an absent NV index) on stderr; errors reach us as exceptions.
        os.environ.setdefault("TSS2_LOG", "all+NONE")
        try:
            self._esapi = ESAPI(tcti)
        except (TSS2_Exception, RuntimeError, ValueError, OSError) as exc:
            raise TpmError(f"cannot open the TPM through TCTI {tcti!r}: {exc} (on Linux, /dev/tpmrm0 needs "
                           "membership of the tss group; a software TPM needs e.g. swtpm:host=127.0.0.1,port=2321)") from None
        self._transients: list[ESYS_TR] = []
        self._loaded: dict[bytes, ESYS_TR] = {}
        self._ek: ESYS_TR | None = None
        self._ek_public: TPM2B_PUBLIC | None = None
        self._ek_certificate: bytes | None = None
        self._startup_if_needed()

    def __enter__(self) -> Tpm:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for handle in reversed(self._transients):
            try:
                self._esapi.flush_context(handle)
            except TSS2_Exception:
                pass  # already gone; nothing else to do at close
        self._transients.clear()
        self._loaded.clear()
        self._esapi.close()

    def _call(self, what: str, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except TSS2_Exception as exc:
            raise TpmError(f"{what} failed: {exc}") from None

    def _startup_if_needed(self) -> None:
        """A simulator started without TPM2_Startup answers TPM_RC_INITIALIZE: start it."""
        try:
            self._esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, 0x100, 1)
        except TSS2_Exception as exc:
            if exc.error != TPM2_RC.INITIALIZE:
                raise TpmError(f"the TPM at {self.tcti!r} does not answer: {exc}") from None
            self._call("TPM2_Startup", self._esapi.startup, TPM2_SU.CLEAR)

    # -- the endorsement key --

    def _ensure_ek(self) -> ESYS_TR:
        if self._ek is None:
            reader = NVReadEK(self._esapi)
            certificate, template = None, None
            for ek_type in EK_TYPES:
                certificate, template = create_ek_template(ek_type, reader)
                if certificate is not None:
                    break
            if certificate is None:  # no EK certificate: the default RSA EK, for an operator-pinned ekPublic
                certificate, template = create_ek_template(EK_TYPES[0], reader)
            handle, public, _, _, _ = self._call("TPM2_CreatePrimary (EK)", self._esapi.create_primary,
                                                 None, template, ESYS_TR.ENDORSEMENT)
            self._transients.append(handle)
            self._ek, self._ek_public, self._ek_certificate = handle, public, certificate
        return self._ek

    def ek_certificate(self) -> bytes | None:
        """The EK certificate (DER) from NV, or None when the maker stored none."""
        self._ensure_ek()
        return None if self._ek_certificate is None else bytes(self._ek_certificate)

    def ek_public_area(self) -> bytes:
        self._ensure_ek()
        assert self._ek_public is not None
        return self._ek_public.publicArea.marshal()

    def ek_chain(self) -> list[bytes]:
        """EK CA certificates the maker stored in NV (0x01c00100–0x01c001ff), in index order."""
        _more, data = self._call("TPM2_GetCapability (NV handles)", self._esapi.get_capability,
                                 TPM2_CAP.HANDLES, EK_CHAIN_NV_FIRST, 64)
        reader = NVReadEK(self._esapi)
        found: list[bytes] = []
        for handle in data.data.handles:
            if EK_CHAIN_NV_FIRST <= handle <= EK_CHAIN_NV_LAST:
                found += split_certificates(bytes(reader(handle)))
        return found

    def _ek_policy_session(self) -> ESYS_TR:
        """A policy session satisfying the EK's PolicySecret(TPM_RH_ENDORSEMENT), used once."""
        session = self._call("TPM2_StartAuthSession", self._esapi.start_auth_session,
                             ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                             TPM2_ALG.SHA256)
        try:
            self._esapi.trsess_set_attributes(session, 0, TPMA_SESSION.CONTINUESESSION)  # flushed by its one use
            self._esapi.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
        except TSS2_Exception as exc:
            self._esapi.flush_context(session)
            raise TpmError(f"TPM2_PolicySecret(endorsement) for the EK failed: {exc} "
                           "(an endorsement hierarchy password is not supported)") from None
        return session

    # -- keys under the EK --

    def _create(self, what: str, template: TPM2B_PUBLIC) -> KeyBlob:
        ek = self._ensure_ek()
        private, public, _, _, _ = self._call(f"TPM2_Create ({what})", self._esapi.create, ek, None, template,
                                             session1=self._ek_policy_session())
        return KeyBlob(public.marshal(), private.marshal())

    def create_ak(self, ak_type: str = "ecc") -> KeyBlob:
        if ak_type not in AK_TYPES:
            raise TpmError(f"AK type {ak_type!r} is not one of {', '.join(AK_TYPES)}")
        return self._create("AK", ecc_signing_template(restricted=True) if ak_type == "ecc" else rsa_ak_template())

    def create_certificate_key(self) -> KeyBlob:
        return self._create("certificate key", ecc_signing_template(restricted=False))

    def load(self, blob: KeyBlob) -> ESYS_TR:
        """Load a key under the re-created EK (once per connection)."""
        if blob.public not in self._loaded:
            ek = self._ensure_ek()
            public = _unmarshal(TPM2B_PUBLIC, blob.public, "key public blob")
            private = _unmarshal(TPM2B_PRIVATE, blob.private, "key private blob")
            handle = self._call("TPM2_Load (a key under the EK: was the TPM cleared?)", self._esapi.load, ek, private,
                                public, session1=self._ek_policy_session())
            self._transients.append(handle)
            self._loaded[blob.public] = handle
        return self._loaded[blob.public]

    # -- operations --

    def activate_credential(self, ak: KeyBlob, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential: the secret the CA bound to this AK's Name and this EK."""
        id_object = _unmarshal(TPM2B_ID_OBJECT, credential_blob, "credentialBlob")
        secret = _unmarshal(TPM2B_ENCRYPTED_SECRET, encrypted_secret, "encryptedSecret")
        ak_handle = self.load(ak)
        ek = self._ensure_ek()
        digest = self._call("TPM2_ActivateCredential", self._esapi.activate_credential, ak_handle, ek, id_object, secret,
                            session1=ESYS_TR.PASSWORD, session2=self._ek_policy_session())
        return bytes(digest)

    def certify(self, key: KeyBlob, ak: KeyBlob, qualifying_data: bytes) -> tuple[bytes, bytes]:
        """TPM2_Certify(key, AK): (certInfo = TPMS_ATTEST, the AK's signature over it: DER ECDSA or
        raw RSASSA bytes, as the `tpm` attestation format reads them)."""
        key_handle, ak_handle = self.load(key), self.load(ak)
        attest, signature = self._call("TPM2_Certify", self._esapi.certify, key_handle, ak_handle, qualifying_data,
                                       TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
                                       session1=ESYS_TR.PASSWORD, session2=ESYS_TR.PASSWORD)
        return bytes(attest), bytes(signature)

    def sign_digest(self, key: KeyBlob, digest: bytes) -> bytes:
        """TPM2_Sign, ECDSA-SHA256 over a SHA-256 digest computed outside: a DER ECDSA-Sig-Value."""
        handle = self.load(key)
        scheme = TPMT_SIG_SCHEME(scheme=TPM2_ALG.ECDSA,
                                 details=TPMU_SIG_SCHEME(ecdsa=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)))
        no_ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)  # unrestricted key: none needed
        signature = self._call("TPM2_Sign", self._esapi.sign, handle, digest, scheme, no_ticket)
        return bytes(signature)

    # -- PCRs --

    def allocated_pcrs(self) -> dict[int, frozenset[int]]:
        """The PCR banks the TPM has allocated (TPM_ALG_ID -> PCR indices); inactive banks are empty."""
        _more, data = self._call("TPM2_GetCapability (PCRs)", self._esapi.get_capability, TPM2_CAP.PCRS, 0, 1)
        return {int(selection.hash): frozenset(_selected(selection)) for selection in data.data.assignedPCR}

    def pcr_values(self, bank: int, indices) -> dict[int, bytes]:
        """TPM2_PCR_Read of `indices` in `bank`. A TPM answers at most 8 digests per call (the
        size of TPML_DIGEST) and says which ones in its returned selection: ask again for the rest."""
        values: dict[int, bytes] = {}
        wanted = sorted(set(indices))
        while len(values) < len(wanted):
            missing = [index for index in wanted if index not in values]
            _counter, selection, digests = self._call("TPM2_PCR_Read", self._esapi.pcr_read, pcr_selection(bank, missing))
            returned = [index for s in selection if int(s.hash) == bank for index in _selected(s) if index in missing]
            if not returned or len(returned) != len(digests):
                raise TpmError(f"TPM2_PCR_Read returned no value for PCRs {missing} of bank {bank:#06x}: is the bank allocated?")
            values.update(zip(returned, (bytes(digest) for digest in digests)))
        return values

    def quote(self, ak: KeyBlob, bank: int, indices, qualifying_data: bytes) -> tuple[bytes, bytes]:
        """TPM2_Quote of `indices` in `bank` with the AK and its own scheme: (TPMS_ATTEST, the
        marshalled TPMT_SIGNATURE), the raw structures docs/tpm-boot-posture.md puts on the wire."""
        handle = self.load(ak)
        attest, signature = self._call("TPM2_Quote", self._esapi.quote, handle, pcr_selection(bank, indices),
                                       qualifying_data, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
        return bytes(attest), signature.marshal()
