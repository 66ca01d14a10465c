"""Time `tpm` verification (not a test): `.venv/bin/python bench/tpm_verify.py [--what-if]`.

Reports the median wall and CPU time per verify() call over N calls, after one warm-up
call, for every real Windows Hello statement (AK leaf + intermediate, RSA-4096 Microsoft
root) and for fleet statements (RS256 over an RSA key, ES256 over a P-256 key; EC test PKI).

It also splits the time: "own" is verify() with the chain walk replaced by its result,
i.e. the cost of the TPM structures, the binding, the AK profile, the SAN and the signature
over certInfo. `--what-if` reruns with a simulation of two proposed changes to
`attestation/x509chain.py` (a per-process cache of parsed certificates keyed by their DER,
used for anchors and intermediates but not the leaf, and a byte-equality fast path before
RFC 5280 name comparison) to show what they would buy.
"""

from __future__ import annotations

import functools
import hashlib
import statistics
import sys
import time
from pathlib import Path

import cbor2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attestation import x509chain  # noqa: E402
from attestation.context import Binding, TrustStore, VerificationContext  # noqa: E402
from attestation.formats import tpm  # noqa: E402
from tests import vectors  # noqa: E402
from tests.fleet import tpm as fleet  # noqa: E402


def _real(path: str):
    entry = vectors.entry(path)
    obj = cbor2.loads(vectors.read(path))
    client_data_hash = hashlib.sha256(vectors.read(entry["companion_files"][0])).digest()
    ctx = VerificationContext(Binding(obj["authData"] + client_data_hash, client_data_hash),
                              vectors.parse_time(entry["checks"]["verification_time_suggested"]),
                              TrustStore(roots={"tpm": tpm.default_roots()}))
    return obj["attStmt"], ctx


def cases() -> dict[str, tuple]:
    found = {p.split("/")[-1].removesuffix(".attObj.cbor"): _real(p)
             for p in sorted(e["path"] for e in vectors.manifest() if e["path"].startswith("tpm-webauthn/"))}
    for label, changes in {"fleet RS256 rsa": {}, "fleet ES256 p256": {"alg": -7, "key": "p256"}}.items():
        sample = fleet.mutate(**changes)
        found[label] = (sample.att_stmt, sample.ctx)
    return found


def measure(call, runs: int = 300) -> tuple[float, float]:
    call()
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def own_time(stmt, ctx) -> float:
    """verify() with verify_chain answered from a precomputed path."""
    path = x509chain.verify_chain(stmt["x5c"], ctx.trust.roots_for("tpm"), ctx.now)
    real, tpm.verify_chain = tpm.verify_chain, lambda *args, **kwargs: path
    try:
        return measure(lambda: tpm.verify(stmt, ctx))[1]
    finally:
        tpm.verify_chain = real


def simulate_proposed_x509chain() -> None:
    parse, names = x509chain.parse_certificate, x509chain._name_matches
    cached = functools.lru_cache(maxsize=256)(lambda der, what: parse(der, what))
    # The AK leaf is new with every device, so it is parsed afresh; anchors and the vendor
    # intermediates (EUS-NTC-KEYID-…) repeat across a fleet and come from the cache.
    x509chain.parse_certificate = lambda der, what="certificate": (
        parse(der, what) if what == "leaf certificate" else cached(bytes(der), what))
    x509chain._name_matches = lambda issuer, subject: issuer.dump() == subject.dump() or names(issuer, subject)


def main() -> None:
    what_if = "--what-if" in sys.argv
    all_cases = cases()
    print(f"{'statement':40} {'wall ms':>8} {'cpu ms':>8} {'own cpu ms':>10}")
    for label, (stmt, ctx) in all_cases.items():
        wall, cpu = measure(lambda: tpm.verify(stmt, ctx))
        print(f"{label:40} {wall:8.3f} {cpu:8.3f} {own_time(stmt, ctx):10.3f}")
    if what_if:
        simulate_proposed_x509chain()
        print("\nwith the proposed x509chain caches (simulated):")
        for label, (stmt, ctx) in all_cases.items():
            wall, cpu = measure(lambda: tpm.verify(stmt, ctx))
            print(f"{label:40} {wall:8.3f} {cpu:8.3f}")


if __name__ == "__main__":
    main()
