"""Where does acmeda spend an issuance? Runs an instrumented `acmeda serve` under load and reports.

    python bench/profile_acmeda.py [--concurrency 8] [--count 300] [--database-url postgresql://…]
                                   [--py-spy] [--json OUT]

Starts acmeda in a child process with timers attached from the outside (nothing under ca/
is changed: the child wraps a few functions and methods before it calls `ca.cli.main`), with
`--workers 1` so that every request runs in that one instrumented process. It drives it with
`bench/load.py`, stops it, and prints:

- per ACME request kind: count, mean and p50 wall time inside the app (middleware to
  response), mean main-thread CPU (exact at concurrency 1; with concurrency it includes
  interleaved work of other requests), writing and reading database transactions and
  statements per request;
- per database transaction, writing (`Store.transaction`, and `Store.statement` for a block of
  one statement) and reading (`Store.read`) apart:
  wall time and main-thread CPU of the whole block, and of its entry (SQLite: the connection's
  lock and BEGIN, with any wait for another process's write lock; PostgreSQL: pool acquire,
  and BEGIN for a writing one) and its exit (SQLite: COMMIT; PostgreSQL: COMMIT for a writing
  one, and the connection's release to the pool);
- per instrumented step: count and total/mean wall time (JWS parse, signature
  verification, account lookup, nonce redemption, CSR checks, certificate signing, the
  http-01 fetch, the whole background validation);
- per SQL statement kind (SQLite BEGIN IMMEDIATE/DEFERRED, SELECT/INSERT/UPDATE/DELETE by
  table, COMMIT): count and total/mean wall time of the store's driver-level calls
  (`one`/`all`/`run` of `ca.storage.sql`'s transaction classes). On SQLite a statement is a
  synchronous call on the event loop, so this is its own time; on PostgreSQL it is the
  round trip to the server as the event loop sees it;
- the server's CPU time per issuance, split by thread (event loop vs other threads: the
  SQLite WAL checkpointer, executors);
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


_TABLE_AFTER = {"SELECT": "FROM", "DELETE": "FROM", "INSERT": "INTO", "UPDATE": "UPDATE"}


@functools.lru_cache(maxsize=1024)  # the store's statements are a few fixed strings
def _sql_kind(statement: str) -> str:
    """`SELECT acme_order`, `INSERT used_nonce`, `BEGIN IMMEDIATE`, …: the verb and the table.

    Table names may be quoted (`"acme_order"`), and so may column names before them."""
    text = " ".join(statement.split())
    upper = text.upper()
    if upper.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
        return text
    verb = upper.split(" ", 1)[0]
    keyword = _TABLE_AFTER.get(verb, r"(?:FROM|INTO|UPDATE)")
    # The keyword as a word of its own (not inside a quoted column name), then the table name.
    match = re.search(rf'(?<![\w"]){keyword}\s+"?(\w+)"?', text, re.I)
    return f"{verb} {match.group(1) if match else ''}".strip()


def _timed_statement(fn):
    """Wrap `one`/`all`/`run` of a store transaction class: time each statement by its kind."""
    @functools.wraps(fn)
    async def wrapper(self, sql, *args, **kwargs):
        started = time.perf_counter()
        try:
            return await fn(self, sql, *args, **kwargs)
        finally:
            TIMERS.add("sql " + _sql_kind(sql), time.perf_counter() - started)
            TIMERS.count("statements")
    return wrapper


def _wrap_statements(owner) -> None:
    for attr in ("one", "all", "run"):
        fn = getattr(owner, attr, None)
        if fn is None or not inspect.iscoroutinefunction(fn):
            _MISSING.append(f"{owner.__name__}.{attr}")
            continue
        setattr(owner, attr, _timed_statement(fn))


def _wrap_sqlite_begin(database_class) -> None:
    """Time SQLite's BEGIN (`SqliteDatabase._begin(begin, started)`: True once the transaction is open)."""
    original = getattr(database_class, "_begin", None)
    if original is None or inspect.iscoroutinefunction(original):
        _MISSING.append(f"{database_class.__name__}._begin")
        return

    @functools.wraps(original)
    def _begin(self, begin, *args, **kwargs):
        started = time.perf_counter()
        opened = False
        try:
            opened = original(self, begin, *args, **kwargs)
            return opened
        finally:
            suffix = "" if opened else " (refused: write lock busy, retried)"
            TIMERS.add(f"sql {_sql_kind(str(begin))}{suffix}", time.perf_counter() - started)
    database_class._begin = _begin


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
        name = "event loop (main thread)" if tid == main_tid else "other threads (SQLite WAL checkpointer, executors)"
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return out


class _TimedContext:
    """Wraps a store block (`Store.transaction` or `Store.read`, async context managers) to count and time it.

    Besides the whole block it times the entry (SQLite: the connection's lock, BEGIN, any wait
    for another process's write lock; PostgreSQL: pool acquire, and BEGIN for a writing block)
    and the exit (SQLite: COMMIT, or ROLLBACK if the block raised; PostgreSQL: COMMIT or
    ROLLBACK for a writing block, and the release to the pool)."""

    def __init__(self, inner, kind: str, sqlite: bool) -> None:
        self.inner, self.kind, self.sqlite = inner, kind, sqlite

    async def __aenter__(self):
        TIMERS.count(f"transactions {self.kind}")
        self.started, self.cpu = time.perf_counter(), time.thread_time()
        try:
            return await self.inner.__aenter__()
        finally:
            self.entered = time.perf_counter()
            TIMERS.add(f"txn {self.kind} enter ({self._enter_label()})", self.entered - self.started)

    async def __aexit__(self, *exc):
        exiting = time.perf_counter()
        try:
            return await self.inner.__aexit__(*exc)
        finally:
            now = time.perf_counter()
            TIMERS.add(f"txn {self.kind} exit ({self._exit_label(exc[0] is not None)})", now - exiting)
            TIMERS.add(f"txn {self.kind} wall (whole block)", now - self.started)
            TIMERS.add(f"txn {self.kind} main-thread CPU (whole block)", time.thread_time() - self.cpu)

    def _enter_label(self) -> str:
        if self.sqlite:
            return "lock + BEGIN " + ("IMMEDIATE" if self.kind == "write" else "DEFERRED")
        return "pool acquire + BEGIN" if self.kind == "write" else "pool acquire"

    def _exit_label(self, raised: bool) -> str:
        end = "ROLLBACK" if raised else "COMMIT"
        if self.sqlite:
            return end
        return f"{end} + pool release" if self.kind == "write" else "pool release" + (" after error" if raised else "")


