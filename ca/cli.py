"""The `acmeda` command: `serve` runs the CA; `eab`, `alias`, `tpm` and `db` are operator tools;
`device` hands over to the device-side client (`client.cli`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
import ssl
import sys
from typing import Sequence

from ca import config as config_mod

log = logging.getLogger("acmeda")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acmeda", description="acmeda: an ACME certificate authority for devices and AI agents.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the CA (creates its keys and database on first start)",
                                description="Run the ACME CA. Every setting is optional; flags beat ACMEDA_* environment variables, which beat the TOML file.")
    config_mod.add_arguments(serve)
    eab = commands.add_parser("eab", help="manage external account binding keys")
    eab_commands = eab.add_subparsers(dest="eab_command", required=True, metavar="ACTION")
    create = eab_commands.add_parser("create", help="create an EAB key (prints its key id and HMAC key)")
    create.add_argument("--label", default="", help="a note to remember what the key is for")
    config_mod.add_arguments(create)
    alias = commands.add_parser("alias", help="fleet registry: enrollment aliases (MDM ClientIdentifiers)")
    alias_commands = alias.add_subparsers(dest="alias_command", required=True, metavar="ACTION")
    add = alias_commands.add_parser("add", help="let devices order under ALIAS when they attest SERIAL (or UDID)")
    add.add_argument("alias", help="the ClientIdentifier the device will order (e.g. a one-time enrollment token)")
    add.add_argument("--attested", required=True, metavar="SERIAL", help="the serial number or UDID the attestation must prove")
    add.add_argument("--reusable", action="store_true", help="allow more than one enrollment with this alias (default: one)")
    add.add_argument("--label", default="", help="a note to remember what the alias is for")
    config_mod.add_arguments(add)
    _tpm_parser(commands)
    first_use = commands.add_parser("first-use", help="trust on first use: which account owns a device identifier (replayable evidence such as aws-iid is admitted for it only)")
    first_use_commands = first_use.add_subparsers(dest="first_use_command", required=True, metavar="ACTION")
    forget = first_use_commands.add_parser(
        "forget", help="release IDENTIFIER, so that the next account to enroll it owns it (e.g. after an account key rollover)")
    forget.add_argument("identifier", help="the permanent-identifier value as ordered, e.g. i-0123…/2.25.…3.2.1")
    config_mod.add_arguments(forget)
    db = commands.add_parser("db", help="database tools")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = db_commands.add_parser("upgrade", help="apply schema migrations and exit")
    config_mod.add_arguments(upgrade)
    return parser


def _tpm_parser(commands) -> None:
    tpm = commands.add_parser("tpm", help="fleet registry: TPM endorsement keys for AK enrollment",
                              description="What the operator vouches for about a TPM, named by its EK hash "
                                          "(lowercase hex SHA-256 of the EK public key; see `acmeda tpm ek-hash`). "
                                          "See docs/tpm-enrollment.md.")
    actions = tpm.add_subparsers(dest="tpm_command", required=True, metavar="ACTION")
    pin = actions.add_parser("pin-ek", help="admit a TPM without an EK certificate by its EK public key",
                             description="Pin an EK: a machine whose TPM has no EK certificate may enroll an AK with it "
                                         "(needs tpm_allow_pinned_ek). Its AK certificates name the TPM by --manufacturer, "
                                         "--model and --version, which enrollment needs (here or later with register-ek).")
    pin.add_argument("ek_public_file", metavar="EK_PUBLIC_FILE", type=Path,
                     help="the EK: TPM2B_PUBLIC or TPMT_PUBLIC (tpm2_createek -u, tpm2_readpublic -o), or a PEM/DER public key")
    register = actions.add_parser("register-ek", help="enroll the TPM with EK_HASH under an identifier of your own",
                                  description="Register what you vouch for about the TPM whose EK hash is EK_HASH: the "
                                              "identifier its AK certificates carry instead of the EK hash, and TPM "
                                              "values its EK certificate lacks.")
    register.add_argument("ek_hash", metavar="EK_HASH", help="64 lowercase hex digits (acmeda tpm ek-hash FILE)")
    for action in (pin, register):
        action.add_argument("--manufacturer", help="TPM manufacturer as TCG writes it (e.g. id:53544D20), for AK "
                                                   "certificates: needed when no EK certificate states it")
        action.add_argument("--model", help="TPM model (e.g. ST33HTPHAHB4), needed likewise")
        action.add_argument("--version", help="TPM firmware version (e.g. id:00490004), needed likewise")
        action.add_argument("--identifier", required=action is pin, metavar="VALUE",
                            help="the permanent identifier of the machine (no '/'); default: the EK hash")
        action.add_argument("--assigner", metavar="OID", help="the identifier's assigner (dotted OID); default: none")
        action.add_argument("--label", default="", help="a note to remember the machine by")
        config_mod.add_arguments(action)
    show = actions.add_parser("ek-hash", help="print the EK hash of an EK certificate or EK public key file")
    show.add_argument("file", metavar="FILE", type=Path, help="EK certificate or public key (PEM/DER), or TPM2B/TPMT_PUBLIC")


def _operator_errors() -> tuple[type[Exception], ...]:
    """Errors an operator fixes (a key file, the CA store), printed without a traceback.

    The server's modules are imported where they are used, not at the top: `acmeda device`
    runs on the device, and loading the CA there would cost it a second at every start."""
    from ca.keys import KeyFileError
    from ca.pki import CAStoreError
    from ca.storage.db import DatabaseUnavailable
    from enroll.aliases import AliasExists
    return KeyFileError, CAStoreError, config_mod.ConfigError, AliasExists, DatabaseUnavailable


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["device"]:  # the device-side client: its own parser, no CA configuration
        from client.cli import main as device_main
        return device_main(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "tpm" and args.tpm_command == "ek-hash":
        return _tpm_ek_hash(args.file)
    try:
        config = config_mod.load(args)
    except (ValueError, OSError) as exc:
        print(f"acmeda: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step is noise at start-up
    try:
        if args.command == "serve":
            return _serve(config)  # not inside an event loop: it may fork workers
        return asyncio.run(_COMMANDS[args.command](config, args))
    except _operator_errors() as exc:
        print(f"acmeda: {exc}", file=sys.stderr)
        return 1


async def _run_eab(config: config_mod.Config, args: argparse.Namespace) -> int:
    return await _eab_create(config, args.label)


async def _run_alias(config: config_mod.Config, args: argparse.Namespace) -> int:
    from ca.app import build_services
    from enroll.aliases import AliasRegistry

    services = await build_services(config)
    try:
        await AliasRegistry(services.store, services.clock).add(args.alias, args.attested, single_use=not args.reusable,
                                                               label=args.label)
    finally:
        await services.store.close()
    print(f"acmeda: devices attesting {args.attested} may now order permanent-identifier {args.alias}"
          + ("" if args.reusable else " (once)"))
    return 0


async def _run_tpm(config: config_mod.Config, args: argparse.Namespace) -> int:
    from ca.clock import SystemClock
    from ca.storage.repository import Store
    from enroll.ek_registry import EkEntry, EkRegistry, ek_hash_of_file

    try:
        ek_hash = ek_hash_of_file(args.ek_public_file.read_bytes()) if args.tpm_command == "pin-ek" else args.ek_hash
        entry = EkEntry(ek_hash, identifier=args.identifier, assigner=args.assigner, manufacturer=args.manufacturer,
                        model=args.model, version=args.version, pinned=args.tpm_command == "pin-ek", label=args.label)
    except (OSError, ValueError) as exc:
        print(f"acmeda: {exc}", file=sys.stderr)
        return 2
    if config.database_url is None:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = await Store.open(config.database)
    try:
        await EkRegistry(store, SystemClock()).put(entry)
    finally:
        await store.close()
    name = args.identifier or ek_hash
    print(f"acmeda: the TPM with EK {ek_hash} enrolls as {name}" + (" (pinned)" if entry.pinned else ""))
    return 0


def _tpm_ek_hash(path: Path) -> int:
    from enroll.ek_registry import ek_hash_of_file

    try:
        print(ek_hash_of_file(path.read_bytes()))
    except (OSError, ValueError) as exc:
        print(f"acmeda: {exc}", file=sys.stderr)
        return 2
    return 0


async def _run_db(config: config_mod.Config, args: argparse.Namespace) -> int:
    return await _db_upgrade(config)


def _base_url(config: config_mod.Config, port: int) -> str:
    """The URL the banner shows: `base_url`, or the listening address with the port bound."""
    if config.base_url:
        return config.base_url.rstrip("/")
    host, _ = config.listen_host_port
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    return f"{'https' if config.tls else 'http'}://{shown}:{port}"


def _serve(config: config_mod.Config) -> int:
    """First-start work once, then the workers: in this process, or forked (`ca.workers`)."""
    from ca import workers

    if config.workers < 0:
        raise config_mod.ConfigError(f"workers must be 0 (one per CPU) or more, not {config.workers}")
    count = config.workers or workers.default_count()
    host, port = config.listen_host_port
    try:
        sockets = workers.bind(host, port, count)
    except OSError as exc:
        raise config_mod.ConfigError(f"cannot listen on {config.listen}: {exc.strerror or exc}") from None
    port = sockets[0][0].getsockname()[1]
    if count == 1:
        return asyncio.run(_serve_alone(config, port, sockets[0]))
    tls_files = asyncio.run(_first_start(config, port, count))
    return workers.serve(sockets, lambda own, report: asyncio.run(_serve_worker(config, tls_files, own, report)),
                         _print_ready)


def _print_ready() -> None:
    print("acmeda: ready", flush=True)


async def _serve_alone(config: config_mod.Config, port: int, sockets) -> int:
    """One worker, in this process: the services the first start made go on to serve."""
    from ca.app import build_services

    services = await build_services(config)
    tls_files = _announce(config, services, port, 1)
    return await _serve_worker(config, tls_files, sockets, _print_ready, services)


async def _first_start(config: config_mod.Config, port: int, count: int) -> tuple[Path, Path] | None:
    """What the first start creates (keys, database, TLS certificate), before the workers fork."""
    from ca.app import build_services

    services = await build_services(config)
    try:
        return _announce(config, services, port, count)
    finally:
        await services.store.close()


def _announce(config: config_mod.Config, services, port: int, count: int) -> tuple[Path, Path] | None:
    """Make the server's TLS certificate if there is none, and print where everything is."""
    from ca.links import Links
    from ca.pki import load_or_create_tls_certificate

    tls_files = None
    if config.tls:
        tls_files = load_or_create_tls_certificate(config.data_dir, services.authority, config.tls_hostnames,
                                                   services.clock)
    authority = services.authority
    print(f"acmeda: ACME directory {Links(_base_url(config, port)).directory()}", flush=True)
    print(f"acmeda: root certificate {authority.root_path.resolve()}", flush=True)
    print(f"acmeda: root SHA-256 fingerprint {authority.root_fingerprint_sha256}", flush=True)
    print(f"acmeda: database {Path(config.database).resolve() if config.database_url is None else 'postgresql'}", flush=True)
    print(f"acmeda: serving with {count} worker process{'es' if count > 1 else ''}", flush=True)
    return tls_files


