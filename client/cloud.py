"""`acmeda device enroll --cloud KIND`: device-attest-01 with a cloud platform's evidence
(docs/cloud/client.md).

Each kind fetches what its verifier in attestation/formats/ expects, and names the
permanent identifier to order (value "/" assigner, attestation/assigners.py):

- `aws-nitro`: the enclave's NSM (client/nsm.py), Attestation with nonce = SHA-256(key
  authorization) and public_key = the certificate key → `{"attDoc"}`; the parent instance id
  from DescribeNSM's module_id.
- `gcp`: a GCE identity token for aud = https://<CA host>/device-attest-01/<base64url
  SHA-256(key authorization)>, format=full → `{"token"}`; the instance id.
- `azure`: an IMDS attested document with nonce = `azure_imds.nonce_for(key authorization)`
  → `{"signature"}`; the vmId.
- `aws`: the EC2 instance identity document and its /rsa2048 PKCS#7 over IMDSv2 (no nonce:
  replayable, so the CA admits an instance once) → `{"document", "pkcs7"}`; the instanceId.

The certificate key is a P-256 key made here, in software, stored with its chain in
`cloud.pem` (mode 0600) in the state directory (inside an enclave, that is enclave memory).
Only Nitro attests it; for the other kinds the CA binds it through the ACME account that
answered the challenge.

The metadata services are plain HTTP on a link-local address, reached without a proxy
(http.client ignores proxy variables) and with a short timeout; `metadata_url` replaces the
default base URL (tests point it at a server on loopback).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol
from urllib.parse import urlencode, urlsplit

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from attestation import assigners, cms
from attestation.errors import AttestationError
from attestation.formats import aws_iid, azure_imds, gcp_iit
from client.acme import AcmeClient, load_or_create_account_key
from client.csr import PermanentIdentifier
from client.device_order import obtain_device_certificate
from client.http import Http, TransportError, tls_context
from client.nsm import Nsm
from client.state import write_private_file

KINDS = ("aws-nitro", "gcp", "azure", "aws")
DEFAULT_METADATA = {"gcp": "http://metadata.google.internal", "azure": "http://169.254.169.254",
                    "aws": "http://169.254.169.254"}
METADATA_TIMEOUT = 10.0  # seconds; a metadata service answers in milliseconds, an identity token in about one
AZURE_ATTESTED_API, AZURE_INSTANCE_API = "2020-09-01", "2021-02-01"
AZURE_ATTEMPTS = 3  # IMDS may serve a cached document with an earlier nonce: ask again, then give up
AWS_TOKEN_TTL = "60"  # seconds: the IMDSv2 session lives only for this enrollment
AWS_SIGNATURES = {"rsa2048": "pkcs7", "pkcs7": "pkcs7", "signature": "signature"}  # IMDS path -> attStmt member
_DECIMAL = re.compile(r"[0-9]{1,20}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MODULE_ID = re.compile(r"(i-(?:[0-9a-f]{8}|[0-9a-f]{17}))-enc[0-9a-f]+")  # as attestation/formats/aws_nitro.py reads it


class CloudError(Exception):
    """The metadata service or the NSM failed or answered something unusable: a message for the user."""


# --- the metadata services -----------------------------------------------------------------


class Metadata:
    """One metadata service: its base URL and the header every request must carry."""

    def __init__(self, http: Http, base: str, cloud: str, headers: dict[str, str]) -> None:
        self.http, self.base, self.cloud, self.headers = http, base.rstrip("/"), cloud, headers

    def fetch(self, method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
        """The body of a 200 answer; CloudError naming the service, the path and the refusal otherwise."""
        shown = path.split("?")[0]
        try:
            response = self.http.request(method, self.base + path, None, {**self.headers, **(headers or {})})
        except TransportError as exc:
            raise CloudError(f"the {self.cloud} metadata service at {self.base} cannot be reached ({exc}): is this "
                             f"machine a {self.cloud} instance? (--metadata-url sets another address)") from None
        if response.status != 200:
            detail = response.body[:300].decode("utf-8", "replace").strip() or "no detail"
            raise CloudError(f"the {self.cloud} metadata service refused {method} {shown}: HTTP {response.status}: {detail}")
        return response.body


def _text(body: bytes, what: str) -> str:
    try:
        return body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CloudError(f"the {what} is not ASCII text") from None


def _base64(text: bytes | str, what: str) -> bytes:
    """Standard base64, possibly wrapped over lines as IMDS serves PKCS#7; strictly decoded."""
    compact = re.sub(r"\s+", "", text if isinstance(text, str) else text.decode("ascii", "replace"))
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise CloudError(f"the {what} is not base64") from None


