"""A real `acmeda serve` process on loopback for the device client's end-to-end tests, trusting
the test TPM maker's EK CA (tests/support/swtpm.py) for AK enrollment."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningCA:
    process: subprocess.Popen
    directory: str
    tls_root: Path
    data_dir: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ca(workdir: Path, extra: list[str]) -> RunningCA:
    """`acmeda serve` (HTTPS with its own root) with the tpm format only; `extra` flags added."""
    workdir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):  # a port taken between the probe and the bind: another one
        port = _free_port()
        log = workdir / f"acmeda-{port}.log"
        command = [sys.executable, "-m", "ca.cli", "serve", "--data-dir", str(workdir / "ca-data"),
                   "--listen", f"127.0.0.1:{port}", "--attestation-formats", "tpm", *extra]
        with log.open("w") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO,
                                       env={**os.environ, "ACMEDA_LOG_LEVEL": "warning"})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            text = log.read_text()
            if "acmeda: ready" in text:
                directory = re.search(r"ACME directory (\S+)", text).group(1)
                root = Path(re.search(r"root certificate (\S+)", text).group(1))
                return RunningCA(process, directory, root, workdir / "ca-data", log)
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
            process.wait()
        if "address already in use" not in log.read_text().lower():
            break
    raise AssertionError(f"acmeda serve did not become ready:\n{log.read_text()}")


def ek_roots_dir(directory: Path, root_pem: bytes, intermediate_pem: bytes | None) -> Path:
    """The layout of --tpm-ek-roots: <dir>/*.pem roots, <dir>/intermediates/*.pem."""
    (directory / "intermediates").mkdir(parents=True, exist_ok=True)
    (directory / "maker-root.pem").write_bytes(root_pem)
    if intermediate_pem is not None:
        (directory / "intermediates" / "maker-intermediate.pem").write_bytes(intermediate_pem)
    return directory


@pytest.fixture(scope="module")
def tpm_ca(tmp_path_factory, swtpm_maker) -> Iterator[RunningCA]:
    """A CA that trusts the session's test TPM maker for EKs and accepts the tpm format."""
    workdir = tmp_path_factory.mktemp("device-ca")
    roots = ek_roots_dir(workdir / "ek-roots", swtpm_maker.root_pem, swtpm_maker.intermediate_pem)
    ca = start_ca(workdir, ["--tpm-ek-roots", str(roots), "--device-min-trust-level", "hardware"])
    yield ca
    ca.stop()


@pytest.fixture(scope="module")
def plain_ca(tmp_path_factory) -> Iterator[RunningCA]:
    """A CA that requires external account binding and knows only the real TPM makers' EK roots."""
    ca = start_ca(tmp_path_factory.mktemp("plain-ca"), ["--require-eab", "true"])
    yield ca
    ca.stop()


def eab_key(ca: RunningCA) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-m", "ca.cli", "eab", "create", "--data-dir", str(ca.data_dir), "--label", "device"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout
    return re.search(r"key id:\s+(\S+)", out).group(1), re.search(r"hmac key:\s+(\S+)", out).group(1)
