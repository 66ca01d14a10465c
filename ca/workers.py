"""Serving from several processes: one event loop per CPU.

A Python process runs its requests on one event loop, so on one core. With more than one
worker, `acmeda serve` finishes the first-start work (keys, migrations, the TLS certificate) in
the parent, binds one listening socket per worker on the same port (SO_REUSEPORT: the kernel
spreads new connections across them), then forks the workers. Each worker opens its own
database connection. The workers are replicas of the kind `--database-url` runs on several
machines: a flow keeps all its state in the database, so any request may land on any worker.

The parent only supervises. It reports ready once every worker listens, passes SIGINT and
SIGTERM on, and replaces a worker that dies. A worker that dies before it is ready stops the
whole server, because its successor would fail the same way (a bad key passphrase, say). This
module knows nothing of ACME: it runs the `Worker` callable it is given.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Callable, Sequence

log = logging.getLogger(__name__)
Worker = Callable[[Sequence[socket.socket], Callable[[], None]], int]  # (sockets, report_ready) -> exit code
START_TIMEOUT = 120.0
_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD}


def default_count() -> int:
    """One worker per CPU this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def bind(host: str, port: int, workers: int) -> list[list[socket.socket]]:
    """For each worker, one listening socket per address of `host`, all on the same port.

    Port 0 takes the port the kernel picks for the first socket."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    per_worker: list[list[socket.socket]] = []
    for _ in range(workers):
        sockets = []
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if workers > 1:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and per_worker:
                address = (address[0], per_worker[0][0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(1024)
            sock.setblocking(False)
            sockets.append(sock)
        per_worker.append(sockets)
    return per_worker


def serve(sockets: Sequence[Sequence[socket.socket]], worker: Worker, on_ready: Callable[[], None]) -> int:
    """Run one worker per entry of `sockets` in its own process until SIGINT or SIGTERM."""
    return _Supervisor(sockets, worker).run(on_ready)


class _Supervisor:
    def __init__(self, sockets: Sequence[Sequence[socket.socket]], worker: Worker) -> None:
        self._sockets, self._worker = sockets, worker
        self._pids: dict[int, int] = {}  # pid -> worker index
        self._ready_read, self._ready_write = os.pipe()

    def run(self, on_ready: Callable[[], None]) -> int:
        # Blocked here and taken with sigwait, so no signal interrupts the parent mid-step; the
        # workers unblock them before they run.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for index in range(len(self._sockets)):
                self._start(index)
            failed = self._await_ready()
            if failed is not None:
                return failed
            on_ready()
            return self._supervise()
        finally:
            self._stop_all()

    def _start(self, index: int) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os._exit(self._run_worker(index, parent))
        self._pids[pid] = index

    def _run_worker(self, index: int, parent: int) -> int:
        try:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            _die_with(parent)
            os.close(self._ready_read)
            for other, sockets in enumerate(self._sockets):
                if other != index:
                    for sock in sockets:
                        sock.close()
            return self._worker(self._sockets[index], lambda: os.write(self._ready_write, b"."))
        except BaseException:  # a worker must never return into the parent's code
            traceback.print_exc()
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()

    def _await_ready(self) -> int | None:
        """None once every worker reported ready; otherwise the exit code to stop with."""
        waiting, deadline = len(self._sockets), time.monotonic() + START_TIMEOUT
        while waiting:
            readable, _, _ = select.select([self._ready_read], [], [], 0.1)
            if readable:
                waiting -= len(os.read(self._ready_read, waiting))
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                del self._pids[pid]
                print(f"acmeda: a worker failed to start (exit status {os.waitstatus_to_exitcode(status)})",
                      file=sys.stderr, flush=True)
                return 1
            if signal.sigpending() & {signal.SIGINT, signal.SIGTERM}:
                return 0
            if time.monotonic() > deadline:
                print(f"acmeda: workers did not start within {START_TIMEOUT:g} s", file=sys.stderr, flush=True)
                return 1
        return None

    def _supervise(self) -> int:
        while True:
            received = signal.sigwait(_SIGNALS)
            if received != signal.SIGCHLD:
                return 0
            while self._pids:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if not pid:
                    break
                index = self._pids.pop(pid)
                log.error("worker %d (pid %d) exited with status %d; starting a new one", index, pid,
                          os.waitstatus_to_exitcode(status))
                self._start(index)

    def _stop_all(self) -> None:
        for pid in self._pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in list(self._pids):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._pids.clear()


def _die_with(parent: int) -> None:
    """Ask Linux to send this worker SIGTERM when its parent dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request took effect (init or a subreaper adopted us)
        os.kill(os.getpid(), signal.SIGTERM)
