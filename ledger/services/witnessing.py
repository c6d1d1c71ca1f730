"""Collecting witness cosignatures for the log's checkpoints (the client side of C2SP tlog-witness).

After the integrator commits a checkpoint, each configured witness (LEDGER_WITNESSES) is sent the latest
checkpoint with a consistency proof from the size it last cosigned, by its own task: a slow or absent witness
delays nobody else, and integration never waits for any of them. A cosignature is checked against the witness's
key before it is stored; served checkpoints carry the ones collected so far.

A witness that answers 409 says which size it holds (perhaps another API process reached it first, or it
survived a restore of this database); the next request is built from that size. A 422 means the witness finds the
log inconsistent with what it saw before: logged as an error, counted, and not retried for that checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa
from prometheus_client import Counter
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.log.checkpoint import CheckpointError
from ledger.log.cosignature import Witness, verify_cosignatures
from ledger.log.witness import format_add_checkpoint
from ledger.services.log import TransparencyLog, checkpoints_t, cosignatures_t
from ledger.store.db import write_transaction

log = logging.getLogger("ledger.witness")

RETRY_INITIAL_SECONDS = 0.5
"""First pause after a witness failed to answer; doubled on each further failure."""

RETRY_MAX_SECONDS = 30.0
"""Longest pause between attempts to reach an unresponsive witness."""

RECHECK_SECONDS = 10.0
"""How often each witness's task looks for an uncosigned latest checkpoint without being woken."""

WITNESS_REQUESTS = Counter(
    "ledger_witness_requests_total",
    "add-checkpoint requests to each witness, by outcome (cosigned, conflict, refused, unreachable, invalid)",
    ["witness", "outcome"],
)


@dataclass
class WitnessEndpoint:
    witness: Witness
    url: str
    """The witness's submission prefix; requests go to ``<url>/add-checkpoint``."""
    size: int | None = None
    """The size this witness last cosigned, as far as this process knows (None: ask the database)."""
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_error: str | None = None
    """Why the last attempt failed (None after a cosignature), for the log lines and ``Cosigner.status``."""
    refused: int | None = None
    """The checkpoint size this witness refused (403, 404, 422...): not sent again until a newer one exists."""


