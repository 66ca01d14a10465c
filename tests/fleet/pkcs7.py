"""A PKCS#7 / CMS SignedData builder for the cloud fleets and the `attestation.cms` tests.

`signed_data(content, certificate, key, ...)` signs like AWS EC2 (signed attributes, DSA or
RSA) or Azure IMDS (no signed attributes, digestAlgorithm sha256WithRSAEncryption), and
every field the reader checks has a knob, so each refusal is one argument away from a
valid blob. Built with asn1crypto (cryptography's PKCS7 builder signs neither with DSA nor
in the Azure shape).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Sequence

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, padding

OID_DATA = "1.2.840.113549.1.7.1"
DIGEST_OIDS = {"sha1": "1.3.14.3.2.26", "sha256": "2.16.840.1.101.3.4.2.1", "sha512": "2.16.840.1.101.3.4.2.3"}
SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
SHA1_WITH_RSA = "1.2.840.113549.1.1.5"
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
DSA_WITH_SHA1 = "1.2.840.10040.4.3"
ECDSA_WITH_SHA256 = "1.2.840.10045.4.3.2"
_HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}
KEEP = object()  # "the natural value" for knobs that also accept None


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _sign(key: Any, message: bytes, digest: str) -> bytes:
    if isinstance(key, dsa.DSAPrivateKey):
        return key.sign(message, _HASHES[digest]())
    return key.sign(message, padding.PKCS1v15(), _HASHES[digest]())


def _attributes(content: bytes, digest: str, *, message_digest, content_type_attr, signing_time, extra) -> cms.CMSAttributes:
    attributes = []
    if content_type_attr is not None:
        attributes.append({"type": "content_type", "values": [content_type_attr]})
    if signing_time is not None:
        attributes.append({"type": "signing_time", "values": [cms.Time({"utc_time": signing_time})]})
    if message_digest is not None:
        value = hashlib.new(digest, content).digest() if message_digest is KEEP else message_digest
        values = value if isinstance(value, list) else [value]
        attributes.append({"type": "message_digest", "values": values})
    return cms.CMSAttributes(attributes + list(extra))


def _sid(cert: x509.Certificate, sid: Any) -> cms.SignerIdentifier:
    parsed = asn1_x509.Certificate.load(der(cert))
    if sid == "ski":
        return cms.SignerIdentifier({"subject_key_identifier": parsed.key_identifier})
    serial = parsed.serial_number if sid is None else sid
    return cms.SignerIdentifier({"issuer_and_serial_number": {"issuer": parsed.issuer, "serial_number": serial}})


def signed_data(
    content: bytes,
    certificate: x509.Certificate,
    key: Any,
    *,
    digest: str = "sha256",
    digest_oid: str | None = None,
    signature_oid: str | None = None,
    signed_attributes: bool = True,
    message_digest: Any = KEEP,
    content_type_attr: str | None = OID_DATA,
    signing_time: datetime | None = None,
    extra_attributes: Sequence[dict] = (),
    embed_content: bool = True,
    econtent_type: str = OID_DATA,
    signed_content: bytes | None = None,
    certificates: Sequence[x509.Certificate] = (),
    sid: Any = None,
    signers: int = 1,
    tamper: bool = False,
    outer_type: str = "signed_data",
) -> bytes:
    """A ContentInfo(SignedData) over `content`, signed by `key` whose certificate is `certificate`.

    `digest` is the hash used; `digest_oid` / `signature_oid` what the SignerInfo states
    (default: the digest's OID; rsaEncryption or dsa-with-sha1). `signed_content` is what
    is actually digested and signed (default `content`); `message_digest` overrides the
    attribute (bytes, a list for several values, None to omit it); `sid` is "ski", a serial
    number, or None for the certificate's issuer and serial; `tamper` flips a signature bit.
    """
    signed_over = content if signed_content is None else signed_content
    attributes = None
    if signed_attributes:
        attributes = _attributes(signed_over, digest, message_digest=message_digest, content_type_attr=content_type_attr,
                                 signing_time=signing_time, extra=extra_attributes)
        message = attributes.dump()
    else:
        message = signed_over
    signature = bytearray(_sign(key, message, digest))
    if tamper:
        signature[len(signature) // 2] ^= 0x01
    natural_signature = DSA_WITH_SHA1 if isinstance(key, dsa.DSAPrivateKey) else RSA_ENCRYPTION
    signer = {
        "version": "v1" if sid != "ski" else "v3",
        "sid": _sid(certificate, sid),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest_oid or DIGEST_OIDS[digest]}),
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": signature_oid or natural_signature}),
        "signature": bytes(signature),
    }
    if attributes is not None:
        signer["signed_attrs"] = attributes
    encapsulated = {"content_type": econtent_type}
    if embed_content:
        encapsulated["content"] = core.OctetString(content)
    body = {
        "version": "v1",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest_oid or DIGEST_OIDS[digest]})],
        "encap_content_info": encapsulated,
        "signer_infos": [cms.SignerInfo(signer) for _ in range(signers)],
    }
    if certificates:
        body["certificates"] = [asn1_x509.Certificate.load(der(cert)) for cert in certificates]
    if outer_type != "signed_data":
        return cms.ContentInfo({"content_type": outer_type, "content": core.OctetString(content)}).dump()
    return cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData(body)}).dump()
