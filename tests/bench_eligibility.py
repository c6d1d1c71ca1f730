"""Eligibility benchmarks for ``tests.bench``: determination latency by lineage size, and ``ledger verify bundle``.

    python -m tests.bench --only eligibility,bundle-verify [--quick] [--lineages 1000,10000,100000]

A lineage of about N custody events ends in one target batch: N/3 batches extracted at three attested mines
(two in Canada, one in Australia, shipped under customs control), each transferred to and received at one attested
refinery in the US, merged there in groups of up to :data:`MERGE_GROUP`, the groups merged into a pool, and the
pool refined (a transform) into the target. An auditor attests the mines (IRMA 75) and the refinery (RMAP
conformant), so the engine has every rule to evaluate. Every event is pre-signed and sent through
``POST /v1/events/batch``, one participant per request; lineages are built once per server and shared by both
benchmarks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx

from ledger.client import LedgerClient, envelope_for, timestamp_now
from ledger.domain import events as ev
from ledger.domain.dsse import Envelope
from ledger.domain.keys import SigningKey
from ledger.rules.bundle import verify_bundle
from ledger.rules.engine import determine
from ledger.rules.profiles import Profiles
from ledger.services.container import Services
from ledger.settings import Settings
from tests.bench import (
    MASS_G,
    Options,
    Party,
    Result,
    Server,
    _check_batches,
    _post_all,
    _setup_call,
    batch_body,
    envelope_event_id,
    http_client,
    last_log_index,
    median,
    run_command,
    sampled,
    sampled_pid,
    say,
    wait_integrated,
)

TARGET_ELIGIBILITY_MS = 300.0
TARGET_ELIGIBILITY_EVENTS = 10_000
TARGET_CACHED_MS = 10.0
"""A repeated question on an unchanged batch (docs/architecture.md, Targets)."""
CACHED_REPEATS = 5
TARGET_VERIFY_S = 1.0

AT = "2030-01-01"
MERGE_GROUP = 250
"""Most inputs of one merge at the refinery."""
MAX_BODY = 3_000_000
"""Bytes per batch request (the server refuses more than LEDGER_MAX_BODY_BYTES, 4 MiB by default)."""
REPORT = "ab" * 32


@dataclass
class World:
    auditor: Party
    miners: list[tuple[Party, str]]
    """Each miner with the country of its mine."""
    refiner: Party


@dataclass
class Lineage:
    size: int
    target: str
    events: int
    """Custody events sent for this lineage."""


_WORLDS: dict[str, World] = {}
_LINEAGES: dict[str, dict[int, Lineage]] = {}
"""Per server URL, so that both benchmarks use the same participants and lineages."""


def _world(server: Server) -> World:
    if server.url in _WORLDS:
        return _WORLDS[server.url]
    parties: dict[str, Party] = {}
    spec = [
        ("elg-auditor", ["auditor"], "CA", None),
        ("elg-miner-ca1", ["miner"], "CA", "mine"),
        ("elg-miner-ca2", ["miner"], "CA", "mine"),
        ("elg-miner-au", ["miner"], "AU", "mine"),
        ("elg-refiner", ["processor"], "US", "refinery"),
    ]
    with server.registrar() as registrar:
        for pid, roles, country, kind in spec:
            key = SigningKey.generate()
            _setup_call(
                registrar.admit_participant, pid, pid, roles, country, public_keys=[key.public_key_b64]
            )
            facility = ""
            if kind is not None:
                facility = f"{pid}-{kind}"
                _setup_call(registrar.register_facility, facility, pid, kind, country, facility)
            token = _setup_call(registrar.issue_token, pid, "benchmark").token
            parties[pid] = Party(pid, key, token, facility)
    auditor = parties["elg-auditor"]
    with LedgerClient(server.url, token=auditor.token, actor=auditor.id, key=auditor.key) as client:
        for pid, _, _, kind in spec:
            if kind is None:
                continue
            standard, level = ("irma", "irma_75") if kind == "mine" else ("rmap", "conformant")
            _setup_call(
                client.attest,
                f"{standard}-{parties[pid].facility}",
                facility=parties[pid].facility,
                standard=standard,
                level=level,
                valid_from="2020-01-01",
                valid_to="2030-12-31",
                report_sha256=REPORT,
            )
    miners = [(parties[p], c) for p, _, c, k in spec if k == "mine"]
    world = World(auditor, miners, parties["elg-refiner"])
    _WORLDS[server.url] = world
    return world


def _requests(envelopes: list[Envelope], limit: int) -> list[bytes]:
    """Batch request bodies of at most ``limit`` envelopes and :data:`MAX_BODY` bytes, in order."""
    bodies: list[bytes] = []
    current: list[Envelope] = []
    size = 0
    for envelope in envelopes:
        length = len(envelope.to_json()) + 1
        if current and (len(current) >= limit or size + length > MAX_BODY):
            bodies.append(batch_body(current))
            current, size = [], 0
        current.append(envelope)
        size += length
    if current:
        bodies.append(batch_body(current))
    return bodies


def _sign_lineage(world: World, size: int) -> tuple[list[tuple[Party, list[Envelope]]], str, int]:
    """The envelopes of a lineage of about ``size`` custody events, grouped by signer in submission order."""
    prefix = f"el{size}"
    refiner = world.refiner
    count = max(2, round(size / 3))
    by_miner: dict[str, list[Envelope]] = {m.id: [] for m, _ in world.miners}
    receives: list[Envelope] = []
    heads: dict[str, str] = {}
    batches: list[str] = []
    for i in range(count):
        miner, country = world.miners[i % len(world.miners)]
        batch = f"{prefix}-b{i:06d}"
        extract = envelope_for(
            ev.Extract(
                actor=miner.id,
                timestamp=timestamp_now(),
                facility=miner.facility,
                batch=ev.NewBatch(
                    id=batch,
                    mineral="lithium",
                    form="concentrate",
                    mass_g=MASS_G,
                    value=ev.Money(amount="9000.00", currency="USD"),
                ),
            ),
            miner.key,
        )
        route = [ev.RouteLeg(country=country, customs_control=True)]
        if country != "US":
            route.append(ev.RouteLeg(country="US", customs_control=True))
        transfer = envelope_for(
            ev.Transfer(
                actor=miner.id,
                timestamp=timestamp_now(),
                batch=batch,
                parent=envelope_event_id(extract),
                to=refiner.id,
                route=route,
                to_facility=refiner.facility,
            ),
            miner.key,
        )
        receive = envelope_for(
            ev.Receive(
                actor=refiner.id,
                timestamp=timestamp_now(),
                batch=batch,
                parent=envelope_event_id(transfer),
                facility=refiner.facility,
                mass_g=MASS_G,
            ),
            refiner.key,
        )
        by_miner[miner.id] += [extract, transfer]
        receives.append(receive)
        heads[batch] = envelope_event_id(receive)
        batches.append(batch)
    processing: list[Envelope] = []
    groups = math.ceil(count / MERGE_GROUP)
    pooled: list[str] = []
    for g in range(groups):
        members = batches[g::groups]  # even groups (none of a single batch)
        output = f"{prefix}-m{g:04d}"
        merge = envelope_for(
            ev.Merge(
                actor=refiner.id,
                timestamp=timestamp_now(),
                inputs=[ev.MergeInput(batch=b, parent=heads[b]) for b in members],
                output=output,
            ),
            refiner.key,
        )
        processing.append(merge)
        heads[output] = envelope_event_id(merge)
        pooled.append(output)
    if len(pooled) > 1:
        pool = f"{prefix}-pool"
        merge = envelope_for(
            ev.Merge(
                actor=refiner.id,
                timestamp=timestamp_now(),
                inputs=[ev.MergeInput(batch=b, parent=heads[b]) for b in pooled],
                output=pool,
            ),
            refiner.key,
        )
        processing.append(merge)
        heads[pool] = envelope_event_id(merge)
    else:
        pool = pooled[0]
    target = f"{prefix}-target"
    total = count * MASS_G
    processing.append(
        envelope_for(
            ev.Transform(
                actor=refiner.id,
                timestamp=timestamp_now(),
                facility=refiner.facility,
                process="refining",
                inputs=[ev.Input(batch=pool, parent=heads[pool], mass_g=total)],
                outputs=[ev.Output(id=target, mineral="lithium", form="hydroxide", mass_g=total * 9 // 10)],
                value_added=ev.Money(amount=f"{count * 4000}.00", currency="USD"),
            ),
            refiner.key,
        )
    )
    signed = [(m, by_miner[m.id]) for m, _ in world.miners] + [(refiner, receives + processing)]
    return signed, target, sum(len(e) for _, e in signed)


def lineage(server: Server, opts: Options, size: int) -> Lineage:
    """The lineage of about ``size`` events on this server, built (and integrated into the log) if need be."""
    known = _LINEAGES.setdefault(server.url, {})
    if size in known:
        return known[size]
    world = _world(server)
    started = time.perf_counter()
    signed, target, events = _sign_lineage(world, size)
    plan = [(party, _requests(envelopes, opts.batch_size)) for party, envelopes in signed]
    say(
        f"  lineage of {events:,} events: signed in {time.perf_counter() - started:.1f} s, "
        f"{sum(len(b) for _, b in plan)} requests; sending..."
    )

    async def send() -> tuple[list[Any], float]:
        async with http_client(server) as client:
            t0 = time.perf_counter()
            outcomes = []
            for party, bodies in plan:
                outcomes += await _post_all(client, "/v1/events/batch", party.headers, bodies, 1)
            await wait_integrated(client, server, last_log_index(outcomes) + 1)
            return outcomes, time.perf_counter() - t0

    outcomes, seconds = asyncio.run(send())
    accepted, problems = _check_batches(outcomes, events)
    if problems:
        raise RuntimeError(f"building the lineage of {size:,} events failed: " + "; ".join(problems))
    say(f"  {accepted:,} accepted and integrated in {seconds:.1f} s ({accepted / seconds:,.0f}/s)")
    known[size] = Lineage(size, target, events)
    return known[size]


# --- eligibility latency ----------------------------------------------------------------------------------------


def _services(server: Server) -> Services:
    settings = dataclasses.replace(
        Settings.from_env(), database_url=server.db.url, data_dir=server.data_dir, pool_size=2
    )
    return Services(settings)


async def _in_process(server: Server, target: str, repeats: int) -> tuple[float, float, float, int]:
    """Ms of gathering the evidence the first time (read and decode every event) and the least of the next times
    (the service keeps decoded events), min ms of the engine, and the evidence's size."""
    services = _services(server)
    try:
        profile = services.profiles.get(None)
        evidence_ms, engine_ms, entries = [], [], 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            evidence = await services.eligibility.evidence(target)
            t1 = time.perf_counter()
            determine(evidence.events, target, profile, date.fromisoformat(AT))
            t2 = time.perf_counter()
            evidence_ms.append((t1 - t0) * 1000)
            engine_ms.append((t2 - t1) * 1000)
            entries = len(evidence.events)
        return evidence_ms[0], min(evidence_ms[1:] or evidence_ms), min(engine_ms), entries
    finally:
        await services.close()


