"""The device client's state directory (default `$XDG_STATE_HOME/acmeda`, i.e.
`~/.local/state/acmeda`): what persists between `enroll` and `renew`.

    account-key.pem   the ACME account key (ES256, PKCS#8 PEM, mode 0600)
    account.json      {"directory": URL, "url": account URL}
    ak.json           the AK: TPM blobs, its certificate and chain, the permanent identifier
    device.json       the certificate key's TPM blobs and the certificate chain (PEM), together
    certificate.pem   the certificate chain, for other programs (a copy of device.json's)

Nothing here is a secret in the clear except the account key: the private blobs are wrapped
by the TPM and load only in it. Every file is written whole (temporary file, then rename),
mode 0600, so a crash leaves the previous version, never half of one; device.json keeps the
key and its certificate in one file so they never disagree.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from client.csr import PermanentIdentifier

if TYPE_CHECKING:  # tpm2-pytss is the optional `device` extra: `default_state_dir` must load without it
    from client.tpm import KeyBlob


class StateError(Exception):
    """The state directory holds something unreadable: the message names the file."""


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "acmeda"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


@dataclass(frozen=True)
class AkRecord:
    """An enrolled AK: its TPM blobs, the CA's certificate for it, and what the CA attested."""

    directory: str
    blob: KeyBlob
    certificate: bytes  # DER
    chain: tuple[bytes, ...]  # DER, acmeda's attestation intermediate (and above)
    identifier: PermanentIdentifier

    def valid_at(self, moment: datetime) -> bool:
        cert = x509.load_der_x509_certificate(self.certificate)
        return cert.not_valid_before_utc <= moment < cert.not_valid_after_utc

    def to_json(self) -> dict[str, Any]:
        identifier = {"value": self.identifier.value}
        if self.identifier.assigner is not None:
            identifier["assigner"] = self.identifier.assigner
        return {"directory": self.directory, "public": _b64(self.blob.public), "private": _b64(self.blob.private),
                "certificate": _b64(self.certificate), "chain": [_b64(c) for c in self.chain],
                "permanentIdentifier": identifier}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AkRecord:
        from client.tpm import KeyBlob

        identifier = doc["permanentIdentifier"]
        return cls(doc["directory"], KeyBlob(_unb64(doc["public"]), _unb64(doc["private"])), _unb64(doc["certificate"]),
                   tuple(_unb64(c) for c in doc["chain"]), PermanentIdentifier(identifier["value"], identifier.get("assigner")))


@dataclass(frozen=True)
class DeviceRecord:
    """The certificate key (TPM blobs) and its certificate chain (PEM, leaf first)."""

    directory: str
    key: KeyBlob
    chain_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain_pem)[0]

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "public": _b64(self.key.public), "private": _b64(self.key.private),
                "chain": self.chain_pem.decode("ascii")}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DeviceRecord:
        from client.tpm import KeyBlob

        return cls(doc["directory"], KeyBlob(_unb64(doc["public"]), _unb64(doc["private"])), doc["chain"].encode("ascii"))


class StateDir:
    """Reads and writes the files above; `StateError` names any file it cannot use."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def account_key_path(self) -> Path:
        return self.path / "account-key.pem"

    @property
    def certificate_path(self) -> Path:
        return self.path / "certificate.pem"

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def account_url(self, directory: str) -> str | None:
        doc = self._read("account.json")
        return doc.get("url") if doc and doc.get("directory") == directory else None

    def save_account(self, directory: str, url: str) -> None:
        self._write("account.json", json.dumps({"directory": directory, "url": url}).encode())

    def ak(self) -> AkRecord | None:
        return self._record("ak.json", AkRecord)

    def save_ak(self, record: AkRecord) -> None:
        self._write("ak.json", json.dumps(record.to_json(), indent=1).encode())

    def device(self) -> DeviceRecord | None:
        return self._record("device.json", DeviceRecord)

    def save_device(self, record: DeviceRecord) -> None:
        self._write("device.json", json.dumps(record.to_json(), indent=1).encode())
        self._write("certificate.pem", record.chain_pem)

    def _record(self, name: str, kind):
        doc = self._read(name)
        if doc is None:
            return None
        try:
            return kind.from_json(doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"{self.path / name} is not a valid {kind.__name__} ({type(exc).__name__}: {exc})") from None

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.path / name).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read {self.path / name}: {exc}") from None
        if not isinstance(doc, dict):
            raise StateError(f"{self.path / name} does not hold a JSON object")
        return doc

    def _write(self, name: str, data: bytes) -> None:
        self.ensure()
        write_private_file(self.path / name, data)


def write_private_file(target: Path, data: bytes) -> None:
    """Replace `target` with `data` atomically, readable by the owner only (0600): a crash
    leaves the old file or the new one, never half of either."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