async def _serve_worker(config: config_mod.Config, tls_files: tuple[Path, Path] | None, sockets, report_ready,
                        services=None) -> int:
    """Serve on `sockets` until SIGINT or SIGTERM; `services` are built here unless given."""
    from aiohttp import web

    from ca.app import build_app, build_services

    services = services or await build_services(config)
    ssl_context = None
    if tls_files is not None:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(*tls_files)
    runner = web.AppRunner(build_app(services), access_log=None)
    await runner.setup()
    for sock in sockets:
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    report_ready()
    await stop.wait()
    await runner.cleanup()
    return 0


async def _eab_create(config: config_mod.Config, label: str) -> int:
    from ca.accounts import create_eab_key
    from ca.app import build_services

    services = await build_services(config)
    try:
        key_id, hmac_key = await create_eab_key(services, label)
    finally:
        await services.store.close()
    print(f"key id:   {key_id}\nhmac key: {hmac_key}")
    return 0


async def _db_upgrade(config: config_mod.Config) -> int:
    from ca.storage.db import migrate

    if config.database_url is None:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    await migrate(config.database)
    print("acmeda: database schema is up to date")
    return 0


async def _run_first_use(config: config_mod.Config, args: argparse.Namespace) -> int:
    from ca.clock import SystemClock
    from ca.identifiers import Identifier, IdentifierType
    from ca.storage.repository import Store
    from enroll.first_use import FirstUseRegistry

    if config.database_url is None:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = await Store.open(config.database)
    try:
        identifier = Identifier(IdentifierType.PERMANENT_IDENTIFIER, args.identifier)
        forgotten = await FirstUseRegistry(store, SystemClock()).forget(identifier)
    finally:
        await store.close()
    if not forgotten:
        print(f"acmeda: {args.identifier} has no owning account (no enrollment recorded)", file=sys.stderr)
        return 1
    print(f"acmeda: {args.identifier} is released; the next account to enroll it owns it")
    return 0


_COMMANDS = {"eab": _run_eab, "alias": _run_alias, "tpm": _run_tpm, "first-use": _run_first_use,
             "db": _run_db}

if __name__ == "__main__":
    sys.exit(main())
