"""ACME issuance load client: drives N complete issuances against one ACME server.

    python bench/load.py --directory URL --ca-bundle PEM --concurrency C --count N \
        [--http01-port P] [--identifier 127.0.0.1] [--warmup W] [--poll-interval 0.05] \
        [--server-pid PID] --json OUT

Before timing starts it creates one account per worker (ES256, P-256) and builds every
CSR (a fresh P-256 key each), so the timed part is ACME traffic only. One issuance is:

    newOrder → POST-as-GET the authorization → (if it is pending) publish the key
    authorization on the built-in http-01 responder and POST {} to the http-01 challenge →
    poll the order until ready → finalize with the CSR → poll the order until valid
    (skipped when finalize already answers valid) → POST-as-GET the certificate.

Polling sleeps min(Retry-After, --poll-interval) between polls: Retry-After is honoured
when it asks for less than the interval, and the order is polled at least every interval.
Every request takes its nonce from the previous response's Replay-Nonce; a badNonce answer
is retried once with the nonce that came with it. The http-01 responder (an aiohttp server
on 127.0.0.1:P) runs only when --http01-port is given, inside this process.

The JSON written to --json: count, completed, errors, elapsed_s, issuances_per_s (completed
/ elapsed), latency p50/p99/mean/max in ms (nearest-rank over completed issuances),
requests per issuance, mean latency per request kind, the client's own CPU seconds, with
--server-pid also the server's (from /proc/PID/stat, with its worker processes) and the rest of the machine's (from
/proc/stat), and up to ten error samples. Every run is bounded: each issuance has a
deadline (--issuance-timeout), the whole run one too (--run-timeout), and the run stops
early after --max-errors failed issuances (the rest count as failed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import math
import os
import resource
import ssl
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import josepy as jose
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

JOSE_JSON = "application/jose+json"
BAD_NONCE = "urn:ietf:params:acme:error:badNonce"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class IssuanceError(Exception):
    """One issuance failed; the message says at which step and what the server answered."""


# --- CSRs ------------------------------------------------------------------------------------

def make_csr(identifier: str) -> str:
    """base64url DER of a CSR for `identifier` (IP or DNS SAN) under a fresh P-256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(identifier))
    except ValueError:
        san = x509.DNSName(identifier)
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([san]), critical=False)
           .sign(key, hashes.SHA256()))
    return b64(csr.public_bytes(serialization.Encoding.DER))


def identifier_json(identifier: str) -> dict[str, str]:
    try:
        ipaddress.ip_address(identifier)
        return {"type": "ip", "value": identifier}
    except ValueError:
        return {"type": "dns", "value": identifier}


# --- http-01 responder -------------------------------------------------------------------------

