"""Zero-configuration CA bootstrap: the root, the intermediate and the server's own TLS certificate.

On first start `load_or_create_ca` creates `<data_dir>/ca/` with a self-signed root
(10 years) and an intermediate (5 years, pathLen 0) that signs every leaf. The four files
are written into a staging directory that is renamed into place, so a crash leaves either
no CA or a whole one, and two processes racing on first start end up sharing one CA.
Later starts load the files and refuse to run on a set that does not fit together.

The root key is not needed after creation; it is kept (0600) so the operator can re-issue
the intermediate, and may be moved offline: loading does not read it.
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
) -> x509.Certificate:
    """A CA certificate; self-signed unless `issuer` names the signer."""
    not_before, lifetime = validity
    return (
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
        .sign(signer, signature_hash_for(signer))
    )


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
