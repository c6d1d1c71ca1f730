"""Repositories: load rows into the domain's working set, write back what acceptance changed, and reads.

Storage never decides policy: it loads, saves and queries. Database errors are translated here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.domain import events as ev
from ledger.domain.accept import origin_record
from ledger.domain.state import (
    AcceptedEvent,
    Attestation,
    Batch,
    CertificateRecord,
    ClaimRecord,
    Creation,
    CustodyModelRecord,
    Facility,
    Key,
    Owner,
    Participant,
    PublishedProfile,
    RateRecord,
    Stake,
    WorkingSet,
)
from ledger.store import lite, pg
from ledger.store.db import driver
from ledger.store.models import (
    AttestationRow,
    BatchEdgeRow,
    BatchEventRow,
    BatchRow,
    CertificateRow,
    ClaimRow,
    CustodyModelRow,
    EventRow,
    ExchangeRateRow,
    FacilityRow,
    HolderRow,
    KeyRow,
    LogState,
    OwnerRow,
    ParticipantRow,
    PublishedAgreementRow,
    PublishedProfileRow,
    StakeRow,
)

events_t = cast(sa.Table, EventRow.__table__)
participants_t = cast(sa.Table, ParticipantRow.__table__)
facilities_t = cast(sa.Table, FacilityRow.__table__)
keys_t = cast(sa.Table, KeyRow.__table__)
batches_t = cast(sa.Table, BatchRow.__table__)
batch_events_t = cast(sa.Table, BatchEventRow.__table__)
edges_t = cast(sa.Table, BatchEdgeRow.__table__)
holders_t = cast(sa.Table, HolderRow.__table__)
log_state_t = cast(sa.Table, LogState.__table__)
attestations_t = cast(sa.Table, AttestationRow.__table__)
owners_t = cast(sa.Table, OwnerRow.__table__)
stakes_t = cast(sa.Table, StakeRow.__table__)
rates_t = cast(sa.Table, ExchangeRateRow.__table__)
profiles_t = cast(sa.Table, PublishedProfileRow.__table__)
agreements_t = cast(sa.Table, PublishedAgreementRow.__table__)
certificates_t = cast(sa.Table, CertificateRow.__table__)
custody_models_t = cast(sa.Table, CustodyModelRow.__table__)
claims_t = cast(sa.Table, ClaimRow.__table__)

IN_CHUNK = lite.IN_CHUNK
"""Ids per ``IN (...)`` list, well under SQLite's bound-parameter limit."""


def _chunks(values: Iterable[str]) -> Iterable[list[str]]:
    items = sorted(values)
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]


async def rows_by_ids(
    conn: AsyncConnection,
    table: sa.Table,
    column: sa.Column[Any],
    ids: Iterable[str],
    columns: Sequence[str] = (),
) -> list[Any]:
    """Rows of ``table`` (all columns, or ``columns``) whose ``column`` is among ``ids``, read by attribute.

    PostgreSQL: one statement with one array parameter (see :mod:`ledger.store.pg`). SQLite: ``IN`` lists of at
    most :data:`IN_CHUNK` ids (its planner has no generic plans to go wrong).
    """
    if conn.dialect.name == "postgresql":
        return await pg.select_by_ids(conn, table.name, column.name, ids, ", ".join(columns) or "*")
    return await lite.select_by_ids(conn, table, column.name, ids, columns)


_LOCK_SEQUENCER_POSTGRESQL = sa.text(
    "SELECT size, set_config('plan_cache_mode', 'force_generic_plan', true), "
    "set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true) "
    "FROM log_state WHERE id = 1 FOR UPDATE"
)
"""Lock the sequencer row and, for the rest of this transaction, plan every statement for key lookups.

The write path only ever looks rows up by key, a few hundred ids per array. With statistics older than the data
(a table that grew since its last ``ANALYZE``: autovacuum lags, or is off), a plan made for the actual array can
believe a 1,000,000-row table holds 20,000 rows and hash-join it from a sequential scan; a generic plan expects a
handful of ids and probes the index, which is right at every size, and with sequential scans disfavoured no
estimate can turn a lookup into a scan; JIT is off, as on the write path's engine (see
:data:`ledger.store.db.WRITE_PATH_SETTINGS`). The settings are ``SET LOCAL``: they end with the transaction."""