class Responder:
    """Answers GET /.well-known/acme-challenge/TOKEN with the published key authorization."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.tokens: dict[str, str] = {}
        self.served = 0
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        key_authorization = self.tokens.get(request.match_info["token"])
        if key_authorization is None:
            return web.Response(status=404, text="unknown token")
        self.served += 1
        return web.Response(text=key_authorization, content_type="application/octet-stream")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/acme-challenge/{token}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# --- one ACME account --------------------------------------------------------------------------

@dataclass
class Stats:
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    request_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    bad_nonce_retries: int = 0

    def reset(self) -> None:
        self.requests.clear()
        self.request_seconds.clear()
        self.bad_nonce_retries = 0


class Account:
    def __init__(self, http: aiohttp.ClientSession, directory: dict[str, Any], stats: Stats,
                 responder: Responder | None, poll_interval: float) -> None:
        self.http = http
        self.directory = directory
        self.stats = stats
        self.responder = responder
        self.poll_interval = poll_interval
        self.key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        self.public_jwk = self.key.public_key().to_partial_json()
        self.thumbprint = b64(self.key.public_key().thumbprint())
        self.kid: str | None = None
        self.nonce: str | None = None

    def _sign(self, url: str, payload: Any) -> bytes:
        header: dict[str, Any] = {"alg": "ES256", "nonce": self.nonce, "url": url}
        if self.kid is None:
            header["jwk"] = self.public_jwk
        else:
            header["kid"] = self.kid
        protected = b64(dumps(header))
        body = "" if payload is None else b64(dumps(payload))
        signature = jose.ES256.sign(self.key.key, f"{protected}.{body}".encode("ascii"))
        return dumps({"protected": protected, "payload": body, "signature": b64(signature)})

    async def _fresh_nonce(self) -> None:
        async with self.http.head(self.directory["newNonce"]) as response:
            self.nonce = response.headers.get("Replay-Nonce")
        self.stats.requests["new-nonce"] += 1
        if not self.nonce:
            raise IssuanceError("newNonce answered without a Replay-Nonce")

    async def post(self, kind: str, url: str, payload: Any = None) -> tuple[int, dict[str, str], bytes]:
        """Signed POST (payload None: POST-as-GET); returns status, headers, body."""
        for attempt in (1, 2):
            if self.nonce is None:
                await self._fresh_nonce()
            started = time.perf_counter()
            async with self.http.post(url, data=self._sign(url, payload), headers={"Content-Type": JOSE_JSON}) as response:
                body = await response.read()
                status, headers = response.status, dict(response.headers)
            self.stats.requests[kind] += 1
            self.stats.request_seconds[kind] += time.perf_counter() - started
            self.nonce = headers.get("Replay-Nonce")
            if status == 400 and attempt == 1 and _problem_type(body) == BAD_NONCE:
                self.stats.bad_nonce_retries += 1
                continue
            return status, headers, body
        raise AssertionError("unreachable")

    async def register(self) -> None:
        status, headers, body = await self.post("new-account", self.directory["newAccount"], {"termsOfServiceAgreed": True})
        if status not in (200, 201) or "Location" not in headers:
            raise IssuanceError(f"newAccount answered {status}: {body[:300]!r}")
        self.kid = headers["Location"]

    async def issue(self, identifier: str, csr_b64: str) -> None:
        status, headers, body = await self.post("new-order", self.directory["newOrder"],
                                                {"identifiers": [identifier_json(identifier)]})
        _expect(status, (201,), "newOrder", body)
        order_url, order = headers["Location"], json.loads(body)
        for authz_url in order["authorizations"]:
            await self._authorize(authz_url)
        order = await self._poll(order_url, order, "poll-ready", {"ready"}, wait_first=order.get("status") != "ready")
        status, headers, body = await self.post("finalize", order["finalize"], {"csr": csr_b64})
        _expect(status, (200,), "finalize", body)
        order = json.loads(body)
        order = await self._poll(order_url, order, "poll-valid", {"valid"}, wait_first=True,
                                 retry_after=headers.get("Retry-After"))
        status, _headers, body = await self.post("certificate", order["certificate"])
        _expect(status, (200,), "certificate download", body)
        if b"-----BEGIN CERTIFICATE-----" not in body:
            raise IssuanceError("certificate download is not a PEM chain")

    async def _authorize(self, authz_url: str) -> None:
        status, _headers, body = await self.post("authz", authz_url)
        _expect(status, (200,), "authorization", body)
        authz = json.loads(body)
        if authz["status"] == "valid":
            return  # reused authorization: nothing to prove
        if authz["status"] != "pending":
            raise IssuanceError(f"authorization is {authz['status']}")
        challenge = next((c for c in authz["challenges"] if c["type"] == "http-01"), None)
        if challenge is None:
            raise IssuanceError("authorization offers no http-01 challenge")
        if self.responder is not None:
            self.responder.tokens[challenge["token"]] = f"{challenge['token']}.{self.thumbprint}"
        status, _headers, body = await self.post("challenge", challenge["url"], {})
        _expect(status, (200,), "challenge response", body)

    async def _poll(self, order_url: str, order: dict[str, Any], kind: str, until: set[str], *,
                    wait_first: bool, retry_after: str | None = None) -> dict[str, Any]:
        while order.get("status") not in until:
            if order.get("status") == "invalid":
                raise IssuanceError(f"order became invalid: {json.dumps(order.get('error'))[:300]}")
            if wait_first:
                await asyncio.sleep(self._delay(retry_after))
            wait_first = True
            status, headers, body = await self.post(kind, order_url)
            _expect(status, (200,), "order poll", body)
            order, retry_after = json.loads(body), headers.get("Retry-After")
        return order

    def _delay(self, retry_after: str | None) -> float:
        if retry_after and retry_after.strip().isdigit():
            return min(float(retry_after), self.poll_interval)
        return self.poll_interval


def _problem_type(body: bytes) -> str | None:
    try:
        return json.loads(body).get("type")
    except (ValueError, AttributeError):
        return None


def _expect(status: int, ok: tuple[int, ...], step: str, body: bytes) -> None:
    if status not in ok:
        raise IssuanceError(f"{step} answered HTTP {status}: {body[:300].decode(errors='replace')}")


# --- the run -----------------------------------------------------------------------------------

def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs of the machine spent busy (not idle, not waiting for I/O), from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU of another process and its live descendants (a server's worker
    processes; all threads of each), from /proc/PID/stat."""
    if pid is None:
        return None
    own = _stat_fields(pid)
    if own is None:
        return None
    children: dict[int, list[tuple[int, list[str]]]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))) is not None:
            children[int(fields[1])].append((int(entry), fields))  # fields[1] is the parent pid
    total, pending = 0, [(pid, own)]
    while pending:
        current, fields = pending.pop()
        total += int(fields[11]) + int(fields[12])
        pending.extend(children.get(current, ()))
    return total / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ssl_context = ssl.create_default_context(cafile=args.ca_bundle)
    connector = aiohttp.TCPConnector(ssl=ssl_context, limit=0, force_close=False)
    responder = Responder(args.http01_port) if args.http01_port else None
    if responder is not None:
        await responder.start()
    stats = Stats()
    try:
        async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                         timeout=aiohttp.ClientTimeout(total=args.issuance_timeout)) as http:
            async with http.get(args.directory) as response:
                if response.status != 200:
                    raise SystemExit(f"load: directory {args.directory} answered {response.status}")
                directory = await response.json(content_type=None)
            accounts = [Account(http, directory, stats, responder, args.poll_interval) for _ in range(args.concurrency)]
            await asyncio.gather(*(a.register() for a in accounts))
            csrs = [make_csr(args.identifier) for _ in range(args.count + args.warmup)]
            for i in range(args.warmup):  # untimed, one at a time: warms code paths on both ends
                await asyncio.wait_for(accounts[i % len(accounts)].issue(args.identifier, csrs.pop()), args.issuance_timeout)
            stats.reset()
            return await _timed(args, accounts, csrs, stats, responder)
    finally:
        if responder is not None:
            await responder.stop()