def bench_eligibility(server: Server, opts: Options) -> list[Result]:
    """``GET /v1/batches/{id}/eligibility`` for lineages of ``--lineages`` custody events."""
    results = []
    for size in opts.lineages:
        built = lineage(server, opts, size)
        repeats = opts.repeats if size <= 10_000 else 1  # a 100,000-event lineage takes tens of seconds
        times, problems = [], []
        document: dict[str, Any] = {}
        with (
            sampled(server, opts, f"eligibility-{size}"),
            httpx.Client(base_url=server.url, timeout=600) as client,
        ):
            # every question is a new one (another date), so the server computes it: the first is reported apart
            # (cold caches, first compile); then the last one is asked again, and is answered from the cache
            for day in range(repeats + 1 + CACHED_REPEATS):
                asked = f"2030-01-{min(day, repeats) + 1:02d}"
                t0 = time.perf_counter()
                response = client.get(
                    f"/v1/batches/{built.target}/eligibility",
                    params={"at": asked},
                    headers=server.registrar_headers,
                )
                times.append((time.perf_counter() - t0) * 1000)
                if response.status_code != 200:
                    problems.append(f"HTTP {response.status_code}: {response.text[:300]}")
                    break
                document = response.json()
        with sampled_pid(os.getpid(), opts, f"eligibility-{size}-in-process", server.db.name, "this process"):
            first_evidence_ms, evidence_ms, engine_ms, entries = asyncio.run(
                _in_process(server, built.target, 3 if size <= 10_000 else 2)
            )
        considered = int(document.get("events_considered", 0))
        cached = times[repeats + 1 :] or times[-1:]
        first, rest = times[0], times[1 : repeats + 1] or times[:1]
        mid = median(rest)
        cached_mid = median(cached)
        row = {
            "database": server.db.name,
            "lineage": f"{size:,}",
            "events considered": f"{considered:,}",
            "evidence events": f"{entries:,}",
            "verdict (share %)": f"{document.get('verdict', '?')} ({document.get('qualifying_share_percent', '?')})",
            "first ms": f"{first:.0f}",
            "min ms": f"{min(rest):.0f}",
            "median ms": f"{mid:.0f}",
            "ms per 1k events": f"{mid / considered * 1000:.1f}" if considered else "-",
            "cached median ms": f"{cached_mid:.1f}",
            "in-process evidence first/again, engine ms": f"{first_evidence_ms:.0f}/{evidence_ms:.0f}, {engine_ms:.0f}",
            "target": f"< {TARGET_ELIGIBILITY_MS:.0f} ms at 10k, cached < {TARGET_CACHED_MS:.0f} ms"
            if size == TARGET_ELIGIBILITY_EVENTS
            else "linear",
            "verdict": "INVALID"
            if problems
            else (
                ("meets" if mid < TARGET_ELIGIBILITY_MS else "BELOW")
                + (", cache meets" if cached_mid < TARGET_CACHED_MS else ", cache BELOW")
                if size == TARGET_ELIGIBILITY_EVENTS
                else ""
            ),
        }
        results.append(
            Result(
                "eligibility (GET /v1/batches/{id}/eligibility: median of new questions after the first; the same question again, from the cache)",
                server.db.name,
                row,
                not problems,
                problems,
            )
        )
    return results


