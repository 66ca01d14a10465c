"""testdata/fleet/make_fleet.py writes a fleet whose statements verify against its roots."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from attestation import verify_attestation
from attestation.context import TrustStore, VerificationContext
from attestation.registry import FORMATS
from attestation.roots import pem_certificates
from tests.conftest import START

REPO = Path(__file__).resolve().parents[2]


def test_generated_fleet_verifies_against_its_own_roots(tmp_path):
    subprocess.run([sys.executable, str(REPO / "testdata/fleet/make_fleet.py"), str(tmp_path), "--token", "tok",
                    "--thumbprint", "thumb"], check=True, capture_output=True)
    generated = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert generated == ["android-key", "apple", "step", "tpm"]  # the device formats; clouds have their own stand-ins
    for fmt in generated:
        folder = tmp_path / fmt
        trust = TrustStore(roots={fmt: tuple(pem_certificates((folder / "root.pem").read_bytes()))})
        binding = FORMATS[fmt].acme_binding("tok", b"tok.thumb")
        evidence = verify_attestation((folder / "attobj.cbor").read_bytes(), VerificationContext(binding, START, trust), FORMATS)
        assert evidence.fmt == fmt
        assert (folder / "identifier.txt").read_text().strip() in {p.value for p in evidence.permanent_identifiers}