async def _timed(args: argparse.Namespace, accounts: list[Account], csrs: list[str], stats: Stats,
                 responder: Responder | None) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    remaining = iter(range(args.count))

    async def worker(account: Account) -> None:
        for index in remaining:
            if len(errors) >= args.max_errors:
                return  # the server is failing: stop instead of waiting out every deadline
            started = time.perf_counter()
            try:
                await asyncio.wait_for(account.issue(args.identifier, csrs[index]), args.issuance_timeout)
                latencies.append(time.perf_counter() - started)
            except asyncio.TimeoutError:
                errors.append(f"issuance {index}: no certificate within {args.issuance_timeout:g}s")
                account.nonce = None
            except (IssuanceError, aiohttp.ClientError, KeyError, ValueError) as exc:
                errors.append(f"issuance {index}: {type(exc).__name__}: {exc}")
                account.nonce = None

    server_before, machine_before = process_cpu_seconds(args.server_pid), machine_busy_seconds()
    cpu_before, started = cpu_seconds(), time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(worker(a) for a in accounts)), args.run_timeout)
    except asyncio.TimeoutError:
        errors.append(f"run stopped after --run-timeout {args.run_timeout:g}s")
    elapsed = time.perf_counter() - started
    client_cpu = cpu_seconds() - cpu_before
    server_after, machine_after = process_cpu_seconds(args.server_pid), machine_busy_seconds()
    server_cpu = None if server_before is None or server_after is None else server_after - server_before
    machine_cpu = None if machine_before is None or machine_after is None else machine_after - machine_before
    # What the rest of the machine did meanwhile (other processes, the kernel for them; for
    # PostgreSQL, its server processes): large values mean the numbers are disturbed or shared.
    other_cpu = None if machine_cpu is None else max(0.0, machine_cpu - client_cpu - (server_cpu or 0.0))
    latencies.sort()
    completed = len(latencies)
    failed = args.count - completed
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    posts = {k: v for k, v in stats.requests.items()}
    return {
        "directory": args.directory,
        "concurrency": args.concurrency,
        "count": args.count,
        "completed": completed,
        "errors": failed,
        "elapsed_s": round(elapsed, 3),
        "issuances_per_s": round(completed / elapsed, 2) if elapsed > 0 else None,
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "mean_ms": ms(sum(latencies) / completed) if completed else None,
        "max_ms": ms(latencies[-1] if latencies else None),
        "requests": posts,
        "requests_per_issuance": round(sum(posts.values()) / completed, 2) if completed else None,
        "mean_request_ms": {k: round(stats.request_seconds[k] / n * 1000, 2) for k, n in posts.items() if k in stats.request_seconds},
        "bad_nonce_retries": stats.bad_nonce_retries,
        "http01_served": responder.served if responder else None,
        "client_cpu_s": round(client_cpu, 3),
        "server_cpu_s": None if server_cpu is None else round(server_cpu, 3),
        "machine_busy_cpu_s": None if machine_cpu is None else round(machine_cpu, 3),
        "other_cpu_s": None if other_cpu is None else round(other_cpu, 3),
        "server_cpu_ms_per_issuance": round(server_cpu / completed * 1000, 2) if server_cpu is not None and completed else None,
        "poll_interval_s": args.poll_interval,
        "warmup": args.warmup,
        "error_samples": errors[:10],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Drive N complete ACME issuances at a given concurrency.")
    parser.add_argument("--directory", required=True, help="the ACME directory URL")
    parser.add_argument("--ca-bundle", required=True, help="PEM file of the root(s) the server's TLS certificate chains to")
    parser.add_argument("--concurrency", type=int, required=True, help="number of workers, each with its own account")
    parser.add_argument("--count", type=int, required=True, help="number of timed issuances")
    parser.add_argument("--http01-port", type=int, default=None, help="serve http-01 answers on 127.0.0.1:PORT")
    parser.add_argument("--identifier", default="127.0.0.1", help="the identifier to order (an IP, or a DNS name)")
    parser.add_argument("--warmup", type=int, default=0, help="untimed sequential issuances before timing")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="longest wait between two order polls (s)")
    parser.add_argument("--issuance-timeout", type=float, default=30.0, help="deadline of one issuance (s)")
    parser.add_argument("--max-errors", type=int, default=20, help="stop the run after this many failed issuances")
    parser.add_argument("--run-timeout", type=float, default=600.0, help="deadline of the whole timed run (s)")
    parser.add_argument("--server-pid", type=int, default=None, help="also report this local process's CPU time over the timed run")
    parser.add_argument("--json", required=True, help="write the results here")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.count < 1 or args.warmup < 0:
        parser.error("--concurrency and --count must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"load: c={result['concurrency']} {result['completed']}/{result['count']} issued in {result['elapsed_s']}s: "
          f"{result['issuances_per_s']}/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, errors {result['errors']}",
          file=sys.stderr)
    for sample in result["error_samples"]:
        print(f"load: error: {sample}", file=sys.stderr)
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
