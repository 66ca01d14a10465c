"""TPM AK enrollment time (issue 4: one full enrollment with the software TPM under 2 s, most of
it TPM time; the server's share measured here).

1. The server's share, in-process on SQLite: `TpmEnrollment.begin` (EK certificate chain to the
   maker's root, AK checks, MakeCredential, storing the activation) and `answer` (consuming the
   activation, issuing the AK certificate), with RSA-2048, ECC P-256 and ECC P-384 EKs. Every
   call is a new machine's enrollment: a fresh EK certificate (new serial, so the leaf is parsed
   and its signature checked) and a fresh ECC P-256 AK; the maker's root and intermediate are
   known from earlier calls, as in a running CA. The device's ActivateCredential is done in
   software between the two calls (tests/enroll/soft_tpm.py) and not timed.
2. Whole enrollments: a real swtpm (tests/support/swtpm.py, a fresh copy of one manufactured TPM
   per enrollment, i.e. a machine enrolling for the first time) against a real `acmeda serve` on
   127.0.0.1 (started as tests/client/conftest.py does), each with a fresh state directory (new
   ACME account): AK enrollment, device-attest-01, finalize, certificate. Timed in-process
   (`client.cli.main(["enroll", ...])`, after one untimed run) and as the `acmeda device enroll`
   command (process start and imports included). The in-process runs are split by timers
   wrapped around the client's TPM calls, its HTTP requests and its poll waits; the server's CPU
   time comes from /proc.

    python bench/tpm_enrollment.py [--runs 100] [--enrollments 8] [--commands 4] [--docs docs/performance.md]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import io
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import enroll.tpm_enrollment as service_module  # noqa: E402
from attestation.tpm.credential import Protector  # noqa: E402
from attestation.tpm.ek import EkTrust, default_ek_trust, verify_ek_certificate  # noqa: E402
from ca.clock import FrozenClock  # noqa: E402
from ca.keys import KeyType  # noqa: E402
from ca.nonces import b64url  # noqa: E402
from ca.pki import load_or_create_attestation_ca, load_or_create_ca  # noqa: E402
from ca.storage.repository import Store  # noqa: E402
from enroll.tpm_enrollment import TpmEnrollment  # noqa: E402
from tests.enroll import soft_tpm  # noqa: E402
from bench.docs import replace_section, stamp  # noqa: E402
from bench.load import process_cpu_seconds  # noqa: E402

WARMUP = 10
TARGET_S = 2.0
EK_KINDS = {"RSA-2048": ("rsa", 3), "ECC P-256": ("p256", 4), "ECC P-384": ("p384", 5)}  # soft_tpm kind, key slot
_BUNDLED = default_ek_trust()  # what `acmeda serve --tpm-ek-roots` trusts: the bundled makers and the test maker
EK_TRUST = EkTrust(_BUNDLED.roots + (soft_tpm.der(soft_tpm.maker().root),), _BUNDLED.intermediates)
# What begin and answer call, by name in enroll.tpm_enrollment: timed inside the real calls.
SUB_STEPS = {"verify_ek_certificate": "EK certificate chain", "check_ak_public": "AK checks",
             "make_credential": "MakeCredential", "issue_ak_certificate": "AK certificate issuance"}


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(median, nearest-rank p95)."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, -(-len(ordered) * 95 // 100) - 1)]


# --- 1. the server's share, in-process ------------------------------------------------------


class SubStepTimers:
    """Times the functions begin/answer call, by wrapping their names in enroll.tpm_enrollment."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.recording = False
        self._originals = {name: getattr(service_module, name) for name in SUB_STEPS}

    def __enter__(self) -> SubStepTimers:
        for name, original in self._originals.items():
            setattr(service_module, name, self._timed(name, original))
        return self

    def __exit__(self, *exc_info) -> None:
        for name, original in self._originals.items():
            setattr(service_module, name, original)

    def _timed(self, name: str, original: Callable) -> Callable:
        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if self.recording:
                    self.samples[name].append((time.perf_counter() - start) * 1000)
        return timed


