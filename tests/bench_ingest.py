"""Ingest benchmarks for ``tests.bench`` that look inside: where an event's time goes, and the growth curve.

    python -m tests.bench --only ingest-stages,ingest-growth [--quick] [--db sqlite|postgresql]

**ingest-stages** runs the ingest workload (extract and transfer by a miner, then receives by a processor, in
requests of ``--batch-size``) straight into :class:`ledger.services.submit.Submitter` in this process, without
HTTP, on a fresh database, then folds every entry into the Merkle tree and signs a checkpoint with
:meth:`TransparencyLog.integrate_once`. It prints the CPU microseconds per event of each stage (decode, signature
checks on worker threads, the serial critical section split into sequencer lock, load, acceptance rules, write,
commit; then integration) next to the bare single-core Ed25519 verification cost measured in the same run, so the
next person sees where time goes without a profiler. The serial critical section (the write lock's hold time per
event) bounds what more processes can add; its goal is 50 us/event.

**ingest-growth** measures the HTTP ingest rate of the same workload (at most 15,000 events) on a database that
already holds 0, 100,000 and ``--log-entries`` events (1,000,000; quick 100,000). The stored events are synthetic extracts written directly in the
tables (events, batches, their histories and holders, the Merkle tree and a signed checkpoint, as
``tests.bench_log`` builds its large log), with the planner's statistics deliberately stale: ``ANALYZE`` runs on
the empty database and never again, as on a server whose autovacuum lags. On PostgreSQL the fill ends with a
``CHECKPOINT`` (its burst of write-ahead log would otherwise start one that runs during the measurement); the
measurement then starts just after a checkpoint, so each index page it touches first costs a full-page image in
the write-ahead log, the worst moment of a checkpoint cycle for a large random-keyed index. The target: the rate with 1,000,000
events stored is at least 80 % of the rate on the empty database. Each rate is taken as a ratio to the bare
verification rate measured around it, so that a machine whose load changes between runs compares fairly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from ledger.client import envelope_for, timestamp_now
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from ledger.services.container import Services
from ledger.services.submit import STAGES, StageClock
from ledger.settings import Settings
from tests.bench import (
    Database,
    Options,
    Party,
    Result,
    Server,
    _check_batches,
    _ledger,
    _post_all,
    admit_parties,
    bare_verify_around,
    batch_body,
    database,
    fresh_server,
    http_client,
    http_request,
    last_log_index,
    miner_requests,
    read_response,
    receive_requests,
    sampled,
    say,
    server_env,
    sign_chains,
    wait_integrated,
)

TARGET_CRITICAL_US = 50.0
"""Goal for the serial critical section, microseconds per event (issue: ingest at half of bare verify)."""
TARGET_GROWTH = 0.8
"""The ingest rate with 1,000,000 events stored is at least this fraction of the rate on an empty database."""


# --- ingest-stages ----------------------------------------------------------------------------------------------


async def _admit(services: Services, registrar: SigningKey, prefix: str) -> tuple[Party, Party]:
    """A miner (CA) with a mine and a processor (US) with a refinery, admitted by the registrar in this process."""
    parties: list[Party] = []
    for role, country, kind in (("miner", "CA", "mine"), ("processor", "US", "refinery")):
        pid, facility = f"{prefix}-{role}", f"{prefix}-{kind}"
        key = SigningKey.generate()
        admitted = ev.ParticipantAdmitted(
            actor="registrar",
            timestamp=timestamp_now(),
            participant=ev.ParticipantInfo(
                id=pid,
                name=f"{prefix} {role}",
                roles=[role],
                country=country,
                ownership=ev.Ownership(incorporated_in=country, headquartered_in=country),
            ),
            keys=[ev.NewKey(public_key=key.public_key_b64)],
        )
        registered = ev.FacilityRegistered(
            actor="registrar",
            timestamp=timestamp_now(),
            facility=ev.FacilityInfo(id=facility, participant=pid, kind=kind, country=country, name=facility),
        )
        for event in (admitted, registered):
            (result,) = await services.submitter.submit([envelope_for(event, registrar)], None)
            if result.status != "accepted":
                raise RuntimeError(f"set-up event refused: {result.error}")
        parties.append(Party(pid, key, "", facility))
    return parties[0], parties[1]


@dataclasses.dataclass
class StageRun:
    events: int
    accepted: int
    seconds: float
    integrate_seconds: float
    stages: StageClock


async def _stage_run(settings: Settings, registrar: SigningKey, opts: Options) -> StageRun:
    services = Services(settings)
    try:
        miner, processor = await _admit(services, registrar, "stg")
        chains = sign_chains(miner, processor, "stg-b", max(1, opts.events // 3))
        requests = [
            *((miner.id, r) for r in miner_requests(chains, opts.batch_size)),
            *((processor.id, r) for r in receive_requests(chains, opts.batch_size)),
        ]
        await services.log.integrate_once()
        services.submitter.stages = StageClock()
        accepted = 0
        started = time.perf_counter()
        for submitter, envelopes in requests:
            results = await services.submitter.submit(envelopes, submitter)
            accepted += sum(r.status == "accepted" for r in results)
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        while await services.log.integrate_once():
            pass
        integrate_seconds = time.perf_counter() - started
        return StageRun(3 * len(chains), accepted, seconds, integrate_seconds, services.submitter.stages)
    finally:
        await services.close()


def bench_ingest_stages(db_name: str, opts: Options) -> list[Result]:
    """CPU microseconds per event by stage, in this process, against the bare verification cost."""
    workdir = opts.workdir / "ingest-stages" / db_name
    with database(db_name, workdir, "stages") as db:
        data_dir = workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = server_env(db, data_dir)
        log = workdir / "commands.log"
        _ledger(["db", "upgrade"], env, log)
        _ledger(["init"], env, log)
        settings = dataclasses.replace(
            Settings.from_env(), database_url=db.url, data_dir=data_dir, rate_limit=0.0
        )
        registrar = SigningKey.load(data_dir / "registrar.key")
        with bare_verify_around() as bare_mean:
            run = asyncio.run(_stage_run(settings, registrar, opts))
    bare_us = 1e6 / bare_mean[0]
    per_event = {stage: run.stages.seconds[stage] * 1e6 / run.events for stage in STAGES}
    critical = run.stages.critical_us_per_event()
    row = {
        "database": db_name,
        "events": f"{run.events:,}",
        "events/s": f"{run.events / run.seconds:,.0f}",
        "bare verify us": f"{bare_us:.1f}",
        **{f"{stage} us": f"{per_event[stage]:.1f}" for stage in STAGES},
        "critical us": f"{critical:.1f} (goal <= {TARGET_CRITICAL_US:.0f})",
        "integrate us": f"{run.integrate_seconds * 1e6 / run.events:.1f}",
        "commits": str(run.stages.commits),
    }
    problems = [] if run.accepted == run.events else [f"accepted {run.accepted} of {run.events} events"]
    title = "ingest stages, in process (us per event; critical, the sequencer lock held: write + lock + load + accept + flush + commit)"
    return [Result(title, db_name, row, not problems, problems)]


# --- ingest-growth ----------------------------------------------------------------------------------------------


_BATCHES_SQL = """
INSERT INTO batches (id, mineral, form, mass_g, status, custodian, facility_id, head, created_event, lost_g)
SELECT 'syn-' || {pad}, 'lithium', 'concentrate', 1000000, 'at_facility', 'bench-miner', 'bench-mine',
       e.event_id, e.event_id, 0