async def lock_sequencer(conn: AsyncConnection) -> int:
    """Take the sequencer's lock (PostgreSQL row lock; SQLite already holds its write lock) and return the size."""
    if conn.dialect.name == "postgresql":
        size = (await conn.execute(_LOCK_SEQUENCER_POSTGRESQL)).scalar_one()
    else:
        size = await lite.sequencer_size(conn)
    return int(size)


async def registrar_exists(conn: AsyncConnection) -> bool:
    rows = await conn.execute(sa.select(participants_t.c.roles))
    return any("registrar" in json.loads(roles) for (roles,) in rows)


def participant_from_row(row: Any) -> Participant:
    return Participant(
        id=row.id,
        name=row.name,
        roles=frozenset(json.loads(row.roles)),
        country=row.country,
        ownership=json.loads(row.ownership),
        admitted_event=row.admitted_event,
        admitted_at=row.admitted_at,
    )


def facility_from_row(row: Any) -> Facility:
    return Facility(
        id=row.id,
        participant_id=row.participant_id,
        kind=row.kind,
        country=row.country,
        name=row.name,
        loss_tolerance=Decimal(row.loss_tolerance),
        registered_event=row.registered_event,
    )


def key_from_row(row: Any) -> Key:
    return Key(
        key_id=row.key_id,
        participant_id=row.participant_id,
        public_key=bytes(row.public_key),
        added_at=row.added_at,
        added_event=row.added_event,
        revoked_at=row.revoked_at,
        compromised_since=row.compromised_since,
        revoked_reason=row.revoked_reason,
        revoked_event=row.revoked_event,
    )


def batch_from_row(row: Any) -> Batch:
    return Batch(
        id=row.id,
        mineral=row.mineral,
        form=row.form,
        mass_g=row.mass_g,
        status=row.status,
        custodian=row.custodian,
        facility_id=row.facility_id,
        head=row.head,
        created_event=row.created_event,
        receiver=row.receiver,
        receiver_facility=row.receiver_facility,
        value_amount=row.value_amount,
        value_currency=row.value_currency,
        lost_g=row.lost_g,
    )


def attestation_from_row(row: Any) -> Attestation:
    return Attestation(
        id=row.id,
        auditor=row.auditor,
        subject_kind=row.subject_kind,
        subject_id=row.subject_id,
        standard=row.standard,
        level=row.level,
        minerals=tuple(json.loads(row.minerals)),
        activities=tuple(json.loads(row.activities)),
        valid_from=date.fromisoformat(row.valid_from),
        valid_to=date.fromisoformat(row.valid_to),
        report_sha256=row.report_sha256,
        event_id=row.event_id,
        revoked_on=date.fromisoformat(row.revoked_on) if row.revoked_on else None,
        suspended_on=date.fromisoformat(row.suspended_on) if row.suspended_on else None,
        changes=json.loads(row.changes),
    )


def owner_from_row(row: Any) -> Owner:
    return Owner(
        id=row.id, name=row.name, kind=row.kind, country=row.country, registered_event=row.registered_event
    )


def stake_from_row(row: Any) -> Stake:
    return Stake(
        event_id=row.event_id,
        log_index=row.log_index,
        holder=row.holder,
        subject=row.subject,
        effective_date=row.effective_date,
        equity=row.equity,
        votes=row.votes,
        board_seats=row.board_seats,
    )


def rate_from_row(row: Any) -> RateRecord:
    return RateRecord(
        day=row.day, from_=row.from_currency, to=row.to_currency, rate=row.rate, event_id=row.event_id
    )


def profile_from_row(row: Any) -> PublishedProfile:
    return PublishedProfile(
        id=row.id,
        version=row.version,
        content_hash=row.content_hash,
        event_id=row.event_id,
        published_at=row.published_at,
    )


def certificate_from_row(row: Any) -> CertificateRecord:
    return CertificateRecord(row.id, row.event_id, row.log_index, row.certifier, row.agreement)


def custody_model_from_row(row: Any) -> CustodyModelRecord:
    return CustodyModelRecord(
        event_id=row.event_id,
        log_index=row.log_index,
        facility_id=row.facility_id,
        model=row.model,
        period=row.period,
        conversion_factors=json.loads(row.conversion_factors),
        effective_date=row.effective_date,
    )


