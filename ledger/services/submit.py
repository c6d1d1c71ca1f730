"""Submitting envelopes: prepare (pure CPU), then accept a whole group in one transaction (group commit)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.domain import events as ev
from ledger.domain.accept import Prepared, accept, references
from ledger.domain.canonical import parse_canonical
from ledger.domain.dsse import MAX_SIGNATURES, PAYLOAD_TYPE, Envelope, event_id
from ledger.domain.state import WorkingSet
from ledger.errors import InvalidInput, LedgerError
from ledger.store import repo
from ledger.store.db import write_transaction


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SubmitResult:
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = None
    log_index: int | None = None
    error: LedgerError | None = None


def prepare(envelope: Envelope) -> Prepared:
    """Everything about an envelope that needs no ledger state: payload type, canonical form, schema."""
    if envelope.payloadType != PAYLOAD_TYPE:
        raise InvalidInput(f"payloadType must be {PAYLOAD_TYPE!r}, got {envelope.payloadType!r}")
    if not envelope.signatures:
        raise InvalidInput("envelope has no signatures")
    if len(envelope.signatures) > MAX_SIGNATURES:
        raise InvalidInput(f"envelope has {len(envelope.signatures)} signatures; at most {MAX_SIGNATURES}")
    payload = envelope.payload_bytes()
    event = ev.decode_event(parse_canonical(payload))
    return Prepared(
        envelope=envelope, payload=payload, event=event, event_id=event_id(payload), kind=ev.kind_of(event)
    )


class Submitter:
    """Accepts envelopes into the log. One instance per process; writes are serialised in the process by a lock
    and across processes by the sequencer row (PostgreSQL) or the database write lock (SQLite)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock_skew: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._clock_skew = clock_skew
        self._clock = clock
        self._lock = asyncio.Lock()
        self._registrar_known = False
        self.log_key: bytes | None = None
        """The ledger's public log key: the only key that signs determinations."""
        self.on_commit: Callable[[], None] | None = None
        """Called after a group with accepted events commits (the log's integrator listens)."""

    async def submit(self, envelopes: Sequence[Envelope], submitter: str | None) -> list[SubmitResult]:
        """Accept what can be accepted, in order; later envelopes may build on earlier ones in the same call."""
        results: list[SubmitResult | None] = [None] * len(envelopes)
        prepared: list[tuple[int, Prepared]] = []
        for position, envelope in enumerate(envelopes):
            try:
                prepared.append((position, prepare(envelope)))
            except LedgerError as error:
                results[position] = SubmitResult("rejected", error=error)
        if prepared:
            for position, result in await self._accept_group(prepared, submitter):
                results[position] = result
        return [r for r in results if r is not None]

    async def _accept_group(
        self, prepared: list[tuple[int, Prepared]], submitter: str | None
    ) -> list[tuple[int, SubmitResult]]:
        refs: dict[str, set[str]] = {
            "participants": set(),
            "facilities": set(),
            "keys": set(),
            "batches": set(),
            "attestations": set(),
        }
        for _, item in prepared:
            for table, ids in references(item).items():
                refs[table] |= ids
        event_ids = {item.event_id for _, item in prepared}
        out: list[tuple[int, SubmitResult]] = []
        async with self._lock:
            async with write_transaction(self._engine) as conn:
                size = await repo.lock_sequencer(conn)
                if not self._registrar_known:
                    self._registrar_known = await repo.registrar_exists(conn)
                ws = WorkingSet(next_index=size, registrar_exists=self._registrar_known, log_key=self.log_key)
                await repo.load(ws, conn, refs, event_ids)
                now = self._clock()
                for position, item in prepared:
                    existing = ws.known_event_ids.get(item.event_id)
                    if existing is not None:
                        out.append((position, SubmitResult("duplicate", item.event_id, existing)))
                        continue
                    try:
                        accepted = accept(ws, item, submitter=submitter, now=now, clock_skew=self._clock_skew)
                    except LedgerError as error:
                        out.append((position, SubmitResult("rejected", item.event_id, error=error)))
                    else:
                        out.append((position, SubmitResult("accepted", item.event_id, accepted.log_index)))
                await repo.flush(ws, conn)
            self._registrar_known = ws.registrar_exists
        if ws.events and self.on_commit is not None:
            self.on_commit()
        return out