async def server_share(workdir: Path, runs: int) -> list[tuple[str, str, float, float]]:
    """Rows (EK, step, median ms, p95 ms) of begin and answer and of their parts."""
    clock = FrozenClock(soft_tpm.NOW)
    ca, _ = load_or_create_ca(workdir / "data", key_type=KeyType.ECDSA_P256, passphrase=None, clock=clock)
    authority = load_or_create_attestation_ca(workdir / "data", ca, passphrase=None, clock=clock)
    store = await Store.open(str(workdir / "acmeda.db"))
    service = TpmEnrollment(store, clock, authority, EK_TRUST)
    rows = []
    try:
        for label, (kind, slot) in EK_KINDS.items():
            rows += await _one_ek_kind(service, label, soft_tpm.private_key(kind, slot), runs)
    finally:
        await store.close()
    return rows


async def _one_ek_kind(service: TpmEnrollment, label: str, ek_key: Any, runs: int) -> list[tuple[str, str, float, float]]:
    maker = soft_tpm.maker()
    chain = [b64url(soft_tpm.der(maker.intermediate))]
    protector = Protector.for_key(ek_key.public_key())
    begin, answer = [], []
    with SubStepTimers() as parts:
        for index in range(WARMUP + runs):
            parts.recording = index >= WARMUP
            ak = soft_tpm.public_area(ec.generate_private_key(ec.SECP256R1()), soft_tpm.AK_ATTRIBUTES)
            payload = {"akPublic": b64url(ak.to_bytes()), "ekCertificate": b64url(maker.ek_certificate(ek_key.public_key())),
                       "ekChain": chain}
            start = time.perf_counter()
            begun = await service.begin("bench-account", payload)
            began = time.perf_counter()
            secret = soft_tpm.activate(ek_key, protector, ak.name(), begun.made)  # the device's part, untimed
            answer_start = time.perf_counter()
            await service.answer("bench-account", begun.activation.id, {"secret": b64url(secret)})
            if parts.recording:
                begin.append((began - start) * 1000)
                answer.append((time.perf_counter() - answer_start) * 1000)
    rows = [(label, "begin (whole call)", *percentiles(begin))]
    rows += [(label, f"  of which {SUB_STEPS[name]}", *percentiles(parts.samples[name]))
             for name in ("verify_ek_certificate", "check_ak_public", "make_credential")]
    rows.append((label, "answer (whole call)", *percentiles(answer)))
    rows.append((label, f"  of which {SUB_STEPS['issue_ak_certificate']}", *percentiles(parts.samples["issue_ak_certificate"])))
    rows.append((label, "EK certificate chain alone, only the test maker trusted", *_chain_alone(ek_key, runs)))
    return rows


def _chain_alone(ek_key: Any, runs: int) -> tuple[float, float]:
    """The EK chain step with a trust store of one root: what the bundled makers' pool adds to begin."""
    maker = soft_tpm.maker()
    trust, chain = EkTrust((soft_tpm.der(maker.root),)), (soft_tpm.der(maker.intermediate),)
    samples = []
    for index in range(WARMUP + runs):
        certificate = maker.ek_certificate(ek_key.public_key())
        start = time.perf_counter()
        verify_ek_certificate(certificate, trust, soft_tpm.NOW, chain=chain)
        if index >= WARMUP:
            samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples)


# --- 2. whole enrollments: swtpm + acmeda serve ---------------------------------------------


