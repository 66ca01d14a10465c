"""A real software TPM for the tests: swtpm (libtpms) manufactured by swtpm_setup with an EK
certificate from a local test manufacturer CA, served on loopback TCP.

`swtpm_setup --create-ek-cert` runs swtpm_localca, which keeps a two-level CA (a root and an
issuing intermediate) in a directory we choose: that pair stands in for a TPM maker's EK CA.
Manufacturing a TPM costs about a second (RSA EK generation), so each maker manufactures one
TPM per session and every test gets a fresh running copy of that state: a clean TPM with the
same EK. `SoftwareTpmMaker.manufacture()` makes a TPM with a different EK when a test needs
two machines.

swtpm listens on two adjacent loopback ports (the TCTI expects the control channel on the TPM
port plus one); a start that loses a port race is retried on other ports. The TCTI string is
what tpm2-pytss (`TCTILdr.parse`) and tpm2-tools (`--tcti`) take.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

SWTPM, SWTPM_SETUP, SWTPM_LOCALCA = "swtpm", "swtpm_setup", "/usr/bin/swtpm_localca"
RSA_EK_CERT_NV_INDEX = 0x01C00002
ECC_EK_CERT_NV_INDEX = 0x01C00016  # swtpm's ECC EK is NIST P-384 (TCG EK profile high range)


def require_swtpm() -> None:
    """Fail under CI (which installs swtpm, see .ci/run), skip on a workstation without it."""
    if shutil.which(SWTPM) and shutil.which(SWTPM_SETUP) and Path(SWTPM_LOCALCA).exists():
        return
    message = "swtpm and swtpm-tools are not installed (Debian: apt-get install swtpm swtpm-tools)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class ManufacturedTpm:
    """A TPM state directory as it leaves the factory, with its EK certificates (DER)."""

    state: Path
    ek_certificate_der: bytes  # RSA 2048 EK
    ecc_ek_certificate_der: bytes  # ECC P-384 EK


class SoftwareTpmMaker:
    """A test TPM manufacturer: a local EK CA and the TPMs it certifies."""

    def __init__(self, directory: Path, name: str = "acmeda-test") -> None:
        self.directory = directory
        self._ca = directory / "ca"
        self._ca.mkdir(parents=True, exist_ok=True)
        self._count = 0
        (directory / "localca.conf").write_text(
            f"statedir = {self._ca}\nsigningkey = {self._ca}/signkey.pem\n"
            f"issuercert = {self._ca}/issuercert.pem\ncertserial = {self._ca}/certserial\n")
        (directory / "localca.options").write_text(
            f"--platform-manufacturer {name}\n--platform-version 2.1\n--platform-model swtpm\n")
        (directory / "setup.conf").write_text(
            f"create_certs_tool = {SWTPM_LOCALCA}\n"
            f"create_certs_tool_config = {directory}/localca.conf\n"
            f"create_certs_tool_options = {directory}/localca.options\n"
            "active_pcr_banks = sha256\n")

    @property
    def root_pem(self) -> bytes:
        """The maker's EK root CA certificate (PEM)."""
        return (self._ca / "swtpm-localca-rootca-cert.pem").read_bytes()

    @property
    def intermediate_pem(self) -> bytes:
        """The intermediate that signs EK certificates (PEM); real EK certificates also arrive without it."""
        return (self._ca / "issuercert.pem").read_bytes()

    def manufacture(self) -> ManufacturedTpm:
        self._count += 1
        state = self.directory / f"tpm-{self._count}"
        certs = self.directory / f"tpm-{self._count}-certs"
        state.mkdir()
        certs.mkdir()
        subprocess.run(
            [SWTPM_SETUP, "--tpm2", "--tpm-state", str(state), "--create-ek-cert", "--overwrite",
             "--config", str(self.directory / "setup.conf"), "--write-ek-cert-files", str(certs)],
            check=True, capture_output=True, timeout=60)
        return ManufacturedTpm(state, _ek_cert(certs, "rsa2048"), _ek_cert(certs, "secp384r1"))