_MISSING: list[str] = []


def _wrap(owner, attr: str, name: str) -> None:
    """Time `owner.attr` (a function or method, sync or async) under `name`, if it exists."""
    fn = getattr(owner, attr, None)
    if fn is None:
        _MISSING.append(f"{getattr(owner, '__name__', owner)}.{attr}")
        return
    wrapper = _timed_async(name, fn) if inspect.iscoroutinefunction(fn) else _timed_sync(name, fn)
    setattr(owner, attr, wrapper)


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
                 "ca.issuance", "ca.challenges.http01", "ca.storage.sql", "ca.storage.repository"):
        try:
            modules[name] = importlib.import_module(name)
        except ImportError as exc:
            _MISSING.append(f"{name} ({exc})")

    def mod(name):
        return modules.get(name)

    sql = mod("ca.storage.sql")
    for cls in ("_SqliteTransaction", "_PostgresTransaction"):
        owner = getattr(sql, cls, None)
        if owner is None:
            _MISSING.append(f"ca.storage.sql.{cls}")
        else:
            _wrap_statements(owner)
    sqlite_database = getattr(sql, "SqliteDatabase", None)
    if sqlite_database is None:
        _MISSING.append("ca.storage.sql.SqliteDatabase")
    else:
        _wrap_sqlite_begin(sqlite_database)
    store_class = getattr(mod("ca.storage.repository"), "Store", None)
    for attr, kind in (("transaction", "write"), ("statement", "write"), ("read", "read")):
        original = getattr(store_class, attr, None)
        if original is None:
            _MISSING.append(f"Store.{attr}")
            continue

        def block(self, *args, _original=original, _kind=kind, **kwargs):
            return _TimedContext(_original(self, *args, **kwargs), _kind, bool(getattr(self, "is_sqlite", True)))
        setattr(store_class, attr, functools.wraps(original)(block))

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

    # `ca.cli` imports `build_app` from `ca.app` when a worker starts (older versions at import time).
    patched = False
    for owner in (mod("ca.app"), ca.cli):
        original_build_app = getattr(owner, "build_app", None)
        if original_build_app is None:
            continue

        def build_app(*args, _original=original_build_app, **kwargs):
            app = _original(*args, **kwargs)
            if timing not in app.middlewares:
                app.middlewares.insert(0, timing)
            return app
        owner.build_app = build_app
        patched = True
    if not patched:
        _MISSING.append("ca.app.build_app (no per-request timers)")

    for module, attr, name in (
        ("ca.jws", "parse_jws", "step JWS parse"),
        ("ca.jws", "verify_signature", "step JWS signature verification"),
        ("ca.jws", "parse_account_key", "step JWK parse (new account)"),
        ("ca.auth", "authenticate", "step authenticate (whole)"),
        ("ca.auth", "_valid_account", "step account lookup (kid)"),
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
    ("store (acmeda storage + sqlite3/asyncpg drivers)", ("ca/storage/", "sqlite3/", "asyncpg/")),
    ("SQLAlchemy/SQLModel (migrations only; ~0 on the request path)", ("sqlalchemy/", "sqlmodel/", "aiosqlite/",
                                                                       "alembic/")),
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
    # One worker process: the instrumented code runs, and is read, in the child itself (more workers
    # would be forked copies whose timers the report never sees).
    serve_args = ["--data-dir", str(tmp / "data"), "--listen", f"127.0.0.1:{port}", "--workers", "1",
                  "--http01-port", str(http01), "--dns-resolvers", f"127.0.0.1:{_free_port()}", "--log-level", "warning"]
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
               f"{'wtxn/req':>8} {'rtxn/req':>8} {'stmts/req':>9}")
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
                   f"{counts.get('transactions write', 0) / n:8.2f} {counts.get('transactions read', 0) / n:8.2f} "
                   f"{counts.get('statements', 0) / n:9.2f}")
    background = per_request.get("validation (background)", {})
    out.append(f"{'validation (background)':28} {'':6} {'':8} {'':8} {'':8} {'':8} "
               f"{background.get('transactions write', 0) / done:8.2f} "
               f"{background.get('transactions read', 0) / done:8.2f} "
               f"{background.get('statements', 0) / done:9.2f}  (per issuance)")
    out.append("")
    out.append(f"{'step / transaction / SQL statement':60} {'count':>6} {'per iss.':>8} {'total s':>8} {'mean ms':>8} "
               f"{'ms/iss.':>8}")
    for prefix in ("step ", "txn ", "sql "):
        rows = [(name, *_stats(values)) for name, values in timers.items() if name.startswith(prefix)]
        for name, n, total, mean, _p50 in sorted(rows, key=lambda r: -r[2]):
            out.append(f"{name:60} {n:6d} {n / done:8.2f} {total:8.2f} {mean * 1000:8.2f} {total / done * 1000:8.2f}")
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