class ClientSplit:
    """Wall time of the device client's TPM calls, HTTP requests and poll waits, per run.

    Wraps methods of client.tpm.Tpm (every public one, and opening the TPM), client.http.Http
    .request and client.acme.AcmeClient._wait for the bench's own process; an outer call's
    time includes the calls it makes, counted once."""

    def __init__(self) -> None:
        from client.acme import AcmeClient
        from client.http import Http
        from client.tpm import Tpm

        self.totals: dict[str, float] = defaultdict(float)
        self._busy: set[str] = set()
        names = [name for name, value in vars(Tpm).items() if callable(value) and (not name.startswith("_") or name == "__init__")]
        for name in names:
            self._wrap(Tpm, name, "tpm")
        self._wrap(Http, "request", "http")
        self._wrap(AcmeClient, "_wait", "poll wait")

    def _wrap(self, owner: type, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if label in self._busy:
                return original(*args, **kwargs)
            self._busy.add(label)
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.totals[label] += time.perf_counter() - start
                self._busy.discard(label)

        setattr(owner, name, timed)

    def take(self) -> dict[str, float]:
        totals, self.totals = dict(self.totals), defaultdict(float)
        return totals


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a server (all threads, its worker processes included), from /proc."""
    return process_cpu_seconds(pid) or 0.0


def _busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """This process and its waited-for children (the swtpm copies and `acmeda device` commands)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def whole_enrollments(workdir: Path, enrollments: int, commands: int) -> dict[str, Any]:
    from client.cli import main as device_main
    from tests.client.conftest import ek_roots_dir, start_ca
    from tests.support.swtpm import SoftwareTpm, SoftwareTpmMaker, require_swtpm

    try:
        require_swtpm()
    except BaseException as missing:  # pytest's skip outcome, outside pytest: say why and stop
        raise SystemExit(f"bench/tpm_enrollment.py: {missing}") from None
    maker = SoftwareTpmMaker(workdir / "maker")
    manufactured = maker.manufacture()
    roots = ek_roots_dir(workdir / "ek-roots", maker.root_pem, maker.intermediate_pem)
    ca = start_ca(workdir / "ca", ["--tpm-ek-roots", str(roots), "--device-min-trust-level", "hardware"])
    acmeda = Path(sys.executable).with_name("acmeda")
    command = [str(acmeda)] if acmeda.exists() else [sys.executable, "-m", "ca.cli"]
    result: dict[str, Any] = {"in_process": [], "command": [], "server_cpu": [], "splits": []}
    try:
        split = ClientSplit()
        wall, busy, own, server = time.monotonic(), _busy_seconds(), _own_seconds(), _cpu_seconds(ca.process.pid)
        for index in range(1 + enrollments + commands):
            tpm = SoftwareTpm(manufactured, maker, workdir / f"tpm-{index}")
            args = ["enroll", "--ca", ca.directory, "--tcti", tpm.tcti, "--state-dir", str(workdir / f"state-{index}"),
                    "--ca-bundle", str(ca.tls_root)]
            try:
                server_before, start = _cpu_seconds(ca.process.pid), time.perf_counter()
                in_process = index <= enrollments
                if in_process:
                    with contextlib.redirect_stdout(io.StringIO()):
                        code = device_main(args)
                else:
                    code = subprocess.run([*command, "device", *args], capture_output=True, cwd=REPO).returncode
                elapsed, server_cpu = time.perf_counter() - start, _cpu_seconds(ca.process.pid) - server_before
            finally:
                tpm.stop()
            if code != 0:
                raise SystemExit(f"enrollment {index} failed with exit code {code}; server log:\n{ca.output()[-2000:]}")
            parts = split.take()
            if index == 0:
                continue  # warm-up: imports and first connections
            result["in_process" if in_process else "command"].append(elapsed)
            if in_process:
                result["server_cpu"].append(server_cpu)
                result["splits"].append({**parts, "total": elapsed})
        ca_cpu = _cpu_seconds(ca.process.pid) - server
        result["others_cpu_percent"] = max(0.0, _busy_seconds() - busy - (_own_seconds() - own) - ca_cpu) / (time.monotonic() - wall) * 100
    finally:
        ca.stop()
    return result


# --- reporting --------------------------------------------------------------------------------


def server_table(rows: list[tuple[str, str, float, float]]) -> str:
    return "| EK | step | median ms | p95 ms |\n|---|---|---:|---:|\n" + "".join(
        f"| {ek} | {step} | {median:.2f} | {p95:.2f} |\n" for ek, step, median, p95 in rows)


def enrollment_table(result: dict[str, Any]) -> str:
    lines = "| how | enrollments | median s | p95 s | max s | median under 2 s |\n|---|---:|---:|---:|---:|---|\n"
    for key, label in (("in_process", "in-process `client.cli.main([\"enroll\", ...])`"),
                       ("command", "`acmeda device enroll` command (new process)")):
        samples = result[key]
        if samples:
            median, p95 = percentiles(samples)
            lines += (f"| {label} | {len(samples)} | {median:.3f} | {p95:.3f} | {max(samples):.3f} | "
                      f"{'yes' if median < TARGET_S else 'NO'} |\n")
    return lines


def split_table(result: dict[str, Any]) -> str:
    """Mean seconds per in-process enrollment, by where the client's time went, and the server's CPU."""
    splits, count = result["splits"], len(result["splits"])
    mean = {key: sum(s.get(key, 0.0) for s in splits) / count for key in ("total", "tpm", "http", "poll wait")}
    rest = mean["total"] - mean["tpm"] - mean["http"] - mean["poll wait"]
    rows = [("TPM calls (swtpm over TCP: open, EK, AK and key creation, ActivateCredential, Certify, Sign)", mean["tpm"]),
            ("HTTP requests to the CA (client-side wall time: TLS, network, the server's handling)", mean["http"]),
            ("poll wait (the client sleeping for Retry-After before polling the authorization)", mean["poll wait"]),
            ("the client's own work (JWS, CSR, state files, argument parsing)", rest)]
    server_cpu = sum(result["server_cpu"]) / count
    return "| where (mean per enrollment) | s | share |\n|---|---:|---:|\n" + "".join(
        f"| {label} | {seconds:.3f} | {seconds / mean['total'] * 100:.0f} % |\n" for label, seconds in rows) + (
        f"| whole enrollment | {mean['total']:.3f} | 100 % |\n"
        f"| server CPU in the same time (the `acmeda serve` process and its workers, background validation included; "
        f"overlaps the rows above) | {server_cpu:.3f} | |\n")


def _poll_note(result: dict[str, Any]) -> str:
    splits = result["splits"]
    share = sum(s.get("poll wait", 0.0) for s in splits) / sum(s["total"] for s in splits)
    if share < 0.3:
        return ""
    return "\n" + textwrap.fill(
        f"The poll wait is {share * 100:.0f} % of an enrollment: the CA answers the device-attest-01 POST "
        "`processing` with `Retry-After: 1` (whole seconds are all the header can say) and the client sleeps that "
        "second before its first poll, although verifying the statement takes milliseconds (section "
        "\"Attestation verification\"). The TPM's own share is the first row.", width=100) + "\n"


def docs_text(args, rows, result, machine: str) -> str:
    return f"""Written by `make bench` (`bench/tpm_enrollment.py --runs {args.runs} --enrollments {args.enrollments} --commands {args.commands}`).
Target (issue 4): one full TPM enrollment with the software TPM under 2 s on this machine.

{stamp().rstrip()}; {machine}

Whole enrollments: a real swtpm (a fresh copy of one manufactured TPM each time: a machine
enrolling for the first time, RSA-2048 EK with its certificate in NV) against a real
`acmeda serve` on SQLite on 127.0.0.1, fresh state directory (new ACME account) each time:
account, AK creation, AK enrollment (begin, ActivateCredential, answer), a new key in the TPM,
device-attest-01 with TPM2_Certify, finalize with a CSR the TPM signs, certificate download.

{enrollment_table(result)}
Where the time of the in-process runs goes (timers wrapped around the client's TPM calls, HTTP
requests and poll waits in the bench's process; the server's CPU from /proc):

{split_table(result)}{_poll_note(result)}
The server's share, in-process on SQLite (`TpmEnrollment.begin` and `answer`, {args.runs} enrollments
per EK type, each with a fresh EK certificate and a fresh ECC P-256 AK, after {WARMUP} untimed;
the device's ActivateCredential between the two is done in software and not timed). The
"of which" rows are the functions begin and answer call, timed inside those calls; the rest of
a call is its two SQLite transactions (and JSON decoding). The EK chain is verified against what
`acmeda serve --tpm-ek-roots` trusts: the {len(EK_TRUST.roots)} bundled and test maker roots and
{len(EK_TRUST.intermediates)} bundled intermediates, and the chain walker tries every candidate for each
link; the "alone" row is the same chain with only the test maker's root configured.

{server_table(rows)}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100, help="in-process begin/answer pairs per EK type")
    parser.add_argument("--enrollments", type=int, default=8, help="whole enrollments timed in-process (after one untimed)")
    parser.add_argument("--commands", type=int, default=4, help="whole enrollments timed as the `acmeda device enroll` command")
    parser.add_argument("--docs", type=Path, help="write the tables as the section 'TPM AK enrollment' of this file")
    args = parser.parse_args()
    load_at_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    with tempfile.TemporaryDirectory(prefix="acmeda-tpm-enrollment-bench-") as tmp:
        rows = asyncio.run(server_share(Path(tmp) / "in-process", args.runs))
        result = whole_enrollments(Path(tmp) / "whole", args.enrollments, args.commands)
    others = result["others_cpu_percent"]
    shared = "; shared machine: other work was running" if others >= 5 else ""
    machine = (f"load average {load_at_start} at the start; other processes used {others:.0f} % of one CPU "
               f"during the whole enrollments{shared}")
    if args.docs:
        replace_section(args.docs, "TPM AK enrollment", docs_text(args, rows, result, machine))
    print(server_table(rows))
    print(enrollment_table(result))
    print(split_table(result))
    print(machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
