"""Witnessing figures for ``make bench`` (``--only witness``): the latency from signing a checkpoint to holding the
cosignatures of two local witnesses (``ledger witness serve``), beside a bare loopback HTTP round trip to the same
witness measured in the same run; and ``ledger monitor``'s replay rate from outside, beside the bare
fetch-hash-verify loop over the same rows (the one the audit benchmark uses).

Latencies come from the database: each cosignature row's arrival time minus its checkpoint's signing time, for
every checkpoint signed while events were sent (a checkpoint that a newer one overtook before a witness was
reached is not cosigned, and is counted apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from ledger.services.log import checkpoints_t, cosignatures_t
from ledger.store.db import create_engine
from tests.bench import (
    ROOT,
    Database,
    Options,
    Result,
    _check_batches,
    _free_port,
    _post_all,
    admit_parties,
    batch_body,
    database,
    http_client,
    last_log_index,
    median,
    miner_requests,
    receive_requests,
    run_command,
    running_server,
    say,
    server_env,
    sign_chains,
    wait_integrated,
)
from tests.bench_log import bare_audit_loop


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


@contextlib.contextmanager
def _witnesses(
    workdir: Path, count: int
) -> Iterator[tuple[list[str], list[str], list[subprocess.Popen[bytes]]]]:
    """Witness keys made up front (the log key exists only after ``ledger init``, so the processes start later)."""
    vkeys, urls, processes = [], [], []
    for number in range(1, count + 1):
        key = workdir / f"w{number}.key"
        made = subprocess.run(
            [
                sys.executable,
                "-m",
                "ledger.cli",
                "witness",
                "keygen",
                "--name",
                f"bench.witness/w{number}",
                "--out",
                str(key),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        vkeys.append(made.stdout.strip())
        urls.append(f"http://127.0.0.1:{_free_port()}")
    try:
        yield vkeys, urls, processes
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)


def _start_witnesses(workdir: Path, data_dir: Path, urls: list[str], processes: list[Any]) -> None:
    for number, url in enumerate(urls, 1):
        log = (workdir / f"w{number}.log").open("ab")
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ledger.cli",
                    "witness",
                    "serve",
                    "--key-file",
                    str(workdir / f"w{number}.key"),
                    "--state",
                    str(workdir / f"w{number}-state"),
                    "--log-key",
                    str(data_dir / "log.vkey"),
                    "--port",
                    url.rsplit(":", 1)[1],
                ],
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )
        )
    for url in urls:
        for _ in range(200):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)


async def _latencies(db: Database) -> tuple[list[float], int, int]:
    """(cosignature latencies in ms, checkpoints signed, checkpoints cosigned by every witness)."""
    engine = create_engine(db.url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        checkpoints_t.c.size, checkpoints_t.c.created_at, cosignatures_t.c.created_at
                    ).join(cosignatures_t, cosignatures_t.c.size == checkpoints_t.c.size)
                )
            ).all()
            signed = int(await conn.scalar(sa.text("SELECT count(*) FROM checkpoints")) or 0)
            full = int(
                await conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM (SELECT size FROM cosignatures GROUP BY size HAVING count(*) >= 2) q"
                    )
                )
                or 0
            )
    finally:
        await engine.dispose()
    return [(cosigned - made).total_seconds() * 1000 for _, made, cosigned in rows], signed, full


def bench_witness(db_name: str, opts: Options) -> list[Result]:
    workdir = Path(tempfile.mkdtemp(prefix="witness-", dir=opts.workdir))
    results: list[Result] = []
    with _witnesses(workdir, 2) as (vkeys, urls, processes), database(db_name, workdir, "witness") as db:
        extra = {"LEDGER_WITNESSES": ",".join(f"{v} {u}" for v, u in zip(vkeys, urls, strict=True))}
        with running_server(
            db,
            workdir,
            env_extra=extra,
            prepare=lambda _db, data_dir: _start_witnesses(workdir, data_dir, urls, processes),
        ) as server:
            say(f"  server pid {server.pid} at {server.url}, witnesses at {', '.join(urls)}")
            miner, processor = admit_parties(server, "wit")
            chains = sign_chains(miner, processor, "wit-b", max(1, opts.events // 3))
            miner_bodies = [batch_body(r) for r in miner_requests(chains, opts.batch_size)]
            receive_bodies = [batch_body(r) for r in receive_requests(chains, opts.batch_size)]

            async def send() -> tuple[list[Any], float | None, list[float]]:
                async with http_client(server) as client:
                    t0 = time.perf_counter()
                    outcomes = await _post_all(client, "/v1/events/batch", miner.headers, miner_bodies, 1)
                    outcomes += await _post_all(
                        client, "/v1/events/batch", processor.headers, receive_bodies, 1
                    )
                    integrated = await wait_integrated(client, server, last_log_index(outcomes) + 1)
                    await asyncio.sleep(1.0)  # let the last checkpoint's cosignatures arrive
                    bare = []
                    async with httpx.AsyncClient() as witness:
                        for _ in range(200):
                            started = time.perf_counter()
                            await witness.get(f"{urls[0]}/healthz")
                            bare.append((time.perf_counter() - started) * 1000)
                    return outcomes, None if integrated is None else integrated - t0, bare

            outcomes, _, bare = asyncio.run(send())
            events, problems = _check_batches(outcomes, 3 * len(chains))
            latencies, signed, full = asyncio.run(_latencies(db))
            if not latencies:
                problems.append("no checkpoint was cosigned")
            results.append(
                Result(
                    "witness cosigning (two local witnesses)",
                    db_name,
                    {
                        "database": db_name,
                        "events": f"{events:,}",
                        "checkpoints signed": f"{signed:,}",
                        "cosigned by both": f"{full:,}",
                        "cosignature latency p50|p99 ms": f"{median(latencies):.1f}|{_percentile(latencies, 0.99):.1f}",
                        "bare witness round trip p50 ms": f"{median(bare):.2f}",
                        "ratio p50/bare": f"{median(latencies) / median(bare):.1f}x",
                    },
                    not problems,
                    problems,
                )
            )

            token = server.registrar_headers["Authorization"].split(" ", 1)[1]
            env = server_env(server.db, server.data_dir)
            command = [
                sys.executable,
                "-m",
                "ledger.cli",
                "monitor",
                server.url,
                "--state",
                str(workdir / "monitor"),
                "--log-key",
                (server.data_dir / "log.vkey").read_text().strip(),
                "--token",
                token,
                "--once",
            ]
            bare_events, bare_seconds, _ = bare_audit_loop(server.db)
            done, wall = run_command(command, env, opts, "monitor", db_name)
            problems = (
                []
                if done.returncode == 0
                else [f"`ledger monitor` exited {done.returncode}: {done.stderr[-300:]}"]
            )
            results.append(
                Result(
                    "ledger monitor replay from outside",
                    db_name,
                    {
                        "database": db_name,
                        "entries": f"{bare_events:,}",
                        "monitor wall s": f"{wall:.2f}",
                        "entries/s": f"{bare_events / wall:,.0f}",
                        "bare fetch-hash-verify/s": f"{bare_events / bare_seconds:,.0f}",
                        "ratio": f"{(bare_events / wall) / (bare_events / bare_seconds):.2f}x",
                    },
                    not problems,
                    problems,
                )
            )
    return results