def claim_from_row(row: Any) -> ClaimRecord:
    return ClaimRecord(
        event_id=row.event_id,
        log_index=row.log_index,
        participant_id=row.participant_id,
        facility_id=row.facility_id,
        profile_id=row.profile_id,
        period=row.period,
        batch_id=row.batch_id,
        mass_g=row.mass_g,
    )


def creation_from_row(row: Any) -> Creation:
    """What a claim needs of the event that created a batch: kind, facility, timestamp, masses of its outputs."""
    facility: str | None = None
    masses: dict[str, int] = {}
    if row.kind in ("transform", "recycle"):
        document = json.loads(bytes(row.payload))
        facility = document["facility"]
        masses = {output["id"]: output["mass_g"] for output in document["outputs"]}
    return Creation(
        event_id=row.event_id, kind=row.kind, facility_id=facility, timestamp=row.timestamp, masses=masses
    )


def holds_stake(row: Any) -> bool:
    """Whether a stake record gives its holder any share at all (an edge of the ownership graph)."""
    return any(ev.parse_share(share) != 0 for share in (row.equity, row.votes, row.board_seats))


def _attestation_values(a: Attestation) -> dict[str, Any]:
    return {
        "id": a.id,
        "auditor": a.auditor,
        "subject_kind": a.subject_kind,
        "subject_id": a.subject_id,
        "standard": a.standard,
        "level": a.level,
        "minerals": json.dumps(list(a.minerals)),
        "activities": json.dumps(list(a.activities)),
        "valid_from": a.valid_from.isoformat(),
        "valid_to": a.valid_to.isoformat(),
        "report_sha256": a.report_sha256,
        "event_id": a.event_id,
        "revoked_on": a.revoked_on.isoformat() if a.revoked_on else None,
        "suspended_on": a.suspended_on.isoformat() if a.suspended_on else None,
        "changes": json.dumps(a.changes),
    }


async def public_keys(conn: AsyncConnection, key_ids: Iterable[str]) -> dict[str, tuple[str, bytes]]:
    """Key id -> (participant, raw public key), for verifying signatures before taking the write lock."""
    rows = await rows_by_ids(
        conn, keys_t, keys_t.c.key_id, key_ids, ("key_id", "participant_id", "public_key")
    )
    return {row.key_id: (row.participant_id, bytes(row.public_key)) for row in rows}


LOAD_TABLES = (
    ("participants", "id"),
    ("facilities", "id"),
    ("keys", "key_id"),
    ("batches", "id"),
    ("attestations", "id"),
    ("owners", "id"),
)
"""The tables :func:`load` reads by id for a group, with their id columns, in the order of its statement."""

ROW_REFERENCES = frozenset({*(name for name, _ in LOAD_TABLES), "events"})
"""The references :func:`load` resolves in its one statement (and all :func:`load_here` can); any other (rates,
profiles, claims, ...) takes statements of its own through SQLAlchemy."""


