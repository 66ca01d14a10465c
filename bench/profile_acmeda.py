"""Where does acmeda spend an issuance? Runs an instrumented `acmeda serve` under load and reports.

    python bench/profile_acmeda.py [--concurrency 8] [--count 300] [--database-url postgresql://…]
                                   [--py-spy] [--json OUT]

Starts acmeda in a child process with timers attached from the outside (nothing under ca/
is changed: the child wraps a few functions and adds SQLAlchemy event listeners before it
calls `ca.cli.main`), drives it with `bench/load.py`, stops it, and prints:

- per ACME request kind: count, mean and p50 wall time inside the app (middleware to
  response), mean main-thread CPU (exact at concurrency 1; with concurrency it includes
  interleaved work of other requests), database transactions and statements per request;
- per database transaction: wall time and main-thread CPU of the whole `Store.transaction` block;
- per instrumented step: count and total/mean wall time (JWS parse, signature
  verification, account lookup, nonce redemption, CSR checks, certificate signing, the
  http-01 fetch, the whole background validation);
- per SQL statement kind (BEGIN IMMEDIATE, SELECT/INSERT/UPDATE by table, COMMIT): count and
  total/mean wall time as the event loop sees it (queueing for the aiosqlite thread and
  SQLite lock waits included);
- the server's CPU time per issuance, split by thread (event loop vs database threads);
- with --py-spy (py-spy must be installed in the venv): a sampling profile of the CPU
  (GIL-holding samples only) grouped into categories.

The timers add a little overhead; use bench/issuance.py for throughput numbers.
"""

from __future__ import annotations

import argparse
import collections
import contextvars
import functools
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOAD = REPO / "bench" / "load.py"
REPORT_ENV = "ACMEDA_BENCH_PROFILE_REPORT"  # read by the child only; not an acmeda setting


# --- the instrumented child ------------------------------------------------------------------------

class Timers:
    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = collections.defaultdict(list)
        self.per_request: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    def add(self, name: str, seconds: float) -> None:
        self.samples[name].append(seconds)

    def count(self, what: str) -> None:
        self.per_request[ROUTE.get()][what] += 1


TIMERS = Timers()
ROUTE: contextvars.ContextVar[str] = contextvars.ContextVar("route", default="other")


def _timed_async(name: str, fn):
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            TIMERS.add(name, time.perf_counter() - started)
    return wrapper


