"""Transparency-log benchmarks for ``tests.bench``: inclusion-proof latency on a large log, and ``ledger audit``.

    python -m tests.bench --only inclusion-proof,audit [--quick] [--db sqlite|postgresql]

**inclusion-proof** builds a log of ``--log-entries`` entries (1,000,000; quick 100,000) directly in the tables,
since a million events through the API would take far longer than the figure is worth: after ``ledger db
upgrade`` and ``ledger init`` it appends synthetic extract events (payload bytes whose SHA-256 the event id
names; no valid signature, so this database is not for ``ledger audit``), folds every leaf into the Merkle tree
with :func:`ledger.log.merkle.append`, stores every completed node, advances ``log_state`` and ``log_tree`` and
signs one checkpoint with the log key, exactly what the integrator would have done. Only then does the server
start. It times ``GET /v1/log/proofs/inclusion`` for random entries (client-measured, keep-alive, one at a time)
and :meth:`TransparencyLog.inclusion_proof` in this process against the same database (the server time: the
HTTP figure adds the client, the loopback and the HTTP stack), and verifies every proof fetched over HTTP
against the signed checkpoint with :func:`ledger.log.offline.verify_inclusion`.

**audit** fills a fresh database through the API with the ingest workload (extract, transfer, receive), waits
for the server's integrator to cover everything with a checkpoint, and runs ``ledger audit`` as a subprocess.
Before each run it times the bare reference of the target (docs/architecture.md, "Targets") on the same rows:
:func:`bare_audit_loop`, one core fetching every event in log order and doing nothing but the SHA-256 of its
payload, its RFC 9162 leaf hash and the Ed25519 check of its signature with PyNaCl; the table gives both rates and
their ratio (the best audit run over the best bare run). It also gives the CPU time each spends per event (the
audit's with its worker processes): the audit does all the bare loop does and replays the log besides, so it
costs more CPU per event and beats the bare loop only with a second core to spare. On a machine busy with other
work (Linux shares the CPUs between sessions, not processes) the rate ratio tends to the ratio of CPU costs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import os
import random
import re
import resource
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nacl.signing

from ledger.domain.dsse import PAYLOAD_TYPE, Signature, pae
from ledger.domain.keys import SigningKey
from ledger.log import merkle
from ledger.log.offline import VerificationError, leaf_for_event, open_signed_checkpoint, verify_inclusion
from ledger.services.log import LogSigner, TransparencyLog
from ledger.settings import Settings
from ledger.store.db import create_engine
from tests.bench import (
    Database,
    Options,
    Result,
    Server,
    _check_batches,
    _post_all,
    admit_parties,
    batch_body,
    fresh_server,
    http_client,
    last_log_index,
    median,
    miner_requests,
    percentile,
    receive_requests,
    run_command,
    sampled,
    sampled_pid,
    say,
    server_env,
    sign_chains,
    wait_integrated,
)

TARGET_PROOF_MS = 2.0
"""docs/architecture.md, "Targets": server p50 below 2 ms on a log of 1,000,000 entries."""
TARGET_AUDIT_RATE = 15_000.0
"""docs/architecture.md, "Targets": at least 15,000 events/s, and at least 1.0x :func:`bare_audit_loop`."""
TARGET_AUDIT_RATIO = 1.0

PROOF_BUDGET_SECONDS = 60.0
"""At most this long for each of the HTTP and in-process passes (a slow database times fewer proofs)."""

CHUNK = 50_000
"""Log entries generated, inserted and folded into the tree per round while building the log."""

_ACTOR = "bench-miner"
_KEY_ID = "0" * 64
_T = "2026-03-02T09:00:00-05:00"
_PAYLOAD = (
    '{"actor":"bench-miner","batch":{"form":"concentrate","id":"syn-%09d","mass_g":1000000,'
    '"mineral":"lithium"},"facility":"bench-mine","kind":"extract","timestamp":"2026-03-02T09:00:00-05:00"}'
)


# --- building a large log directly in the tables ----------------------------------------------------------------


@dataclass
class BuiltLog:
    size: int = 0
    first_synthetic: int = 0
    sample: dict[int, str] = field(default_factory=dict)
    """log index -> event id, of the entries whose proofs are timed."""
    seconds: dict[str, float] = field(default_factory=dict)


def _synthetic(start: int, end: int) -> Iterator[tuple[int, str, bytes, bytes]]:
    """(log index, event id, payload, leaf hash) of synthetic extract events ``start .. end - 1``."""
    for index in range(start, end):
        payload = (_PAYLOAD % index).encode()
        digest = hashlib.sha256(payload).digest()
        yield index, "sha256:" + digest.hex(), payload, merkle.leaf_hash(digest)


def _signer(data_dir: Path) -> LogSigner:
    settings = dataclasses.replace(Settings.from_env(), data_dir=data_dir)
    return LogSigner(settings.log_origin, SigningKey.load(settings.log_key_path))


async def _build_postgresql(
    db: Database, data_dir: Path, built: BuiltLog, entries: int, *, analyze: bool = True
) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(url)
    try:
        timings = built.seconds
        async with conn.transaction():
            sequenced = int(await conn.fetchval("SELECT size FROM log_state WHERE id = 1"))
            tree = await conn.fetchrow("SELECT size, frontier FROM log_tree WHERE id = 1")
            frontier = merkle.Frontier.from_bytes(bytes(tree["frontier"]))
            existing = await conn.fetch(
                "SELECT event_id FROM events WHERE log_index >= $1 ORDER BY log_index", frontier.size
            )
            frontier, nodes = merkle.append(frontier, [leaf_for_event(r["event_id"]) for r in existing])
            await conn.copy_records_to_table("merkle_nodes", records=nodes, columns=["level", "idx", "hash"])
            built.first_synthetic = sequenced
            accepted_at = datetime.now(UTC)
            for start in range(sequenced, entries, CHUNK):
                end = min(entries, start + CHUNK)
                t0 = time.perf_counter()
                rows, leaves = [], []
                for index, eid, payload, leaf in _synthetic(start, end):
                    rows.append(
                        (index, eid, "extract", _ACTOR, _KEY_ID, PAYLOAD_TYPE, payload, "[]", _T, accepted_at)
                    )
                    leaves.append(leaf)
                    if index in built.sample:
                        built.sample[index] = eid
                t1 = time.perf_counter()
                await conn.copy_records_to_table(
                    "events",
                    records=rows,
                    columns=[
                        "log_index",
                        "event_id",
                        "kind",
                        "actor",
                        "key_id",
                        "payload_type",
                        "payload",
                        "signatures",
                        "timestamp",
                        "accepted_at",
                    ],
                )
                t2 = time.perf_counter()
                frontier, nodes = merkle.append(frontier, leaves)
                t3 = time.perf_counter()
                await conn.copy_records_to_table(
                    "merkle_nodes", records=nodes, columns=["level", "idx", "hash"]
                )
                t4 = time.perf_counter()
                for key, seconds in (
                    ("generate", t1 - t0),
                    ("insert events", t2 - t1),
                    ("merkle", t3 - t2),
                    ("insert nodes", t4 - t3),
                ):
                    timings[key] = timings.get(key, 0.0) + seconds
            size = max(entries, sequenced)
            await conn.execute("UPDATE log_state SET size = $1 WHERE id = 1", size)
            await conn.execute(
                "UPDATE log_tree SET size = $1, frontier = $2 WHERE id = 1", size, frontier.to_bytes()
            )
            root = frontier.root()
            await conn.execute(
                "INSERT INTO checkpoints (size, root_hash, note, created_at) VALUES ($1, $2, $3, $4)",
                size,
                root,
                _signer(data_dir).sign(size, root),
                datetime.now(UTC),
            )
            built.size = size
        if analyze:
            t0 = time.perf_counter()
            await conn.execute("ANALYZE events")
            await conn.execute("ANALYZE merkle_nodes")
            timings["analyze"] = time.perf_counter() - t0
    finally:
        await conn.close()


def _sqlite_time(moment: datetime) -> str:
    """How the UTCDateTime column stores a moment on SQLite (naive UTC, as SQLAlchemy writes it)."""
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def _build_sqlite(
    db: Database, data_dir: Path, built: BuiltLog, entries: int, *, analyze: bool = True
) -> None:
    path = db.url.split("///", 1)[1]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        timings = built.seconds
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN IMMEDIATE")
        sequenced = int(conn.execute("SELECT size FROM log_state WHERE id = 1").fetchone()[0])
        tree_size, tree_frontier = conn.execute("SELECT size, frontier FROM log_tree WHERE id = 1").fetchone()
        frontier = merkle.Frontier.from_bytes(bytes(tree_frontier))
        existing = conn.execute(
            "SELECT event_id FROM events WHERE log_index >= ? ORDER BY log_index", (tree_size,)
        ).fetchall()
        frontier, nodes = merkle.append(frontier, [leaf_for_event(r[0]) for r in existing])
        insert_nodes = "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)"
        conn.executemany(insert_nodes, nodes)
        built.first_synthetic = sequenced
        accepted_at = _sqlite_time(datetime.now(UTC))
        for start in range(sequenced, entries, CHUNK):
            end = min(entries, start + CHUNK)
            t0 = time.perf_counter()
            rows, leaves = [], []
            for index, eid, payload, leaf in _synthetic(start, end):
                rows.append(
                    (index, eid, "extract", _ACTOR, _KEY_ID, PAYLOAD_TYPE, payload, "[]", _T, accepted_at)
                )
                leaves.append(leaf)
                if index in built.sample:
                    built.sample[index] = eid
            t1 = time.perf_counter()
            conn.executemany(
                "INSERT INTO events (log_index, event_id, kind, actor, key_id, payload_type, payload, "
                "signatures, timestamp, accepted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            t2 = time.perf_counter()
            frontier, nodes = merkle.append(frontier, leaves)
            t3 = time.perf_counter()
            conn.executemany(insert_nodes, nodes)
            t4 = time.perf_counter()
            for key, seconds in (
                ("generate", t1 - t0),
                ("insert events", t2 - t1),
                ("merkle", t3 - t2),
                ("insert nodes", t4 - t3),
            ):
                timings[key] = timings.get(key, 0.0) + seconds
        size = max(entries, sequenced)
        root = frontier.root()
        conn.execute("UPDATE log_state SET size = ? WHERE id = 1", (size,))
        conn.execute("UPDATE log_tree SET size = ?, frontier = ? WHERE id = 1", (size, frontier.to_bytes()))
        conn.execute(
            "INSERT INTO checkpoints (size, root_hash, note, created_at) VALUES (?, ?, ?, ?)",
            (size, root, _signer(data_dir).sign(size, root), _sqlite_time(datetime.now(UTC))),
        )
        t0 = time.perf_counter()
        conn.execute("COMMIT")
        if analyze:
            conn.execute("ANALYZE")
        timings["commit+analyze"] = time.perf_counter() - t0
        built.size = size
    finally:
        conn.close()


# --- inclusion-proof latency ------------------------------------------------------------------------------------


def _timed_proofs_http(server: Server, ids: list[str]) -> tuple[list[float], list[dict[str, Any]], list[str]]:
    latencies, proofs, problems = [], [], []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(20):  # warm the connection and the server's code paths (not the sampled entries)
            client.get("/v1/log/checkpoint")
        deadline = time.perf_counter() + PROOF_BUDGET_SECONDS
        for event_id in ids:
            if time.perf_counter() > deadline:
                break
            t0 = time.perf_counter()
            response = client.get("/v1/log/proofs/inclusion", params={"event_id": event_id})
            latencies.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                if len(problems) < 3:
                    problems.append(f"HTTP {response.status_code} for {event_id}: {response.text[:200]}")
                continue
            proofs.append(response.json())
    return latencies, proofs, problems


async def _timed_proofs_in_process(db: Database, ids: list[str]) -> list[float]:
    engine = create_engine(db.url)
    log = TransparencyLog(engine, None)
    try:
        await log.inclusion_proof(ids[0])  # connect, compile the statements
        latencies = []
        deadline = time.perf_counter() + PROOF_BUDGET_SECONDS
        for event_id in ids:
            if time.perf_counter() > deadline:
                break
            t0 = time.perf_counter()
            await log.inclusion_proof(event_id)
            latencies.append((time.perf_counter() - t0) * 1000)
        return latencies
    finally:
        await engine.dispose()


def bench_inclusion_proof(db_name: str, opts: Options) -> list[Result]:
    """Inclusion proofs on a log of ``--log-entries`` entries, built directly in the tables."""
    rng = random.Random(20260302)
    built = BuiltLog()
    wanted = 2 * opts.proofs  # half timed over HTTP, the other half in-process

    def prepare(db: Database, data_dir: Path) -> None:
        say(f"  building a log of {opts.log_entries:,} entries directly in {db.name}...")
        started = time.perf_counter()
        low = 64  # `ledger init` wrote a handful of entries first; sample synthetic ones only
        population = range(low, max(low + wanted, opts.log_entries))
        built.sample = dict.fromkeys(rng.sample(population, min(wanted, len(population))), "")
        if db.name == "postgresql":
            asyncio.run(_build_postgresql(db, data_dir, built, opts.log_entries))
        else:
            _build_sqlite(db, data_dir, built, opts.log_entries)
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in built.seconds.items())
        say(f"  built in {time.perf_counter() - started:.1f} s ({parts})")

    with fresh_server(db_name, opts, "inclusion-proof", prepare) as server:
        ids = [eid for eid in built.sample.values() if eid]
        rng.shuffle(ids)
        http_ids, local_ids = ids[: len(ids) // 2], ids[len(ids) // 2 :]
        say(f"  timing {len(http_ids)} proofs over HTTP and {len(local_ids)} in-process...")
        with sampled(server, opts, "inclusion-proof-http"):
            http_ms, proofs, problems = _timed_proofs_http(server, http_ids)
        with sampled_pid(os.getpid(), opts, "inclusion-proof-in-process", db_name, "this process"):
            local_ms = asyncio.run(_timed_proofs_in_process(server.db, local_ids))
        note = httpx.get(f"{server.url}/v1/log/checkpoint").text
        vkey = (server.data_dir / "log.vkey").read_text()
        verified = 0
        try:
            checkpoint = open_signed_checkpoint(note, vkey)
            if checkpoint.size != built.size:
                problems.append(f"the latest checkpoint has size {checkpoint.size}, not {built.size}")
            for proof in proofs:
                verify_inclusion(checkpoint, proof)
                verified += 1
        except VerificationError as exc:
            problems.append(f"checkpoint or proof {verified} does not verify: {exc}")
    http_ms.sort()
    local_ms.sort()
    p50 = percentile(local_ms, 50)
    row = {
        "database": db_name,
        "log entries": f"{built.size:,}",
        "proofs": f"{len(http_ms):,}+{len(local_ms):,}",
        "verified": f"{verified:,}/{len(proofs):,}",
        "server p50 ms": f"{p50:.2f}",
        "server p99 ms": f"{percentile(local_ms, 99):.2f}",
        "HTTP p50 ms": f"{percentile(http_ms, 50):.2f}",
        "HTTP p99 ms": f"{percentile(http_ms, 99):.2f}",
        "HTTP max ms": f"{http_ms[-1]:.1f}" if http_ms else "-",
        "target": f"server p50 < {TARGET_PROOF_MS:.0f} ms",
        "verdict": "INVALID" if problems else ("meets" if p50 < TARGET_PROOF_MS else "BELOW"),
    }
    title = (
        "inclusion proof (GET /v1/log/proofs/inclusion; server = TransparencyLog.inclusion_proof in-process)"
    )
    return [Result(title, db_name, row, not problems, problems)]


# --- ledger audit -----------------------------------------------------------------------------------------------

_AUDIT_LINE = re.compile(
    r"audit passed: (?P<events>[\d,]+) events.*? in (?P<seconds>[\d.]+) s \((?P<rate>[\d,]+) events/s\)"
)


_BARE_CHUNK = 5_000
"""Events per query of the bare loop (as many as ``ledger audit`` reads at a time)."""


def bare_audit_loop(db: Database) -> tuple[int, float, float]:
    """The bare reference for ``ledger audit``: (events, seconds, CPU seconds of this process) of one core
    fetching every event in log order and doing the SHA-256 of its payload, its RFC 9162 leaf hash and the
    Ed25519 check (PyNaCl) of its signature by the first registered key it names. Nothing else: no replay, no
    tree, no projections. It raises if an event has no signature it can check, since then the reference would be
    cheaper than the audit's work."""
    signatures = msgspec.json.Decoder(list[Signature])
    verify_keys: dict[str, nacl.signing.VerifyKey] = {}
    sha256 = hashlib.sha256

    def check(rows: list[Any]) -> None:
        for payload_type, payload, signatures_json in rows:
            payload = bytes(payload)
            digest = sha256(payload).digest()
            sha256(merkle.LEAF_PREFIX + digest).digest()
            for signature in signatures.decode(signatures_json):
                verify_key = verify_keys.get(signature.keyid)
                if verify_key is not None:
                    verify_key.verify(
                        pae(payload_type, payload), base64.b64decode(signature.sig, validate=True)
                    )
                    break
            else:
                raise RuntimeError("an event carries no signature by a registered key")

    query = "SELECT payload_type, payload, signatures FROM events WHERE log_index >= {} ORDER BY log_index LIMIT {}"
    events = 0
    cpu_started = time.process_time()
    if db.name == "postgresql":
        import asyncpg

        async def run() -> float:
            nonlocal events
            url = db.url.replace("postgresql+asyncpg://", "postgresql://", 1)
            conn = await asyncpg.connect(url)
            try:
                started = time.perf_counter()
                for key_id, public_key in await conn.fetch("SELECT key_id, public_key FROM keys"):
                    verify_keys[key_id] = nacl.signing.VerifyKey(bytes(public_key))
                start = 0
                while rows := await conn.fetch(query.format("$1", _BARE_CHUNK), start):
                    check(rows)
                    events += len(rows)
                    start += len(rows)
                return time.perf_counter() - started
            finally:
                await conn.close()

        seconds = asyncio.run(run())
    else:
        path = db.url.split("///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as conn:
            started = time.perf_counter()
            for key_id, public_key in conn.execute("SELECT key_id, public_key FROM keys"):
                verify_keys[key_id] = nacl.signing.VerifyKey(bytes(public_key))
            start = 0
            while rows := conn.execute(query.format("?", _BARE_CHUNK), (start,)).fetchall():
                check(rows)
                events += len(rows)
                start += len(rows)
            seconds = time.perf_counter() - started
    return events, seconds, time.process_time() - cpu_started


def bench_audit(db_name: str, opts: Options) -> list[Result]:
    """``ledger audit`` over a log of ``--events`` custody events (extract, transfer, receive) sent through the API."""
    with fresh_server(db_name, opts, "audit") as server:
        miner, processor = admit_parties(server, "aud")
        chains = sign_chains(miner, processor, "aud-b", max(1, opts.events // 3))
        miner_bodies = [batch_body(r) for r in miner_requests(chains, opts.batch_size)]
        receive_bodies = [batch_body(r) for r in receive_requests(chains, opts.batch_size)]
        say(f"  sending {3 * len(chains):,} events...")

        async def fill() -> tuple[list[Any], float | None]:
            async with http_client(server) as client:
                t0 = time.perf_counter()
                outcomes = await _post_all(
                    client, "/v1/events/batch", miner.headers, miner_bodies, opts.concurrency
                )
                outcomes += await _post_all(
                    client, "/v1/events/batch", processor.headers, receive_bodies, opts.concurrency
                )
                integrated = await wait_integrated(client, server, last_log_index(outcomes) + 1)
                return outcomes, None if integrated is None else integrated - t0

        outcomes, integrated_s = asyncio.run(fill())
        _, problems = _check_batches(outcomes, 3 * len(chains))
        if integrated_s is None:
            problems.append("the log's checkpoint never covered every event")
        env = server_env(server.db, server.data_dir)
        command = [sys.executable, "-m", "ledger.cli", "audit"]
        say("  running `ledger audit`, each run after the bare fetch-hash-verify loop on the same rows...")
        walls, rates, counts, own_seconds, bare_rates = [], [], [], [], []
        cpu_audit, cpu_bare = [], []
        for _ in range(1 if opts.profile_dir else 2):
            bare_events, bare_seconds, bare_cpu = bare_audit_loop(server.db)
            bare_rates.append(bare_events / bare_seconds)
            cpu_bare.append(bare_cpu / bare_events * 1e6)
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            done, wall = run_command(command, env, opts, "audit", db_name)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            audit_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
            match = _AUDIT_LINE.search(done.stdout)
            if done.returncode != 0 or match is None:
                problems.append(
                    f"`ledger audit` exited with {done.returncode}: {(done.stdout + done.stderr)[-400:]}"
                )
                break
            walls.append(wall)
            counts.append(int(match["events"].replace(",", "")))
            rates.append(float(match["rate"].replace(",", "")))
            own_seconds.append(float(match["seconds"]))
            cpu_audit.append(audit_cpu / counts[-1] * 1e6)
            if counts[-1] != bare_events:
                problems.append(f"the bare loop read {bare_events:,} events, the audit {counts[-1]:,}")
    rate = max(rates) if rates else float("nan")
    bare = max(bare_rates) if bare_rates else float("nan")
    ratio = rate / bare
    events = counts[0] if counts else 0
    meets = rate >= TARGET_AUDIT_RATE and ratio >= TARGET_AUDIT_RATIO
    row = {
        "database": db_name,
        "events": f"{events:,}",
        "audit s": "/".join(f"{s:.2f}" for s in own_seconds),
        "events/s (audit's own)": "/".join(f"{r:,.0f}" for r in rates),
        "bare fetch-hash-verify/s": "/".join(f"{r:,.0f}" for r in bare_rates),
        "ratio (best/best)": f"{ratio:.2f}x",
        "CPU us/event audit|bare": "/".join(
            f"{a:.0f}|{b:.0f}" for a, b in zip(cpu_audit, cpu_bare, strict=False)
        ),
        "wall s (process)": "/".join(f"{w:.2f}" for w in walls),
        "events/s (wall)": f"{events / median(walls):,.0f}" if walls else "-",
        "target": f">= {TARGET_AUDIT_RATE:,.0f}/s and >= {TARGET_AUDIT_RATIO:.1f}x bare",
        "verdict": "INVALID" if problems else ("meets" if meets else "BELOW"),
    }
    if opts.profile_dir:
        row["note"] = "under py-spy"
    return [Result("ledger audit (two runs; figures of each)", db_name, row, not problems, problems)]