@dataclass
class _Load:
    """What :func:`load` and :func:`load_here` read for a group: the rows not in the working set yet."""

    specs: list[tuple[str, sa.Table, sa.Column[Any], Any, dict[str, Any]]]
    wanted: dict[str, set[str]]
    referenced: list[str]
    wanted_ids: set[str]

    @classmethod
    def of(cls, ws: WorkingSet, refs: dict[str, set[str]], event_ids: set[str]) -> _Load:
        specs: list[tuple[str, sa.Table, sa.Column[Any], Any, dict[str, Any]]] = [
            ("participants", participants_t, participants_t.c.id, participant_from_row, ws.participants),
            ("facilities", facilities_t, facilities_t.c.id, facility_from_row, ws.facilities),
            ("keys", keys_t, keys_t.c.key_id, key_from_row, ws.keys),
            ("batches", batches_t, batches_t.c.id, batch_from_row, ws.batches),
            ("attestations", attestations_t, attestations_t.c.id, attestation_from_row, ws.attestations),
            ("owners", owners_t, owners_t.c.id, owner_from_row, ws.owners),
        ]
        return cls(
            specs,
            {name: {i for i in refs.get(name, ()) if i not in target} for name, _, _, _, target in specs},
            sorted(i for i in refs.get("events", ()) if i not in ws.event_actors),
            {i for i in event_ids if i not in ws.known_event_ids},
        )

    def store(self, tables: Sequence[Sequence[Any]]) -> None:
        for (_, _, column, convert, target), rows in zip(self.specs, tables, strict=True):
            for row in rows:
                target[getattr(row, column.key)] = convert(row)

    def lite_lookups(self, ws: WorkingSet) -> tuple[list[lite.Lookup], set[str]]:
        """SQLite's one statement: every table by id, the events referred to and the group's own (already in
        the log?), and the events that introduced the keys loaded."""
        introduced = {k.added_event for k in ws.keys.values() if k is not None and k.valid_from is None}
        facts_of = set(self.referenced) | introduced
        event_columns = ("event_id", "log_index", "actor", "key_id", "timestamp")
        through_keys = (keys_t.name, keys_t.c.added_event.name, keys_t.c.key_id.name)
        lookups = [
            *(lite.Lookup(table, column.name, self.wanted[name]) for name, table, column, _, _ in self.specs),
            lite.Lookup(events_t, "event_id", facts_of | self.wanted_ids, event_columns),
            lite.Lookup(events_t, "event_id", self.wanted["keys"], event_columns, through=through_keys),
        ]
        return lookups, facts_of

    def lite_found(
        self, ws: WorkingSet, found: list[list[Any]], facts_of: set[str]
    ) -> tuple[list[Any], list[Any]]:
        """Store what SQLite's statement found; the event rows that are facts, and those of the group's own."""
        *tables, rows, adding = found
        self.store(tables)
        facts_of |= {k.added_event for k in ws.keys.values() if k is not None and k.valid_from is None}
        facts = [row for row in rows + adding if row.event_id in facts_of]
        return facts, [row for row in rows if row.event_id in self.wanted_ids]

    def settle(self, ws: WorkingSet, facts: list[Any]) -> None:
        for name, _, _, _, target in self.specs:
            for missing in self.wanted[name]:
                target.setdefault(missing, None)
        for row in facts:
            ws.event_actors[row.event_id] = row.actor
            ws.event_times[row.event_id] = row.timestamp
        for key in ws.keys.values():
            if key is not None and key.valid_from is None and key.added_event in ws.event_times:
                key.valid_from = datetime.fromisoformat(
                    ws.event_times[key.added_event].replace("Z", "+00:00")
                )
        for event_id in self.referenced:
            ws.event_actors.setdefault(event_id, None)

    @staticmethod
    def logged(ws: WorkingSet, logged: list[Any]) -> None:
        for row in logged:
            ws.known_event_ids[row.event_id] = row.log_index
            ws.known_signers[row.event_id] = (row.actor, row.key_id)


async def load(
    ws: WorkingSet,
    conn: AsyncConnection,
    refs: dict[str, set[str]],
    event_ids: set[str],
    *,
    with_size: bool = False,
) -> int | None:
    """Load into ``ws`` every referenced row not loaded yet; absent ones are recorded as ``None``. With
    ``with_size``, also return the sequencer's size, read in the same statement (else None)."""
    plan = _Load.of(ws, refs, event_ids)
    facts: list[Any]
    logged: list[Any]
    if conn.dialect.name == "postgresql":
        # one round trip; the events that introduced the keys loaded are read in the same statement
        introduced = {k.added_event for k in ws.keys.values() if k is not None and k.valid_from is None}
        tables, facts, logged, size = await pg.load_group(
            conn,
            [(table.name, column.name, plan.wanted[name]) for name, table, column, _, _ in plan.specs],
            keys_table=keys_t.name,
            referenced=set(plan.referenced) | introduced,
            known=plan.wanted_ids,
            with_size=with_size,
        )
        plan.store(tables)
    else:
        # one statement (one trip to the driver's thread), the events that introduced the keys loaded included
        lookups, facts_of = plan.lite_lookups(ws)
        found, size = await lite.load_group(conn, lookups, with_size=with_size)
        facts, logged = plan.lite_found(ws, found, facts_of)
    plan.settle(ws, facts)
    await _load_facts(ws, conn, refs)
    plan.logged(ws, logged)
    return size


