"""`acmeda serve --workers N` on SQLite: N worker processes behind one port, one flow across them.

Every request opens a new connection, so the kernel spreads the requests of one flow across
the workers (SO_REUSEPORT); each worker's CPU time, read from /proc, shows which of them
served. Then the supervision: a killed worker is replaced, and SIGTERM stops them all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.acme_client import new_key, sign
from tests.interop.conftest import RunningCA, answering_http01, free_port, issue_ip_certificate, start_ca, stop_ca

WORKERS = 3


def workers_of(process: subprocess.Popen) -> dict[int, float]:
    """The live child processes of the server and the CPU seconds each has used."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == process.pid and fields[0] != "Z":
            found[int(entry)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


@pytest.fixture
def server(tmp_path, dns_server):
    http01 = free_port()
    with answering_http01(http01):
        ca = start_ca(tmp_path, http01_port=http01, dns_port=dns_server.port, extra=["--workers", str(WORKERS)])
        yield ca
        stop_ca(ca)


class FreshConnections:
    """An ACME client that opens a new connection for every request."""

    def __init__(self, ca: RunningCA) -> None:
        self.root, self.key, self.kid = str(ca.root), new_key(), None
        self.directory = requests.get(ca.directory, verify=self.root).json()

    def nonce(self) -> str:
        return requests.head(self.directory["newNonce"], verify=self.root).headers["Replay-Nonce"]

    def post(self, url: str, payload=None, *, nonce: str | None = None) -> requests.Response:
        body = sign(payload, key=self.key, url=url, nonce=nonce or self.nonce(), kid=self.kid)
        return requests.post(url, data=json.dumps(body), verify=self.root,
                             headers={"Content-Type": "application/jose+json", "Connection": "close"})


def test_one_flow_across_the_workers(server):
    assert len(workers_of(server.process)) == WORKERS
    cpu_before = workers_of(server.process)
    client = FreshConnections(server)
    issue_ip_certificate(client, client.directory["newAccount"], client.directory["newOrder"])
    cpu_after = workers_of(server.process)
    # Any CPU tick counts: /proc rounds down to 10 ms ticks, and a worker that served a few of
    # the flow's requests on a fast machine may have used less than two (the old threshold).
    served = [pid for pid in cpu_before if cpu_after.get(pid, 0) > cpu_before[pid]]
    assert len(served) >= 2, f"the flow's requests should have spread over the workers: {cpu_before} → {cpu_after}"


def test_a_nonce_is_single_use_across_workers(server):
    client = FreshConnections(server)
    nonce = client.nonce()
    assert client.post(client.directory["newAccount"], {"termsOfServiceAgreed": True}, nonce=nonce).status_code == 201
    for _ in range(2 * WORKERS):  # offered again, on new connections: whichever worker answers refuses it
        replay = client.post(client.directory["newAccount"], {}, nonce=nonce)
        assert replay.status_code == 400 and replay.json()["type"] == "urn:ietf:params:acme:error:badNonce"


def test_a_worker_that_dies_is_replaced_and_sigterm_stops_all(server):
    before = set(workers_of(server.process))
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = set(workers_of(server.process))
        if len(now) == WORKERS and victim not in now:
            break
        time.sleep(0.1)
    assert len(now) == WORKERS and victim not in now, f"worker {victim} was not replaced: {now}"
    for _ in range(2 * WORKERS):  # every worker answers, the new one included
        assert requests.get(server.directory, verify=str(server.root), headers={"Connection": "close"}).status_code == 200
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=15) == 0
    assert all(not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]
               for pid in now), "no worker may outlive the server"


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "ca.cli", "serve", "--data-dir", str(tmp_path / "data"),
                               "--listen", f"127.0.0.1:{port}", "--workers", "2"],
                              capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr, done.stderr
