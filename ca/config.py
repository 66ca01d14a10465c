"""Configuration: one declarative table of settings, read from flags, environment and TOML.

Precedence, highest first: command-line flag, environment variable `ACMEDA_<NAME>`,
the TOML file (`--config` or `ACMEDA_CONFIG`), the default. Every setting has a default,
so `acmeda serve` runs with none given. The CA key passphrase is read only from the
environment (`ACMEDA_KEY_PASSPHRASE`), never from flags or files.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

from ca.keys import KeyType

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str | int | timedelta) -> timedelta:
    """'90s', '15m', '24h', '7d' (or plain seconds) → timedelta."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, int):
        return timedelta(seconds=text)
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h or d (e.g. 24h)")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _positive_duration(text: str | int | timedelta) -> timedelta:
    """A duration that must pass at all: a zero lifetime or time limit is a mistake, not a setting."""
    duration = parse_duration(text)
    if duration <= timedelta(0):
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    return duration


def _integer(text: str | int) -> int:
    """A whole number; 1.5 or true from a TOML file is refused, not truncated."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"invalid whole number {text!r}")
    return int(text)


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"invalid boolean {text!r}")


def _list(text: str | list) -> tuple[str, ...]:
    if isinstance(text, (list, tuple)):
        return tuple(str(x) for x in text)
    return tuple(part.strip() for part in str(text).split(",") if part.strip())


def _opt_str(text: Any) -> str | None:
    return None if text in (None, "") else str(text)


class ConfigError(ValueError):
    """A setting that cannot work (an unknown format, an empty root folder): the operator fixes
    it, so the CLI prints it as one line, without a traceback."""


@dataclass(frozen=True)
class Config:
    data_dir: Path = field(default=Path("acmeda-data"), metadata={"help": "where keys, certificates and the SQLite database live", "parse": Path})
    listen: str = field(default="127.0.0.1:8443", metadata={"help": "address and port to serve ACME on (HOST:PORT; [::1]:PORT for IPv6)"})
    workers: int = field(default=0, metadata={"help": "worker processes serving requests, each one event loop on one CPU (0: one per CPU)", "parse": _integer})
    base_url: str | None = field(default=None, metadata={"help": "public base URL (e.g. https://ca.example:8443); default: from each request's Host", "parse": _opt_str})
    database_url: str | None = field(default=None, metadata={"help": "postgresql://user@host/db for replicas; default: SQLite in the data directory", "parse": _opt_str})
    key_type: KeyType = field(default=KeyType.ECDSA_P256, metadata={"help": "CA key type on first start: " + ", ".join(k.value for k in KeyType), "parse": KeyType})
    tls: bool = field(default=True, metadata={"help": "serve HTTPS with a certificate from the CA itself (false: plain HTTP behind a TLS proxy)", "parse": _bool})
    tls_hostnames: tuple[str, ...] = field(default=(), metadata={"help": "extra names/IPs for the server's own TLS certificate (comma-separated)", "parse": _list})
    require_eab: bool = field(default=False, metadata={"help": "require external account binding on new accounts", "parse": _bool})
    terms_of_service: str | None = field(default=None, metadata={"help": "terms-of-service URL; when set, new accounts must agree to it", "parse": _opt_str})
    website: str | None = field(default=None, metadata={"help": "website URL shown in the directory meta", "parse": _opt_str})
    server_cert_lifetime: timedelta = field(default=timedelta(days=7), metadata={"help": "lifetime of dns/ip (serverAuth) certificates", "parse": _positive_duration})
    device_cert_lifetime: timedelta = field(default=timedelta(hours=24), metadata={"help": "lifetime of device (clientAuth) certificates", "parse": _positive_duration})
    order_lifetime: timedelta = field(default=timedelta(hours=24), metadata={"help": "how long a new order (and its authorizations) may stay unfinished", "parse": _positive_duration})
    nonce_lifetime: timedelta = field(default=timedelta(minutes=30), metadata={"help": "how long an issued nonce stays redeemable", "parse": _positive_duration})
    http01_port: int = field(default=80, metadata={"help": "port the http-01 validator connects to", "parse": _integer})
    tlsalpn01_port: int = field(default=443, metadata={"help": "port the tls-alpn-01 validator connects to", "parse": _integer})
    dns_resolvers: tuple[str, ...] = field(default=(), metadata={"help": "DNS servers for validation (HOST or HOST:PORT, comma-separated); default: the system's", "parse": _list})
    validation_timeout: timedelta = field(default=timedelta(seconds=10), metadata={"help": "time limit of one challenge validation", "parse": _positive_duration})
    orders_per_account_per_hour: int = field(default=3000, metadata={"help": "rate limit of new orders per account per hour (0: none)", "parse": _integer})
    attestation_formats: tuple[str, ...] = field(default=("android-key", "apple", "step", "tpm"), metadata={"help": "device-attest-01 formats to accept (comma-separated)", "parse": _list})
    attestation_roots: Path | None = field(default=None, metadata={"help": "directory of operator roots: <dir>/<format>/*.pem, added to the bundled vendor roots", "parse": lambda v: None if v in (None, "") else Path(v)})
    attestation_roots_only: bool = field(default=False, metadata={"help": "trust only the operator's roots (narrow the bundled vendor roots away)", "parse": _bool})
    android_revocation_list: Path | None = field(default=None, metadata={"help": "local copy of Google's attestation status list (JSON), re-read when it changes", "parse": lambda v: None if v in (None, "") else Path(v)})
    device_min_trust_level: str = field(default="tee", metadata={"help": "weakest key protection accepted: software, cloud, tee or hardware"})
    device_min_os_version: str | None = field(default=None, metadata={"help": "oldest OS version accepted (e.g. 14 or 26.1); evidence without one is refused", "parse": _opt_str})
    device_min_patch_level: str | None = field(default=None, metadata={"help": "oldest security patch level accepted (YYYY-MM)", "parse": _opt_str})
    device_require_verified_boot: bool = field(default=False, metadata={"help": "require evidence of verified boot", "parse": _bool})
    device_require_bootloader_locked: bool = field(default=False, metadata={"help": "require evidence of a locked bootloader", "parse": _bool})
    device_allow_nitro_debug: bool = field(default=False, metadata={"help": "accept AWS Nitro Enclaves running in debug mode (all-zero PCRs, memory readable by the parent)", "parse": _bool})
    device_privacy: bool = field(default=False, metadata={"help": "privacy-preserving device certificates: no device identifier in the SAN (draft §7.4)", "parse": _bool})
    tpm_ek_roots: Path | None = field(default=None, metadata={"help": "directory of extra TPM EK roots (*.pem) for AK enrollment; <dir>/intermediates/*.pem are path-building intermediates", "parse": lambda v: None if v in (None, "") else Path(v)})
    tpm_ek_roots_only: bool = field(default=False, metadata={"help": "trust only the EK roots of tpm_ek_roots (narrow the bundled TPM maker roots away)", "parse": _bool})
    tpm_allow_pinned_ek: bool = field(default=False, metadata={"help": "let machines without an EK certificate enroll an AK with an EK the operator pinned (acmeda tpm pin-ek)", "parse": _bool})
    tpm_activation_lifetime: timedelta = field(default=timedelta(minutes=5), metadata={"help": "how long a TPM credential activation may wait for its answer", "parse": _positive_duration})
    tpm_ak_certificate_lifetime: timedelta = field(default=timedelta(days=30), metadata={"help": "lifetime of the AK certificates acmeda's attestation CA issues", "parse": _positive_duration})
    log_level: str = field(default="info", metadata={"help": "debug, info, warning or error"})

    @property
    def database(self) -> str:
        return self.database_url or str(self.data_dir / "acmeda.db")

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"invalid listen address {self.listen!r}: use HOST:PORT")
        return host.strip("[]"), int(port)


def _parser_for(name: str) -> Callable[[Any], Any]:
    meta = next(f.metadata for f in fields(Config) if f.name == name)
    return meta.get("parse", str)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (`--data-dir`, `--listen`, …), each defaulting to 'not given'."""
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (also ACMEDA_CONFIG)")
    for f in fields(Config):
        flag = "--" + f.name.replace("_", "-")
        env = "ACMEDA_" + f.name.upper()
        parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                            help=f"{f.metadata['help']} [env {env}; default {_show(f.default)}]")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    if hasattr(value, "value"):
        return value.value
    return str(value)


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    given = vars(args) if args is not None else {}
    config_path = given.get("config") or environ.get("ACMEDA_CONFIG")
    from_file = _read_toml(Path(config_path)) if config_path else {}
    values: dict[str, Any] = {}
    for f in fields(Config):
        raw = given.get(f.name)
        source = f"--{f.name.replace('_', '-')}"
        if raw is None and f"ACMEDA_{f.name.upper()}" in environ:
            raw, source = environ[f"ACMEDA_{f.name.upper()}"], f"ACMEDA_{f.name.upper()}"
        if raw is None and f.name in from_file:
            raw, source = from_file[f.name], f"{config_path}: {f.name}"
        if raw is not None:
            try:
                values[f.name] = _parser_for(f.name)(raw)
            except (ValueError, TypeError) as exc:  # TypeError: a TOML value of the wrong type, such as data_dir = 5
                raise ValueError(f"{source}: {exc}") from None
    return Config(**values)


def _read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    known = {f.name for f in fields(Config)}
    normalised = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = set(normalised) - known
    if unknown:
        raise ValueError(f"{path}: unknown settings: {', '.join(sorted(unknown))}")
    return normalised
