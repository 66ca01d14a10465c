"""Fleet for fmt "aws-iid": stand-in AWS signing certificates and EC2 instance identity documents.

No real instance can be launched here, so generated self-signed certificates stand in for
AWS's: a generic DSA key for PKCS#7 in every region, an RSA-2048 key per region for
PKCS#7 from /rsa2048, and an RSA key per region for the base64 /signature. `keys()`
returns them with the region pins a release would bundle (`aws_iid.Pin`), so the
region and kind checks run as they do on AWS's real certificates.

`attest(kind, document, ...)` returns an `AwsIidAttestation`: the attStmt an instance
sends, the `TrustStore` and a `Format` verifying with the fleet's pins. Knobs for every
checked field:

- `kind`: "pkcs7-dsa" (/pkcs7), "pkcs7-rsa2048" (/rsa2048) or "signature" (/signature).
- `document`: a `Document`; each field is a knob, `drop` removes members, `extra` adds
  them, `raw` replaces the bytes outright.
- `signer`: which stand-in key signs ("dsa", "rsa2048:<region>", "rsa:<region>", or
  "rogue-dsa" / "rogue-rsa", not trusted); `validity` of the signing certificate.
- `pkcs7`: keyword arguments for `tests.fleet.pkcs7.signed_data` (digest, signed
  attributes, embedded content, tampering, ...); `signed_document` signs other bytes.
- `stmt`: attStmt members replaced (a None value removes the member).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Mapping

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa
from cryptography.x509.oid import NameOID

from attestation.context import TrustStore
from attestation.format import Format, key_authorization_binding
from attestation.formats import aws_iid
from tests.fleet.pkcs7 import der, signed_data

NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=timezone.utc)  # = tests/conftest.py START
VALID = (datetime(2012, 1, 5, tzinfo=timezone.utc), datetime(2038, 1, 5, tzinfo=timezone.utc))
REGIONS = ("us-east-1", "eu-west-1")
INSTANCE_ID = "i-0f1ee70000000001a"  # 17 hex digits, as AWS writes them today


@dataclass(frozen=True)
class Document:
    """An instance identity document as IMDS serves it (pretty-printed, AWS's member order)."""

    instance_id: str = INSTANCE_ID
    account_id: str = "123456789012"
    region: str = "us-east-1"
    availability_zone: str = "us-east-1a"
    image_id: str = "ami-0abcdef1234567890"
    instance_type: str = "t3.micro"
    pending_time: str = "2026-10-01T08:00:00Z"
    architecture: str = "x86_64"
    extra: Mapping[str, Any] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    raw: bytes | None = None

    def to_bytes(self) -> bytes:
        if self.raw is not None:
            return self.raw
        members = {
            "accountId": self.account_id, "architecture": self.architecture, "availabilityZone": self.availability_zone,
            "billingProducts": None, "devpayProductCodes": None, "marketplaceProductCodes": None,
            "imageId": self.image_id, "instanceId": self.instance_id, "instanceType": self.instance_type,
            "kernelId": None, "pendingTime": self.pending_time, "privateIp": "172.31.0.10", "ramdiskId": None,
            "region": self.region, "version": "2017-09-30", **self.extra,
        }
        for name in self.drop:
            members.pop(name, None)
        return json.dumps(members, indent=2, separators=(",", " : ")).encode()  # AWS's "key" : value layout


@dataclass(frozen=True)
class Key:
    certificate: x509.Certificate
    private_key: Any


@dataclass(frozen=True)
class AwsKeys:
    by_name: Mapping[str, Key]  # "dsa", "rsa2048:<region>", "rsa:<region>", "rogue-*"
    pins: Mapping[bytes, aws_iid.Pin]

    def trust(self) -> TrustStore:
        trusted = tuple(der(k.certificate) for name, k in self.by_name.items() if not name.startswith("rogue"))
        return TrustStore(roots={aws_iid.FMT: trusted})

    def format(self) -> Format:
        return Format(aws_iid.FMT, aws_iid.verifier(self.pins), key_authorization_binding)


@dataclass(frozen=True)
class AwsIidAttestation:
    att_stmt: dict[str, Any]
    document: bytes
    trust: TrustStore
    fmt: Format  # verifies with the fleet's region pins

    def att_obj(self) -> bytes:
        return cbor2.dumps({"fmt": aws_iid.FMT, "attStmt": self.att_stmt})


def _self_signed(name: str, key: Any, validity: tuple[datetime, datetime]) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fleet Amazon Web Services LLC"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(validity[0]).not_valid_after(validity[1])
            .sign(key, hashes.SHA256()))


