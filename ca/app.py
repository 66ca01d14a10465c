"""The application factory: build the services once, then the aiohttp app that serves them.

`build_services` is the only place that wires concrete parts (store, CA, validators);
tests call the same factory with a frozen clock and a temporary data directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import AsyncIterator, Mapping

from aiohttp import web

from ca import certificates, validation
from ca.appkeys import SERVICES
from ca.challenges import ChallengeType
from ca.challenges.device_attest import DeviceAttestValidator
from ca.challenges.dns01 import Dns01Validator
from ca.challenges.http01 import Http01Validator
from ca.challenges.registry import Validators
from ca.challenges.resolver import Resolver
from ca.challenges.tlsalpn01 import TlsAlpn01Validator
from attestation.context import TrustStore
from attestation.format import Format
from ca import device_setup
from ca.device_setup import device_policy, enabled_formats, revocation_checks
from enroll.aliases import AliasRegistry
from enroll.first_use import FirstUseRegistry
from enroll.tpm_enrollment import TpmEnrollment, TpmSettings
from ca.clock import Clock, SystemClock
from ca.config import Config, ConfigError
from ca.issuance import DEFAULT_PROFILES, Issuer
from ca.jws import MAX_BODY
from ca.middleware import acme_responses
from ca.nonces import NONCE_KEY_SETTING, NonceService
from ca.pki import AttestationAuthority, load_or_create_attestation_ca, load_or_create_ca
from ca.routes import add_routes
from ca.services import Services
from ca.storage.repository import Store, get_or_create_setting, prune_nonces

log = logging.getLogger(__name__)
PASSPHRASE_ENV = "ACMEDA_KEY_PASSPHRASE"
PSEUDONYM_KEY_SETTING = "device-pseudonym-key"
HOUSEKEEPING_INTERVAL = 30.0


def profiles_for(config: Config) -> dict:
    from dataclasses import replace

    return {
        "server": replace(DEFAULT_PROFILES["server"], lifetime=config.server_cert_lifetime),
        "device": replace(DEFAULT_PROFILES["device"], lifetime=config.device_cert_lifetime),
    }


def build_validators(config: Config, clock: Clock, formats: Mapping[str, Format] | None = None,
                     trust: TrustStore | None = None, aliases: AliasRegistry | None = None,
                     first_use: FirstUseRegistry | None = None) -> Validators:
    """`formats`/`trust` default to what the configuration enables; tests inject their own."""
    formats = enabled_formats(config) if formats is None else formats
    trust = device_setup.trust_store(config, formats) if trust is None else trust
    device = DeviceAttestValidator(formats, trust, clock, revocation_checks(config), policy=device_policy(config),
                                   aliases=aliases.admits if aliases is not None else None,
                                   first_use=first_use.admit if first_use is not None else None)
    resolver = Resolver(config.dns_resolvers or None, timeout=config.validation_timeout.total_seconds() / 2)
    timeout = config.validation_timeout.total_seconds()
    return Validators({
        ChallengeType.HTTP_01: Http01Validator(resolver, port=config.http01_port, timeout=timeout),
        ChallengeType.DNS_01: Dns01Validator(resolver),
        ChallengeType.TLS_ALPN_01: TlsAlpn01Validator(resolver, port=config.tlsalpn01_port, timeout=timeout),
        ChallengeType.DEVICE_ATTEST_01: device,
    })


async def build_services(config: Config, *, clock: Clock | None = None, environ: Mapping[str, str] | None = None,
                         formats: Mapping[str, Format] | None = None, trust: TrustStore | None = None) -> Services:
    clock = clock or SystemClock()
    environ = os.environ if environ is None else environ
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create the data directory {config.data_dir}: {exc.strerror or exc}") from None
    passphrase = environ.get(PASSPHRASE_ENV)
    key_passphrase = passphrase.encode() if passphrase else None
    authority, _created = load_or_create_ca(config.data_dir, key_type=config.key_type, passphrase=key_passphrase,
                                            clock=clock)
    attestation_ca = load_or_create_attestation_ca(config.data_dir, authority, passphrase=key_passphrase, clock=clock)
    formats = enabled_formats(config) if formats is None else formats
    trust = device_setup.trust_store(config, formats) if trust is None else trust
    if attestation_ca is not None and "tpm" in formats:
        trust = device_setup.with_attestation_ca(trust, attestation_ca.der)
    store = await Store.open(config.database)
    nonce_key = await get_or_create_setting(store, NONCE_KEY_SETTING, secrets.token_bytes(32))
    pseudonym_key = await get_or_create_setting(store, PSEUDONYM_KEY_SETTING, secrets.token_bytes(32))
    return Services(
        config=config, clock=clock, store=store,
        nonces=NonceService(nonce_key, clock, lifetime=config.nonce_lifetime,
                            not_before=machine_boot_time(clock) if store.is_sqlite else None),
        authority=authority, issuer=Issuer(authority), profiles=profiles_for(config),
        validators=build_validators(config, clock, formats, trust, AliasRegistry(store, clock),
                                    FirstUseRegistry(store, clock)),
        pseudonym_key=pseudonym_key,
        tpm_enrollment=_tpm_enrollment(config, store, clock, attestation_ca),
    )


def machine_boot_time(clock: Clock, proc_stat: Path = Path("/proc/stat")) -> datetime:
    """When the kernel started (`btime`): a power cut loses only what was written since the
    last fsync, and the machine boots again after it. Where /proc/stat cannot tell, this
    server's start, which refuses more nonces (those of a mere restart) but none too few.
    Never later than `clock.now()`, so that an injected clock that runs in the past still
    redeems the nonces it mints. Whole seconds, as nonces carry their issue time: a bound
    with microseconds would refuse the nonces minted in its own second."""
    now = clock.now().replace(microsecond=0)
    try:
        for line in proc_stat.read_text().splitlines():
            if line.startswith("btime "):
                return min(now, datetime.fromtimestamp(int(line.split()[1]), timezone.utc))
    except (OSError, ValueError):
        pass
    return now


def _tpm_enrollment(config: Config, store: Store, clock: Clock, ca: AttestationAuthority | None) -> TpmEnrollment | None:
    """TPM AK enrollment, when acmeda has its attestation CA (see `load_or_create_attestation_ca`)."""
    if ca is None:
        return None
    settings = TpmSettings(allow_pinned_ek=config.tpm_allow_pinned_ek, activation_lifetime=config.tpm_activation_lifetime,
                           certificate_lifetime=config.tpm_ak_certificate_lifetime)
    return TpmEnrollment(store, clock, ca, device_setup.ek_trust(config), settings)


def build_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[acme_responses], client_max_size=MAX_BODY)
    app[SERVICES] = services
    add_routes(app)
    app.cleanup_ctx.append(_housekeeping)
    return app


async def _housekeeping(app: web.Application) -> AsyncIterator[None]:
    """Prune redeemed nonces and resume work a stopped replica left half done."""
    services = app[SERVICES]

    async def loop() -> None:
        while True:
            try:
                await prune_nonces(services.store, services.clock.now())
                await validation.resume_stale(services)
                await certificates.resume_stale(services)
            except Exception:
                log.exception("housekeeping failed; retrying in %ss", HOUSEKEEPING_INTERVAL)
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)

    task = asyncio.get_running_loop().create_task(loop())
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    await services.validators.close()
    await services.store.close()
