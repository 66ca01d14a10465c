"""Bundled vendor trust anchors, as data: one folder of PEM files per vendor.

Each folder has a `SOURCES.md` naming where every file came from and its SHA-256
fingerprint. Operators add roots or narrow them through configuration; this module only
reads what ships with the package.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from asn1crypto import pem


@lru_cache(maxsize=None)
def bundled(folder: str) -> tuple[bytes, ...]:
    """DER of every certificate in every `*.pem` of `attestation/roots/<folder>/`, sorted by file name."""
    base = resources.files(__name__).joinpath(folder)
    ders: list[bytes] = []
    for entry in sorted(base.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".pem"):
            ders.extend(pem_certificates(entry.read_bytes()))
    return tuple(ders)


def pem_certificates(data: bytes) -> list[bytes]:
    """All CERTIFICATE blocks of a PEM bundle, as DER."""
    return [der for kind, _headers, der in pem.unarmor(data, multiple=True) if kind == "CERTIFICATE"]
