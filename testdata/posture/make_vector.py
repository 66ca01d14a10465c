"""Regenerate the DevicePosture test vector from the codec in `ca/posture.py`.

    .venv/bin/python testdata/posture/make_vector.py          # rewrite the files
    .venv/bin/python testdata/posture/make_vector.py --check  # exit 1 if they are stale

The evidence is what `attestation/formats/apple.py` reports for the macOS 26.2 Mac of
`../shared/vectors/apple-mda/darkbloom-f99b7905-M2Max-2026-04-28.chain.pem`, attested at
that sample's suggested verification time (see README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, so `ca` imports uninstalled

from attestation.evidence import Evidence, Posture, TrustLevel  # noqa: E402
from ca.posture import decode_posture, encode_posture  # noqa: E402

DER_FILE = "device-posture-v1.der"
JSON_FILE = "device-posture-v1.json"
ATTESTED_AT = datetime(2026, 4, 28, 20, 37, 6, tzinfo=timezone.utc)
EVIDENCE = Evidence(
    fmt="apple",
    public_key=None,  # not part of the extension
    trust_level=TrustLevel.HARDWARE,
    posture=Posture(
        os_version="26.2",
        sep_os_version="26.2",
        llb_version="26.2",
        secure_boot="full",
        key_protection="secure-enclave",
        extra=(
            ("apple.attestation", "managed-device"),
            ("apple.sip", "enabled"),
            ("apple.software_update_device_id", "J416cAP"),
            ("apple.third_party_kexts", "disallowed"),
        ),
    ),
)


def build() -> dict[str, bytes]:
    """File name -> contents, from the codec."""
    der = encode_posture(EVIDENCE, ATTESTED_AT)
    text = json.dumps(decode_posture(der).to_json(), indent=2, ensure_ascii=False) + "\n"
    return {DER_FILE: der, JSON_FILE: text.encode("utf-8")}


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--check", action="store_true", help="only compare; exit 1 when a file differs")
    check = args.parse_args(argv).check
    stale = [name for name, data in build().items() if not (HERE / name).is_file() or (HERE / name).read_bytes() != data]
    if check:
        for name in stale:
            print(f"stale: testdata/posture/{name}", file=sys.stderr)
        return 1 if stale else 0
    for name, data in build().items():
        (HERE / name).write_bytes(data)
        print(f"wrote testdata/posture/{name} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
