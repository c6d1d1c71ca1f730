"""Eligibility use cases: gather the evidence for a batch, determine, record a determination, build a bundle."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.domain.keys import b64encode
from ledger.errors import Forbidden, InvalidInput, Overloaded
from ledger.log import merkle
from ledger.rules.bundle import BUNDLE_FORMAT
from ledger.rules.engine import Determination, LoggedEvent, determination_document, determine
from ledger.rules.profiles import Profiles
from ledger.services.access import REDACTED, Access, declares_values, privileged, sees_values_of
from ledger.services.custody import Custody
from ledger.services.log import TransparencyLog, checkpoints_t
from ledger.services.submit import Submitter
from ledger.services.tokens import Caller
from ledger.services.views import SubmitResultView
from ledger.store.repo import IN_CHUNK, batch_events_t, events_t

_decoder = msgspec.json.Decoder(ev.Event)

REGISTRY_AND_ATTESTATION_KINDS = sorted(ev.REGISTRY_KINDS | ev.ATTESTATION_KINDS | {"reaffirm"})

EVIDENCE_COLUMNS = (
    events_t.c.log_index,
    events_t.c.event_id,
    events_t.c.key_id,
    events_t.c.payload_type,
    events_t.c.payload,
    events_t.c.signatures,
)
"""What the engine and bundles need of an event (no timestamps to convert, row by row)."""

BUNDLE_WAIT_SECONDS = 5.0
"""How long a bundle request waits for the Merkle tree to cover its events before answering 503."""


def parse_day(text: str | None) -> date:
    if text is None or text == "":
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"at={text!r} is not a date; write YYYY-MM-DD") from None


@dataclass
class Evidence:
    events: list[LoggedEvent]
    rows: dict[int, Any]
    """log index -> stored event row (for envelopes in bundles)."""


class Eligibility:
    def __init__(
        self,
        engine: AsyncEngine,
        custody: Custody,
        profiles: Profiles,
        log: TransparencyLog,
        submitter: Submitter,
        access: Access,
    ) -> None:
        self._access = access
        self._engine = engine
        self._custody = custody
        self._profiles = profiles
        self._log = log
        self._submitter = submitter

    async def evidence(self, batch_id: str) -> Evidence:
        """The custody events of the batch's upstream lineage and the registry and attestation events they rely on."""
        batch_ids = sorted(await self._custody.upstream_ids(batch_id))
        rows: dict[int, Any] = {}
        async with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                for record in await _custody_rows_pg(conn, batch_ids):
                    rows[record.log_index] = record
            else:
                # distinct log indices first: a merge touches many batches, and its (large) payload is read once
                indices: set[int] = set()
                for start in range(0, len(batch_ids), IN_CHUNK):
                    chunk = batch_ids[start : start + IN_CHUNK]
                    query = sa.select(batch_events_t.c.log_index).where(batch_events_t.c.batch_id.in_(chunk))
                    indices.update(index for (index,) in await conn.execute(query))
                ordered = sorted(indices)
                for start in range(0, len(ordered), IN_CHUNK):
                    query = sa.select(*EVIDENCE_COLUMNS).where(
                        events_t.c.log_index.in_(ordered[start : start + IN_CHUNK]),
                        events_t.c.kind.in_(sorted(ev.CUSTODY_KINDS)),
                    )
                    for found in await conn.execute(query):
                        rows[found.log_index] = found
            custody = {i: _decoder.decode(bytes(row.payload)) for i, row in rows.items()}
            actors = {event.actor for event in custody.values()}
            facilities = {f for event in custody.values() for f in _facilities_of(event)}
            registry_rows = await conn.execute(
                sa.select(*EVIDENCE_COLUMNS)
                .where(events_t.c.kind.in_(REGISTRY_AND_ATTESTATION_KINDS))
                .order_by(events_t.c.log_index)
            )
            registry = [(row, _decoder.decode(bytes(row.payload))) for row in registry_rows]
        # registrations of the facilities used tell us their owners, who are involved too
        for _, event in registry:
            if isinstance(event, ev.FacilityRegistered) and event.facility.id in facilities:
                actors.add(event.facility.participant)
        auditors = {
            event.actor
            for _, event in registry
            if isinstance(event, ev.Attest)
            and (
                event.attestation.subject.facility in facilities
                or event.attestation.subject.participant in actors
            )
        }
        involved = actors | auditors
        attestations = {
            event.attestation.id
            for _, event in registry
            if isinstance(event, ev.Attest)
            and event.actor in auditors
            and (
                event.attestation.subject.facility in facilities
                or event.attestation.subject.participant in actors
            )
        }
        signers = {
            event.actor for _, event in registry if _relevant(event, involved, facilities, attestations)
        }
        involved |= signers
        for registered, event in registry:
            if _relevant(event, involved, facilities, attestations):
                rows[registered.log_index] = registered
                custody[registered.log_index] = event
        events = [LoggedEvent(i, rows[i].event_id, custody[i], rows[i].key_id) for i in sorted(rows)]
        return Evidence(events=events, rows=rows)

    async def determine(
        self, batch_id: str, profile_id: str | None, at: str | None, caller: Caller | None = None
    ) -> Determination:
        """The determination as ``caller`` may see it (source values redacted unless it declared them)."""
        profile = self._profiles.get(profile_id)
        day = parse_day(at)
        await self._access.require_batch(caller, batch_id)
        evidence = await self.evidence(batch_id)
        determination = determine(evidence.events, batch_id, profile, day)
        if not privileged(caller):
            actors = {logged.event_id: logged.event.actor for logged in evidence.events}
            for source in determination.sources:
                if source.value is not None and not sees_values_of(caller, actors.get(source.event_id, "")):
                    source.value = REDACTED
        return determination

    async def record(
        self,
        batch_id: str,
        profile_id: str | None,
        at: str | None,
        requested_by: str,
        caller: Caller | None = None,
    ) -> SubmitResultView:
        """Determine, then append the determination to the log as an event signed with the ledger's log key."""
        signer = self._log.signer
        if signer is None:
            raise InvalidInput(
                "this server has no log key, so it cannot sign determinations; run `ledger init`"
            )
        await self._access.require_batch(caller, batch_id)
        evidence = await self.evidence(batch_id)
        determination = determine(evidence.events, batch_id, self._profiles.get(profile_id), parse_day(at))
        event = ev.DeterminationRecorded(
            actor=ev.LEDGER_ACTOR,
            timestamp=datetime.now(UTC).replace(microsecond=0).isoformat(),
            batch=batch_id,
            requested_by=requested_by,
            determination=determination_document(determination),
        )
        (result,) = await self._submitter.submit([envelope_for(event, signer.key)], submitter=None)
        if result.error is not None:
            raise result.error
        return SubmitResultView(status=result.status, event_id=result.event_id, log_index=result.log_index)

    async def bundle(
        self, batch_id: str, profile_id: str | None, at: str | None, caller: Caller | None = None
    ) -> dict[str, Any]:
        """A self-contained proof bundle for the determination of ``batch_id``.

        A bundle carries the signed envelopes, and signatures cover the declared commercial values, so it cannot
        be redacted and still verify: it is for the registrar, auditors and customs (with the values, as customs
        need them), and for a participant who declared every value in it.
        """
        profile = self._profiles.get(profile_id)
        day = parse_day(at)
        await self._access.require_batch(caller, batch_id)
        evidence = await self.evidence(batch_id)
        if not privileged(caller):
            assert caller is not None
            others = sorted(
                {
                    logged.event.actor
                    for logged in evidence.events
                    if declares_values(logged.event) and logged.event.actor != caller.participant
                }
            )
            if others:
                raise Forbidden(
                    f"the bundle for {batch_id!r} carries commercial values declared by {', '.join(others)}, which "
                    f"{caller.participant!r} may not see; customs, auditors and the registrar can fetch it. You can "
                    "record the determination (POST .../determinations) and hand customs its event id."
                )
        determination = determine(evidence.events, batch_id, profile, day)
        signer = self._log.signer
        if signer is None:
            raise InvalidInput(
                "this server has no log key, so it cannot produce verifiable bundles; run `ledger init`"
            )
        needed = max(evidence.rows) + 1
        checkpoint = await self._checkpoint_covering(needed)
        size = int(checkpoint.size)
        wanted: set[merkle.NodeId] = set()
        for index in evidence.rows:
            wanted.update(merkle.inclusion_proof_nodes(index, size))
        nodes = await self._log.fetch_nodes(sorted(wanted))
        entries = []
        for index in sorted(evidence.rows):
            row = evidence.rows[index]
            entries.append(
                {
                    "log_index": index,
                    "envelope": {
                        "payloadType": row.payload_type,
                        "payload": b64encode(bytes(row.payload)),
                        "signatures": msgspec.json.decode(row.signatures),
                    },
                    "proof": [b64encode(h) for h in merkle.inclusion_proof(index, size, nodes)],
                }
            )
        return {
            "format": BUNDLE_FORMAT,
            "batch": batch_id,
            "at": day.isoformat(),
            "profile": profile.document(),
            "determination": determination_document(determination),
            "log": {"origin": signer.origin, "vkey": signer.vkey, "checkpoint": checkpoint.note},
            "entries": entries,
        }

    async def _checkpoint_covering(self, size: int) -> Any:
        deadline = time.monotonic() + BUNDLE_WAIT_SECONDS
        while True:
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        sa.select(checkpoints_t)
                        .where(checkpoints_t.c.size >= size)
                        .order_by(checkpoints_t.c.size.desc())
                        .limit(1)
                    )
                ).first()
            if row is not None:
                return row
            await self._log.integrate_all()
            if time.monotonic() > deadline:
                raise Overloaded(
                    "the transparency log has not yet integrated every event this bundle needs; try again shortly",
                    retry_after=2,
                )
            await asyncio.sleep(0.1)