FROM events AS e WHERE e.log_index >= {first}
"""
_HISTORY_SQL = (
    "INSERT INTO batch_events (batch_id, log_index) SELECT 'syn-' || {pad}, e.log_index FROM events AS e "
)
_HISTORY_SQL += "WHERE e.log_index >= {first}"
_HOLDERS_SQL = "INSERT INTO batch_holders (batch_id, participant_id) SELECT 'syn-' || {pad}, 'bench-miner' "
_HOLDERS_SQL += "FROM events AS e WHERE e.log_index >= {first}"


def _fill(db: Database, data_dir: Path, stored: int) -> None:
    """``stored`` synthetic extract events in every table an event touches (the log, the Merkle tree and a
    checkpoint as ``tests.bench_log`` builds them, plus each event's batch, history and holder), leaving the
    planner's statistics as stale as they were."""
    from tests.bench_log import BuiltLog, _build_postgresql, _build_sqlite

    built = BuiltLog()
    if db.name == "postgresql":
        import asyncpg
        from sqlalchemy.engine import make_url

        asyncio.run(_build_postgresql(db, data_dir, built, stored, analyze=False))
        pad = "lpad(e.log_index::text, 9, '0')"
        url = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)

        async def projections() -> None:
            conn = await asyncpg.connect(url)
            try:
                for sql in (_BATCHES_SQL, _HISTORY_SQL, _HOLDERS_SQL):
                    await conn.execute(sql.format(pad=pad, first=built.first_synthetic))
                # The fill writes about 2 GB of write-ahead log within seconds, past max_wal_size: PostgreSQL then
                # starts a checkpoint that would run during the measurement (its writes, and backends evicting the
                # fill's dirty pages, doubled PostgreSQL's CPU per ingested event). A database that grew to this
                # size over time has no such burst behind it: the fill's checkpoint is taken now, before the server
                # starts. (A checkpoint leaves the planner's statistics as stale as they were.)
                await conn.execute("CHECKPOINT")
            finally:
                await conn.close()

        asyncio.run(projections())
    else:
        import sqlite3

        _build_sqlite(db, data_dir, built, stored, analyze=False)
        pad = "substr('000000000' || e.log_index, -9, 9)"
        conn = sqlite3.connect(db.url.split("///", 1)[1])
        try:
            with conn:
                for sql in (_BATCHES_SQL, _HISTORY_SQL, _HOLDERS_SQL):
                    conn.execute(sql.format(pad=pad, first=built.first_synthetic))
        finally:
            conn.close()


