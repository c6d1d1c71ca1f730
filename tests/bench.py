"""The project's benchmarks (docs/architecture.md, "Targets"): ``make bench``, i.e. ``python -m tests.bench``.

Every figure is measured against a real server: ``ledger db upgrade``, ``ledger init`` and ``ledger serve`` run as
subprocesses on loopback, on SQLite (a file in a temporary directory) and on PostgreSQL (a fresh database
``ledger_bench_<pid>``, dropped at the end even on failure). The benchmark prints figures and never asserts a
timing; it exits non-zero only when a run is not valid (an envelope was rejected, a request failed, the server
did not start), because a figure from such a run means nothing.

Benchmarks are registered in :data:`BENCHMARKS`. Most are functions ``(Server, Options) -> list[Result]`` that
share one server per database; those marked ``own_database`` are ``(database name, Options) -> list[Result]`` and
set up a database of their own with :func:`fresh_server` (the inclusion-proof benchmark fills a million log
entries straight into the tables before the server starts; the audit benchmark wants a log of a known content;
the read-load benchmark gives one participant 100,000 batches straight in the tables).
They share the server start/stop (:func:`running_server`) and the workload helpers (:func:`admit_parties`,
:func:`sign_chains`, :func:`miner_requests`, :func:`receive_requests`). The transparency-log benchmarks live in
``tests/bench_log.py``, the eligibility and bundle ones in ``tests/bench_eligibility.py``, the read load (200
concurrent readers against a participant holding 100,000 batches, beside a bare ``/healthz`` reference) in
``tests/bench_read.py``.

    python -m tests.bench                       # everything, both databases (takes a while: a 1M-entry log each)
    python -m tests.bench --quick --db sqlite   # a small run
    python -m tests.bench --only eligibility,bundle-verify --db postgresql
    python -m tests.bench --only read-load --quick
    python -m tests.bench --profile var/prof    # also sample the server (and the CLI runs) with py-spy
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from ledger.client import ClientError, LedgerClient, envelope_for, timestamp_now
from ledger.domain import events as ev
from ledger.domain.dsse import Envelope, event_id
from ledger.domain.keys import SigningKey
from ledger.services.views import BatchSubmitView

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("LEDGER_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
"""Where to create the benchmark's PostgreSQL database (trust auth, a role that may CREATE DATABASE)."""

# Events are dated when they are signed (timestamp_now): the ledger refuses events dated before their signer's
# admission or more than LEDGER_MAX_BACKDATE before acceptance, and signing order keeps parents first.
"""Event times well in the past (the server refuses timestamps more than 5 minutes ahead), offsets kept."""

MASS_G = 1_000_000

TARGET_INGEST_PG = 5_000.0
TARGET_INGEST_RATIO = 0.5
"""docs/architecture.md, "Targets": ingest at least 0.5x bare single-core Ed25519 verify (:func:`bare_verify_rate`)."""
TARGET_INGEST_RATIO_SQLITE = 0.4
"""The same on the embedded SQLite database."""
TARGET_P99_MS = 25.0
TARGET_RATE = 500.0

JSON = {"Content-Type": "application/json"}

PROFILE_RATE = 200
"""py-spy samples per second with ``--profile``."""


# --- options and results ---------------------------------------------------------------------------------------


@dataclass
class Options:
    databases: list[str]
    events: int
    batch_size: int
    concurrency: int
    rate: float
    duration: float
    warmup: float
    benchmarks: list[str]
    profile_dir: Path | None
    keep: bool
    workers: int = 1
    workdir: Path = Path()
    log_entries: int = 1_000_000
    """Entries in the log the inclusion-proof benchmark builds."""
    proofs: int = 2_000
    """Inclusion proofs timed (through HTTP, and as many again in-process)."""
    lineages: list[int] = field(default_factory=lambda: [1_000, 10_000, 100_000])
    """Custody events upstream of the target batch, one lineage per size, for the eligibility benchmark."""
    bundle_events: int = 1_000
    """Custody events of evidence in the bundle that ``ledger verify bundle`` checks."""
    repeats: int = 5
    """Repetitions of a timed request or command (fewer for the largest lineages)."""


@dataclass
class Result:
    """One line of one benchmark's table. ``row`` maps column headers to printed cells."""

    benchmark: str
    database: str
    row: dict[str, str]
    valid: bool = True
    problems: list[str] = field(default_factory=list)


def say(message: str) -> None:
    print(message, flush=True)


