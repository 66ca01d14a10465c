"""Generate a test fleet: for every attestation format, a test root standing in for the vendor's
and a device-attest-01 attestation object bound to a given ACME key authorization.

    python testdata/fleet/make_fleet.py OUT_DIR [--token T --thumbprint P]

writes OUT_DIR/<format>/root.pem (give OUT_DIR to `acmeda serve --attestation-roots OUT_DIR`
to trust the fleet), OUT_DIR/<format>/attobj.cbor, OUT_DIR/<format>/device-key.pem (the
attested private key, for the CSR) and OUT_DIR/<format>/identifier.txt. The generators live
in tests/fleet (one module per format, each with knobs to mutate every checked field); this
script is their command-line face. Test roots only: never trust them in production.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives import serialization

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from attestation.format import key_authorization_binding  # noqa: E402
from tests.fleet import android_key, apple, step, tpm  # noqa: E402


def _pem_roots(trust, fmt: str) -> bytes:
    from cryptography import x509

    return b"".join(x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
                    for der in trust.roots_for(fmt))


def generate(out: Path, token: str, key_authorization: bytes) -> list[str]:
    made = []
    tpm_knobs = replace(tpm.Knobs(), key="p256", ak_other_names=(tpm.permanent_identifier("TPM-FLEET-0001"),))
    sample = tpm.make(tpm_knobs, key_authorization_binding(token, key_authorization))
    devices = {
        "apple": (apple.for_acme(token, key_authorization), "C02FLEET0001"),
        "step": (step.for_acme(token, key_authorization), "20251101"),
        "android-key": (android_key.for_acme(token, key_authorization), "FLEET-0001"),
    }
    for fmt, (att, identifier) in devices.items():
        _write(out / fmt, _pem_roots(att.trust, fmt), att.att_obj(), att.key, identifier)
        made.append(fmt)
    _write(out / "tpm", _pem_roots(sample.ctx.trust, "tpm"), cbor2.dumps({"fmt": "tpm", "attStmt": sample.att_stmt}),
           sample.attested_key, "TPM-FLEET-0001")
    return made + ["tpm"]


def _write(folder: Path, roots_pem: bytes, att_obj: bytes, key, identifier: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "root.pem").write_bytes(roots_pem)
    (folder / "attobj.cbor").write_bytes(att_obj)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (folder / "device-key.pem").write_bytes(key_pem)
    (folder / "device-key.pem").chmod(0o600)
    (folder / "identifier.txt").write_text(identifier + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--token", default="fleet-token")
    parser.add_argument("--thumbprint", default="fleet-thumbprint")
    args = parser.parse_args()
    made = generate(args.out, args.token, f"{args.token}.{args.thumbprint}".encode())
    print("wrote", ", ".join(made), "to", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
