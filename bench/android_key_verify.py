"""Time `android-key` verification once (not a test): `.venv/bin/python bench/android_key_verify.py`.

Reports the median wall and CPU time per call over N calls, after one warm-up call (which
fills the per-process caches of parsed trust anchors), for a real Pixel 8a WebAuthn object
(5-certificate RKP chain to Google's RSA root), a fleet statement (3 certificates, EC) and
the bare ML-DSA chain of a Pixel 9.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import time
from pathlib import Path

import cbor2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attestation.context import Binding, TrustStore, VerificationContext  # noqa: E402
from attestation.formats.android_key import FMT, default_roots, verify, verify_x5c  # noqa: E402
from tests import vectors  # noqa: E402
from tests.fleet.android_key import attest  # noqa: E402


def _pixel8a():
    name = "pixel8a-rkp-2025-01"
    obj = cbor2.loads(vectors.read(f"android-key-webauthn/{name}.attObj.cbor"))
    client_data_hash = hashlib.sha256(vectors.read(f"android-key-webauthn/{name}.clientDataJSON")).digest()
    ctx = VerificationContext(Binding(obj["authData"] + client_data_hash, client_data_hash),
                              vectors.parse_time("2025-01-07T18:08:43Z"), TrustStore(roots={FMT: default_roots()}))
    return lambda: verify(obj["attStmt"], ctx)


def _fleet():
    binding = Binding(b"token.thumbprint", b"token.thumbprint")
    att = attest(binding)
    ctx = att.context()
    return lambda: verify(att.att_stmt, ctx)


def _mldsa():
    chain = vectors.pem_chain("android-key-chains/android-keyattestation/tokay__sdk37__TEE_MLDSA_FACTORY.pem")
    ctx = VerificationContext(Binding(b"", b"challenge"), vectors.parse_time("2023-10-17T00:33:59Z"),
                              TrustStore(roots={FMT: default_roots()}))
    return lambda: verify_x5c(chain, ctx)


def measure(call, runs: int = 300) -> tuple[float, float]:
    call()
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


if __name__ == "__main__":
    for label, factory in (("pixel8a webauthn (5 certs, RSA root)", _pixel8a), ("fleet (3 certs, EC)", _fleet),
                           ("tokay ML-DSA chain, verify_x5c", _mldsa)):
        wall, cpu = measure(factory())
        print(f"{label:40s} median wall {wall:6.2f} ms   cpu {cpu:6.2f} ms")