class Cosigner:
    """One task per witness, each sending the latest checkpoint when woken."""

    def __init__(
        self, engine: AsyncEngine, log: TransparencyLog, endpoints: list[tuple[str, str]], timeout: float
    ) -> None:
        self._engine = engine
        self._log = log
        self._timeout = timeout
        self.endpoints = [WitnessEndpoint(Witness.parse(vkey), url) for vkey, url in endpoints]

    def notify(self, _size: int = 0) -> None:
        """A checkpoint was signed: wake every witness's task."""
        for endpoint in self.endpoints:
            endpoint.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        if not self.endpoints:
            await stop.wait()
            return
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            tasks = [
                asyncio.create_task(
                    self._follow(endpoint, client, stop), name=f"witness-{endpoint.witness.name}"
                )
                for endpoint in self.endpoints
            ]
            await stop.wait()
            for endpoint in self.endpoints:
                endpoint.wake.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(
        self, endpoint: WitnessEndpoint, client: httpx.AsyncClient, stop: asyncio.Event
    ) -> None:
        pause = RETRY_INITIAL_SECONDS
        endpoint.wake.set()  # on start, make sure the latest checkpoint is cosigned
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(endpoint.wake.wait(), RECHECK_SECONDS)
            endpoint.wake.clear()
            if stop.is_set():
                return
            try:
                await self.cosign_latest(endpoint, client)
                pause = RETRY_INITIAL_SECONDS
            except (httpx.HTTPError, OSError) as exc:
                WITNESS_REQUESTS.labels(endpoint.witness.name, "unreachable").inc()
                endpoint.last_error = f"unreachable: {exc!r}"
                log.warning(
                    "witness %s at %s: %r; retrying in %.1f s",
                    endpoint.witness.name,
                    endpoint.url,
                    exc,
                    pause,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, RETRY_MAX_SECONDS)
                endpoint.wake.set()
            except Exception:
                log.exception("collecting a cosignature from witness %s failed", endpoint.witness.name)
                endpoint.wake.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(pause * 2, RETRY_MAX_SECONDS)

    async def cosign_latest(self, endpoint: WitnessEndpoint, client: httpx.AsyncClient) -> bool:
        """Ask ``endpoint`` to cosign the latest checkpoint; True once it has (or had), False if it refused."""
        name = endpoint.witness.name
        for _ in range(3):  # a 409 tells the size to start from; at most a couple of those in a row
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        sa.select(checkpoints_t).order_by(checkpoints_t.c.size.desc()).limit(1)
                    )
                ).first()
                if row is None:
                    return False
                size = int(row.size)
                held = await conn.scalar(
                    sa.select(cosignatures_t.c.size).where(
                        cosignatures_t.c.size == size, cosignatures_t.c.witness == name
                    )
                )
                if held is not None:
                    endpoint.size = max(endpoint.size or 0, size)
                    return True
                if endpoint.size is None:
                    known = await conn.scalar(
                        sa.select(sa.func.max(cosignatures_t.c.size)).where(cosignatures_t.c.witness == name)
                    )
                    endpoint.size = int(known or 0)
            if endpoint.refused == size:
                return False  # refused already; the next checkpoint is tried, this one is not sent again
            old = endpoint.size
            if old > size:
                endpoint.last_error = (
                    f"the witness holds size {old}, beyond the latest checkpoint here ({size})"
                )
                return False  # the witness is ahead of this checkpoint (another process signed a newer one)
            proof = await self._log.consistency_hashes(old, size) if 0 < old < size else []
            started = time.monotonic()
            response = await client.post(
                f"{endpoint.url}/add-checkpoint",
                content=format_add_checkpoint(old, proof, row.note),
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
            if response.status_code == 409:
                WITNESS_REQUESTS.labels(name, "conflict").inc()
                try:
                    endpoint.size = int(response.text.strip())
                except ValueError:
                    endpoint.last_error = f"409 without a size: {response.text[:100]!r}"
                    return False
                continue
            if response.status_code != 200:
                WITNESS_REQUESTS.labels(name, "refused").inc()
                endpoint.last_error = f"{response.status_code}: {response.text.strip()[:300]}"
                if response.status_code < 500:
                    endpoint.refused = size
                level = logging.ERROR if response.status_code == 422 else logging.WARNING
                log.log(
                    level,
                    "witness %s refused the checkpoint of size %d (from size %d) with %d: %s",
                    name,
                    size,
                    old,
                    response.status_code,
                    response.text.strip()[:300],
                )
                return False
            try:
                found = verify_cosignatures(row.note + response.text, [endpoint.witness])
            except CheckpointError as exc:
                found, endpoint.last_error = {}, f"invalid cosignature: {exc}"
            if name in found and found[name].timestamp == 0:
                found, endpoint.last_error = (
                    {},
                    "a cosignature without a timestamp (c2sp.org/tlog-witness forbids it)",
                )
            if name not in found:
                WITNESS_REQUESTS.labels(name, "invalid").inc()
                endpoint.last_error = endpoint.last_error or "the answer holds no cosignature by its key"
                log.error("witness %s answered without a valid cosignature: %s", name, endpoint.last_error)
                return False
            await self._store(size, found[name].witness, found[name].timestamp, found[name].line)
            WITNESS_REQUESTS.labels(name, "cosigned").inc()
            endpoint.size, endpoint.last_error = size, None
            log.debug(
                "witness %s cosigned size %d in %.1f ms", name, size, 1000 * (time.monotonic() - started)
            )
            return True
        return False

    async def _store(self, size: int, witness: str, timestamp: int, line: str) -> None:
        values: dict[str, Any] = {
            "size": size,
            "witness": witness,
            "timestamp": timestamp,
            "line": line,
            "created_at": datetime.now(UTC),
        }
        async with write_transaction(self._engine) as conn:
            dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
            await conn.execute(dialect.insert(cosignatures_t).values(**values).on_conflict_do_nothing())