@lru_cache(maxsize=None)
def _private_key(kind: str, name: str) -> Any:
    if kind == "dsa":
        return dsa.generate_private_key(key_size=1024)
    return rsa.generate_private_key(public_exponent=65537, key_size=2048 if kind == "rsa2048" else 1024)


@lru_cache(maxsize=None)
def key(name: str, validity: tuple[datetime, datetime] = VALID) -> Key:
    """A stand-in signing key by name; the same name and validity give the same certificate."""
    kind = name.removeprefix("rogue-").split(":")[0]
    private = _private_key(kind, name)
    return Key(_self_signed(f"Fleet EC2 {name}", private, validity), private)


_PIN_KIND = {"dsa": aws_iid.KIND_DSA, "rsa2048": aws_iid.KIND_RSA2048, "rsa": aws_iid.KIND_RSA}


@lru_cache(maxsize=None)
def keys(validity: tuple[datetime, datetime] = VALID) -> AwsKeys:
    """The stand-in keys and their pins: DSA for every region, RSA and RSA-2048 per region."""
    names = ["dsa"] + [f"{kind}:{region}" for kind in ("rsa2048", "rsa") for region in REGIONS]
    by_name = {name: key(name, validity) for name in names}
    by_name.update({"rogue-dsa": key("rogue-dsa"), "rogue-rsa": key("rogue-rsa:us-east-1")})
    pins = {}
    for name in names:
        kind, _, region = name.partition(":")
        pins[der(by_name[name].certificate)] = aws_iid.Pin(_PIN_KIND[kind], frozenset({region or aws_iid.ANY_REGION}))
    return AwsKeys(by_name, pins)


_DEFAULT_SIGNER = {"pkcs7-dsa": "dsa", "pkcs7-rsa2048": "rsa2048:{region}", "signature": "rsa:{region}"}


def attest(
    kind: str = "pkcs7-dsa",
    document: Document = Document(),
    *,
    signer: str | None = None,
    validity: tuple[datetime, datetime] = VALID,
    pkcs7: Mapping[str, Any] | None = None,
    signed_document: bytes | None = None,
    stmt: Mapping[str, Any] | None = None,
) -> AwsIidAttestation:
    fleet = keys()
    name = (signer or _DEFAULT_SIGNER[kind]).format(region=document.region)
    signing = fleet.by_name[name] if validity == VALID and name in fleet.by_name else key(name, validity)
    body = document.to_bytes()
    signed = body if signed_document is None else signed_document
    if kind == "signature":
        att_stmt: dict[str, Any] = {"document": body, "signature": _rsa_sign(signing, signed)}
    else:
        options = {"digest": "sha1" if kind == "pkcs7-dsa" else "sha256", "signing_time": NOW - timedelta(days=31),
                   **(pkcs7 or {})}
        blob = signed_data(signed, signing.certificate, signing.private_key, **options)
        att_stmt = {"document": body, "pkcs7": blob}
    for member, value in (stmt or {}).items():
        if value is None:
            att_stmt.pop(member, None)
        else:
            att_stmt[member] = value
    if validity == VALID:
        return AwsIidAttestation(att_stmt, body, fleet.trust(), fleet.format())
    # The re-dated certificate (same key) replaces the fleet's one, with the same pin.
    normal = der(fleet.by_name[name].certificate)
    redated = der(signing.certificate)
    pins = {**{d: p for d, p in fleet.pins.items() if d != normal}, redated: fleet.pins[normal]}
    roots = tuple(d for d in fleet.trust().roots_for(aws_iid.FMT) if d != normal) + (redated,)
    fmt = Format(aws_iid.FMT, aws_iid.verifier(pins), key_authorization_binding)
    return AwsIidAttestation(att_stmt, body, TrustStore(roots={aws_iid.FMT: roots}), fmt)


def _rsa_sign(signing: Key, message: bytes) -> bytes:
    return signing.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
