"""Read-load benchmark for ``tests.bench``: many concurrent readers against a participant with a large holding.

    python -m tests.bench --only read-load [--quick] [--db sqlite|postgresql]

A fresh database and server of its own. Through the API: a miner and a processor (the reader) are admitted, each
with a token. Then, since 100,000 custody chains through the API would take far longer than the figure is worth,
the projection rows are inserted in bulk straight into the tables (the server is running; it keeps no cache of
them): ``READ_HOLDINGS`` batches the reader holds (``batches`` and ``batch_holders``), and for
``READ_UPSTREAM_CHAINS`` of them a chain of ``READ_UPSTREAM_DEPTH`` batches upstream (``batches`` and
``batch_edges``, held by someone else), which the reader may read as upstream lineage. Only reads of these rows
are measured (``GET /v1/batches/{id}``), so rows without events behind them change nothing here.

Two phases, each with ``READ_READERS`` concurrent clients in a closed loop (each sends its next request when the
last is answered), for ``--duration`` seconds:

1. the bare reference: ``GET /healthz`` (no database, no authentication): what the HTTP stack and the client
   cost on this machine at that concurrency;
2. the read load: ``GET /v1/batches/{id}`` with the reader's token, a third each for batches it holds (200),
   batches upstream of those (200) and ids that do not exist (404); meanwhile a separate client probes
   ``/healthz`` every 100 ms, to show that health checks are not starved.

It reports requests, throughput and p50/p99 per kind, against the reference. The run is invalid if any request
gets a 5xx or another status than expected (a 503 ``overloaded`` counts as a failure here too).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from dataclasses import dataclass, field

import httpx

from tests.bench import (
    Database,
    Options,
    Result,
    Server,
    admit_parties,
    fresh_server,
    http_client,
    percentile,
    sampled,
    say,
)

READ_READERS = 200
READ_HOLDINGS = 100_000
READ_UPSTREAM_CHAINS = 2_000
READ_UPSTREAM_DEPTH = 3
HEALTH_PROBE_INTERVAL = 0.1
MAX_PHASE_SECONDS = 20.0
"""Each phase stops after this long, whatever ``--duration`` says."""

_BATCH_COLUMNS = [
    "id",
    "mineral",
    "form",
    "mass_g",
    "status",
    "custodian",
    "facility_id",
    "receiver",
    "receiver_facility",
    "head",
    "created_event",
    "value_amount",
    "value_currency",
    "lost_g",
]
_NO_EVENT = "sha256:" + "0" * 64


def held_id(i: int) -> str:
    return f"rl-held-{i:06d}"


def upstream_id(chain: int, depth: int) -> str:
    return f"rl-up-{chain:05d}-{depth}"


Row = tuple[object, ...]


def _rows(reader: str, facility: str) -> tuple[list[Row], list[Row], list[Row]]:
    """(batches, holders, edges) rows: the reader's holding and the upstream chains."""

    def batch(batch_id: str, custodian: str, at: str | None) -> Row:
        return (batch_id, "lithium", "concentrate", 1_000, "at_facility", custodian, at, None, None, _NO_EVENT,
                _NO_EVENT, None, None, 0)  # fmt: skip

    batches = [batch(held_id(i), reader, facility) for i in range(READ_HOLDINGS)]
    holders: list[Row] = [(held_id(i), reader) for i in range(READ_HOLDINGS)]
    edges: list[Row] = []
    for chain in range(READ_UPSTREAM_CHAINS):
        below = held_id(chain * (READ_HOLDINGS // READ_UPSTREAM_CHAINS))
        for depth in range(READ_UPSTREAM_DEPTH):
            above = upstream_id(chain, depth)
            batches.append(batch(above, "rl-upstream-co", None))
            holders.append((above, "rl-upstream-co"))
            edges.append((above, below, _NO_EVENT, 1_000))
            below = above
    return batches, holders, edges


async def _fill_postgresql(db: Database, reader: str, facility: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    batches, holders, edges = _rows(reader, facility)
    conn = await asyncpg.connect(make_url(db.url).set(drivername="postgresql").render_as_string(False))
    try:
        async with conn.transaction():
            await conn.copy_records_to_table("batches", records=batches, columns=_BATCH_COLUMNS)
            await conn.copy_records_to_table(
                "batch_holders", records=holders, columns=["batch_id", "participant_id"]
            )
            await conn.copy_records_to_table(
                "batch_edges", records=edges, columns=["parent_batch", "child_batch", "event_id", "mass_g"]
            )
        await conn.execute("ANALYZE batches")
        await conn.execute("ANALYZE batch_holders")
        await conn.execute("ANALYZE batch_edges")
    finally:
        await conn.close()


def _fill_sqlite(db: Database, reader: str, facility: str) -> None:
    batches, holders, edges = _rows(reader, facility)
    conn = sqlite3.connect(db.url.split("///", 1)[1], isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        marks = ", ".join("?" * len(_BATCH_COLUMNS))
        conn.executemany(f"INSERT INTO batches ({', '.join(_BATCH_COLUMNS)}) VALUES ({marks})", batches)
        conn.executemany("INSERT INTO batch_holders (batch_id, participant_id) VALUES (?, ?)", holders)
        conn.executemany(
            "INSERT INTO batch_edges (parent_batch, child_batch, event_id, mass_g) VALUES (?, ?, ?, ?)", edges
        )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


@dataclass
class Phase:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, dict[int, int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, kind: str, status: int, ms: float) -> None:
        self.latencies.setdefault(kind, []).append(ms)
        counts = self.statuses.setdefault(kind, {})
        counts[status] = counts.get(status, 0) + 1

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies.values())

    def all_ms(self) -> list[float]:
        return sorted(ms for values in self.latencies.values() for ms in values)


Target = tuple[str, str, int]
"""(kind, path, expected status)"""


def _targets(rng: random.Random) -> list[Target]:
    targets: list[Target] = []
    for _ in range(30_000):
        pick = rng.randrange(3)
        if pick == 0:
            targets.append(("held", f"/v1/batches/{held_id(rng.randrange(READ_HOLDINGS))}", 200))
        elif pick == 1:
            chain, depth = rng.randrange(READ_UPSTREAM_CHAINS), rng.randrange(READ_UPSTREAM_DEPTH)
            targets.append(("upstream", f"/v1/batches/{upstream_id(chain, depth)}", 200))
        else:
            targets.append(("not found", f"/v1/batches/rl-none-{rng.randrange(10**9):09d}", 404))
    return targets


async def _closed_loop(
    clients: list[httpx.AsyncClient], targets: list[Target], headers: dict[str, str], seconds: float
) -> Phase:
    """Each client (one connection each: httpx's pool slows down with many connections in one client, and the
    figures would be the client's) sends a request, waits for the answer, sends the next, until ``seconds``."""
    phase = Phase()
    deadline = time.perf_counter() + seconds
    cursor = 0

    async def reader(client: httpx.AsyncClient) -> None:
        nonlocal cursor
        while time.perf_counter() < deadline:
            kind, path, expected = targets[cursor % len(targets)]
            cursor += 1
            started = time.perf_counter()
            try:
                response = await client.get(path, headers=headers)
            except httpx.HTTPError as exc:
                phase.record(kind, 0, (time.perf_counter() - started) * 1000)
                if len(phase.errors) < 3:
                    phase.errors.append(f"{kind} {path}: {type(exc).__name__}: {exc}")
                continue
            phase.record(kind, response.status_code, (time.perf_counter() - started) * 1000)
            if response.status_code != expected and len(phase.errors) < 3:
                phase.errors.append(f"{kind} {path}: HTTP {response.status_code} {response.text[:200]}")

    started = time.perf_counter()
    await asyncio.gather(*(reader(client) for client in clients))
    phase.seconds = time.perf_counter() - started
    return phase


async def _probe_health(url: str, stop: asyncio.Event) -> Phase:
    """``/healthz`` every HEALTH_PROBE_INTERVAL on a connection of its own, until ``stop``."""
    phase = Phase()
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status = (await client.get("/healthz")).status_code
            except httpx.HTTPError as exc:
                status = 0
                phase.errors.append(f"{type(exc).__name__}: {exc}")
            phase.record("healthz", status, (time.perf_counter() - started) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEALTH_PROBE_INTERVAL)
    return phase


def _fmt(values: list[float]) -> str:
    ordered = sorted(values)
    return f"{percentile(ordered, 50):.1f}/{percentile(ordered, 99):.1f}" if ordered else "-"


def bench_read_load(db_name: str, opts: Options) -> list[Result]:
    seconds = min(MAX_PHASE_SECONDS, opts.duration)
    with fresh_server(db_name, opts, "read-load") as server:
        return _run(server, opts, seconds)


def _run(server: Server, opts: Options, seconds: float) -> list[Result]:
    _, reader = admit_parties(server, "rl")
    started = time.perf_counter()
    if server.db.name == "postgresql":
        asyncio.run(_fill_postgresql(server.db, reader.id, reader.facility))
    else:
        _fill_sqlite(server.db, reader.id, reader.facility)
    say(
        f"  inserted {READ_HOLDINGS:,} held batches and {READ_UPSTREAM_CHAINS * READ_UPSTREAM_DEPTH:,} upstream "
        f"ones in {time.perf_counter() - started:.1f} s; {READ_READERS} readers for {seconds:.0f} s per phase"
    )
    targets = _targets(random.Random(7))
    health_targets: list[Target] = [("healthz", "/healthz", 200)]

    async def run() -> tuple[Phase, Phase, Phase]:
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(http_client(server, connections=1, timeout=60))
                for _ in range(READ_READERS)
            ]
            # warm up the connections and the server's code paths
            await _closed_loop(clients, targets[:1000], {**reader.headers}, min(1.0, seconds))
            reference = await _closed_loop(clients, health_targets, {}, seconds)
            stop = asyncio.Event()
            probe = asyncio.create_task(_probe_health(server.url, stop))
            try:
                load = await _closed_loop(clients, targets, {**reader.headers}, seconds)
            finally:
                stop.set()
                health = await probe
        return reference, load, health

    with sampled(server, opts, "read-load"):
        reference, load, health = asyncio.run(run())

    problems: list[str] = []
    server_errors = sum(
        n for counts in load.statuses.values() for s, n in counts.items() if s >= 500 or s == 0
    )
    expected = {"held": 200, "upstream": 200, "not found": 404}
    unexpected = sum(
        n for kind, counts in load.statuses.items() for s, n in counts.items() if s != expected[kind]
    )
    if server_errors:
        problems.append(f"{server_errors} of {load.requests} reads got a 5xx or no answer")
    if unexpected:
        problems.append(f"{unexpected} reads answered another status than expected")
    problems.extend(load.errors)
    unhealthy = sum(n for s, n in health.statuses.get("healthz", {}).items() if s != 200)
    if unhealthy:
        problems.append(f"{unhealthy} /healthz probes during the load did not answer 200")
    ref_ms, load_ms = reference.all_ms(), load.all_ms()
    ratio = percentile(load_ms, 99) / percentile(ref_ms, 99) if ref_ms and load_ms else float("nan")
    row = {
        "database": server.db.name,
        "held": f"{READ_HOLDINGS:,}",
        "readers": str(READ_READERS),
        "reads": f"{load.requests:,}",
        "reads/s": f"{load.requests / load.seconds:,.0f}",
        "5xx": str(server_errors),
        "p50/p99 ms": _fmt(load_ms),
        "held p50/p99": _fmt(load.latencies.get("held", [])),
        "upstream p50/p99": _fmt(load.latencies.get("upstream", [])),
        "404 p50/p99": _fmt(load.latencies.get("not found", [])),
        "/healthz ref req/s": f"{reference.requests / reference.seconds:,.0f}",
        "/healthz ref p50/p99": _fmt(ref_ms),
        "p99 / ref p99": f"{ratio:.1f}",
        "probe /healthz max ms": f"{max(health.all_ms(), default=float('nan')):.1f}",
        "verdict": "INVALID" if problems else "ok",
    }
    title = f"read load: GET /v1/batches/{{id}} by a participant holding {READ_HOLDINGS:,} batches"
    return [Result(title, server.db.name, row, not problems, problems)]