def _ingest_rate(db_name: str, opts: Options, stored: int, events: int) -> tuple[float, list[str]]:
    label = f"growth-{stored}"

    def prepare(db: Database, data_dir: Path) -> None:
        env = server_env(db, data_dir)
        if db.name == "postgresql":
            # statistics of the empty database, never refreshed: the worst case for the planner
            import subprocess
            import sys

            subprocess.run([sys.executable, "-c", _ANALYZE_SCRIPT, db.url], check=True, env=env)
        if stored:
            started = time.perf_counter()
            _fill(db, data_dir, stored)
            say(f"  {label}: {stored:,} events stored in {time.perf_counter() - started:.1f} s")

    with fresh_server(db_name, opts, label, prepare=prepare) as server:
        miner, processor = admit_parties(server, "grw")
        chains = sign_chains(miner, processor, "grw-b", max(1, events // 3))
        miner_bodies = [batch_body(r) for r in miner_requests(chains, opts.batch_size)]
        receive_bodies = [batch_body(r) for r in receive_requests(chains, opts.batch_size)]

        async def run() -> tuple[float, Sequence[object]]:
            async with http_client(server) as client:
                t0 = time.perf_counter()
                mined = await _post_all(
                    client, "/v1/events/batch", miner.headers, miner_bodies, opts.concurrency
                )
                received = await _post_all(
                    client, "/v1/events/batch", processor.headers, receive_bodies, opts.concurrency
                )
                seconds = time.perf_counter() - t0
                await wait_integrated(client, server, last_log_index([*mined, *received]) + 1)
                return seconds, [*mined, *received]

        with sampled(server, opts, label):
            seconds, outcomes = asyncio.run(run())
        accepted, problems = _check_batches(outcomes, 3 * len(chains))  # type: ignore[arg-type]
        return accepted / seconds, problems


_ANALYZE_SCRIPT = """
import asyncio, sys
import asyncpg
from sqlalchemy.engine import make_url
url = make_url(sys.argv[1]).set(drivername="postgresql").render_as_string(hide_password=False)
async def main():
    conn = await asyncpg.connect(url)
    await conn.execute("ANALYZE")
    await conn.close()
asyncio.run(main())
"""


def bench_ingest_growth(db_name: str, opts: Options) -> list[Result]:
    """HTTP ingest rate on a database already holding 0, 100k and 1M events (stale planner statistics)."""
    sizes = sorted({0, min(100_000, opts.log_entries), opts.log_entries})
    events = min(opts.events, 15_000)
    rates: list[tuple[int, float, list[str]]] = []
    bares: list[float] = []
    for stored in sizes:
        with bare_verify_around() as bare_mean:
            rate, problems = _ingest_rate(db_name, opts, stored, events)
        bares.append(bare_mean[0])
        rates.append((stored, rate, problems))
        say(f"  {stored:,} stored: {rate:,.0f} events/s (bare verify {bare_mean[0]:,.0f}/s)")
    empty = rates[0][1] / bares[0]
    results = []
    for (stored, rate, problems), bare in zip(rates, bares, strict=True):
        share = rate / bare / empty if empty else 0.0
        verdict = "meets" if share >= TARGET_GROWTH else "BELOW"
        row = {
            "database": db_name,
            "stored events": f"{stored:,}",
            "events/s": f"{rate:,.0f}",
            "bare verify/s": f"{bare:,.0f}",
            "ratio to bare verify": f"{rate / bare:.2f}x",
            "of empty (ratios)": f"{share:.0%} (target >= {TARGET_GROWTH:.0%} at 1M)",
            "verdict": verdict if stored == sizes[-1] else "",
        }
        results.append(Result("ingest growth (HTTP, stale statistics)", db_name, row, not problems, problems))
    return results


# --- post-throughput --------------------------------------------------------------------------------------------

TARGET_POST_RATIO = 0.35
"""Single-event POSTs at concurrency 64: at least this fraction of the same server's ``GET /healthz`` rate."""
TARGET_POST_P99_MS = 50.0
TARGET_POST_P50_C1_MS = 3.0
CONCURRENCY = 64


@dataclasses.dataclass
class Closed:
    """A closed-loop run: each of ``concurrency`` connections sends its next request when the last one answered."""

    seconds: float
    latencies_ms: list[float]
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0


async def closed_loop(url: str, requests: Sequence[bytes], concurrency: int) -> Closed:
    """Send ``requests`` over ``concurrency`` keep-alive connections, each waiting for its answer before the next.

    A bare HTTP/1.1 client on asyncio streams (a few microseconds per request), so that the client, which shares the
    machine with the server, costs the two rates it compares as little as possible."""
    host, port = url.removeprefix("http://").split(":")
    queue = list(reversed(requests))
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while queue:
                request = queue.pop()
                started = time.perf_counter()
                writer.write(request)
                status, _ = await read_response(reader)
                latencies.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return Closed(time.perf_counter() - started, sorted(latencies), statuses)


async def bare_commit_ms(db: Database, commits: int = 200) -> float:
    """p50 of a bare durable commit (one-row INSERT, COMMIT) on the same database: the floor of a single POST's
    latency, since an acknowledged event is on disk (PostgreSQL fsyncs its WAL, SQLite its journal)."""
    latencies: list[float] = []
    if db.name == "postgresql":
        import asyncpg
        from sqlalchemy.engine import make_url

        url = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS bench_bare_commit (i integer)")
            for _ in range(commits):
                started = time.perf_counter()
                async with conn.transaction():
                    await conn.execute("INSERT INTO bench_bare_commit VALUES (1)")
                latencies.append((time.perf_counter() - started) * 1000)
            await conn.execute("DROP TABLE bench_bare_commit")
        finally:
            await conn.close()
    else:
        import sqlite3

        path = Path(db.url.split("///", 1)[1]).with_name("bare-commit.db")
        lite = sqlite3.connect(path, isolation_level=None)
        try:
            lite.execute("PRAGMA journal_mode=WAL")
            lite.execute("PRAGMA synchronous=FULL")
            lite.execute("CREATE TABLE IF NOT EXISTS t (i integer)")
            for _ in range(commits):
                started = time.perf_counter()
                lite.execute("BEGIN IMMEDIATE")
                lite.execute("INSERT INTO t VALUES (1)")
                lite.execute("COMMIT")
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            lite.close()
    latencies.sort()
    return latencies[len(latencies) // 2]


def bench_post_throughput(server: Server, opts: Options) -> list[Result]:
    """Single-event ``POST /v1/events`` at concurrency 64 against ``GET /healthz`` on the same server, and at 1
    against a bare durable commit on the same database (the latency floor of an acknowledged event). The latency
    targets are absolute; ``/healthz``'s own latencies in the same run show what the machine allows any request."""
    from tests.bench import percentile

    miner, processor = admit_parties(server, "thr")
    count = max(2_000, min(opts.events // 3, 10_000))
    chains = sign_chains(miner, processor, "thr-b", count + 300)
    headers = {"Authorization": f"Bearer {miner.token}", "Content-Type": "application/json"}
    posts = [http_request("POST", "/v1/events", headers, c.extract.to_json()) for c in chains]
    health = [http_request("GET", "/healthz", {})] * count

    async def run() -> tuple[Closed, Closed, Closed, Closed, Closed]:
        await closed_loop(server.url, health[:500], CONCURRENCY)  # warm up connections and code paths
        one = await closed_loop(server.url, posts[count:], 1)
        healthz_one = await closed_loop(server.url, health[:300], 1)
        healthz = await closed_loop(server.url, health, CONCURRENCY)
        many = await closed_loop(server.url, posts[:count], CONCURRENCY)
        healthz_after = await closed_loop(server.url, health, CONCURRENCY)
        return one, many, healthz, healthz_after, healthz_one

    with sampled(server, opts, "post-throughput"):
        one, many, healthz, healthz_after, healthz_one = asyncio.run(run())
    commit_ms = asyncio.run(bare_commit_ms(server.db))
    problems = [
        f"{n} POSTs answered {status}"
        for status, n in {**one.statuses, **many.statuses}.items()
        if status != 201
    ]
    reference = (healthz.rate + healthz_after.rate) / 2
    ratio = many.rate / reference if reference else 0.0
    p99 = percentile(many.latencies_ms, 99)
    p50_one = percentile(one.latencies_ms, 50)
    met = ratio >= TARGET_POST_RATIO and p99 < TARGET_POST_P99_MS and p50_one < TARGET_POST_P50_C1_MS
    row = {
        "database": server.db.name,
        "POSTs": f"{len(many.latencies_ms):,}",
        "POST/s c=64": f"{many.rate:,.0f}",
        "/healthz/s c=64": f"{reference:,.0f}",
        "ratio": f"{ratio:.2f}x (target >= {TARGET_POST_RATIO}x)",
        "p50/p99 ms c=64": f"{percentile(many.latencies_ms, 50):.1f}/{p99:.1f} (p99 < {TARGET_POST_P99_MS:.0f})",
        "p50/p99 ms c=1": f"{p50_one:.2f}/{percentile(one.latencies_ms, 99):.2f} (p50 < {TARGET_POST_P50_C1_MS:.0f})",
        "bare commit p50 ms": f"{commit_ms:.2f}",
        # the same server's floor for any request, beside the absolute latency targets
        "/healthz p99 ms c=64": f"{percentile(healthz.latencies_ms, 99):.1f}",
        "/healthz p50 ms c=1": f"{percentile(healthz_one.latencies_ms, 50):.2f}",
        "verdict": "meets" if met else "BELOW",
    }
    title = "single-event POST /v1/events, closed loop (the same server's GET /healthz is the reference)"
    return [Result(title, server.db.name, row, not problems, problems)]