def load_here(
    ws: WorkingSet,
    connection: sqlite3.Connection,
    dialect: Any,
    refs: dict[str, set[str]],
    event_ids: set[str],
    *,
    begin: str,
) -> int:
    """:func:`load` on SQLite's own connection, in the thread that owns it (aiosqlite's), after ``begin``
    (``"BEGIN IMMEDIATE"``), which opens the connection's transaction; the sequencer's size. Only references among
    :data:`ROW_REFERENCES`: the others take statements of their own (:class:`ValueError`)."""
    if any(ids for name, ids in refs.items() if name not in ROW_REFERENCES):
        raise ValueError("load_here reads only the rows of ROW_REFERENCES")
    plan = _Load.of(ws, refs, event_ids)
    lookups, facts_of = plan.lite_lookups(ws)
    found, size = lite.load_group_here(connection, dialect, lookups, with_size=True, begin=begin)
    assert size is not None
    facts, logged = plan.lite_found(ws, found, facts_of)
    plan.settle(ws, facts)
    plan.logged(ws, logged)
    return int(size)


_CLAIMED_G = sa.func.sum(claims_t.c.mass_g)
"""Grams claimed, summed per group (built once: a SQL function expression costs a little to build on every load)."""


async def _load_facts(ws: WorkingSet, conn: AsyncConnection, refs: dict[str, set[str]]) -> None:
    """The rows the newer event kinds are checked against: the ownership graph, published rates and profiles,
    custody-model histories, the events that created claimed batches, and the grams already claimed."""
    if refs.get("stake_graph") and not ws.stakes_loaded:
        query = sa.select(
            stakes_t.c.holder, stakes_t.c.subject, stakes_t.c.equity, stakes_t.c.votes, stakes_t.c.board_seats
        )
        for row in await conn.execute(query):
            if holds_stake(row):
                ws.stake_edges.setdefault(row.holder, set()).add(row.subject)
        ws.stakes_loaded = True
    days = {d for d in refs.get("rate_dates", ()) if d not in ws.rates}
    for chunk in _chunks(days):
        for row in await conn.execute(sa.select(rates_t).where(rates_t.c.day.in_(chunk))):
            record = rate_from_row(row)
            ws.rates.setdefault(record.day, {})[(record.from_, record.to)] = record
    for day in days:
        ws.rates.setdefault(day, {})
    profile_ids = {i for i in refs.get("profiles", ()) if i not in ws.profile_versions}
    for chunk in _chunks(profile_ids):
        for row in await conn.execute(sa.select(profiles_t).where(profiles_t.c.id.in_(chunk))):
            ws.profile_versions.setdefault(row.id, {})[row.version] = profile_from_row(row)
    for profile_id in profile_ids:
        ws.profile_versions.setdefault(profile_id, {})
    await _load_origin_facts(ws, conn, refs)
    facilities = {i for i in refs.get("custody_models", ()) if i not in ws.custody_models}
    for chunk in _chunks(facilities):
        declared = (
            sa.select(custody_models_t)
            .where(custody_models_t.c.facility_id.in_(chunk))
            .order_by(custody_models_t.c.log_index)
        )
        for row in await conn.execute(declared):
            ws.custody_models.setdefault(row.facility_id, []).append(custody_model_from_row(row))
    for facility in facilities:
        ws.custody_models.setdefault(facility, [])
    created = {
        batch.created_event
        for i in refs.get("creations", ())
        if (batch := ws.batches.get(i)) is not None and batch.created_event not in ws.creations
    }
    for chunk in _chunks(created):
        creating = sa.select(
            events_t.c.event_id, events_t.c.kind, events_t.c.timestamp, events_t.c.payload
        ).where(events_t.c.event_id.in_(chunk))
        for created_row in await conn.execute(creating):
            ws.creations[created_row.event_id] = creation_from_row(created_row)
    total = _CLAIMED_G
    for chunk in _chunks(refs.get("claims_of_batches", ())):
        by_batch = (
            sa.select(claims_t.c.batch_id, claims_t.c.profile_id, total)
            .where(claims_t.c.batch_id.in_(chunk))
            .group_by(claims_t.c.batch_id, claims_t.c.profile_id)
        )
        for on_batch in await conn.execute(by_batch):
            ws.batch_claimed[(on_batch[0], on_batch[1])] = int(on_batch[2])
    for chunk in _chunks(refs.get("claims_of_facilities", ())):
        by_period = (
            sa.select(claims_t.c.facility_id, claims_t.c.profile_id, claims_t.c.period, total)
            .where(claims_t.c.facility_id.in_(chunk))
            .group_by(claims_t.c.facility_id, claims_t.c.profile_id, claims_t.c.period)
        )
        for in_period in await conn.execute(by_period):
            ws.period_claimed[(in_period[0], in_period[1], in_period[2])] = int(in_period[3])