def _att_obj(fmt: str, statement: dict) -> bytes:
    return cbor2.dumps({"fmt": fmt, "attStmt": statement})


# GCP: GCE metadata server (https://cloud.google.com/compute/docs/instances/verifying-instance-identity)


def gcp_audience(directory_url: str, key_authorization: str) -> str:
    """https://<CA host[:port]>/device-attest-01/<base64url SHA-256(key authorization)>. The audience
    names the CA and is never fetched; the verifier requires https and checks the last segment."""
    return gcp_iit.audience_for(f"https://{urlsplit(directory_url).netloc}", key_authorization.encode())


def gcp_instance_id(metadata: Metadata) -> str:
    value = _text(metadata.fetch("GET", "/computeMetadata/v1/instance/id"), "GCE instance id")
    if not _DECIMAL.fullmatch(value):
        raise CloudError(f"the GCE instance id {value[:40]!r} is not a decimal number")
    return value


def gcp_identity_token(metadata: Metadata, audience: str) -> str:
    query = urlencode({"audience": audience, "format": "full"})
    token = _text(metadata.fetch("GET", f"/computeMetadata/v1/instance/service-accounts/default/identity?{query}"),
                  "GCE identity token")
    if token.count(".") != 2:
        raise CloudError("the GCE metadata server's identity token is not a compact JWT")
    return token


class GcpAttester:
    fmt, attests_key = gcp_iit.FMT, False

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata

    def identifier(self) -> PermanentIdentifier:
        return PermanentIdentifier(gcp_instance_id(self.metadata), assigners.GCE_INSTANCE_ID)

    def attestation_object(self, key_authorization: str, directory_url: str, public_key_der: bytes) -> bytes:
        token = gcp_identity_token(self.metadata, gcp_audience(directory_url, key_authorization))
        return _att_obj(self.fmt, {"token": token})


# Azure: Instance Metadata Service (https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service)


def azure_vm_id(metadata: Metadata) -> str:
    query = urlencode({"api-version": AZURE_INSTANCE_API, "format": "text"})
    value = _text(metadata.fetch("GET", f"/metadata/instance/compute/vmId?{query}"), "Azure vmId")
    if not _UUID.fullmatch(value):
        raise CloudError(f"the Azure vmId {value[:40]!r} is not a UUID")
    return value


def azure_attested_signature(metadata: Metadata, nonce: str) -> bytes:
    """The base64-decoded `signature` (PKCS#7) of the attested document requested with `nonce`."""
    query = urlencode({"api-version": AZURE_ATTESTED_API, "nonce": nonce})
    body = metadata.fetch("GET", f"/metadata/attested/document?{query}")
    try:
        signature = json.loads(body)["signature"]
        if not isinstance(signature, str):
            raise TypeError("signature is not a string")
    except (ValueError, KeyError, TypeError) as exc:
        raise CloudError(f"the Azure attested document is not JSON with a signature ({type(exc).__name__}: {exc})") from None
    return _base64(signature, "Azure attested document's signature")


def attested_nonce(signature: bytes) -> str | None:
    """The nonce inside an attested document's PKCS#7 content (None if it has none)."""
    try:
        content = cms.parse_signed_data(signature, "signature").content
        nonce = json.loads(content or b"{}").get("nonce")
    except (AttestationError, ValueError, AttributeError) as exc:
        raise CloudError(f"the Azure attested document's PKCS#7 cannot be read: {exc}") from None
    return nonce if isinstance(nonce, str) else None


