"""A real `acmeda serve` process on loopback, a real DNS server that maps every test name to
127.0.0.1, and the port the clients answer http-01 on. Nothing leaves the machine."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

from tests.acme_client import b64
from tests.ca.flow import make_csr
from tests.support.dns_server import DnsServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (make system-deps installs it)")
        pytest.skip(f"{name} is not installed (make system-deps)")
    return path


@dataclass
class RunningCA:
    process: subprocess.Popen
    directory: str
    root: Path
    data_dir: Path
    http01_port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def start_ca(tmp: Path, *, http01_port: int, dns_port: int, extra: list[str] | None = None,
             env: dict[str, str] | None = None, port: int | None = None) -> RunningCA:
    port = port or free_port()
    data_dir = tmp / "ca-data"
    log = tmp / f"acmeda-{port}.log"
    command = [sys.executable, "-m", "ca.cli", "serve", "--data-dir", str(data_dir), "--listen", f"127.0.0.1:{port}",
               "--http01-port", str(http01_port), "--dns-resolvers", f"127.0.0.1:{dns_port}", *(extra or [])]
    handle = log.open("w")
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                               cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text()
        if "acmeda: ready" in text:
            directory = re.search(r"ACME directory (\S+)", text).group(1)
            root = Path(re.search(r"root certificate (\S+)", text).group(1))
            return RunningCA(process, directory, root, data_dir, http01_port, log)
        if process.poll() is not None:
            raise AssertionError(f"acmeda serve exited early:\n{text}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"acmeda serve did not become ready:\n{log.read_text()}")


class KeyAuthorizations(http.server.BaseHTTPRequestHandler):
    """http-01 answers for the tests that drive ACME themselves: `tokens` maps a token to its key authorization."""

    tokens: dict[str, str] = {}

    def do_GET(self) -> None:
        body = self.tokens.get(self.path.rsplit("/", 1)[-1])
        self.send_response(200 if body else 404)
        self.end_headers()
        if body:
            self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


@contextmanager
def answering_http01(port: int) -> Iterator[dict[str, str]]:
    """Serve `KeyAuthorizations` on 127.0.0.1:`port` for the block; yields the token table."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), KeyAuthorizations)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield KeyAuthorizations.tokens
    finally:
        server.shutdown()
        server.server_close()


def poll(client, url: str, until: set[str]) -> dict:
    for _ in range(200):
        body = client.post(url).json()
        if body["status"] in until:
            return body
        time.sleep(0.05)
    raise AssertionError(f"{url} stayed {body['status']}")


def issue_ip_certificate(client, new_account: str, new_order: str) -> x509.Certificate:
    """A whole flow for ip:127.0.0.1, answered over http-01 by `KeyAuthorizations`, through `client`:
    anything with `post(url, payload=None)` (a `requests.Response`), `key` and a settable `kid`.
    Returns the leaf, checked to carry the serial its certificate URL names."""
    account = client.post(new_account, {"termsOfServiceAgreed": True})
    assert account.status_code == 201, account.text
    client.kid = account.headers["Location"]
    order = client.post(new_order, {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]})
    assert order.status_code == 201, order.text
    order_url, body = order.headers["Location"], order.json()
    authz = client.post(body["authorizations"][0]).json()
    challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
    KeyAuthorizations.tokens[challenge["token"]] = f"{challenge['token']}.{b64(client.key.public_key().thumbprint())}"
    assert client.post(challenge["url"], {}).status_code == 200
    assert poll(client, order_url, {"ready", "invalid"})["status"] == "ready"
    csr, _ = make_csr(["127.0.0.1"])
    assert client.post(body["finalize"], {"csr": b64(csr)}).status_code == 200
    done = poll(client, order_url, {"valid", "invalid"})
    chain = client.post(done["certificate"])
    assert chain.status_code == 200
    leaf = x509.load_pem_x509_certificates(chain.content)[0]
    assert leaf.serial_number == int(done["certificate"].rsplit("/", 1)[1], 16)
    return leaf


def stop_ca(ca: RunningCA) -> None:
    ca.process.terminate()
    try:
        ca.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        ca.process.kill()


@pytest.fixture(scope="session")
def dns_server():
    with DnsServer(catch_all_a="127.0.0.1") as server:
        yield server


@pytest.fixture(scope="module")
def running_ca(tmp_path_factory, dns_server):
    tmp = tmp_path_factory.mktemp("interop")
    ca = start_ca(tmp, http01_port=free_port(), dns_port=dns_server.port)
    yield ca
    stop_ca(ca)
