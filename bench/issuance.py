"""`make bench`: issuance throughput of acmeda next to Pebble, measured by the same load client.

    python bench/issuance.py [--concurrency 1 8 32] [--count N] [--rounds 3] [--database-url postgresql://…]
                             [--docs docs/performance.md | --no-docs] [--no-pebble] [--pebble-validating] [--no-profile]
                             [--keep-tmp]

In each of --rounds rounds (default 3), for every concurrency (default 1, 8, 32) and every
server, back to back, starts a fresh server on
127.0.0.1 — `acmeda serve` with a new data directory (SQLite), with --database-url also
acmeda on a new PostgreSQL database created on that server and dropped afterwards, and
Pebble with a new config and TLS certificate — and runs `bench/load.py` against it as a
separate process. Then it runs `bench/profile_acmeda.py` (an instrumented acmeda under the
same load), prints one table, the acmeda/Pebble throughput ratio per concurrency and the
profile, and writes the section "Issuance throughput" of docs/performance.md.
Exits 1 if any issuance failed (or a server did not start), 0 otherwise.

acmeda validates http-01 for real against the load client's responder; Pebble runs with
PEBBLE_VA_ALWAYS_VALID=1 (no validation), PEBBLE_VA_NOSLEEP=1, PEBBLE_WFE_NONCEREJECT=0
(no deliberately rejected nonces) and PEBBLE_AUTHZREUSE=0 (no authorization reuse: acmeda
never reuses authorizations, so both servers get the same request sequence per issuance).
Pebble 2.4.0's in-memory store can deadlock under concurrent load, so a failed Pebble run
is repeated with a fresh Pebble (--pebble-retries, default 2) and reported as repeated.
With --pebble-validating (`make bench` passes it), Pebble also runs with its validation on,
against the load client's responder as acmeda does: a like-for-like reference row, outside
the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import ipaddress
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[1]
LOAD = REPO / "bench" / "load.py"
SECTION = "## Issuance throughput"
DEFAULT_CONCURRENCY = (1, 8, 32)
START_TIMEOUT = 60.0
PEBBLE_ENV = {"PEBBLE_VA_ALWAYS_VALID": "1", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
              "PEBBLE_AUTHZREUSE": "0"}


def default_count(concurrency: int) -> int:
    return 200 if concurrency == 1 else 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- servers ------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    process: subprocess.Popen
    directory: str
    ca_bundle: Path
    log: Path
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    http01_port: int | None = None
    cleanup: object = None  # called after the process stopped (drops a PostgreSQL database)
    config_text: str | None = None  # the server's config file as shown in the docs

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.cleanup is not None:
            cleanup, self.cleanup = self.cleanup, None
            try:
                cleanup()
            except Exception as exc:  # report, do not mask the results
                print(f"bench: cleanup after {self.name} failed: {exc}", file=sys.stderr)


def _wait_for_log(process: subprocess.Popen, log: Path, pattern: str, what: str) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if re.search(pattern, text):
            return text
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited early (status {process.returncode}):\n{text[-3000:]}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{what} did not start within {START_TIMEOUT:g}s:\n{log.read_text(errors='replace')[-3000:]}")


def start_acmeda(tmp: Path, name: str, database_url: str | None) -> Server:
    port, http01_port = free_port(), free_port()
    data_dir = tmp / f"{name}-data"
    log = tmp / f"{name}.log"
    # IP identifiers need no DNS; the resolver points at a loopback port nobody serves, so no
    # query could ever leave the machine.
    command = [sys.executable, "-m", "ca.cli", "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}",
               "--http01-port", str(http01_port), "--dns-resolvers", f"127.0.0.1:{free_port()}"]
    if database_url:
        command += ["--database-url", database_url]
    # ACMEDA_* settings from the caller's environment would change what is measured: drop them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACMEDA_")}
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                   start_new_session=True)
    text = _wait_for_log(process, log, r"acmeda: ready", f"acmeda ({name})")
    directory = re.search(r"ACME directory (\S+)", text).group(1)
    root = Path(re.search(r"root certificate (\S+)", text).group(1))
    return Server(name, process, directory, root, log, command, http01_port=http01_port)


def make_tls_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a leaf for 127.0.0.1/localhost: (ca.pem, cert.pem, key.pem).

    The Debian package of Pebble ships no test certificates, so the bench makes its own."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acmeda bench Pebble TLS CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def start_pebble(tmp: Path, name: str, pebble: str, *, validating: bool = False) -> Server:
    """Pebble as the issue prescribes; `validating`: with its validation on, against the load
    client's http-01 responder as acmeda's (a reference, outside the ratio)."""
    workdir = tmp / name
    ca_pem, cert_pem, key_pem = make_tls_certificate(workdir)
    port, http01_port = free_port(), free_port()
    env_settings = {k: v for k, v in PEBBLE_ENV.items() if not (validating and k == "PEBBLE_VA_ALWAYS_VALID")}
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{free_port()}",
        "certificate": str(cert_pem), "privateKey": str(key_pem),
        "httpPort": http01_port, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
    }}
    config_path = workdir / "pebble-config.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = tmp / f"{name}.log"
    # -dnsserver: a loopback port nobody serves (validation is skipped anyway), so nothing leaves the machine.
    command = [pebble, "-config", str(config_path), "-dnsserver", f"127.0.0.1:{free_port()}"]
    env = {**os.environ, **env_settings}
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=workdir,
                                   start_new_session=True)
    directory = f"https://127.0.0.1:{port}/dir"
    context = ssl.create_default_context(cafile=str(ca_pem))
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pebble exited early (status {process.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(directory, context=context, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"pebble did not answer {directory} within {START_TIMEOUT:g}s")
        time.sleep(0.1)
    server = Server("pebble-validating" if validating else "pebble", process, directory, ca_pem, log, command,
                    env=env_settings, http01_port=http01_port if validating else None)
    shown_config = json.loads(json.dumps(config))
    for key in ("listenAddress", "managementListenAddress"):
        shown_config["pebble"][key] = "127.0.0.1:$PORT" if key == "listenAddress" else "127.0.0.1:$MANAGEMENT_PORT"
    for key in ("httpPort", "tlsPort"):
        shown_config["pebble"][key] = "$UNUSED_PORT"
    if validating:
        shown_config["pebble"]["httpPort"] = "$HTTP01_PORT"
    shown_config["pebble"]["certificate"] = "$BENCH_TMP/pebble-cN/cert.pem"
    shown_config["pebble"]["privateKey"] = "$BENCH_TMP/pebble-cN/key.pem"
    server.config_text = json.dumps(shown_config)
    return server


# --- PostgreSQL: a fresh database per bench ---------------------------------------------------------

async def _pg(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql://", "postgres://", 1), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(admin_url: str) -> tuple[str, str]:
    name = f"acmeda_bench_{secrets.token_hex(4)}"
    asyncio.run(_pg(admin_url, f"CREATE DATABASE {name}"))
    return admin_url.rsplit("/", 1)[0] + "/" + name, name


def drop_database(admin_url: str, name: str) -> None:
    asyncio.run(_pg(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


# --- load runs -----------------------------------------------------------------------------------

def run_load(server: Server, concurrency: int, count: int, out: Path, args: argparse.Namespace) -> tuple[dict, list[str]]:
    command = [sys.executable, str(LOAD), "--directory", server.directory, "--ca-bundle", str(server.ca_bundle),
               "--concurrency", str(concurrency), "--count", str(count), "--warmup", str(args.warmup),
               "--poll-interval", str(args.poll_interval), "--server-pid", str(server.process.pid), "--json", str(out)]
    if server.http01_port:
        command += ["--http01-port", str(server.http01_port)]
    print(f"bench: {server.name}, concurrency {concurrency}, {count} issuances …", flush=True)
    try:
        completed = subprocess.run(command, cwd=REPO, timeout=args.load_timeout, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        output = completed.stdout
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        output += f"\nbench: load client killed after {args.load_timeout:g}s"
    sys.stdout.write("".join(f"  {line}\n" for line in output.strip().splitlines()))
    if out.exists():
        result = json.loads(out.read_text())
    else:
        result = {"concurrency": concurrency, "count": count, "completed": 0, "errors": count, "issuances_per_s": None,
                  "p50_ms": None, "p99_ms": None, "error_samples": [output.strip()[-500:]]}
    result["server"] = server.name
    return result, command


# --- report --------------------------------------------------------------------------------------

def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    pebble_version = "unknown"
    try:
        pebble_version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "pebble"], capture_output=True,
                                        text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        pass
    revision = "unknown"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ca", "attestation", "pyproject.toml"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if head:
            revision = f"commit {head}" + (" with uncommitted changes under ca/ or attestation/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    import aiohttp
    import cryptography
    import sqlalchemy

    try:
        loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        loadavg = "unknown"
    return {"loadavg": loadavg, "revision": revision, "nproc": str(os.cpu_count()), "cpu": cpu, "memory": memory, "kernel": platform.release(),
            "python": platform.python_version(), "pebble": pebble_version, "aiohttp": aiohttp.__version__,
            "cryptography": cryptography.__version__, "sqlalchemy": sqlalchemy.__version__}


def fmt(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _share(seconds, elapsed) -> float | None:
    return None if seconds is None or not elapsed else 100 * seconds / elapsed


def _configurations(results: list[dict]) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    for r in results:
        if (r["server"], r["concurrency"]) not in seen:
            seen.append((r["server"], r["concurrency"]))
    return sorted(seen, key=lambda c: (c[1], seen.index(c)))


def _rounds_of(results: list[dict], server: str, concurrency: int) -> list[dict]:
    return sorted((r for r in results if r["server"] == server and r["concurrency"] == concurrency),
                  key=lambda r: r.get("round", 1))


def _median_run(runs: list[dict]) -> dict:
    """The run whose throughput is the median of the rounds (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda r: r.get("issuances_per_s") or 0)
    return ordered[(len(ordered) - 1) // 2]


def table(results: list[dict]) -> list[str]:
    rows = ["| server | concurrency | issuances | issuances/s | each round | p50 ms | p99 ms | errors "
            "| requests/issuance | server CPU ms/issuance | server CPU % | load client CPU % | rest of machine CPU % |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for server, concurrency in _configurations(results):
        runs = _rounds_of(results, server, concurrency)
        r = _median_run(runs)
        each = ", ".join(fmt(run.get("issuances_per_s"), 1) for run in runs)
        rows.append(f"| {r['server']} | {r['concurrency']} | {r['count']} | {fmt(r.get('issuances_per_s'), 2)} | {each} | "
                    f"{fmt(r.get('p50_ms'))} | {fmt(r.get('p99_ms'))} | {r['errors']} | "
                    f"{fmt(r.get('requests_per_issuance'), 2)} | {fmt(r.get('server_cpu_ms_per_issuance'))} | "
                    f"{fmt(_share(r.get('server_cpu_s'), r.get('elapsed_s')), 0)} | "
                    f"{fmt(_share(r.get('client_cpu_s'), r.get('elapsed_s')), 0)} | "
                    f"{fmt(_share(r.get('other_cpu_s'), r.get('elapsed_s')), 0)} |")
    return rows


def ratios(results: list[dict]) -> list[tuple[str, int, float | None, list[float]]]:
    """Per acmeda configuration: the median over the rounds of (acmeda ÷ Pebble in that round), and each round's."""
    pebble = {(r["concurrency"], r.get("round", 1)): r.get("issuances_per_s") for r in results if r["server"] == "pebble"}
    out = []
    for server, concurrency in _configurations(results):
        if server.startswith("pebble"):
            continue
        each = []
        for r in _rounds_of(results, server, concurrency):
            theirs = pebble.get((concurrency, r.get("round", 1)))
            if r.get("issuances_per_s") and theirs:
                each.append(r["issuances_per_s"] / theirs)
        out.append((server, concurrency, statistics.median(each) if each else None, each))
    return out


def ratio_table(results: list[dict]) -> list[str]:
    rows = ["| acmeda | concurrency | acmeda / Pebble throughput (median of rounds) | each round | target (≥ 1.00) |",
            "|---|---:|---:|---|---|"]
    for server, concurrency, ratio, each in ratios(results):
        verdict = "–" if ratio is None else ("met" if ratio >= 1 else "not met")
        rows.append(f"| {server} | {concurrency} | {fmt(ratio, 2)} | {', '.join(fmt(e, 2) for e in each)} | {verdict} |")
    return rows


_PLACEHOLDERS = [
    (r"(--listen 127\.0\.0\.1:)\d+", r"\1$PORT"),
    (r"(https://127\.0\.0\.1:)\d+", r"\1$PORT"),
    (r"(--http01-port )\d+", r"\1$HTTP01_PORT"),
    (r"((?:--dns-resolvers|-dnsserver) 127\.0\.0\.1:)\d+", r"\1$UNUSED_PORT"),
    (r"(--server-pid )\d+", r"\1$SERVER_PID"),
    (r"postgresql://\S+/(acmeda_bench_)[0-9a-f]+", r"postgresql://…/\1$FRESH"),
    (r"-c(\d+)(-r\d+)?(-retry\d+)?", r"-c\1"),
]


def shown(command: list[str], tmp: Path) -> str:
    """A command line as it can be read in the docs: run-specific ports, pids and paths as $NAMES."""
    text = shlex.join(command).replace(str(tmp), "$BENCH_TMP").replace(sys.executable, "python")
    text = text.replace(str(REPO) + "/", "")
    for pattern, replacement in _PLACEHOLDERS:
        text = re.sub(pattern, replacement, text)
    return text


def section(results: list[dict], info: dict[str, str], commands: dict[str, str], notes: list[str],
            profiles: list[tuple[str, str]], args: argparse.Namespace, started: dt.datetime, took: float) -> str:
    first = results[0]["server"]
    counts = ", ".join(f"c={r['concurrency']}: {r['count']}" for r in results
                       if r["server"] == first and r.get("round", 1) == 1)
    lines = [
        SECTION,
        "",
        "Written by `make bench` (`bench/issuance.py`); rerun it to refresh this section.",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; the whole bench took {took:.0f} s.",
        f"- Code measured: {info['revision']}.",
        f"- Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} memory, Linux {info['kernel']}.",
        f"- Software: Python {info['python']} (aiohttp {info['aiohttp']}, cryptography {info['cryptography']}, "
        f"SQLAlchemy {info['sqlalchemy']}); Pebble {info['pebble']} (Debian package).",
        f"- Rounds: {args.rounds}. In each round every server runs at every concurrency, acmeda and Pebble back to "
        f"back; the table shows each configuration's median run (and every round's throughput), and the ratio is "
        f"the median of the rounds' ratios. This shared machine's speed drifts from minute to minute (a CPU-bound "
        f"server feels all of it, a latency-bound one little), so a single run can mislead.",
        f"- Issuances per run: {counts}; before each run {args.warmup} untimed warm-up issuances; the order is "
        f"polled every {args.poll_interval * 1000:g} ms at most. Every run gets a freshly started server with an "
        f"empty store.",
        f"- Load client, servers and http-01 responder share this one machine; all traffic is on 127.0.0.1. "
        f"Load average when the bench started: {info['loadavg']}.",
        "",
        *table(results),
        "",
        "Throughput ratio (acmeda issuances/s ÷ Pebble issuances/s at the same concurrency, in the same round):",
        "",
        *ratio_table(results),
        "",
        "Server CPU % and load client CPU % are the processes' user + system CPU time over the timed run "
        "divided by its wall time (100 % = one core fully busy; both servers can use both cores: Pebble's goroutines, "
        "acmeda's worker processes, whose CPU is counted with the parent's). "
        "Rest of machine CPU % is all other busy CPU time in the same window (/proc/stat): the PostgreSQL server "
        "processes in the acmeda-postgresql rows, and otherwise other work on the machine; more than a few percent "
        f"in a SQLite or Pebble row means that run shared the {info['nproc']} CPUs with something else.",
        "",
    ]
    if notes:
        lines += ["Repeated runs:", "", *[f"- {n}" for n in notes], ""]
    lines += [
        "### How it is measured",
        "",
        "`bench/load.py` is the load client, a separate process. Before timing it creates one account per worker "
        "(ES256 on P-256) and builds every CSR (a fresh P-256 key each). One issuance is newOrder for the identifier "
        "`ip:127.0.0.1` → POST-as-GET the authorization → publish the key authorization on the client's own http-01 "
        "responder (aiohttp, in the load process) and POST `{}` to the http-01 challenge → poll the order until "
        "`ready` → finalize → poll until `valid` (skipped when finalize already answers `valid`) → POST-as-GET the "
        "certificate. Each request takes the nonce of the previous response (`Replay-Nonce`); a `badNonce` answer "
        "would be retried once. Between polls the client waits min(Retry-After, poll interval). Latency is the wall "
        "time of one whole issuance; p50/p99 are nearest-rank over the completed issuances; issuances/s is completed "
        "issuances ÷ wall time of the timed run. Requests/issuance counts every HTTP request of the timed run, polls "
        "included. Server CPU is read from /proc/PID/stat (all threads) at the start and end of the timed run.",
        "",
        "Commands (`$BENCH_TMP` is a fresh temporary directory; every run uses its own ports and data directory):",
        "",
        "```",
        *[f"# {what}\n{command}" for what, command in commands.items()],
        "```",
        "",
        "### What differs between the two servers",
        "",
        "- **Validation.** acmeda validates http-01 for real: for every challenge it connects to 127.0.0.1 on the "
        "http-01 port and fetches the key authorization from the load client's responder (one extra HTTP exchange "
        "per issuance, served by the load process). Pebble runs with `PEBBLE_VA_ALWAYS_VALID=1` and does not validate; "
        "`PEBBLE_VA_NOSLEEP=1` removes its artificial validation delay."
        + (" The `pebble-validating` rows (`--pebble-validating`) are Pebble with its validation on, against the same "
           "responder as acmeda: a like-for-like reference, outside the ratio, which follows the issue's Pebble."
           if any(r["server"] == "pebble-validating" for r in results) else ""),
        "- **Nonces.** `PEBBLE_WFE_NONCEREJECT=0`: Pebble otherwise rejects 5 % of good nonces on purpose. acmeda "
        "redeems every nonce with a database write (single use across replicas); Pebble keeps them in memory.",
        "- **Authorization reuse.** `PEBBLE_AUTHZREUSE=0`: by default Pebble reuses a valid authorization for half "
        "the new orders, which skips the challenge and the first polls. acmeda never reuses authorizations, so with "
        "reuse off both servers serve the same request sequence per issuance. Pebble 2.4.0 still reuses about 1 % "
        "of the time with the setting at 0 (4 of 400 orders in a check run); that saves Pebble two requests in "
        "those issuances. (A negative value is not accepted and falls back to 50 %.)",
        "- **Pebble deadlocks.** Pebble 2.4.0's in-memory store can deadlock under concurrent load (a goroutine dump "
        "shows new-order's authorization-reuse lookup, `FindValidAuthorization`, waiting for a lock while every other "
        "request waits behind it); it is entered even at `PEBBLE_AUTHZREUSE=0` (see above). A Pebble run that fails "
        f"is repeated with a fresh Pebble, up to {args.pebble_retries} times, and listed under \"Repeated runs\". "
        "acmeda runs are never repeated.",
        "- **Storage.** acmeda commits every state change to its database (SQLite in WAL mode by default; PostgreSQL "
        "where the table says `acmeda-postgresql`) before it answers, nonce redemptions included, so the workers "
        "share SQLite's one write lock. Pebble keeps everything in memory.",
        "- **Issuance.** acmeda signs the certificate inside the finalize request and answers `valid`; Pebble answers "
        "`processing` and issues in the background, so the client polls once more (7 requests per issuance "
        "against acmeda's 6). At concurrency 1 both servers are idle most of the time and latency is mostly the "
        "client's poll waits (one for acmeda, two for Pebble), so the c=1 ratio says more about round trips than "
        "about server speed; c=8 and c=32 load the servers.",
        "- **TLS.** Both serve HTTPS on 127.0.0.1 with ECDSA P-256 certificates (acmeda from its own root; Pebble "
        "from a throwaway CA the bench creates, since the Debian package ships no test certificate). The client keeps "
        "connections alive, so handshakes are outside the timed work for both.",
        "- **Runtime.** acmeda runs one worker process per CPU (its default, `--workers 0`), each with its own event "
        "loop and SQLite connection, behind one port (SO_REUSEPORT); Pebble is Go and uses both cores. The load client "
        "is Python too and shares the same two cores, so the servers get what it leaves; its CPU share is in the table.",
        "- acmeda runs with its defaults (log level info; order rate limit 3000 per account per hour, above what a "
        "run creates). Pebble logs every request to its log file, as it does by default.",
        "",
    ]
    if profiles:
        lines += [
            "### Where acmeda's time goes",
            "",
            "`bench/profile_acmeda.py` runs acmeda with timers attached from outside (no change under `ca/`), drives "
            "it with the same load client and reports wall time per request kind and per step, every SQL statement "
            "kind (BEGIN IMMEDIATE includes waiting for SQLite's write lock), CPU per thread and, when py-spy is "
            "installed in the venv, CPU samples by category. The timers cost a little, so its throughput is a bit "
            "lower than in the table above.",
            "",
        ]
        for command, text in profiles:
            lines += ["```", f"$ {command}", text, "```", ""]
    return "\n".join(lines)


def write_docs(path: Path, text: str) -> None:
    """Replace the section "Issuance throughput" (up to the next `## ` heading) or append it."""
    if path.exists():
        current = path.read_text()
        pattern = re.compile(rf"^{re.escape(SECTION)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
        if pattern.search(current):
            updated = pattern.sub(lambda _m: text, current, count=1)
        else:
            updated = current.rstrip("\n") + "\n\n" + text
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        updated = "# Performance\n\n" + text
    path.write_text(updated)


# --- main ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark acmeda's issuance throughput against Pebble.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(DEFAULT_CONCURRENCY))
    parser.add_argument("--count", type=int, default=None, help="issuances per run (default 200 at concurrency 1, else 1000)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed issuances before each timed run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every configuration; the ratio is their median")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="longest wait between two order polls (s)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"),
                        help="a PostgreSQL server URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres): also bench "
                             "acmeda on a fresh database created there (and dropped afterwards) [env BENCH_DATABASE_URL]")
    parser.add_argument("--no-sqlite", action="store_true", help="skip acmeda on SQLite (with --database-url)")
    parser.add_argument("--no-pebble", action="store_true", help="skip Pebble")
    parser.add_argument("--pebble", default=shutil.which("pebble") or "/usr/bin/pebble", help="the pebble binary")
    parser.add_argument("--pebble-validating", action="store_true",
                        help="also run Pebble with its http-01 validation on, as a reference outside the ratio")
    parser.add_argument("--docs", type=Path, default=REPO / "docs" / "performance.md", help="where to write the results")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--no-profile", action="store_true", help="skip the instrumented profile of acmeda")
    parser.add_argument("--profile-concurrency", type=int, default=8)
    parser.add_argument("--profile-count", type=int, default=200)
    parser.add_argument("--pebble-retries", type=int, default=2,
                        help="repeat a failed Pebble run this many times with a fresh Pebble (its store can deadlock)")
    parser.add_argument("--load-timeout", type=float, default=300.0, help="deadline of one load run (s)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (logs, data, raw JSON)")
    return parser.parse_args(argv)


@dataclass
class Target:
    name: str
    start: object  # (tmp, run_name) -> Server
    retries: int = 0  # extra attempts when a run fails (Pebble only: its store can deadlock)


def targets(args: argparse.Namespace) -> list[Target]:
    out: list[Target] = []
    if not args.no_sqlite:
        out.append(Target("acmeda-sqlite", lambda tmp, run: start_acmeda(tmp, run, None)))
    if args.database_url:
        out.append(Target("acmeda-postgresql", lambda tmp, run: _start_acmeda_pg(tmp, run, args.database_url)))
    if not args.no_pebble:
        out.append(Target("pebble", lambda tmp, run: start_pebble(tmp, run, args.pebble), retries=args.pebble_retries))
    if args.pebble_validating:
        out.append(Target("pebble-validating", lambda tmp, run: start_pebble(tmp, run, args.pebble, validating=True),
                          retries=args.pebble_retries))
    return out


def _start_acmeda_pg(tmp: Path, run: str, admin_url: str) -> Server:
    url, name = create_database(admin_url)
    try:
        server = start_acmeda(tmp, run, url)
    except Exception:
        drop_database(admin_url, name)
        raise
    server.name = "acmeda-postgresql"
    server.cleanup = lambda: drop_database(admin_url, name)
    return server


def run_profiles(args: argparse.Namespace) -> list[tuple[str, str]]:
    """bench/profile_acmeda.py on each acmeda database: (command, summary) pairs."""
    import profile_acmeda  # bench/profile_acmeda.py, next to this file

    out = []
    runs = ([None] if not args.no_sqlite else []) + ([args.database_url] if args.database_url else [])
    for database_url in runs:
        argv = ["--concurrency", str(args.profile_concurrency), "--count", str(args.profile_count)]
        if database_url:
            argv += ["--database-url", database_url]
        if profile_acmeda.py_spy_binary():
            argv.append("--py-spy")
        print(f"bench: profiling acmeda ({'postgresql' if database_url else 'sqlite'}): "
              f"bench/profile_acmeda.py {shlex.join(argv)}", flush=True)
        try:
            text, _load = profile_acmeda.run_profile(profile_acmeda.parse_args(argv))
        except Exception as exc:  # the profile is an extra: report it, keep the results
            text = f"profile failed: {exc}"
        print(text, flush=True)
        out.append(("python bench/profile_acmeda.py " + shlex.join(argv), text))
    return out


def pebble_deadlocked(server: Server) -> bool:
    """Ask Go for a goroutine dump (SIGQUIT) and look for Pebble's store lock-up."""
    if server.process.poll() is not None:
        return False
    server.process.send_signal(signal.SIGQUIT)
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return False
    dump = server.log.read_text(errors="replace")
    return "semacquire" in dump and "FindValidAuthorization" in dump


def _schedule(args: argparse.Namespace):
    """(round, concurrency, server) in the order run: round by round, the servers back to back."""
    for round_number in range(1, args.rounds + 1):
        for concurrency in args.concurrency:
            for target in targets(args):
                yield round_number, concurrency, target


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, t0 = dt.datetime.now(dt.timezone.utc), time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="acmeda-bench-"))
    info = machine()
    results: list[dict] = []
    commands: dict[str, str] = {}
    notes: list[str] = []
    failed = False
    try:
        for round_number, concurrency, target in _schedule(args):
            count = args.count or default_count(concurrency)
            for attempt in range(1 + target.retries):
                run = f"{target.name}-c{concurrency}-r{round_number}" + (f"-retry{attempt}" if attempt else "")
                server = target.start(tmp, run)
                server.name = target.name
                if server.config_text:
                    commands.setdefault(f"{target.name} config file ($BENCH_TMP/{target.name}-cN/pebble-config.json)",
                                        server.config_text)
                env_text = " ".join(f"{k}={v}" for k, v in server.env.items())
                commands.setdefault(f"{target.name} server", (env_text + " " if env_text else "") + shown(server.command, tmp))
                try:
                    result, command = run_load(server, concurrency, count, tmp / f"{run}.json", args)
                    deadlock = target.name.startswith("pebble") and result["errors"] and pebble_deadlocked(server)
                finally:
                    server.stop()
                commands.setdefault(f"load client against {target.name}, c={concurrency}", shown(command, tmp))
                result["attempt"], result["round"] = attempt + 1, round_number
                if result["errors"] == 0 or attempt == target.retries:
                    results.append(result)
                    break
                why = "Pebble's in-memory store deadlocked (goroutine dump: FindValidAuthorization waiting on a lock)" \
                    if deadlock else f"{result['errors']} failed issuances: {'; '.join(result.get('error_samples', [])[:2])}"
                notes.append(f"{target.name} at concurrency {concurrency}, round {round_number}, attempt {attempt + 1}: {why}; "
                             f"the run was repeated with a fresh server.")
                print(f"bench: {notes[-1]}", flush=True)
    except (RuntimeError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        failed = True
    profiles: list[tuple[str, str]] = []
    if not args.no_profile and not failed:
        profiles = run_profiles(args)
    took = time.monotonic() - t0
    if results:
        print()
        print("\n".join(table(results)))
        print()
        print("\n".join(ratio_table(results)))
        if not args.no_docs and not failed:
            write_docs(args.docs, section(results, info, commands, notes, profiles, args, started, took))
            print(f"\nbench: wrote the section \"Issuance throughput\" of {args.docs}")
    errors = sum(r["errors"] for r in results)
    for r in results:
        for sample in r.get("error_samples", [])[:3]:
            print(f"bench: {r['server']} c={r['concurrency']}: {sample}", file=sys.stderr)
    (tmp / "results.json").write_text(json.dumps(results, indent=2))
    if args.keep_tmp:
        print(f"bench: logs, data and raw results kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"bench: {len(results)} runs, {errors} failed issuances, {took:.0f} s")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