def _timed_sync(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMERS.add(name, time.perf_counter() - started)
    return wrapper


_ROUTE_NAMES = {
    "/directory": "directory", "/acme/new-nonce": "new-nonce", "/acme/new-account": "new-account",
    "/acme/new-order": "new-order", "/acme/order/{order_id}": "order (poll)",
    "/acme/order/{order_id}/finalize": "finalize", "/acme/authz/{authz_id}": "authz",
    "/acme/chall/{challenge_id}": "challenge", "/acme/cert/{serial}": "certificate",
}


def _sql_kind(statement: str) -> str:
    text = " ".join(statement.split())
    upper = text.upper()
    if upper.startswith("BEGIN"):
        return text
    verb = upper.split(" ", 1)[0]
    match = re.search(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", text, re.I)
    return f"{verb} {match.group(1) if match else ''}".strip()


def _instrument_engine(engine) -> None:
    from sqlalchemy import event

    sync_engine = getattr(engine, "sync_engine", engine)  # AsyncEngine or Engine
    if getattr(sync_engine, "_bench_instrumented", False):
        return
    sync_engine._bench_instrumented = True

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _before(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _after(conn, cursor, statement, parameters, context, executemany):
        started = conn.info["bench_started"].pop()
        TIMERS.add("sql " + _sql_kind(statement), time.perf_counter() - started)
        TIMERS.count("statements")

    dialect = sync_engine.dialect
    # COMMIT; ROLLBACK is also what the pool runs when a connection is returned ("reset on return");
    # PING is pool_pre_ping's check on every checkout (PostgreSQL).
    for method, name in (("do_commit", "sql COMMIT"), ("do_rollback", "sql ROLLBACK (incl. pool reset)"),
                         ("do_ping", "sql PING (pool_pre_ping)")):
        original = getattr(dialect, method)

        def timed(dbapi_connection, _original=original, _name=name):
            started = time.perf_counter()
            try:
                return _original(dbapi_connection)
            finally:
                TIMERS.add(_name, time.perf_counter() - started)
        setattr(dialect, method, timed)


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every live thread of this process, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    main_tid = os.getpid()
    for task in Path(f"/proc/{main_tid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tid = int(task.name)
        name = "event loop (main thread)" if tid == main_tid else "other threads (database driver, executor)"
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return out


class _TimedContext:
    """Wraps a transaction context manager (async or sync) to count and time it."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def _start(self) -> None:
        TIMERS.count("transactions")
        self.started, self.cpu = time.perf_counter(), time.thread_time()

    def _stop(self) -> None:
        TIMERS.add("txn wall (whole block, commit included)", time.perf_counter() - self.started)
        TIMERS.add("txn main-thread CPU (whole block)", time.thread_time() - self.cpu)

    async def __aenter__(self):
        self._start()
        return await self.inner.__aenter__()

    async def __aexit__(self, *exc):
        try:
            return await self.inner.__aexit__(*exc)
        finally:
            self._stop()

    def __enter__(self):
        self._start()
        return self.inner.__enter__()

    def __exit__(self, *exc):
        try:
            return self.inner.__exit__(*exc)
        finally:
            self._stop()


_MISSING: list[str] = []


def _wrap(owner, attr: str, name: str) -> None:
    """Time `owner.attr` (a function or method, sync or async) under `name`, if it exists."""
    fn = getattr(owner, attr, None)
    if fn is None:
        _MISSING.append(f"{getattr(owner, '__name__', owner)}.{attr}")
        return
    wrapper = _timed_async(name, fn) if inspect.iscoroutinefunction(fn) else _timed_sync(name, fn)
    setattr(owner, attr, wrapper)


def _wrap_engine_factories(*modules) -> None:
    """Attach the SQL timers to every engine acmeda creates, whatever the factory is called."""
    for module in modules:
        for attr in ("make_engine", "make_sqlite_engine", "make_postgres_engine", "create_engine", "create_async_engine"):
            original = getattr(module, attr, None)
            if original is None or getattr(original, "_bench_wrapped", False):
                continue

            def factory(*args, _original=original, **kwargs):
                engine = _original(*args, **kwargs)
                _instrument_engine(engine)
                return engine
            factory._bench_wrapped = True  # type: ignore[attr-defined]
            setattr(module, attr, factory)


def child_main(argv: list[str]) -> int:
    """Instrument, then run `acmeda serve` with `argv`; write the report on SIGUSR2.

    Everything is looked up defensively: acmeda's internals change, and a timer that no
    longer finds its function is reported as missing rather than breaking the server."""
    sys.path.insert(0, str(REPO))
    import importlib

    from aiohttp import web

    import ca.cli

    modules = {}
    for name in ("ca.app", "ca.auth", "ca.certificates", "ca.jws", "ca.validation", "ca.orders", "ca.nonces",
                 "ca.issuance", "ca.challenges.http01", "ca.storage.db", "ca.storage.repository"):
        try:
            modules[name] = importlib.import_module(name)
        except ImportError as exc:
            _MISSING.append(f"{name} ({exc})")

    def mod(name):
        return modules.get(name)

    _wrap_engine_factories(*(m for m in (mod("ca.app"), mod("ca.storage.db"), mod("ca.storage.repository")) if m))
    store_class = getattr(mod("ca.storage.repository"), "Store", None)
    if store_class is not None and hasattr(store_class, "transaction"):
        original_transaction = store_class.transaction

        def transaction(self, *args, **kwargs):
            return _TimedContext(original_transaction(self, *args, **kwargs))
        store_class.transaction = transaction
    else:
        _MISSING.append("Store.transaction")

    @web.middleware
    async def timing(request, handler):
        info = request.match_info.route.resource
        canonical = info.canonical if info is not None else request.path
        name = _ROUTE_NAMES.get(canonical, canonical)
        token = ROUTE.set(name)
        TIMERS.count("requests")
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return await handler(request)
        finally:
            TIMERS.add("request " + name, time.perf_counter() - started)
            # Main-thread CPU between start and end of the request: exact at concurrency 1, and
            # includes other requests' work when they interleave.
            TIMERS.add("cpu " + name, time.thread_time() - cpu)
            ROUTE.reset(token)

    original_build_app = ca.cli.build_app

    def build_app(*args, **kwargs):
        app = original_build_app(*args, **kwargs)
        app.middlewares.insert(0, timing)
        return app
    ca.cli.build_app = build_app

    for module, attr, name in (
        ("ca.jws", "parse_jws", "step JWS parse"),
        ("ca.jws", "verify_signature", "step JWS signature verification"),
        ("ca.jws", "parse_account_key", "step JWK parse (new account)"),
        ("ca.auth", "authenticate", "step authenticate (whole)"),
        ("ca.auth", "_account_for_kid", "step account lookup (kid)"),
        ("ca.storage.repository", "redeem_nonce", "step nonce redemption (DB insert)"),
        ("ca.certificates", "check_csr", "step CSR checks"),
        ("ca.certificates", "issue", "step issue (load order, sign, store)"),
    ):
        if mod(module) is not None:
            _wrap(mod(module), attr, name)
    for module, cls, attr, name in (
        ("ca.nonces", "NonceService", "issue", "step nonce minting"),
        ("ca.issuance", "Issuer", "issue", "step certificate signing (Issuer.issue)"),
        ("ca.challenges.http01", "Http01Validator", "validate", "step http-01 fetch (Http01Validator.validate)"),
    ):
        owner = getattr(mod(module), cls, None)
        if owner is None:
            _MISSING.append(f"{module}.{cls}")
        else:
            _wrap(owner, attr, name)
    validation = mod("ca.validation")
    if validation is not None and hasattr(validation, "validate"):
        original_validate = validation.validate

        async def validate(*args, **kwargs):
            ROUTE.set("validation (background)")
            return await original_validate(*args, **kwargs)
        validation.validate = _timed_async("step validation task (load, fetch, record)", validate)
    else:
        _MISSING.append("ca.validation.validate")

    cpu_at_reset: dict[int, tuple[str, float]] = {}

    def report(*_args) -> None:
        """SIGUSR2: write what was measured since the last reset."""
        cpu: dict[str, float] = collections.defaultdict(float)
        for tid, (name, seconds) in _thread_cpu().items():
            cpu[name] += seconds - (cpu_at_reset[tid][1] if tid in cpu_at_reset else 0.0)
        data = {
            "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
            "timers": {k: v for k, v in TIMERS.samples.items()},
            "per_request": {k: dict(v) for k, v in TIMERS.per_request.items()},
            "not_instrumented": _MISSING,
        }
        Path(os.environ[REPORT_ENV]).write_text(json.dumps(data))

    def reset(*_args) -> None:
        """SIGUSR1: forget everything so far (accounts, warm-up); the timed part starts now."""
        TIMERS.samples.clear()
        TIMERS.per_request.clear()
        cpu_at_reset.clear()
        cpu_at_reset.update(_thread_cpu())

    signal.signal(signal.SIGUSR1, reset)
    signal.signal(signal.SIGUSR2, report)
    return ca.cli.main(["serve", *argv])


# --- the parent: run, load, report --------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stats(values: list[float]) -> tuple[int, float, float, float]:
    ordered = sorted(values)
    n = len(ordered)
    return n, sum(ordered), sum(ordered) / n, ordered[max(0, (n + 1) // 2 - 1)]


_STEPS = [  # whole steps: a sample anywhere inside one of these functions belongs to it
    ("JWS signature verification (ECDSA)", ("verify_signature (ca/jws.py",)),
    ("certificate signing", ("Issuer.issue (",)),
    ("CSR checks", ("check_csr (",)),
    ("http-01 validation client (aiohttp client)", ("Http01Validator",)),
    ("JWK/JWS parsing (josepy, json)", ("parse_jws (", "JWK.from_json", "parse_account_key", "thumbprint")),
]
_OWNERS = [  # otherwise the innermost frame from one of these decides
    ("SQLAlchemy ORM/Core + DB driver", ("sqlalchemy/", "aiosqlite/", "asyncpg/", "sqlmodel/", "sqlite3/")),
    ("TLS (ssl)", ("sslproto.py", "/ssl.py")),
    ("aiohttp server (parse, dispatch, write)", ("aiohttp/",)),
    ("acmeda code (handlers, flows, JSON)", ("ca/", "json/")),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
]


def _categorise(stack: str) -> str:
    frames = stack.split(";")
    if frames and "profile_acmeda.py" in frames[-1]:
        return "bench instrumentation (the timers themselves)"
    # The process's entry frames (runpy, this file, ca/cli.py's main) are in every stack: drop them.
    frames = [f for f in frames if not any(e in f for e in ("ca/cli.py", "profile_acmeda.py", "runpy"))]
    joined = ";".join(frames)
    for name, needles in _STEPS:
        if any(n in joined for n in needles):
            return name
    if "_connection_worker_thread" in joined:
        return "SQLAlchemy ORM/Core + DB driver"
    for frame in reversed(frames):
        for name, needles in _OWNERS:
            if any(n in frame for n in needles):
                return name
    return "other"


def py_spy_binary() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def _py_spy_summary(path: Path) -> tuple[list[tuple[str, int, float]], int]:
    """Samples by category, as shares of acmeda's own samples; and the samples in the bench's timers."""
    totals: collections.Counter = collections.Counter()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        totals[_categorise(stack)] += int(count)
    own = totals.pop("bench instrumentation (the timers themselves)", 0)
    overall = sum(totals.values()) or 1
    return [(name, n, 100 * n / overall) for name, n in totals.most_common()], own


def parent_main(args: argparse.Namespace) -> int:
    text, load = run_profile(args)
    print(text)
    return 0 if load["errors"] == 0 else 1


def run_profile(args: argparse.Namespace) -> tuple[str, dict]:
    """Run the instrumented server under load; return the printable summary and the load result."""
    tmp = Path(tempfile.mkdtemp(prefix="acmeda-profile-"))
    port, http01 = _free_port(), _free_port()
    report_path = tmp / "report.json"
    serve_args = ["--data-dir", str(tmp / "data"), "--listen", f"127.0.0.1:{port}", "--http01-port", str(http01),
                  "--dns-resolvers", f"127.0.0.1:{_free_port()}", "--log-level", "warning"]
    fresh_db = None
    if args.database_url:
        from issuance import create_database  # bench/issuance.py: a fresh database on that server

        fresh_db = create_database(args.database_url)
        serve_args += ["--database-url", fresh_db[0]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACMEDA_")}
    env[REPORT_ENV] = str(report_path)
    log = tmp / "acmeda.log"
    with log.open("w") as handle:
        server = subprocess.Popen([sys.executable, __file__, "--child", *serve_args], stdout=handle,
                                  stderr=subprocess.STDOUT, env=env, cwd=REPO)
    spy = None
    try:
        deadline = time.monotonic() + 60
        while "acmeda: ready" not in log.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"profile: acmeda did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        text = log.read_text()
        directory = re.search(r"ACME directory (\S+)", text).group(1)
        root = re.search(r"root certificate (\S+)", text).group(1)
        base = [sys.executable, str(LOAD), "--directory", directory, "--ca-bundle", root, "--http01-port", str(http01),
                "--concurrency", str(args.concurrency), "--poll-interval", str(args.poll_interval)]
        # Warm up (untimed), then reset the counters and run the measured load.
        subprocess.run([*base, "--count", "10", "--json", str(tmp / "warm.json")], check=True, timeout=300,
                       stderr=subprocess.DEVNULL)
        server.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        if args.py_spy:
            spy_bin = py_spy_binary()
            if spy_bin is None:
                raise SystemExit("profile: --py-spy needs py-spy (pip install py-spy into the venv)")
            spy = subprocess.Popen([spy_bin, "record", "--pid", str(server.pid), "--rate", "250", "--gil",
                                    "--nonblocking", "--format", "raw", "--output", str(tmp / "py-spy.txt")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        subprocess.run([*base, "--count", str(args.count), "--server-pid", str(server.pid), "--json", str(tmp / "load.json")],
                       timeout=args.load_timeout, stderr=subprocess.DEVNULL)
        server.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while not report_path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if fresh_db is not None:
            from issuance import drop_database

            drop_database(args.database_url, fresh_db[1])
    load = json.loads((tmp / "load.json").read_text())
    data = json.loads(report_path.read_text())
    done = load["completed"] or 1
    out: list[str] = []
    out.append(f"acmeda under load: concurrency {args.concurrency}, {load['completed']}/{load['count']} issuances in "
               f"{load['elapsed_s']} s = {load['issuances_per_s']}/s, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms "
               f"(instrumented{', py-spy attached' if args.py_spy else ''}; database "
               f"{'postgresql' if args.database_url else 'sqlite'})")
    out.append(f"requests per issuance (client view): {load['requests_per_issuance']}  {load['requests']}")
    if data.get("not_instrumented"):
        out.append("not instrumented (not found in this version of acmeda): " + ", ".join(data["not_instrumented"]))
    cpu = data["cpu_s"]
    out.append("server CPU per issuance: " + ", ".join(f"{k} {v / done * 1000:.1f} ms" for k, v in sorted(cpu.items()))
               + f"; total {sum(cpu.values()) / done * 1000:.1f} ms")
    out.append("")
    out.append(f"{'request kind':28} {'count':>6} {'per iss.':>8} {'mean ms':>8} {'p50 ms':>8} {'CPU ms':>8} "
               f"{'txns/req':>8} {'stmts/req':>9}")
    timers = data["timers"]
    per_request = data["per_request"]
    for name, values in sorted(timers.items()):
        if not name.startswith("request "):
            continue
        kind = name[len("request "):]
        n, _total, mean, p50 = _stats(values)
        counts = per_request.get(kind, {})
        cpu_mean = _stats(timers.get("cpu " + kind, [0.0]))[2]
        out.append(f"{kind:28} {n:6d} {n / done:8.2f} {mean * 1000:8.2f} {p50 * 1000:8.2f} {cpu_mean * 1000:8.2f} "
                   f"{counts.get('transactions', 0) / n:8.2f} {counts.get('statements', 0) / n:9.2f}")
    background = per_request.get("validation (background)", {})
    out.append(f"{'validation (background)':28} {'':6} {'':8} {'':8} {'':8} {'':8} "
               f"{background.get('transactions', 0) / done:8.2f} {background.get('statements', 0) / done:9.2f}  (per issuance)")
    out.append("")
    out.append(f"{'step':52} {'count':>6} {'per iss.':>8} {'total s':>8} {'mean ms':>8} {'ms/iss.':>8}")
    for prefix in ("step ", "txn ", "sql "):
        rows = [(name, *_stats(values)) for name, values in timers.items() if name.startswith(prefix)]
        for name, n, total, mean, _p50 in sorted(rows, key=lambda r: -r[2]):
            out.append(f"{name:52} {n:6d} {n / done:8.2f} {total:8.2f} {mean * 1000:8.2f} {total / done * 1000:8.2f}")
        out.append("")
    if args.py_spy and (tmp / "py-spy.txt").exists():
        categories, own = _py_spy_summary(tmp / "py-spy.txt")
        out.append(f"CPU samples (py-spy --gil), by category ({own} samples inside the bench's own timers left out):")
        for name, n, share in categories:
            out.append(f"  {share:5.1f}%  {n:7d}  {name}")
    if args.keep_tmp:
        out.append(f"profile: kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(out)
    if args.json:
        Path(args.json).write_text(json.dumps({"load": load, "server": data, "summary": text}, indent=1))
    return text, load


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Profile acmeda's issuance path under load.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL server URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres): profile on a "
                             "fresh database created there and dropped afterwards (default: SQLite)")
    parser.add_argument("--py-spy", action="store_true", help="also sample the CPU with py-spy")
    parser.add_argument("--load-timeout", type=float, default=300.0)
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    parser.add_argument("--keep-tmp", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    return parent_main(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