class AzureAttester:
    fmt, attests_key = azure_imds.FMT, False

    def __init__(self, metadata: Metadata, sleep: Callable[[float], None] = time.sleep) -> None:
        self.metadata, self._sleep = metadata, sleep

    def identifier(self) -> PermanentIdentifier:
        return PermanentIdentifier(azure_vm_id(self.metadata), assigners.AZURE_VM_ID)

    def attestation_object(self, key_authorization: str, directory_url: str, public_key_der: bytes) -> bytes:
        nonce = azure_imds.nonce_for(key_authorization.encode())
        for attempt in range(1, AZURE_ATTEMPTS + 1):
            signature = azure_attested_signature(self.metadata, nonce)
            served = attested_nonce(signature)
            if served == nonce:
                return _att_obj(self.fmt, {"signature": signature})
            if attempt < AZURE_ATTEMPTS:
                self._sleep(1.0)
        raise CloudError(f"Azure IMDS kept serving an attested document with nonce {served!r} (cached), "
                         f"not the requested {nonce!r}")


# AWS EC2: IMDSv2 (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-identity-documents.html)


def aws_session_token(metadata: Metadata) -> str:
    body = metadata.fetch("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": AWS_TOKEN_TTL})
    return _text(body, "IMDSv2 session token")


def aws_identity(metadata: Metadata, signature: str = "rsa2048") -> dict[str, bytes]:
    """The aws-iid attStmt: the document's exact bytes and the base64-decoded /`signature`."""
    if signature not in AWS_SIGNATURES:
        raise ValueError(f"unknown instance identity signature {signature!r}")
    session = {"X-aws-ec2-metadata-token": aws_session_token(metadata)}
    document = metadata.fetch("GET", "/latest/dynamic/instance-identity/document", session)
    signed = metadata.fetch("GET", f"/latest/dynamic/instance-identity/{signature}", session)
    return {"document": document, AWS_SIGNATURES[signature]: _base64(signed, f"instance identity {signature}")}


class AwsIidAttester:
    """The document has no nonce: fetched once, it is both the identifier's source and the answer."""

    fmt, attests_key = aws_iid.FMT, False

    def __init__(self, metadata: Metadata, signature: str = "rsa2048") -> None:
        self.metadata, self.signature = metadata, signature
        self._statement: dict[str, bytes] | None = None

    def statement(self) -> dict[str, bytes]:
        if self._statement is None:
            self._statement = aws_identity(self.metadata, self.signature)
        return self._statement

    def identifier(self) -> PermanentIdentifier:
        try:
            identity = aws_iid.parse_document(self.statement()["document"])
        except AttestationError as exc:
            raise CloudError(f"the instance identity document is not what EC2 serves: {exc}") from None
        return PermanentIdentifier(identity.instance_id, assigners.AWS_EC2_INSTANCE_ID)

    def attestation_object(self, key_authorization: str, directory_url: str, public_key_der: bytes) -> bytes:
        return _att_obj(self.fmt, self.statement())


# AWS Nitro Enclaves: the NSM


class NitroAttester:
    fmt, attests_key = "aws-nitro", True

    def __init__(self, nsm: Nsm) -> None:
        self.nsm = nsm

    def identifier(self) -> PermanentIdentifier:
        module_id = self.nsm.describe().module_id
        match = _MODULE_ID.fullmatch(module_id)
        if match is None:
            raise CloudError(f"the NSM's module_id {module_id!r} is not \"i-<instance>-enc<enclave>\"")
        return PermanentIdentifier(match.group(1), assigners.AWS_EC2_INSTANCE_ID)

    def attestation_object(self, key_authorization: str, directory_url: str, public_key_der: bytes) -> bytes:
        nonce = hashlib.sha256(key_authorization.encode()).digest()
        return _att_obj(self.fmt, {"attDoc": self.nsm.attestation(nonce=nonce, public_key=public_key_der)})