# --- ledger verify bundle ---------------------------------------------------------------------------------------


def bench_bundle_verify(server: Server, opts: Options) -> list[Result]:
    """``ledger verify bundle`` of the bundle of a target with about ``bundle_events`` events of evidence."""
    built = lineage(server, opts, opts.bundle_events)
    problems: list[str] = []
    fetch_ms = []
    body = b""
    with httpx.Client(base_url=server.url, timeout=600) as client:
        for _ in range(3):
            t0 = time.perf_counter()
            response = client.get(
                f"/v1/batches/{built.target}/bundle", params={"at": AT}, headers=server.registrar_headers
            )
            fetch_ms.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                problems.append(f"bundle: HTTP {response.status_code}: {response.text[:300]}")
                break
            body = response.content
    if problems:
        return [Result("ledger verify bundle", server.db.name, {"database": server.db.name}, False, problems)]
    path = opts.workdir / server.db.name / f"bundle-{built.size}.json"
    path.write_bytes(body)
    vkey_path = server.data_dir / "log.vkey"
    vkey = vkey_path.read_text().strip()
    entries = len(json.loads(body)["entries"])
    env = dict(os.environ)
    quiet = dataclasses.replace(opts, profile_dir=None)
    verify = [sys.executable, "-m", "ledger.cli", "verify", "bundle", str(path), "--log-key", str(vkey_path)]
    startup = [sys.executable, "-m", "ledger.cli", "verify", "--help"]
    walls, bare = [], []
    for _ in range(opts.repeats):
        done, wall = run_command(verify, env, quiet, "verify-bundle", server.db.name)
        if done.returncode != 0 or not done.stdout.startswith("OK:"):
            problems.append(f"`ledger verify bundle` exited with {done.returncode}: {done.stderr[-300:]}")
            break
        walls.append(wall)
        bare.append(run_command(startup, env, quiet, "verify-help", server.db.name)[1])
    if opts.profile_dir is not None:
        run_command(verify, env, opts, "verify-bundle", server.db.name)
    local_profiles = Profiles().by_id
    parse_ms, verify_ms = [], []
    with sampled_pid(os.getpid(), opts, "verify-bundle-in-process", server.db.name, "this process"):
        for _ in range(opts.repeats):
            t0 = time.perf_counter()
            document = json.loads(path.read_bytes())
            t1 = time.perf_counter()
            verify_bundle(document, vkey=vkey, local_profiles=local_profiles)
            t2 = time.perf_counter()
            parse_ms.append((t1 - t0) * 1000)
            verify_ms.append((t2 - t1) * 1000)
    wall = median(walls) if walls else math.nan
    row = {
        "database": server.db.name,
        "bundle entries": f"{entries:,}",
        "bundle KB": f"{len(body) / 1024:,.0f}",
        "GET bundle median ms": f"{median(fetch_ms):.0f}",
        "CLI wall min/median s": f"{min(walls):.2f}/{wall:.2f}" if walls else "-",
        "CLI start-up s (verify --help)": f"{median(bare):.2f}" if bare else "-",
        "in-process parse ms": f"{median(parse_ms):.0f}",
        "in-process verify min/median ms": f"{min(verify_ms):.0f}/{median(verify_ms):.0f}",
        "target": f"< {TARGET_VERIFY_S:.0f} s",
        "verdict": "INVALID" if problems else ("meets" if wall < TARGET_VERIFY_S else "BELOW"),
    }
    return [
        Result(
            "ledger verify bundle (CLI as a subprocess; and in-process)",
            server.db.name,
            row,
            not problems,
            problems,
        )
    ]


__all__ = ["bench_bundle_verify", "bench_eligibility", "lineage"]