def loud(message: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\n!!! {message}\n{bar}\n", file=sys.stderr, flush=True)


# --- databases --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    name: str  # "sqlite" or "postgresql"
    url: str  # SQLAlchemy async URL for LEDGER_DATABASE_URL


def _pg_url(database: str, driver: str = "postgresql") -> str:
    from sqlalchemy.engine import make_url

    return (
        make_url(PG_ADMIN_URL).set(drivername=driver, database=database).render_as_string(hide_password=False)
    )


async def _pg_execute(*statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_pg_url("postgres"), timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def postgres_problem() -> str | None:
    """None if PostgreSQL answers at :data:`PG_ADMIN_URL`, else why not."""
    try:
        asyncio.run(_pg_execute("SELECT 1"))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@contextlib.contextmanager
def sqlite_database(workdir: Path) -> Iterator[Database]:
    path = workdir / "sqlite" / "ledger.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    yield Database("sqlite", f"sqlite+aiosqlite:///{path}")


@contextlib.contextmanager
def postgresql_database(label: str = "") -> Iterator[Database]:
    """A fresh database ``ledger_bench_<pid>[_<label>]``, dropped on the way out whatever happened."""
    name = f"ledger_bench_{os.getpid()}" + (f"_{label}" if label else "")
    asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'))
    try:
        yield Database("postgresql", _pg_url(name, "postgresql+asyncpg"))
    finally:
        try:
            asyncio.run(_pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as exc:
            loud(f"could not drop the benchmark database {name}: {exc}")


def database(name: str, workdir: Path, label: str = "") -> contextlib.AbstractContextManager[Database]:
    return sqlite_database(workdir) if name == "sqlite" else postgresql_database(label)


# --- the server as a real process -------------------------------------------------------------------------------


@dataclass
class Server:
    db: Database
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def registrar_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {(self.data_dir / 'registrar.token').read_text().strip()}"}

    def registrar(self) -> LedgerClient:
        token = (self.data_dir / "registrar.token").read_text().strip()
        key = SigningKey.load(self.data_dir / "registrar.key")
        return LedgerClient(self.url, token=token, actor="registrar", key=key)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(db: Database, data_dir: Path, env_extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the ``ledger`` commands run against ``db`` (also for ``ledger audit``).

    Per-token rate limiting is off (``LEDGER_RATE_LIMIT=0``) unless the caller's environment sets it: the
    benchmarks measure capacity, and the default 100 requests/s per token would refuse the offered load. So is
    the failed-authentication limit (``LEDGER_AUTH_FAIL_LIMIT=0``), so that ``--workers N`` needs no shared store.
    """
    return {
        **os.environ,
        "LEDGER_RATE_LIMIT": os.environ.get("LEDGER_RATE_LIMIT", "0"),
        "LEDGER_AUTH_FAIL_LIMIT": os.environ.get("LEDGER_AUTH_FAIL_LIMIT", "0"),
        "LEDGER_DATABASE_URL": db.url,
        "LEDGER_DATA_DIR": str(data_dir),
        "LEDGER_DEMO": "0",
        **(env_extra or {}),
    }


def _ledger(args: Sequence[str], env: dict[str, str], log: Path) -> None:
    """Run one ``ledger`` command to completion; raise with its output if it fails."""
    with log.open("ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "ledger.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
            timeout=120,
        )
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"`ledger {' '.join(args)}` exited with {done.returncode}:\n{tail}")


@contextlib.contextmanager
def running_server(
    db: Database,
    workdir: Path,
    env_extra: dict[str, str] | None = None,
    workers: int = 1,
    prepare: Callable[[Database, Path], None] | None = None,
) -> Iterator[Server]:
    """Migrate, initialise and serve ``db`` on a free loopback port; stop the server on the way out.

    ``prepare(db, data_dir)`` runs after ``ledger init`` and before the server starts (to fill tables directly).
    """
    data_dir = workdir / db.name / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    log = workdir / db.name / "server.log"
    env = server_env(db, data_dir, env_extra)
    _ledger(["db", "upgrade"], env, log)
    _ledger(["init"], env, log)
    if prepare is not None:
        prepare(db, data_dir)
    port = _free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
            + (["--workers", str(workers)] if workers != 1 else []),
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    server = Server(db, f"http://127.0.0.1:{port}", data_dir, process, log)
    try:
        _wait_ready(server)
        yield server
    finally:
        _stop(process)


@contextlib.contextmanager
def fresh_server(
    db_name: str, opts: Options, label: str, prepare: Callable[[Database, Path], None] | None = None
) -> Iterator[Server]:
    """A database and server of one benchmark's own (``own_database`` benchmarks), removed on the way out."""
    workdir = opts.workdir / label
    with (
        database(db_name, workdir, label.replace("-", "_")) as db,
        running_server(db, workdir, workers=opts.workers, prepare=prepare) as server,
    ):
        say(f"  own {db_name} database and server for {label}: pid {server.pid} at {server.url}")
        yield server


def _wait_ready(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            response = httpx.get(f"{server.url}/readyz", timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s ({last}):\n{server.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (uvicorn shuts down gracefully), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# --- workload -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    """A participant the benchmark acts as: its key, API token and the one facility it uses."""

    id: str
    key: SigningKey
    token: str
    facility: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **JSON}


def _setup_call(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A set-up request, retried (loudly) on a server error: set-up is not what is measured."""
    attempts = 8
    for attempt in range(1, attempts + 1):
        try:
            return call(*args, **kwargs)
        except ClientError as exc:
            if exc.status < 500 or attempt == attempts:
                raise
            loud(f"set-up step {call.__name__}{args} failed with {exc} (a server bug worth fixing); retrying")
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")


def admit_parties(server: Server, prefix: str) -> tuple[Party, Party]:
    """As registrar: a miner (CA) with a mine and a processor (US) with a refinery, each with a token."""
    parties: list[Party] = []
    with server.registrar() as registrar:
        for role, country, kind in (("miner", "CA", "mine"), ("processor", "US", "refinery")):
            pid, facility = f"{prefix}-{role}", f"{prefix}-{kind}"
            key = SigningKey.generate()
            keys = [key.public_key_b64]
            _setup_call(
                registrar.admit_participant, pid, f"{prefix} {role}", [role], country, public_keys=keys
            )
            _setup_call(registrar.register_facility, facility, pid, kind, country, f"{prefix} {kind}")
            token = _setup_call(registrar.issue_token, pid, "benchmark").token
            parties.append(Party(pid, key, token, facility))
    return parties[0], parties[1]


def envelope_event_id(envelope: Envelope) -> str:
    return event_id(envelope.payload_bytes())


@dataclass(frozen=True)
class Chain:
    """One batch's custody chain: extract at the mine, transfer to the processor, receive at the refinery."""

    batch: str
    extract: Envelope
    transfer: Envelope
    receive: Envelope


def sign_chain(miner: Party, processor: Party, batch: str, mass_g: int = MASS_G) -> Chain:
    extract = envelope_for(
        ev.Extract(
            actor=miner.id,
            timestamp=timestamp_now(),
            facility=miner.facility,
            batch=ev.NewBatch(id=batch, mineral="lithium", form="concentrate", mass_g=mass_g),
        ),
        miner.key,
    )
    transfer = envelope_for(
        ev.Transfer(
            actor=miner.id,
            timestamp=timestamp_now(),
            batch=batch,
            parent=envelope_event_id(extract),
            to=processor.id,
            route=[ev.RouteLeg(country="CA", customs_control=True)],
            to_facility=processor.facility,
        ),
        miner.key,
    )
    receive = envelope_for(
        ev.Receive(
            actor=processor.id,
            timestamp=timestamp_now(),
            batch=batch,
            parent=envelope_event_id(transfer),
            facility=processor.facility,
            mass_g=mass_g,
        ),
        processor.key,
    )
    return Chain(batch, extract, transfer, receive)


def sign_chains(miner: Party, processor: Party, prefix: str, count: int) -> list[Chain]:
    return [sign_chain(miner, processor, f"{prefix}-{i:07d}") for i in range(count)]


def _chunks(items: Sequence[Envelope], size: int) -> list[list[Envelope]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def miner_requests(chains: Sequence[Chain], size: int) -> list[list[Envelope]]:
    """The miner's envelopes, each batch's transfer right after its extract, ``size`` per request."""
    return _chunks([e for c in chains for e in (c.extract, c.transfer)], size)


def receive_requests(chains: Sequence[Chain], size: int) -> list[list[Envelope]]:
    return _chunks([c.receive for c in chains], size)


def batch_body(envelopes: Sequence[Envelope]) -> bytes:
    return msgspec.json.encode({"envelopes": envelopes})


def http_client(server: Server, connections: int = 64, timeout: float = 300.0) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=server.url, timeout=timeout, limits=limits)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


# --- profiling (optional) ---------------------------------------------------------------------------------------


def _py_spy() -> str | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        loud("--profile needs py-spy: .venv/bin/pip install py-spy (not a project dependency)")
        return None
    return py_spy


@contextlib.contextmanager
def sampled(server: Server, opts: Options, name: str) -> Iterator[None]:
    """With ``--profile DIR``, sample the server with py-spy (collapsed stacks per thread) meanwhile."""
    with sampled_pid(server.pid, opts, name, server.db.name, "server"):
        yield


@contextlib.contextmanager
def sampled_pid(pid: int, opts: Options, name: str, db_name: str, what: str) -> Iterator[None]:
    """With ``--profile DIR``, sample process ``pid`` (the server, or this process) with py-spy meanwhile."""
    if opts.profile_dir is None:
        yield
        return
    py_spy = _py_spy()
    if py_spy is None:
        yield
        return
    opts.profile_dir.mkdir(parents=True, exist_ok=True)
    out = opts.profile_dir / f"{name}-{db_name}.folded"
    recorder = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(PROFILE_RATE),
            "--threads",
            "--subprocesses",
            "--format",
            "raw",
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)  # let it attach
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - started
        recorder.send_signal(signal.SIGINT)
        try:
            _, err = recorder.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            _, err = recorder.communicate()
        if out.exists():
            from tests.bench_profile import summarize

            title = f"{what} profile, {name} on {db_name}, {seconds:.1f} s ({out})"
            say(summarize(out, title=title, wall_samples=seconds * PROFILE_RATE))
        else:
            loud(f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")


def run_command(
    args: Sequence[str], env: dict[str, str], opts: Options, name: str, db_name: str, timeout: float = 1800
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a command to completion (under ``py-spy record`` with ``--profile``); its output and wall seconds.

    Under py-spy the wall time includes the profiler's start-up and sampling overhead: use it for hotspots only.
    """
    command = list(args)
    out: Path | None = None
    if opts.profile_dir is not None and (py_spy := _py_spy()) is not None:
        opts.profile_dir.mkdir(parents=True, exist_ok=True)
        out = opts.profile_dir / f"{name}-{db_name}.folded"
        command = [
            py_spy,
            "record",
            "--rate",
            str(PROFILE_RATE),
            "--format",
            "raw",
            "-o",
            str(out),
            "--",
            *args,
        ]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    if out is not None and out.exists():
        from tests.bench_profile import summarize

        say(summarize(out, title=f"command profile, {name} on {db_name}, {seconds:.1f} s ({out})"))
    return done, seconds


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# --- benchmark: ingest through POST /v1/events/batch ----------------------------------------------------------


@dataclass
class BatchOutcome:
    status: int
    content: bytes
    seconds: float


async def _post_all(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], bodies: Sequence[bytes], concurrency: int
) -> list[BatchOutcome]:
    """POST every body, at most ``concurrency`` in flight; outcomes in the order of ``bodies``."""
    outcomes: list[BatchOutcome | None] = [None] * len(bodies)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(bodies):
            index = next_index
            next_index += 1
            started = time.perf_counter()
            response = await client.post(path, content=bodies[index], headers=headers)
            outcomes[index] = BatchOutcome(
                response.status_code, response.content, time.perf_counter() - started
            )

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return [o for o in outcomes if o is not None]


def _check_batches(outcomes: Sequence[BatchOutcome], expected: int) -> tuple[int, list[str]]:
    """Accepted count and the problems (first few), from the batch responses."""
    accepted, problems = 0, []
    rejected = 0
    for outcome in outcomes:
        if outcome.status != 200:
            rejected += 1
            problems.append(f"HTTP {outcome.status}: {outcome.content[:300].decode(errors='replace')}")
            continue
        view = msgspec.json.decode(outcome.content, type=BatchSubmitView)
        accepted += view.accepted
        for result in view.results:
            if result.status != "accepted":
                rejected += 1
                if len(problems) < 3:
                    problems.append(f"{result.status} {result.event_id}: {result.problem}")
    if accepted != expected and not problems:
        problems.append(f"{accepted} accepted of {expected} sent")
    if rejected:
        problems.insert(0, f"{rejected} envelope(s) or request(s) not accepted")
    return accepted, problems


def last_log_index(outcomes: Sequence[BatchOutcome]) -> int:
    """The highest log index in the batch responses (-1 if none)."""
    best = -1
    for outcome in outcomes:
        if outcome.status == 200:
            view = msgspec.json.decode(outcome.content, type=BatchSubmitView)
            best = max([best, *(r.log_index for r in view.results if r.log_index is not None)])
    return best


async def log_size(client: httpx.AsyncClient, server: Server) -> int | None:
    """The size of the latest signed checkpoint (C2SP note: origin, size, root), or None if there is none."""
    response = await client.get("/v1/log/checkpoint", headers=server.registrar_headers)
    if response.status_code != 200:
        return None
    lines = response.text.splitlines()
    return int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else None


async def wait_integrated(
    client: httpx.AsyncClient, server: Server, size: int, patience: float = 120.0
) -> float | None:
    """When (perf_counter) the latest checkpoint first covered ``size`` entries; None if the server has no
    transparency log endpoints or its checkpoints did not get there within ``patience`` seconds."""
    if (await client.get("/v1/log/key", headers=server.registrar_headers)).status_code == 404:
        return None
    deadline = time.perf_counter() + patience
    while time.perf_counter() < deadline:
        current = await log_size(client, server)
        if current is not None and current >= size:
            return time.perf_counter()
        await asyncio.sleep(0.02)
    loud(f"the log's checkpoint did not reach size {size} within {patience:.0f} s")
    return None


def bench_ingest(server: Server, opts: Options) -> list[Result]:
    """Signed custody events through ``POST /v1/events/batch``: extract + transfer by the miner, then receives."""
    miner, processor = admit_parties(server, "ing")
    chains_n = max(1, opts.events // 3)
    started = time.perf_counter()
    chains = sign_chains(miner, processor, "ing-b", chains_n)
    miner_bodies = [batch_body(r) for r in miner_requests(chains, opts.batch_size)]
    receive_bodies = [batch_body(r) for r in receive_requests(chains, opts.batch_size)]
    events = 3 * chains_n
    say(
        f"  signed {events} envelopes in {time.perf_counter() - started:.1f} s "
        f"({len(miner_bodies) + len(receive_bodies)} requests of up to {opts.batch_size}); sending..."
    )

    async def run() -> tuple[float, float | None, list[BatchOutcome], list[BatchOutcome]]:
        async with http_client(server) as client:
            t0 = time.perf_counter()
            mined = await _post_all(client, "/v1/events/batch", miner.headers, miner_bodies, opts.concurrency)
            received = await _post_all(
                client, "/v1/events/batch", processor.headers, receive_bodies, opts.concurrency
            )
            accepted_s = time.perf_counter() - t0
            integrated = await wait_integrated(client, server, last_log_index([*mined, *received]) + 1)
            return accepted_s, None if integrated is None else integrated - t0, mined, received

    with sampled(server, opts, "ingest"), bare_verify_around() as bare_mean:
        seconds, integrated_s, mined, received = asyncio.run(run())
    lag = "n/a" if integrated_s is None else f"{(integrated_s - seconds) * 1000:.0f}"
    accepted, problems = _check_batches([*mined, *received], events)
    request_ms = sorted(o.seconds * 1000 for o in [*mined, *received])
    rate = accepted / seconds if seconds > 0 else math.nan
    (bare,) = bare_mean
    logged = "n/a" if integrated_s is None else f"{integrated_s:.2f} s, {accepted / integrated_s:,.0f}/s"
    postgresql = server.db.name == "postgresql"
    wanted = TARGET_INGEST_RATIO if postgresql else TARGET_INGEST_RATIO_SQLITE
    # the ratio is the target; on PostgreSQL the rate must also reach the absolute floor
    met = rate / bare >= wanted and (rate >= TARGET_INGEST_PG or not postgresql)
    target = f">= {wanted}x" + (f" and >= {TARGET_INGEST_PG:,.0f}/s" if postgresql else "")
    verdict = "meets" if met else "BELOW"
    row = {
        "database": server.db.name,
        "events": f"{events:,}",
        "accepted": f"{accepted:,}",
        "seconds": f"{seconds:.2f}",
        "events/s": f"{rate:,.0f}",
        "bare verify/s": f"{bare:,.0f}",
        "ratio": f"{rate / bare:.2f}x",
        "target": target,
        "verdict": verdict if not problems else "INVALID",
        "all in a checkpoint": logged,
        "checkpoint lag ms": lag,
        "request p50/max ms": f"{percentile(request_ms, 50):.0f}/{request_ms[-1]:.0f}",
        "in flight": str(opts.concurrency),
    }
    title = "ingest (POST /v1/events/batch; the server's Merkle integrator runs meanwhile)"
    return [Result(title, server.db.name, row, not problems, problems)]


def bare_verify_rate(messages: int = 10_000) -> float:
    """Bare single-core Ed25519 verifications per second with PyNaCl (libsodium) on event-sized messages: the
    reference of the ingest target. Benchmarks measure it right before and right after their run and take the mean
    (:func:`bare_verify_around`), so that a machine whose load changes meanwhile biases neither way."""
    import nacl.signing

    from ledger.domain.dsse import PAYLOAD_TYPE, pae

    key = SigningKey.generate()
    verify_key = nacl.signing.VerifyKey(key.public_key)
    signed = [
        (m, key.sign(m)) for m in (pae(PAYLOAD_TYPE, os.urandom(400).hex().encode()) for _ in range(200))
    ]
    started = time.perf_counter()
    for i in range(messages):
        message, signature = signed[i % len(signed)]
        verify_key.verify(message, signature)
    return messages / (time.perf_counter() - started)


@contextlib.contextmanager
def bare_verify_around() -> Iterator[list[float]]:
    """Measure :func:`bare_verify_rate` before and after the body; the list holds the mean on the way out."""
    before = bare_verify_rate()
    mean: list[float] = []
    yield mean
    mean.append((before + bare_verify_rate()) / 2)


# --- benchmark: single-event POST latency at a fixed offered load -----------------------------------------------


@dataclass
class Shot:
    scheduled: float
    sent: float = math.nan
    done: float = math.nan
    status: int = 0
    error: str = ""


def latency_schedule(
    miner: Party, processor: Party, prefix: str, total: int, lag: int
) -> list[tuple[Envelope, Party]]:
    """About ``total`` single-event requests mixing extracts, transfers and receives of different batches.

    Batch ``j`` is extracted at step ``j``, transferred at step ``j + lag`` and received at step ``j + 2 lag``,
    so each event follows its parent by about ``3 lag`` requests (long after the parent was answered).
    """
    chains_n = max(1, (total + 3 * lag) // 3)
    chains = sign_chains(miner, processor, prefix, chains_n)
    out: list[tuple[Envelope, Party]] = []
    for j, chain in enumerate(chains):
        out.append((chain.extract, miner))
        if j >= lag:
            out.append((chains[j - lag].transfer, miner))
        if j >= 2 * lag:
            out.append((chains[j - 2 * lag].receive, processor))
    return out[:total] if len(out) > total else out


def http_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """A whole HTTP/1.1 request, for the bare clients of the latency and throughput benchmarks."""
    lines = [f"{method} {path} HTTP/1.1", "Host: bench", *(f"{k}: {v}" for k, v in headers.items())]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request on a keep-alive connection; the answer's status and body."""
    reader, writer = connection
    writer.write(request)
    return await read_response(reader)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of the next HTTP/1.1 answer on a keep-alive connection (bare clients)."""
    status = int((await reader.readline())[9:12])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def open_loop(
    url: str, requests: Sequence[bytes], rate: float, max_in_flight: int
) -> tuple[list[Shot], float, bool]:
    """Send ``requests`` (whole HTTP/1.1 requests) at ``rate`` per second on a fixed schedule, whatever the
    answers' latency (open loop), over keep-alive connections opened as needed.

    Latency is measured from each request's scheduled time, so that a client or server falling behind shows up
    in the figures instead of silently lowering the offered load (coordinated omission). If ``max_in_flight``
    requests are outstanding the server is not keeping up: sending stops there (the run is bounded) and the
    third value returned is True. The client is a few lines on asyncio streams, not httpx, whose connection pool
    cost more CPU per request at 500/s than the server's own work on this machine.
    """
    loop = asyncio.get_running_loop()
    host, port = url.removeprefix("http://").split(":")
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    opened: list[asyncio.StreamWriter] = []
    shots: list[Shot] = []
    tasks: list[asyncio.Task[None]] = []
    in_flight = 0

    async def fire(shot: Shot, request: bytes) -> None:
        nonlocal in_flight
        in_flight += 1
        shot.sent = loop.time()
        try:
            answered: tuple[int, bytes] | None = None
            while idle and answered is None:
                connection = idle.pop()  # the most recently used: least likely closed for idling
                try:
                    answered = await _exchange(connection, request)
                except (OSError, ValueError, asyncio.IncompleteReadError):
                    connection[1].close()  # the server closed it (LEDGER_KEEPALIVE_TIMEOUT): a fresh one
            if answered is None:
                connection = await asyncio.open_connection(host, int(port))
                opened.append(connection[1])
                answered = await _exchange(connection, request)
            shot.status, body = answered
            idle.append(connection)
            if shot.status != 201:
                shot.error = body.decode(errors="replace")[:300]
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            shot.error = f"{type(exc).__name__}: {exc}"
        shot.done = loop.time()
        in_flight -= 1

    overloaded = False
    start = loop.time() + 0.05
    try:
        for i, request in enumerate(requests):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                overloaded = True
                break
            shot = Shot(scheduled=due)
            shots.append(shot)
            tasks.append(asyncio.create_task(fire(shot, request)))
        await asyncio.gather(*tasks)
    finally:
        for writer in opened:
            writer.close()
    return shots, start, overloaded


def bench_post_latency(server: Server, opts: Options) -> list[Result]:
    """``POST /v1/events``, one envelope per request, at ``--rate`` requests/s for ``--duration`` seconds."""
    miner, processor = admit_parties(server, "lat")
    lag = max(1, int(opts.rate * 0.2))
    total = max(1, int(opts.rate * opts.duration))
    warm = min(300, int(opts.rate * opts.warmup))
    cap = max(50, int(opts.rate))  # a second's worth of requests outstanding: the server is not keeping up

    def post(body: bytes, party: Party) -> bytes:
        headers = {**party.headers, "Content-Type": "application/json"}
        return http_request("POST", "/v1/events", headers, body)

    warm_requests = [
        post(c.extract.to_json(), miner) for c in sign_chains(miner, processor, "lat-w", max(0, warm))
    ]
    measured = [post(e.to_json(), p) for e, p in latency_schedule(miner, processor, "lat-b", total, lag)]
    say(
        f"  {len(warm_requests)} sequential warm-up and {len(measured)} measured requests at {opts.rate:.0f}/s; sending..."
    )

    async def run() -> tuple[list[float], list[Shot], float, bool]:
        unloaded: list[float] = []  # the warm-up, one request at a time: latency with no queueing
        host, port = server.url.removeprefix("http://").split(":")
        connection = await asyncio.open_connection(host, int(port))
        try:
            for request in warm_requests:
                t0 = time.perf_counter()
                status, _ = await _exchange(connection, request)
                if status == 201:
                    unloaded.append((time.perf_counter() - t0) * 1000)
        finally:
            connection[1].close()
        return (unloaded, *await open_loop(server.url, measured, opts.rate, cap))

    with sampled(server, opts, "post-latency"):
        unloaded, shots, start, overloaded = asyncio.run(run())
    unloaded.sort()
    ok = [s for s in shots if s.status == 201]
    failed = [s for s in shots if s.status != 201]
    latency = sorted((s.done - s.scheduled) * 1000 for s in ok)
    service = sorted((s.done - s.sent) * 1000 for s in ok)
    lateness = max(((s.sent - s.scheduled) * 1000 for s in shots), default=0.0)
    end = max((s.done for s in shots), default=start)
    achieved = len(ok) / (end - start) if end > start else math.nan
    p99 = percentile(latency, 99)
    problems: list[str] = []
    if overloaded:
        problems.append(
            f"OVERLOADED: {cap} requests outstanding after {len(shots)} sent "
            f"of {len(measured)}; sending stopped (the server does not keep up with {opts.rate:.0f}/s)"
        )
    if failed:
        problems.append(f"{len(failed)} of {len(shots)} requests not accepted (201)")
        problems.append(f"first: HTTP {failed[0].status} {failed[0].error}")
    if overloaded:
        verdict = "OVERLOADED"
    elif failed:
        verdict = "INVALID"
    else:
        verdict = "meets" if p99 < TARGET_P99_MS and achieved >= 0.95 * opts.rate else "BELOW"
    row = {
        "database": server.db.name,
        "requests": f"{len(shots):,}",
        "offered/s": f"{opts.rate:.0f}",
        "achieved/s": f"{achieved:.0f}",
        "p50 ms": f"{percentile(latency, 50):.1f}",
        "p99 ms": f"{p99:.1f}",
        "max ms": f"{latency[-1]:.1f}" if latency else "-",
        "service p99 ms": f"{percentile(service, 99):.1f}",
        "unloaded p50/p99 ms": f"{percentile(unloaded, 50):.1f}/{percentile(unloaded, 99):.1f}",
        "max send lag ms": f"{lateness:.1f}",
        "target": f"p99 < {TARGET_P99_MS:.0f} ms",
        "verdict": verdict,
    }
    # An overloaded server is a measurement (the target is missed), not a broken run; rejections otherwise are.
    valid = overloaded or not failed
    return [Result("single-event POST /v1/events latency", server.db.name, row, valid, problems)]


# --- driver -----------------------------------------------------------------------------------------------------


Benchmark = Callable[[Any, Options], list[Result]]
"""``(Server, Options)``, or ``(database name, Options)`` for a benchmark with ``own_database``."""


@dataclass(frozen=True)
class Spec:
    run: Benchmark
    own_database: bool = False


def _lazy(module: str, function: str) -> Benchmark:
    """A benchmark defined in another ``tests.bench_*`` module (imported when it runs: they import this one)."""

    def run(target: Any, opts: Options) -> list[Result]:
        import importlib

        bench: Benchmark = getattr(importlib.import_module(module), function)
        return bench(target, opts)

    return run


BENCHMARKS: dict[str, Spec] = {
    "ingest": Spec(bench_ingest),
    "ingest-stages": Spec(_lazy("tests.bench_ingest", "bench_ingest_stages"), own_database=True),
    "ingest-growth": Spec(_lazy("tests.bench_ingest", "bench_ingest_growth"), own_database=True),
    "post-latency": Spec(bench_post_latency),
    "post-throughput": Spec(_lazy("tests.bench_ingest", "bench_post_throughput")),
    "eligibility": Spec(_lazy("tests.bench_eligibility", "bench_eligibility")),
    "bundle-verify": Spec(_lazy("tests.bench_eligibility", "bench_bundle_verify")),
    "audit": Spec(_lazy("tests.bench_log", "bench_audit"), own_database=True),
    "inclusion-proof": Spec(_lazy("tests.bench_log", "bench_inclusion_proof"), own_database=True),
    "read-load": Spec(_lazy("tests.bench_read", "bench_read_load"), own_database=True),
    "witness": Spec(_lazy("tests.bench_witness", "bench_witness"), own_database=True),
}
"""Benchmarks in the order they run on each database: first those sharing one server, then the others."""


def print_tables(results: Sequence[Result]) -> None:
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(result.benchmark, []).append(result)
    for title, group in groups.items():
        headers = list(group[0].row)
        widths = [max(len(h), *(len(r.row.get(h, "")) for r in group)) for h in headers]
        say(f"\n{title}")
        say("  " + "  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
        say("  " + "  ".join("-" * w for w in widths))
        for r in group:
            say("  " + "  ".join(r.row.get(h, "").rjust(w) for h, w in zip(headers, widths, strict=True)))


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="small run: 3,000 events, 3 s of latency")
    parser.add_argument("--events", type=int, help="events to ingest per database (default 30,000)")
    parser.add_argument("--batch-size", type=int, default=1000, help="envelopes per batch request")
    parser.add_argument("--concurrency", type=int, default=1, help="batch requests in flight during ingest")
    parser.add_argument("--workers", type=int, default=1, help="API processes (`ledger serve --workers`)")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="offered single-event requests/s")
    parser.add_argument("--duration", type=float, help="seconds of measured single-event load (default 10)")
    parser.add_argument(
        "--log-entries",
        type=int,
        help="entries of the inclusion-proof log (default 1,000,000; quick 100,000)",
    )
    parser.add_argument("--proofs", type=int, help="inclusion proofs timed (default 2,000; quick 500)")
    parser.add_argument(
        "--lineages",
        help="comma-separated lineage sizes for eligibility (default 1000,10000,100000; quick 1000,10000)",
    )
    parser.add_argument("--only", help=f"comma-separated benchmarks among: {', '.join(BENCHMARKS)}")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="sample the server with py-spy into DIR")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, SQLite file)"
    )
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",")] if args.only else list(BENCHMARKS)
    chosen = [b for b in BENCHMARKS if b in chosen] + [b for b in chosen if b not in BENCHMARKS]
    unknown = [b for b in chosen if b not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose among {', '.join(BENCHMARKS)}")
    return Options(
        databases=["sqlite", "postgresql"] if args.db == "both" else [args.db],
        events=args.events or (3_000 if args.quick else 30_000),
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        rate=args.rate,
        duration=args.duration or (3.0 if args.quick else 10.0),
        warmup=0.5 if args.quick else 1.0,
        benchmarks=chosen,
        profile_dir=args.profile,
        keep=args.keep,
        workers=args.workers,
        log_entries=args.log_entries or (100_000 if args.quick else 1_000_000),
        proofs=args.proofs or (500 if args.quick else 2_000),
        lineages=[int(n) for n in args.lineages.split(",")]
        if args.lineages
        else ([1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]),
        repeats=3 if args.quick else 5,
    )


_PROGRESS = {"done": 0, "started": time.perf_counter()}


def run_database(name: str, opts: Options) -> list[Result]:
    from ledger.cli.common import progress_line

    results: list[Result] = []
    say(f"\n=== {name} ===")
    total = len(opts.benchmarks) * len(opts.databases)

    def run(bench: str, target: Any) -> None:
        say(f"- {bench}")
        started = time.perf_counter()
        produced = BENCHMARKS[bench].run(target, opts)
        for result in produced:
            for problem in result.problems:
                say(f"  problem: {problem}")
        _PROGRESS["done"] += 1
        elapsed = time.perf_counter() - _PROGRESS["started"]
        say(
            f"  done in {time.perf_counter() - started:.1f} s; "
            + progress_line(int(_PROGRESS["done"]), total, elapsed, "benchmarks")
        )
        results.extend(produced)

    shared = [b for b in opts.benchmarks if not BENCHMARKS[b].own_database]
    if shared:
        with (
            database(name, opts.workdir) as db,
            running_server(db, opts.workdir, workers=opts.workers) as server,
        ):
            say(f"  server pid {server.pid} at {server.url}")
            for bench in shared:
                run(bench, server)
    for bench in opts.benchmarks:
        if BENCHMARKS[bench].own_database:
            run(bench, name)
    return results


def _sigterm(*_: Any) -> None:
    raise SystemExit(143)  # so that ``finally`` blocks stop the server and drop the database


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    opts.workdir = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    say(
        f"ledger benchmark: {opts.events:,} events per database in requests of {opts.batch_size}, "
        f"{opts.rate:.0f} single-event requests/s for {opts.duration:.0f} s; work dir {opts.workdir}"
    )
    busy = os.getloadavg()[0]
    if busy > 0.5:
        loud(
            f"the machine is busy (load average {busy:.2f} over the last minute, {os.cpu_count()} CPUs): "
            "the figures will be lower than on an idle machine"
        )
    results: list[Result] = []
    failures: list[str] = []
    try:
        for name in opts.databases:
            if name == "postgresql" and (problem := postgres_problem()) is not None:
                loud(f"PostgreSQL at {PG_ADMIN_URL} is not reachable, its benchmarks are SKIPPED: {problem}")
                failures.append("postgresql skipped")
                continue
            try:
                results.extend(run_database(name, opts))
            except Exception as exc:
                loud(f"{name}: the benchmark failed: {type(exc).__name__}: {exc}")
                failures.append(f"{name} failed")
    finally:
        if opts.keep:
            say(f"\nkept {opts.workdir}")
        else:
            shutil.rmtree(opts.workdir, ignore_errors=True)
    print_tables(results)
    say(f"\nload average at the end: {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
    invalid = [r for r in results if not r.valid]
    for r in invalid:
        loud(f"NOT VALID: {r.benchmark} on {r.database}: " + "; ".join(r.problems))
    if failures:
        say("\n" + "; ".join(failures))
    return 1 if invalid or any("failed" in f for f in failures) else 0


if __name__ == "__main__":
    # Run the ``tests.bench`` module rather than this ``__main__`` copy, so that the ``tests.bench_*`` modules,
    # which import ``tests.bench``, share its classes and helpers.
    from tests.bench import main as _main

    sys.exit(_main())