async def _load_origin_facts(ws: WorkingSet, conn: AsyncConnection, refs: dict[str, set[str]]) -> None:
    """Published agreement versions, existing certificates, and the recorded origin determinations that
    certificates cite."""
    agreement_ids = {i for i in refs.get("agreements", ()) if i not in ws.agreement_versions}
    for chunk in _chunks(agreement_ids):
        for row in await conn.execute(sa.select(agreements_t).where(agreements_t.c.id.in_(chunk))):
            ws.agreement_versions.setdefault(row.id, {})[row.version] = profile_from_row(row)
    for agreement_id in agreement_ids:
        ws.agreement_versions.setdefault(agreement_id, {})
    certificate_ids = {i for i in refs.get("certificates", ()) if i not in ws.certificates}
    for chunk in _chunks(certificate_ids):
        for row in await conn.execute(sa.select(certificates_t).where(certificates_t.c.id.in_(chunk))):
            ws.certificates[row.id] = certificate_from_row(row)
    for certificate_id in certificate_ids:
        ws.certificates.setdefault(certificate_id, None)
    determination_ids = {i for i in refs.get("determinations", ()) if i not in ws.origin_determinations}
    for chunk in _chunks(determination_ids):
        query = sa.select(events_t.c.event_id, events_t.c.payload).where(
            events_t.c.event_id.in_(chunk), events_t.c.kind == "determination"
        )
        for event_id, payload in await conn.execute(query):
            event = ev.decode_payload(bytes(payload))
            if isinstance(event, ev.DeterminationRecorded):
                ws.origin_determinations[event_id] = origin_record(event_id, event)
    for determination_id in determination_ids:
        ws.origin_determinations.setdefault(determination_id, None)


def _participant_values(p: Participant) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "roles": json.dumps(sorted(p.roles)),
        "country": p.country,
        "ownership": json.dumps(p.ownership, sort_keys=True),
        "admitted_event": p.admitted_event,
        "admitted_at": p.admitted_at,
    }


def _key_values(k: Key) -> dict[str, Any]:
    return {
        "key_id": k.key_id,
        "participant_id": k.participant_id,
        "public_key": k.public_key,
        "added_at": k.added_at,
        "added_event": k.added_event,
        "revoked_at": k.revoked_at,
        "compromised_since": k.compromised_since,
        "revoked_reason": k.revoked_reason,
        "revoked_event": k.revoked_event,
    }


def _event_tuple(e: AcceptedEvent) -> tuple[Any, ...]:
    return (
        e.log_index,
        e.event_id,
        e.kind,
        e.actor,
        e.key_id,
        e.payload_type,
        e.payload,
        e.signatures,
        e.timestamp,
        e.accepted_at,
    )


def _batch_tuple(b: Batch) -> tuple[Any, ...]:
    """A batch's values in :data:`ledger.store.pg.BATCH_COLUMNS` order."""
    return (
        b.id,
        b.mineral,
        b.form,
        b.mass_g,
        b.status,
        b.custodian,
        b.facility_id,
        b.receiver,
        b.receiver_facility,
        b.head,
        b.created_event,
        b.value_amount,
        b.value_currency,
        b.lost_g,
    )


async def _update_many(
    conn: AsyncConnection, table: sa.Table, key: str, rows: Sequence[dict[str, Any]]
) -> None:
    if not rows:
        return
    # executemany UPDATE keyed on the primary key: bind names must differ from column names
    params = [{f"b_{name}": value for name, value in row.items()} for row in rows]
    statement = (
        table.update()
        .where(table.c[key] == sa.bindparam(f"b_{key}"))
        .values({name: sa.bindparam(f"b_{name}") for name in rows[0] if name != key})
    )
    await conn.execute(statement, params)