def _ek_cert(folder: Path, kind: str) -> bytes:
    found = sorted(folder.glob(f"ek-{kind}.crt"))
    if not found:
        raise FileNotFoundError(f"swtpm_setup wrote no {kind} EK certificate into {folder}: {os.listdir(folder)}")
    return found[0].read_bytes()


class SoftwareTpm:
    """A running swtpm serving a copy of a manufactured state on 127.0.0.1."""

    def __init__(self, manufactured: ManufacturedTpm, maker: SoftwareTpmMaker, workdir: Path) -> None:
        self.maker = maker
        self.ek_certificate_der = manufactured.ek_certificate_der
        self.ecc_ek_certificate_der = manufactured.ecc_ek_certificate_der
        self.state = workdir / "state"
        shutil.copytree(manufactured.state, self.state)
        self._log = workdir / "swtpm.log"
        self._process = self._start()

    def _start(self) -> subprocess.Popen:
        """Start swtpm on two adjacent free ports (the TCTI finds the control channel at the TPM
        port plus one); a port taken between our probe and swtpm's bind means another try."""
        for _attempt in range(20):
            self.port = _adjacent_free_ports()
            process = subprocess.Popen(
                [SWTPM, "socket", "--tpm2", "--tpmstate", f"dir={self.state}",
                 "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                 "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                 "--flags", "not-need-init,startup-clear", "--log", f"file={self._log}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if _wait_listening(process, self.port):
                return process
            process.kill()
            process.wait()
        raise RuntimeError(f"swtpm did not start; see {self._log}")

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    @property
    def ek_ca_root_pem(self) -> bytes:
        return self.maker.root_pem

    @property
    def ek_ca_intermediate_pem(self) -> bytes:
        return self.maker.intermediate_pem

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def _adjacent_free_ports() -> int:
    for _attempt in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two adjacent free TCP ports on 127.0.0.1")


def _wait_listening(process: subprocess.Popen, port: int, timeout: float = 10.0) -> bool:
    """True once swtpm accepts on both its ports and is still running. A probe of one port
    alone once let CI start a test against a swtpm that was not there (ECONNREFUSED on the TPM
    port): a probe whose ephemeral port is the very port it dials connects to itself (TCP
    simultaneous open), and that probe's socket makes swtpm's bind fail."""
    deadline = time.monotonic() + timeout
    waiting = [port + 1, port]
    while waiting and time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if _accepts(waiting[0]):
            waiting.pop(0)
        else:
            time.sleep(0.02)
    return not waiting and process.poll() is None


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as probe:
            return probe.getsockname() != probe.getpeername()  # not a self-connection
    except OSError:
        return False


@pytest.fixture(scope="session")
def swtpm_maker(tmp_path_factory) -> SoftwareTpmMaker:
    """The session's test TPM maker (its CA is what the CA under test must trust for EKs)."""
    require_swtpm()
    return SoftwareTpmMaker(tmp_path_factory.mktemp("swtpm-maker"))


@pytest.fixture(scope="session")
def _manufactured_tpm(swtpm_maker) -> ManufacturedTpm:
    return swtpm_maker.manufacture()


@pytest.fixture
def swtpm(swtpm_maker, _manufactured_tpm, tmp_path) -> Iterator[SoftwareTpm]:
    """A running, clean software TPM (the session's one EK), stopped after the test."""
    tpm = SoftwareTpm(_manufactured_tpm, swtpm_maker, tmp_path / "swtpm")
    try:
        yield tpm
    finally:
        tpm.stop()


@pytest.fixture
def swtpm_factory(swtpm_maker, tmp_path) -> Iterator:
    """Start further TPMs: `swtpm_factory()` a new machine of the same maker (a new EK);
    `swtpm_factory(maker=other)` one of another maker, e.g. an untrusted one."""
    started: list[SoftwareTpm] = []

    def start(maker: SoftwareTpmMaker | None = None) -> SoftwareTpm:
        maker = maker or swtpm_maker
        tpm = SoftwareTpm(maker.manufacture(), maker, tmp_path / f"swtpm-extra-{len(started)}")
        started.append(tpm)
        return tpm

    try:
        yield start
    finally:
        for tpm in started:
            tpm.stop()