class EvidenceRow(NamedTuple):
    log_index: int
    event_id: str
    key_id: str
    payload_type: str
    payload: bytes
    signatures: str


async def _custody_rows_pg(conn: AsyncConnection, batch_ids: list[str]) -> list[EvidenceRow]:
    """The custody events of ``batch_ids`` in one round trip, straight from asyncpg: for a large lineage the
    per-row work of the ORM layer costs more than the query itself."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    records = await driver.fetch(
        "SELECT e.log_index, e.event_id, e.key_id, e.payload_type, e.payload, e.signatures FROM events e "
        "WHERE e.log_index IN (SELECT DISTINCT log_index FROM batch_events WHERE batch_id = ANY($1::text[])) "
        "AND e.kind = ANY($2::text[])",
        batch_ids,
        sorted(ev.CUSTODY_KINDS),
    )
    return [EvidenceRow(*record) for record in records]


def _facilities_of(event: ev.Event) -> set[str]:
    match event:
        case ev.Extract(facility=f) | ev.Receive(facility=f) | ev.Transform(facility=f):
            return {f}
        case ev.Transfer(to_facility=f) if f:
            return {f}
    return set()


def _relevant(event: ev.Event, involved: set[str], facilities: set[str], attestations: set[str]) -> bool:
    match event:
        case ev.ParticipantAdmitted(participant=p):
            return p.id in involved or "registrar" in p.roles
        case ev.KeyAdded(participant=p) | ev.KeyRevoked(participant=p) | ev.OwnershipChanged(participant=p):
            return p in involved
        case ev.FacilityRegistered(facility=f):
            return f.id in facilities
        case ev.Attest(attestation=a):
            return a.id in attestations
        case ev.RevokeAttestation(attestation=a) | ev.SuspendAttestation(attestation=a):
            return a in attestations
        case ev.Reaffirm(actor=actor):
            return actor in involved
    return False