@dataclass(frozen=True)
class HotRows:
    """A group's pending custody rows as plain tuples (see :data:`ledger.domain.state.HOT`), and the sequencer's
    size once they are written: taken from a working set, they no longer change with it."""

    events: list[tuple[Any, ...]]
    new_batches: list[tuple[Any, ...]]
    changed_batches: list[tuple[Any, ...]]
    batch_events: list[tuple[str, int]]
    edges: list[tuple[str, str, str, int]]
    holders: list[tuple[str, str]]
    size: int


def hot_rows(ws: WorkingSet) -> HotRows:
    new_batches = [b for i in ws.new_batches if (b := ws.batches[i]) is not None]
    changed_batches = [b for i in sorted(ws.changed_batches - set(ws.new_batches)) if (b := ws.batches[i])]
    return HotRows(
        events=[_event_tuple(e) for e in ws.events],
        new_batches=[_batch_tuple(b) for b in new_batches],
        changed_batches=[_batch_tuple(b) for b in changed_batches],
        batch_events=list(ws.batch_events),
        edges=[(e.parent_batch, e.child_batch, e.event_id, e.mass_g) for e in ws.edges],
        holders=sorted(ws.holders),
        size=ws.next_index,
    )


async def flush(ws: WorkingSet, conn: AsyncConnection) -> None:
    """Write what the group changed: events, projections, history, lineage, and the sequencer's new size.

    The registry and the facts (rare) go first, row by row through SQLAlchemy; the hot rows (events, batches,
    histories, edges, holders, the size) then go in one statement on PostgreSQL (:func:`ledger.store.pg.write_group`)
    and in one trip to aiosqlite's thread on SQLite (:func:`write_here`)."""
    if not ws.events:
        return
    await _flush_registry(ws, conn)
    await _flush_facts(ws, conn)
    rows = hot_rows(ws)
    if conn.dialect.name == "postgresql":
        await pg.write_group(conn, **vars(rows))
        return
    dialect = conn.dialect
    await lite.on_driver_thread(
        await driver(conn), lambda connection: write_here(connection, dialect, rows, commit=False)
    )


def write_here(connection: sqlite3.Connection, dialect: Any, rows: HotRows, *, commit: bool) -> None:
    """SQLite: write ``rows`` on SQLite's own connection, in the thread that owns it, and with ``commit`` commit
    the transaction (the one :func:`load_here` began)."""
    lite.write_group_here(
        connection,
        dialect,
        event_columns=pg.EVENT_COLUMNS,
        accepted_at=events_t.c.accepted_at,
        **vars(rows),
        commit=commit,
    )


async def write_ahead(conn: AsyncConnection, rows: HotRows, expect: int) -> bool:
    """Write ``rows`` (PostgreSQL, outside any transaction: the one statement commits itself) if the sequencer's
    size is still ``expect``, the size the rows were accepted against; False, and nothing written, if not.

    Refuses a connection inside a transaction (:class:`RuntimeError`): the write would be acknowledged before it
    commits, and lost if that transaction rolled back."""
    if (await pg.driver(conn)).is_in_transaction():
        raise RuntimeError(
            "write_ahead needs a connection outside any transaction (isolation_level AUTOCOMMIT)"
        )
    return await pg.write_group(conn, **vars(rows), expect=expect)


