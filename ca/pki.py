"""Zero-configuration CA bootstrap: the root, the intermediate and the server's own TLS certificate.

On first start `load_or_create_ca` creates `<data_dir>/ca/` with a self-signed root
(10 years) and an intermediate (5 years, pathLen 0) that signs every leaf. The four files
are written into a staging directory that is renamed into place, so a crash leaves either
no CA or a whole one, and two processes racing on first start end up sharing one CA.
Later starts load the files and refuse to run on a set that does not fit together.

The root key is not needed after creation; it is kept (0600) so the operator can re-issue
the intermediate, and may be moved offline: loading does not read it.

`load_or_create_attestation_ca` adds acmeda's attestation intermediate in `<data_dir>/ca/
attestation/` (same file names, same atomic creation), issued by the root with pathLen 0 and
EKU tcg-kp-AIKCertificate: it signs only the AK certificates of TPM AK enrollment, and is the
`tpm` format's trust anchor for them. Creating it needs the root key once; a CA whose root
key was moved offline before the attestation CA existed runs without AK enrollment.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ca.clock import Clock
from ca.identifiers import Identifier, IdentifierType
from ca.issuance import IssuanceRequest, Issuer, Profile, new_serial
from ca.keys import (
    KeyFileError,
    KeyType,
    PrivateKey,
    PublicKey,
    generate_private_key,
    load_private_key,
    public_key_der,
    signature_hash_for,
    write_certificate,
    write_private_key,
)

log = logging.getLogger(__name__)

ROOT_CERT, ROOT_KEY = "root.pem", "root.key"
INTERMEDIATE_CERT, INTERMEDIATE_KEY = "intermediate.pem", "intermediate.key"
TLS_CHAIN, TLS_KEY = "server.pem", "server.key"

ATTESTATION_CA_DIR = "attestation"
OID_TCG_KP_AIK_CERTIFICATE = x509.ObjectIdentifier("2.23.133.8.3")

ROOT_LIFETIME = timedelta(days=3652)  # ten years, leap days included
INTERMEDIATE_LIFETIME = timedelta(days=1826)  # five years
CA_BACKDATE = timedelta(hours=1)  # tolerate relying parties whose clocks run a little slow
TLS_PROFILE = Profile("tls-server", timedelta(days=90), (ExtendedKeyUsageOID.SERVER_AUTH,))
DEFAULT_TLS_NAMES = ("localhost", "127.0.0.1", "::1")


class CAStoreError(ValueError):
    """The CA files on disk are incomplete, unreadable or do not belong together."""


@dataclass(frozen=True)
class CertificateAuthority:
    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: PrivateKey
    root_path: Path

    @property
    def root_fingerprint_sha256(self) -> str:
        return self.root.fingerprint(hashes.SHA256()).hex()

    @property
    def intermediate_pem(self) -> bytes:
        return self.intermediate.public_bytes(serialization.Encoding.PEM)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)


def load_or_create_ca(
    data_dir: Path,
    *,
    key_type: KeyType,
    passphrase: bytes | None,
    clock: Clock,
    common_name: str = "acmeda",
    randbits: Callable[[int], int] = secrets.randbits,
) -> tuple[CertificateAuthority, bool]:
    """Load the CA under `data_dir/ca`, or create it; the bool says it was created now.

    `key_type` and `common_name` only matter at creation.
    """
    ca_dir = Path(data_dir) / "ca"
    created = False
    if not any((ca_dir / name).exists() for name in (ROOT_CERT, ROOT_KEY, INTERMEDIATE_CERT, INTERMEDIATE_KEY)):
        created = _create_ca(ca_dir, key_type, passphrase, clock.now(), common_name, randbits)
        if created:
            log.info("created a new CA in %s", ca_dir)
    return _load_ca(ca_dir, passphrase, clock.now()), created


def _create_ca(
    ca_dir: Path,
    key_type: KeyType,
    passphrase: bytes | None,
    now: datetime,
    common_name: str,
    randbits: Callable[[int], int],
) -> bool:
    """Write a new CA into place; False if another process put one there first."""
    root_key, intermediate_key = generate_private_key(key_type), generate_private_key(key_type)
    root_name = _ca_name(f"{common_name} Root CA")
    root = _ca_certificate(
        subject=root_name,
        signer=root_key,
        public_key=root_key.public_key(),
        path_length=None,
        validity=(now - CA_BACKDATE, ROOT_LIFETIME),
        serial=new_serial(randbits),
    )
    intermediate = _ca_certificate(
        subject=_ca_name(f"{common_name} Intermediate CA"),
        signer=root_key,
        public_key=intermediate_key.public_key(),
        path_length=0,
        validity=(now - CA_BACKDATE, INTERMEDIATE_LIFETIME),
        serial=new_serial(randbits),
        issuer=root_name,
    )
    ca_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ca-staging-", dir=ca_dir.parent))  # mkdtemp makes it 0700
    try:
        write_private_key(staging / ROOT_KEY, root_key, passphrase)
        write_private_key(staging / INTERMEDIATE_KEY, intermediate_key, passphrase)
        write_certificate(staging / ROOT_CERT, _pem(root))
        write_certificate(staging / INTERMEDIATE_CERT, _pem(intermediate))
        return _move_into_place(staging, ca_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, ca_dir: Path) -> bool:
    try:
        os.rename(staging, ca_dir)  # atomic; fails if another process already filled ca_dir
    except OSError:
        if any(ca_dir.iterdir()):
            return False
        raise
    fd = os.open(ca_dir.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _ca_name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_certificate(
    *,
    subject: x509.Name,
    signer: PrivateKey,
    public_key: PublicKey,
    path_length: int | None,
    validity: tuple[datetime, timedelta],
    serial: int,
    issuer: x509.Name | None = None,
    extended_key_usages: Sequence[x509.ObjectIdentifier] = (),
) -> x509.Certificate:
    """A CA certificate; self-signed unless `issuer` names the signer. An EKU restricts what it may certify."""
    not_before, lifetime = validity
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    if extended_key_usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usages)), critical=False)
    return builder.sign(signer, signature_hash_for(signer))


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def _load_ca(ca_dir: Path, passphrase: bytes | None, now: datetime) -> CertificateAuthority:
    missing = [name for name in (ROOT_CERT, INTERMEDIATE_CERT, INTERMEDIATE_KEY) if not (ca_dir / name).exists()]
    if missing:
        raise CAStoreError(
            f"CA directory {ca_dir} is incomplete (missing {', '.join(missing)}); "
            "restore the files, or move the directory away to create a new CA"
        )
    root = _load_certificate(ca_dir / ROOT_CERT)
    intermediate = _load_certificate(ca_dir / INTERMEDIATE_CERT)
    intermediate_key = load_private_key(ca_dir / INTERMEDIATE_KEY, passphrase)
    _check_ca_fits(ca_dir, root, intermediate, intermediate_key, now)
    return CertificateAuthority(root, intermediate, intermediate_key, ca_dir / ROOT_CERT)


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CAStoreError(f"cannot load certificate {path}: {exc}") from None


def _check_ca_fits(
    ca_dir: Path, root: x509.Certificate, intermediate: x509.Certificate, key: PrivateKey, now: datetime
) -> None:
    try:
        intermediate.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        raise CAStoreError(f"{ca_dir / INTERMEDIATE_CERT} is not signed by {ca_dir / ROOT_CERT}") from None
    if public_key_der(key) != public_key_der(intermediate.public_key()):
        raise CAStoreError(f"{ca_dir / INTERMEDIATE_KEY} is not the key of {ca_dir / INTERMEDIATE_CERT}")
    constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not constraints.ca:
        raise CAStoreError(f"{ca_dir / INTERMEDIATE_CERT} is not a CA certificate")
    if not intermediate.not_valid_before_utc <= now < intermediate.not_valid_after_utc:
        raise CAStoreError(
            f"{ca_dir / INTERMEDIATE_CERT} is valid from {intermediate.not_valid_before_utc.isoformat()} "
            f"to {intermediate.not_valid_after_utc.isoformat()}, not now ({now.isoformat()}); re-issue it"
        )


@dataclass(frozen=True)
class AttestationAuthority:
    """acmeda's attestation intermediate: it signs AK certificates and nothing else."""

    certificate: x509.Certificate
    key: PrivateKey

    @property
    def der(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.DER)