class CloudAttester(Protocol):
    """What the enrollment needs of a platform: the identifier to order, and the answer to a challenge."""

    fmt: str
    attests_key: bool  # True: the evidence names the certificate key (`public_key_der`)

    def identifier(self) -> PermanentIdentifier: ...

    def attestation_object(self, key_authorization: str, directory_url: str, public_key_der: bytes) -> bytes: ...


def attester_for(kind: str, *, metadata_url: str | None = None, http: Http | None = None, nsm: Nsm | None = None,
                 aws_signature: str = "rsa2048", sleep: Callable[[float], None] = time.sleep) -> CloudAttester:
    """The attester of `kind` (KINDS); metadata requests go to `metadata_url` or the platform's default.
    `aws_signature` picks the EC2 signature endpoint (AWS_SIGNATURES); `sleep` paces Azure's retries."""
    if kind == "aws-nitro":
        return NitroAttester(nsm or Nsm())
    if kind not in DEFAULT_METADATA:
        raise ValueError(f"unknown cloud {kind!r}; one of {', '.join(KINDS)}")
    http = http or Http(tls_context(None, False), timeout=METADATA_TIMEOUT)
    base = metadata_url or DEFAULT_METADATA[kind]
    if kind == "gcp":
        return GcpAttester(Metadata(http, base, "GCE", {"Metadata-Flavor": "Google"}))
    if kind == "azure":
        return AzureAttester(Metadata(http, base, "Azure", {"Metadata": "true"}), sleep)
    return AwsIidAttester(Metadata(http, base, "EC2", {}), aws_signature)


# --- the enrollment ------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudOptions:
    """What `acmeda device enroll --cloud KIND` was asked to do."""

    kind: str
    directory: str
    state_dir: Path
    metadata_url: str | None = None
    ca_bundle: Path | None = None
    insecure: bool = False
    eab: tuple[str, str] | None = None
    timeout: float = 60.0


@dataclass(frozen=True)
class Enrolled:
    """The outcome, shaped like client.enroll.Outcome for the command line's report."""

    certificate: x509.Certificate
    identifier: PermanentIdentifier
    path: Path  # cloud.pem: the key and the chain
    message: str
    renewed: bool = True


def enroll(options: CloudOptions, attester: CloudAttester | None = None) -> Enrolled:
    """Account, order for the platform's identifier, device-attest-01, finalize; store key and chain."""
    deadline = time.monotonic() + options.timeout
    attester = attester or attester_for(options.kind, metadata_url=options.metadata_url)
    http = Http(tls_context(options.ca_bundle, options.insecure))
    try:
        identifier = attester.identifier()
        key = ec.generate_private_key(ec.SECP256R1())
        acme = AcmeClient(http, options.directory, load_or_create_account_key(options.state_dir / "account-key.pem"))
        acme.register(eab=options.eab)
        chain = _certificate(acme, attester, identifier, key, deadline)
    finally:
        http.close()
    stored = _store(options.state_dir, key, chain)
    leaf = x509.load_pem_x509_certificates(chain)[0]
    return Enrolled(leaf, identifier, stored, f"enrolled {identifier.order_value} ({attester.fmt}); key and chain in {stored}")


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _certificate(acme: AcmeClient, attester: CloudAttester, identifier: PermanentIdentifier,
                 key: ec.EllipticCurvePrivateKey, deadline: float) -> bytes:
    spki = _spki(key.public_key())
    return obtain_device_certificate(
        acme, identifier, spki, lambda digest: key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))),
        lambda key_authorization: attester.attestation_object(key_authorization, acme.directory_url, spki), deadline)


def _store(state_dir: Path, key: ec.EllipticCurvePrivateKey, chain: bytes) -> Path:
    """cloud.pem: the key (PKCS#8) then the chain, in one file so they never disagree; certificate.pem:
    the chain alone, for other programs. Each file is mode 0600 and replaced whole (temporary file, rename)."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, data in (("cloud.pem", pem + chain), ("certificate.pem", chain)):
        write_private_file(state_dir / name, data)
    return state_dir / "cloud.pem"
