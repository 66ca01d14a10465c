"""Complete device-attest-01 issuances per second, per attestation format.

Starts `acmeda serve` (fresh data dir, SQLite) trusting the test fleet's roots through
`--attestation-roots` (the operator's way to add roots), then drives N issuances per format
at the given concurrency: newOrder (permanent-identifier) → authorization → a fresh fleet
statement bound to this challenge's key authorization → POST attObj → poll until ready →
finalize with a CSR of the attested key → certificate. The fleet (tests/fleet) stands in for
real devices, which cannot answer a fresh challenge here; generating a statement is client
work and is not counted in the server's CPU.

    python bench/device.py [--count 100] [--concurrency 8] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from attestation.format import key_authorization_binding  # noqa: E402
from tests.acme_client import b64, new_key, sign  # noqa: E402
from tests.fleet import android_key, apple, step, tpm  # noqa: E402
from bench.docs import replace_section, stamp  # noqa: E402

TPM_KNOBS = replace(tpm.Knobs(), key="p256", ak_other_names=(tpm.permanent_identifier("TPM-FLEET-0001"),))


def _tpm(token: str, keyauth: bytes):
    sample = tpm.make(TPM_KNOBS, key_authorization_binding(token, keyauth))
    return cbor2.dumps({"fmt": "tpm", "attStmt": sample.att_stmt}), sample.attested_key, sample.ctx.trust


def _fleet(module):
    def make(token: str, keyauth: bytes):
        att = module.for_acme(token, keyauth)
        return att.att_obj(), att.key, att.trust
    return make


FORMATS = {
    "apple": ("C02FLEET0001", _fleet(apple)),
    "step": ("20251101", _fleet(step)),
    "android-key": ("FLEET-0001", _fleet(android_key)),
    "tpm": ("TPM-FLEET-0001", _tpm),
}


def write_roots(folder: Path) -> None:
    for fmt, (_identifier, make) in FORMATS.items():
        _att, _key, trust = make("roots", b"roots.x")
        (folder / fmt).mkdir(parents=True)
        pem = b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in trust.roots_for(fmt))
        (folder / fmt / "fleet.pem").write_bytes(pem)


def start_server(tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    roots = tmp / "roots"
    write_roots(roots)
    log = tmp / "acmeda.log"
    command = [sys.executable, "-m", "ca.cli", "serve", "--data-dir", str(tmp / "data"), "--listen", "127.0.0.1:0",
               "--attestation-roots", str(roots), "--log-level", "warning"]
    port = _free_port()
    command[command.index("127.0.0.1:0")] = f"127.0.0.1:{port}"
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text()
        if "acmeda: ready" in text:
            return process, re.search(r"ACME directory (\S+)", text).group(1), tmp / "data" / "ca" / "root.pem"
        if process.poll() is not None:
            raise SystemExit(f"acmeda exited:\n{text}")
        time.sleep(0.1)
    process.kill()
    raise SystemExit("acmeda did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    def __init__(self, http: aiohttp.ClientSession, directory: dict) -> None:
        self.http, self.directory, self.key, self.kid, self.nonce = http, directory, new_key(), None, None

    async def post(self, url: str, payload=None) -> aiohttp.ClientResponse:
        if self.nonce is None:
            async with self.http.head(self.directory["newNonce"]) as head:
                self.nonce = head.headers["Replay-Nonce"]
        body = sign(payload, key=self.key, url=url, nonce=self.nonce, kid=self.kid)
        response = await self.http.post(url, data=json.dumps(body), headers={"Content-Type": "application/jose+json"})
        self.nonce = response.headers.get("Replay-Nonce")
        await response.read()
        return response

    def key_authorization(self, token: str) -> bytes:
        return f"{token}.{b64(self.key.public_key().thumbprint())}".encode()

    async def poll(self, url: str, until: set[str]) -> dict:
        for _ in range(400):
            body = await (await self.post(url)).json()
            if body["status"] in until:
                return body
            await asyncio.sleep(0.02)
        raise RuntimeError(f"{url} stuck in {body['status']}")


async def one_issuance(client: Client, fmt: str) -> float:
    identifier, make = FORMATS[fmt]
    start = time.perf_counter()
    response = await client.post(client.directory["newOrder"], {"identifiers": [{"type": "permanent-identifier", "value": identifier}]})
    order_url, order = response.headers["Location"], await response.json()
    authz_url = order["authorizations"][0]
    challenge = (await (await client.post(authz_url)).json())["challenges"][0]
    att_obj, device_key, _trust = make(challenge["token"], client.key_authorization(challenge["token"]))
    await client.post(challenge["url"], {"attObj": b64(att_obj)})
    if (await client.poll(order_url, {"ready", "invalid"}))["status"] != "ready":
        raise RuntimeError(f"{fmt}: attestation refused: {await (await client.post(authz_url)).json()}")
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(device_key, hashes.SHA256())
    done = await (await client.post(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))})).json()
    if done["status"] != "valid":
        done = await client.poll(order_url, {"valid", "invalid"})
    await client.post(done["certificate"])
    return time.perf_counter() - start


async def run_format(directory_url: str, root: Path, fmt: str, count: int, concurrency: int) -> dict:
    context = ssl.create_default_context(cafile=str(root))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        directory = await (await http.get(directory_url)).json()
        clients = [Client(http, directory) for _ in range(concurrency)]
        for client in clients:
            client.kid = (await client.post(directory["newAccount"], {"termsOfServiceAgreed": True})).headers["Location"]
            await one_issuance(client, fmt)  # warm-up, untimed
        queue = list(range(count))
        latencies: list[float] = []

        async def worker(client: Client) -> None:
            while queue:
                queue.pop()
                latencies.append(await one_issuance(client, fmt))

        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"format": fmt, "count": count, "per_s": count / elapsed, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--docs", type=Path, help="write the table as the section 'Device attestation issuance' of this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acmeda-device-bench-") as tmp:
        process, directory, root = start_server(Path(tmp))
        try:
            rows = [asyncio.run(run_format(directory, root, fmt, args.count, args.concurrency)) for fmt in FORMATS]
        finally:
            process.terminate()
            process.wait(timeout=15)
    table = "| format | issuances | concurrency | issuances/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|\n" + "".join(
        f"| {r['format']} | {r['count']} | {args.concurrency} | {r['per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} |\n"
        for r in rows)
    if args.docs:
        replace_section(args.docs, "Device attestation issuance", f"""Written by `make bench` (`bench/device.py --count {args.count} --concurrency {args.concurrency}`): complete
device-attest-01 issuances (new order → attested challenge → finalize → certificate) against a
running `acmeda serve` on SQLite that trusts the test fleet's roots via `--attestation-roots`.
The load client runs in another process on the same 2 cores and also generates each fresh
fleet statement (key, leaf certificate, signature), so these are lower bounds.

{stamp()}
{table}""")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
