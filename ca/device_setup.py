"""Device attestation as the operator configured it: enabled formats, trust anchors, the
Android revocation list and the device policy, built from `Config` at start-up; and the TPM
EK trust of AK enrollment (`ek_trust`), with acmeda's attestation CA as the `tpm` anchor of
the AK certificates it issues (`with_attestation_ca`)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Mapping

from attestation.context import RevocationCheck, TrustStore
from attestation.evidence import TrustLevel
from attestation.format import Format
from attestation.formats import android_key
from attestation.registry import FORMATS, default_trust, trust_entries
from attestation.roots import pem_certificates
from attestation.tpm.ek import EkTrust, default_ek_trust
from ca.config import Config, ConfigError
from ca.device_policy import DevicePolicy

log = logging.getLogger(__name__)


def enabled_formats(config: Config) -> dict[str, Format]:
    unknown = set(config.attestation_formats) - set(FORMATS)
    if unknown:
        raise ConfigError(f"attestation_formats: unknown {', '.join(sorted(unknown))}; known: {', '.join(sorted(FORMATS))}")
    return {name: FORMATS[name] for name in config.attestation_formats}


def trust_store(config: Config, formats: Mapping[str, Format]) -> TrustStore:
    """Bundled vendor roots and keys, plus (or, with `attestation_roots_only`, replaced by) the
    operator's: `<attestation_roots>/<entry>/*.pem` certificates and `*.json` keys (JWK)."""
    bundled = default_trust()
    entries = [entry for name in formats for entry in trust_entries(name)]
    roots = {} if config.attestation_roots_only else {entry: bundled.roots_for(entry) for entry in entries}
    keys = {} if config.attestation_roots_only else {entry: bundled.keys_for(entry) for entry in entries}
    if config.attestation_roots is not None:
        for entry in entries:
            roots[entry] = tuple(roots.get(entry, ())) + _operator_roots(config.attestation_roots / entry)
            keys[entry] = tuple(keys.get(entry, ())) + _operator_keys(config.attestation_roots / entry)
    intermediates = {entry: bundled.intermediates_for(entry) for entry in entries}
    return TrustStore(roots=roots, intermediates=intermediates, keys={k: v for k, v in keys.items() if v})


def with_attestation_ca(trust: TrustStore, attestation_ca_der: bytes) -> TrustStore:
    """`trust` with acmeda's attestation CA among the `tpm` anchors, so that the AK
    certificates it issued verify in device-attest-01. It is acmeda's own CA, not a vendor
    root, so `attestation_roots_only` does not narrow it away."""
    roots = dict(trust.roots)
    roots["tpm"] = tuple(dict.fromkeys((*trust.roots_for("tpm"), attestation_ca_der)))
    return replace(trust, roots=roots)


def ek_trust(config: Config) -> EkTrust:
    """The EK roots of AK enrollment: the bundled TPM maker roots plus (or, with
    `tpm_ek_roots_only`, replaced by) `tpm_ek_roots/*.pem`; `tpm_ek_roots/intermediates/*.pem`
    join the bundled intermediate pool."""
    bundled = default_ek_trust()
    roots = () if config.tpm_ek_roots_only else bundled.roots
    intermediates = bundled.intermediates
    if config.tpm_ek_roots is not None:
        roots += _operator_roots(config.tpm_ek_roots)
        intermediates += _operator_roots(config.tpm_ek_roots / "intermediates")
    elif config.tpm_ek_roots_only:
        raise ConfigError("tpm_ek_roots_only needs tpm_ek_roots: with neither, no EK would be trusted")
    return EkTrust(tuple(dict.fromkeys(roots)), tuple(dict.fromkeys(intermediates)))


def _operator_keys(folder: Path) -> tuple[bytes, ...]:
    """Signing keys (JWK JSON documents) the operator refreshed, e.g. Google's token keys."""
    if not folder.is_dir():
        return ()
    found = tuple(path.read_bytes() for path in sorted(folder.glob("*.json")))
    if found:
        log.info("trusting %d operator key(s) from %s", len(found), folder)
    return found


def _operator_roots(folder: Path) -> tuple[bytes, ...]:
    if not folder.is_dir():
        return ()
    ders: list[bytes] = []
    for pem in sorted(folder.glob("*.pem")):
        found = pem_certificates(pem.read_bytes())
        if not found:
            raise ConfigError(f"{pem}: no CERTIFICATE block")
        ders.extend(found)
    log.info("trusting %d operator root(s) from %s", len(ders), folder)
    return tuple(ders)


class RefreshingRevocationList:
    """Google's attestation status list from a local file, re-read whenever the file changes.

    A file that cannot be read or parsed keeps the last good list (and is logged), so a
    half-written refresh never silently empties the list.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._list: RevocationCheck = lambda serial: None
        self._reload()
        if self._stamp is None:
            raise ConfigError(f"android_revocation_list: cannot load {path}")

    def _reload(self) -> None:
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._list = android_key.load_revocation_list(self._path.read_bytes())
                self._stamp = stamp
        except (OSError, ValueError) as exc:
            log.error("android revocation list %s not reloaded: %s", self._path, exc)

    def __call__(self, serial: int) -> str | None:
        self._reload()
        return self._list(serial)


def revocation_checks(config: Config) -> dict[str, RevocationCheck]:
    if config.android_revocation_list is None:
        return {}
    return {"android-key": RefreshingRevocationList(config.android_revocation_list)}


def device_policy(config: Config) -> DevicePolicy:
    try:
        level = TrustLevel(config.device_min_trust_level)
    except ValueError:
        raise ConfigError(f"device_min_trust_level: {config.device_min_trust_level!r} is not one of "
                         + ", ".join(t.value for t in TrustLevel)) from None
    return DevicePolicy(
        min_trust_level=level,
        min_os_version=config.device_min_os_version,
        min_patch_level=config.device_min_patch_level,
        require_verified_boot=config.device_require_verified_boot,
        require_bootloader_locked=config.device_require_bootloader_locked,
        allow_nitro_debug=config.device_allow_nitro_debug,
    )