def load_or_create_attestation_ca(
    data_dir: Path,
    ca: CertificateAuthority,
    *,
    passphrase: bytes | None,
    clock: Clock,
    randbits: Callable[[int], int] = secrets.randbits,
) -> AttestationAuthority | None:
    """Load `<data_dir>/ca/attestation/`, or create it with the root key; None if that key is gone."""
    ca_dir = Path(data_dir) / "ca"
    ak_dir = ca_dir / ATTESTATION_CA_DIR
    if not (ak_dir / INTERMEDIATE_CERT).exists():
        if not (ca_dir / ROOT_KEY).exists():
            log.warning("%s is missing, so the attestation CA cannot be created: TPM AK enrollment is off "
                        "until the root key is back for one start", ca_dir / ROOT_KEY)
            return None
        root_key = load_private_key(ca_dir / ROOT_KEY, passphrase)
        if public_key_der(root_key) != public_key_der(ca.root.public_key()):
            raise CAStoreError(f"{ca_dir / ROOT_KEY} is not the key of {ca_dir / ROOT_CERT}")
        if _create_attestation_ca(ak_dir, ca, root_key, passphrase, clock.now(), randbits):
            log.info("created the attestation CA in %s", ak_dir)
    return _load_attestation_ca(ak_dir, ca, passphrase, clock.now())