async def _flush_registry(ws: WorkingSet, conn: AsyncConnection) -> None:
    """Participants, facilities, keys and attestations the group added or changed."""
    participants = [p for i in ws.new_participants if (p := ws.participants[i]) is not None]
    if participants:
        await conn.execute(participants_t.insert(), [_participant_values(p) for p in participants])
    changed = [p for i in ws.changed_participants - set(ws.new_participants) if (p := ws.participants[i])]
    await _update_many(conn, participants_t, "id", [_participant_values(p) for p in changed])
    facilities = [f for i in ws.new_facilities if (f := ws.facilities[i]) is not None]
    if facilities:
        await conn.execute(
            facilities_t.insert(),
            [
                {
                    "id": f.id,
                    "participant_id": f.participant_id,
                    "kind": f.kind,
                    "country": f.country,
                    "name": f.name,
                    "loss_tolerance": str(f.loss_tolerance),
                    "registered_event": f.registered_event,
                }
                for f in facilities
            ],
        )
    keys = [k for i in ws.new_keys if (k := ws.keys[i]) is not None]
    if keys:
        await conn.execute(keys_t.insert(), [_key_values(k) for k in keys])
    changed_keys = [k for i in ws.changed_keys - set(ws.new_keys) if (k := ws.keys[i])]
    await _update_many(conn, keys_t, "key_id", [_key_values(k) for k in changed_keys])
    attestations = [a for i in ws.new_attestations if (a := ws.attestations[i]) is not None]
    if attestations:
        await conn.execute(attestations_t.insert(), [_attestation_values(a) for a in attestations])
    changed_attestations = [
        a for i in sorted(ws.changed_attestations - set(ws.new_attestations)) if (a := ws.attestations[i])
    ]
    await _update_many(conn, attestations_t, "id", [_attestation_values(a) for a in changed_attestations])


def stake_values(s: Stake) -> dict[str, Any]:
    return {
        "event_id": s.event_id,
        "log_index": s.log_index,
        "holder": s.holder,
        "subject": s.subject,
        "effective_date": s.effective_date,
        "equity": s.equity,
        "votes": s.votes,
        "board_seats": s.board_seats,
    }


def custody_model_values(m: CustodyModelRecord) -> dict[str, Any]:
    return {
        "event_id": m.event_id,
        "log_index": m.log_index,
        "facility_id": m.facility_id,
        "model": m.model,
        "period": m.period,
        "conversion_factors": json.dumps(m.conversion_factors, sort_keys=True),
        "effective_date": m.effective_date,
    }


def claim_values(c: ClaimRecord) -> dict[str, Any]:
    return {
        "event_id": c.event_id,
        "log_index": c.log_index,
        "participant_id": c.participant_id,
        "facility_id": c.facility_id,
        "profile_id": c.profile_id,
        "period": c.period,
        "batch_id": c.batch_id,
        "mass_g": c.mass_g,
    }


async def _flush_facts(ws: WorkingSet, conn: AsyncConnection) -> None:
    owners = [o for i in ws.new_owners if (o := ws.owners[i]) is not None]
    if owners:
        await conn.execute(
            owners_t.insert(),
            [
                {
                    "id": o.id,
                    "name": o.name,
                    "kind": o.kind,
                    "country": o.country,
                    "registered_event": o.registered_event,
                }
                for o in owners
            ],
        )
    if ws.new_stakes:
        await conn.execute(stakes_t.insert(), [stake_values(s) for s in ws.new_stakes])
    if ws.new_rates:
        await conn.execute(
            rates_t.insert(),
            [
                {
                    "day": r.day,
                    "from_currency": r.from_,
                    "to_currency": r.to,
                    "rate": r.rate,
                    "event_id": r.event_id,
                }
                for r in ws.new_rates
            ],
        )
    if ws.new_profiles:
        await conn.execute(
            profiles_t.insert(),
            [
                {
                    "id": p.id,
                    "version": p.version,
                    "content_hash": p.content_hash,
                    "event_id": p.event_id,
                    "published_at": p.published_at,
                }
                for p in ws.new_profiles
            ],
        )
    if ws.new_custody_models:
        await conn.execute(
            custody_models_t.insert(), [custody_model_values(m) for m in ws.new_custody_models]
        )
    if ws.new_claims:
        await conn.execute(claims_t.insert(), [claim_values(c) for c in ws.new_claims])
    if ws.new_agreements:
        await conn.execute(
            agreements_t.insert(),
            [
                {
                    "id": a.id,
                    "version": a.version,
                    "content_hash": a.content_hash,
                    "event_id": a.event_id,
                    "published_at": a.published_at,
                }
                for a in ws.new_agreements
            ],
        )
    if ws.new_certificates:
        await conn.execute(
            certificates_t.insert(),
            [
                {
                    "id": c.id,
                    "event_id": c.event_id,
                    "log_index": c.log_index,
                    "certifier": c.certifier,
                    "agreement": c.agreement,
                }
                for c in ws.new_certificates
            ],
        )
