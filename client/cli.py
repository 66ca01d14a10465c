"""`acmeda device enroll|renew`: the device client's command line.

Expected failures (the CA refuses, the TPM refuses, the network or TLS fails, the state
directory is unreadable) print one readable message, problem documents as `type: detail`,
and exit 1; a usage error exits 2. Tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

PROG = "acmeda device"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Enroll this machine's TPM, or its cloud identity, with an acmeda CA and keep its certificate renewed.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    enroll = commands.add_parser("enroll", help="enroll the TPM's attestation key and obtain a device certificate")
    renew = commands.add_parser("renew", help="renew the stored certificate when the CA suggests it (ARI)")
    for command in (enroll, renew):
        _common(command)
    renew.add_argument("--force", action="store_true", help="renew now, whatever the CA's renewal window says")
    from client.cloud import KINDS
    enroll.add_argument("--cloud", choices=KINDS, default=None,
                        help="enroll with the cloud platform's evidence instead of a TPM: aws-nitro (inside an enclave, "
                             "through /dev/nsm), gcp, azure or aws (the instance's metadata service); docs/cloud/client.md")
    enroll.add_argument("--metadata-url", default=None, metavar="URL",
                        help="base URL of the metadata service (default: the platform's own, e.g. http://169.254.169.254)")
    return parser


def _tpm_choices() -> tuple[tuple[str, ...], str]:
    """--ak-type choices and the --tcti default, without requiring tpm2-pytss (the `device` extra) for --cloud."""
    try:
        from client.tpm import AK_TYPES, DEFAULT_TCTI
    except ImportError:
        return ("ecc", "rsa"), "device:/dev/tpmrm0"
    return AK_TYPES, DEFAULT_TCTI


def _common(parser: argparse.ArgumentParser) -> None:
    from client.state import default_state_dir

    AK_TYPES, DEFAULT_TCTI = _tpm_choices()

    parser.add_argument("--ca", required=True, metavar="URL", help="the CA's ACME directory URL (acmeda serve prints it)")
    parser.add_argument("--tcti", default=DEFAULT_TCTI,
                        help=f"how to reach the TPM (default {DEFAULT_TCTI}; a swtpm: swtpm:host=127.0.0.1,port=2321)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help=f"where the account key, key blobs and certificate live (default {default_state_dir()})")
    parser.add_argument("--ca-bundle", type=Path, default=None, metavar="PEM",
                        help="trust this root for the CA's TLS certificate (acmeda serve prints its root path)")
    parser.add_argument("--insecure", action="store_true", help="do NOT verify the CA's TLS certificate (prints a warning; use --ca-bundle)")
    parser.add_argument("--eab-kid", default=os.environ.get("ACMEDA_EAB_KID"),
                        help="external account binding key id (acmeda eab create) [env ACMEDA_EAB_KID]")
    parser.add_argument("--eab-hmac-key", default=os.environ.get("ACMEDA_EAB_HMAC_KEY"),
                        help="external account binding HMAC key, base64url [env ACMEDA_EAB_HMAC_KEY: keeps it out of the process list]")
    parser.add_argument("--ak-type", choices=AK_TYPES, default="ecc", help="AK algorithm: ecc (P-256, ES256) or rsa (2048, RS256)")
    parser.add_argument("--ek-chain", type=Path, action="append", default=[], metavar="PEM",
                        help="EK CA certificates to send with the EK certificate (repeatable; NV-stored ones are always sent)")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after this many seconds (default 60)")
    boot = parser.add_mutually_exclusive_group()
    boot.add_argument("--event-log", type=Path, default=None, metavar="PATH",
                      help="the TCG event log to send with a PCR quote, for the boot posture (default: the kernel's, "
                           "/sys/kernel/security/tpm0/binary_bios_measurements, when the TCTI is the device and it is readable)")
    boot.add_argument("--no-quote", action="store_true", help="send no PCR quote and no event log: the certificate carries no boot posture")


def _options(args: argparse.Namespace):
    from client.enroll import Options
    from client.state import default_state_dir

    if (args.eab_kid is None) != (args.eab_hmac_key is None):
        raise _UsageError("--eab-kid and --eab-hmac-key go together")
    return Options(
        directory=args.ca, state_dir=args.state_dir or default_state_dir(), tcti=args.tcti, ca_bundle=args.ca_bundle,
        insecure=args.insecure, eab=(args.eab_kid, args.eab_hmac_key) if args.eab_kid else None,
        ak_type=args.ak_type, ek_chain=tuple(der for path in args.ek_chain for der in _read_pem_certificates(path)),
        timeout=args.timeout, quote=not args.no_quote, event_log=_read_event_log(args.event_log),
    )


class _UsageError(Exception):
    pass


def _read_pem_certificates(path: Path) -> list[bytes]:
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise _UsageError(f"--ek-chain {path}: {exc}") from None
    return [c.public_bytes(serialization.Encoding.DER) for c in certificates]


def _read_event_log(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _UsageError(f"--event-log {path}: {exc.strerror or exc}") from None
    if not data:
        raise _UsageError(f"--event-log {path}: the file is empty")
    return data


def _report(outcome) -> None:
    certificate = outcome.certificate
    if certificate is None:
        print(f"{PROG}: {outcome.message}")
        return
    print(f"{PROG}: {outcome.message}; certificate serial {certificate.serial_number:x}, "
          f"valid until {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")


def _enroll_cloud(args: argparse.Namespace) -> int:
    """--cloud: client/cloud.py, which needs no TPM library."""
    from client.acme import AcmeError
    from client.cloud import CloudError, CloudOptions, enroll
    from client.http import TransportError
    from client.nsm import NsmError
    from client.state import default_state_dir

    if (args.eab_kid is None) != (args.eab_hmac_key is None):
        print(f"{PROG}: --eab-kid and --eab-hmac-key go together", file=sys.stderr)
        return 2
    options = CloudOptions(kind=args.cloud, directory=args.ca, state_dir=args.state_dir or default_state_dir(),
                           metadata_url=args.metadata_url, ca_bundle=args.ca_bundle, insecure=args.insecure,
                           eab=(args.eab_kid, args.eab_hmac_key) if args.eab_kid else None, timeout=args.timeout)
    try:
        outcome = enroll(options)
    except (AcmeError, TransportError, CloudError, NsmError) as exc:
        print(f"{PROG}: enroll failed: {exc}", file=sys.stderr)
        return 1
    _report(outcome)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.command == "enroll" and args.cloud:
        return _enroll_cloud(args)
    try:
        from client import enroll as flows
        from client.acme import AcmeError
        from client.http import TransportError
        from client.state import StateError
        from client.tpm import TpmError
    except ImportError as exc:  # tpm2-pytss needs libtss2 (Debian: libtss2-esys-3.0.2-0, libtss2-tctildr0)
        print(f"{PROG}: the TPM library cannot be loaded: {exc} (install tpm2-pytss and libtss2)", file=sys.stderr)
        return 1
    try:
        options = _options(args)
        outcome = flows.enroll(options) if args.command == "enroll" else flows.renew(options, force=args.force)
    except _UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except (AcmeError, TransportError, TpmError, StateError) as exc:
        print(f"{PROG}: {args.command} failed: {exc}", file=sys.stderr)
        return 1
    _report(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