def _attestation_ca_name(root: x509.Certificate) -> x509.Name:
    names = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    root_cn = str(names[0].value) if names else "acmeda Root CA"
    base = root_cn[: -len(" Root CA")] if root_cn.endswith(" Root CA") else root_cn
    return _ca_name(f"{base} Attestation CA")


def _create_attestation_ca(ak_dir: Path, ca: CertificateAuthority, root_key: PrivateKey, passphrase: bytes | None,
                           now: datetime, randbits: Callable[[int], int]) -> bool:
    """Write the attestation CA into place; False if another process put one there first."""
    key = generate_private_key(_key_type_of(ca.intermediate_key))
    not_before = now - CA_BACKDATE
    lifetime = min(INTERMEDIATE_LIFETIME, ca.root.not_valid_after_utc - not_before)
    certificate = _ca_certificate(
        subject=_attestation_ca_name(ca.root), signer=root_key, public_key=key.public_key(), path_length=0,
        validity=(not_before, lifetime), serial=new_serial(randbits), issuer=ca.root.subject,
        extended_key_usages=(OID_TCG_KP_AIK_CERTIFICATE,),
    )
    staging = Path(tempfile.mkdtemp(prefix=".attestation-staging-", dir=ak_dir.parent))
    try:
        write_private_key(staging / INTERMEDIATE_KEY, key, passphrase)
        write_certificate(staging / INTERMEDIATE_CERT, _pem(certificate))
        return _move_into_place(staging, ak_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _key_type_of(key: PrivateKey) -> KeyType:
    """The KeyType of an existing CA key, so the attestation CA uses the same kind."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return KeyType.ECDSA_P384 if isinstance(key.curve, ec.SECP384R1) else KeyType.ECDSA_P256
    return {3072: KeyType.RSA_3072, 4096: KeyType.RSA_4096}.get(key.key_size, KeyType.RSA_2048)


def _load_attestation_ca(ak_dir: Path, ca: CertificateAuthority, passphrase: bytes | None,
                         now: datetime) -> AttestationAuthority:
    if not (ak_dir / INTERMEDIATE_KEY).exists():
        raise CAStoreError(f"{ak_dir} has a certificate but no {INTERMEDIATE_KEY}; restore it, "
                           "or move the directory away to create a new attestation CA")
    certificate = _load_certificate(ak_dir / INTERMEDIATE_CERT)
    key = load_private_key(ak_dir / INTERMEDIATE_KEY, passphrase)
    try:
        certificate.verify_directly_issued_by(ca.root)
    except (ValueError, TypeError, InvalidSignature):
        raise CAStoreError(f"{ak_dir / INTERMEDIATE_CERT} is not signed by {ca.root_path}") from None
    if public_key_der(key) != public_key_der(certificate.public_key()):
        raise CAStoreError(f"{ak_dir / INTERMEDIATE_KEY} is not the key of {ak_dir / INTERMEDIATE_CERT}")
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
        raise CAStoreError(f"{ak_dir / INTERMEDIATE_CERT} is not valid now ({now.isoformat()}); "
                           "move the directory away to create a new attestation CA")
    return AttestationAuthority(certificate, key)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def load_or_create_tls_certificate(
    data_dir: Path,
    ca: CertificateAuthority,
    hostnames: Sequence[str],
    clock: Clock,
    *,
    randbits: Callable[[int], int] = secrets.randbits,
) -> tuple[Path, Path]:
    """The server's own certificate chain and key under `data_dir/tls`, (re-)issued when needed."""
    tls_dir = Path(data_dir) / "tls"
    chain_path, key_path = tls_dir / TLS_CHAIN, tls_dir / TLS_KEY
    identifiers = tls_identifiers(hostnames)
    now = clock.now()
    reason = _tls_reissue_reason(chain_path, key_path, ca, identifiers, now)
    if reason is None:
        return chain_path, key_path
    log.info("issuing the server TLS certificate: %s", reason)
    key = generate_private_key(KeyType.ECDSA_P256)
    request = IssuanceRequest(
        public_key=key.public_key(),
        identifiers=identifiers,
        profile=TLS_PROFILE,
        serial=new_serial(randbits),
        not_before=now - TLS_PROFILE.backdate,
    )
    issued = Issuer(ca).issue(request)
    # Key first: a crash between the two writes leaves a mismatch that the next start repairs.
    write_private_key(key_path, key, None)
    write_certificate(chain_path, issued.pem_chain.encode())
    return chain_path, key_path


def tls_identifiers(hostnames: Sequence[str]) -> tuple[Identifier, ...]:
    """The names the server certificate covers: the given ones first (the first is the CN), then loopback."""
    identifiers: dict[Identifier, None] = {}
    for name in (*hostnames, *DEFAULT_TLS_NAMES):
        identifiers.setdefault(_tls_identifier(name.strip()), None)
    return tuple(identifiers)


def _tls_identifier(name: str) -> Identifier:
    if not name:
        raise ValueError("a TLS hostname must not be empty")
    try:
        return Identifier(IdentifierType.IP, str(ipaddress.ip_address(name)))
    except ValueError:
        return Identifier(IdentifierType.DNS, name.lower())


def _tls_reissue_reason(
    chain_path: Path, key_path: Path, ca: CertificateAuthority, identifiers: tuple[Identifier, ...], now: datetime
) -> str | None:
    """Why the stored server certificate cannot be served as is, or None when it can."""
    try:
        chain = x509.load_pem_x509_certificates(chain_path.read_bytes())
        key = load_private_key(key_path, None)
    except (OSError, ValueError, KeyFileError) as exc:
        return f"no usable certificate and key in {chain_path.parent} ({exc})"
    leaf = chain[0]
    if chain[1:] != [ca.intermediate] or leaf.issuer != ca.intermediate.subject:
        return "the stored certificate was not issued by the current intermediate"
    if public_key_der(key) != public_key_der(leaf.public_key()):
        return "the stored key does not match the stored certificate"
    if _san_identifiers(leaf) != set(identifiers):
        return "the set of server names changed"
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    if leaf.not_valid_after_utc - now < lifetime / 3:
        return f"less than a third of its lifetime is left (expires {leaf.not_valid_after_utc.isoformat()})"
    return None


def _san_identifiers(certificate: x509.Certificate) -> set[Identifier]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    dns = {Identifier(IdentifierType.DNS, name) for name in san.get_values_for_type(x509.DNSName)}
    ips = {Identifier(IdentifierType.IP, str(ip)) for ip in san.get_values_for_type(x509.IPAddress)}
    return dns | ips
