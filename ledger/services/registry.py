"""Reading the registry and the log's events."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.domain import events as ev
from ledger.domain.accept import model_in_force
from ledger.domain.dsse import Signature
from ledger.domain.keys import b64encode
from ledger.errors import NotFound
from ledger.services.access import VALUE_KINDS, Access, privileged, redact_payload, sees_values_of
from ledger.services.tokens import Caller
from ledger.services.views import (
    AttestationChangeView,
    AttestationList,
    AttestationView,
    CustodyModelHistory,
    CustodyModelView,
    EnvelopeView,
    EventView,
    ExchangeRateList,
    ExchangeRateView,
    FacilityView,
    KeyView,
    OwnerList,
    OwnerView,
    ParticipantList,
    ParticipantView,
    StakeList,
    StakeView,
)
from ledger.store.repo import (
    attestation_from_row,
    attestations_t,
    batch_events_t,
    custody_model_from_row,
    custody_models_t,
    events_t,
    facilities_t,
    keys_t,
    owners_t,
    participants_t,
    rates_t,
    stakes_t,
)

MAX_PAGE = 500


def facility_view(row: Any) -> FacilityView:
    return FacilityView(
        id=row.id,
        participant=row.participant_id,
        kind=row.kind,
        country=row.country,
        name=row.name,
        loss_tolerance=row.loss_tolerance,
        registered_event=row.registered_event,
    )


def key_view(row: Any) -> KeyView:
    return KeyView(
        key_id=row.key_id,
        public_key=b64encode(bytes(row.public_key)),
        added_at=row.added_at,
        added_event=row.added_event,
        revoked_at=row.revoked_at,
        compromised_since=row.compromised_since,
        revoked_reason=row.revoked_reason,
        revoked_event=row.revoked_event,
    )


def stake_view(row: Any) -> StakeView:
    return StakeView(
        holder=row.holder,
        subject=row.subject,
        effective_date=row.effective_date,
        equity=row.equity,
        votes=row.votes,
        board_seats=row.board_seats,
        event_id=row.event_id,
        log_index=row.log_index,
    )


def event_view(row: Any, caller: Caller | None = None) -> EventView:
    """An event as ``caller`` may see it: values redacted, and the envelope withheld, if it may not see them."""
    payload = bytes(row.payload)
    decoded = json.loads(payload)
    shown, envelope = decoded, None
    if row.kind in VALUE_KINDS and not sees_values_of(caller, row.actor):
        shown = redact_payload(row.kind, decoded)
    if shown is decoded or shown == decoded:
        envelope = EnvelopeView(
            payloadType=row.payload_type,
            payload=b64encode(payload),
            signatures=msgspec.json.decode(row.signatures, type=list[Signature]),
        )
    return EventView(
        event_id=row.event_id,
        log_index=row.log_index,
        kind=row.kind,
        actor=row.actor,
        key_id=row.key_id,
        timestamp=row.timestamp,
        accepted_at=row.accepted_at,
        envelope=envelope,
        payload=shown,
        redacted=envelope is None,
    )


class Registry:
    def __init__(self, engine: AsyncEngine, access: Access) -> None:
        self._engine = engine
        self._access = access

    async def participants(
        self, *, limit: int = 100, after: str | None = None, role: str | None = None
    ) -> ParticipantList:
        limit = max(1, min(limit, MAX_PAGE))
        query = sa.select(participants_t).order_by(participants_t.c.id).limit(limit + 1)
        if after is not None:
            query = query.where(participants_t.c.id > after)
        if role is not None:
            query = query.where(participants_t.c.roles.contains(json.dumps(role)))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            page, more = rows[:limit], len(rows) > limit
            views = await self._with_children(conn, page)
        return ParticipantList(items=views, next_cursor=page[-1].id if more and page else None)

    async def participant(self, participant_id: str) -> ParticipantView:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(participants_t).where(participants_t.c.id == participant_id))
            ).all()
            if not rows:
                raise NotFound(f"participant {participant_id!r} does not exist")
            return (await self._with_children(conn, rows))[0]

    async def _with_children(self, conn: Any, rows: Sequence[Any]) -> list[ParticipantView]:
        ids = [row.id for row in rows]
        keys: dict[str, list[KeyView]] = defaultdict(list)
        facilities: dict[str, list[FacilityView]] = defaultdict(list)
        if ids:
            key_rows = await conn.execute(
                sa.select(keys_t)
                .where(keys_t.c.participant_id.in_(ids))
                .order_by(keys_t.c.added_at, keys_t.c.key_id)
            )
            for row in key_rows:
                keys[row.participant_id].append(key_view(row))
            facility_rows = await conn.execute(
                sa.select(facilities_t)
                .where(facilities_t.c.participant_id.in_(ids))
                .order_by(facilities_t.c.id)
            )
            for row in facility_rows:
                facilities[row.participant_id].append(facility_view(row))
        return [
            ParticipantView(
                id=row.id,
                name=row.name,
                roles=json.loads(row.roles),
                country=row.country,
                ownership=json.loads(row.ownership),
                admitted_event=row.admitted_event,
                admitted_at=row.admitted_at,
                keys=keys[row.id],
                facilities=facilities[row.id],
            )
            for row in rows
        ]

    async def facility_attestations(self, facility_id: str, on: date | None = None) -> AttestationList:
        """Every attestation of the facility or of its owner, with revocations and suspensions; ``valid_on`` says
        whether each counted on ``on``."""
        async with self._engine.connect() as conn:
            facility = (
                await conn.execute(sa.select(facilities_t).where(facilities_t.c.id == facility_id))
            ).first()
            if facility is None:
                raise NotFound(f"facility {facility_id!r} does not exist")
            rows = await conn.execute(
                sa.select(attestations_t)
                .where(
                    sa.or_(
                        sa.and_(
                            attestations_t.c.subject_kind == "facility",
                            attestations_t.c.subject_id == facility_id,
                        ),
                        sa.and_(
                            attestations_t.c.subject_kind == "participant",
                            attestations_t.c.subject_id == facility.participant_id,
                        ),
                    )
                )
                .order_by(attestations_t.c.valid_from, attestations_t.c.id)
            )
            items = []
            for row in rows:
                record = attestation_from_row(row)
                valid = None
                if on is not None:
                    valid = (
                        record.valid_from <= on <= record.valid_to
                        and (record.revoked_on is None or on < record.revoked_on)
                        and (record.suspended_on is None or on < record.suspended_on)
                    )
                items.append(
                    AttestationView(
                        id=record.id,
                        auditor=record.auditor,
                        subject_kind=record.subject_kind,
                        subject_id=record.subject_id,
                        standard=record.standard,
                        level=record.level,
                        minerals=list(record.minerals),
                        activities=list(record.activities),
                        valid_from=record.valid_from.isoformat(),
                        valid_to=record.valid_to.isoformat(),
                        report_sha256=record.report_sha256,
                        event_id=record.event_id,
                        revoked_on=record.revoked_on.isoformat() if record.revoked_on else None,
                        suspended_on=record.suspended_on.isoformat() if record.suspended_on else None,
                        changes=[AttestationChangeView(**change) for change in record.changes],
                        valid_on=valid,
                    )
                )
        return AttestationList(facility=facility_id, on=on.isoformat() if on else None, items=items)

    async def event(self, event_id: str, caller: Caller | None = None) -> EventView:
        """An event; custody events and determinations only for those who may read one of the batches they touch."""
        missing = NotFound(f"event {event_id!r} is not in the log")
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(events_t).where(events_t.c.event_id == event_id))).first()
            if row is None:
                raise missing
            scoped = row.kind in ev.CUSTODY_KINDS or row.kind == "determination"
            if scoped and not privileged(caller) and caller is not None and row.actor != caller.participant:
                touched = [
                    batch
                    for (batch,) in await conn.execute(
                        sa.select(batch_events_t.c.batch_id).where(
                            batch_events_t.c.log_index == row.log_index
                        )
                    )
                ]
        if scoped and not privileged(caller) and caller is not None and row.actor != caller.participant:
            for batch in touched:
                if await self._access.can_read_batch(caller, batch):
                    break
            else:
                raise missing
        # filtered like lineage: outputs the caller may not read are redacted, as in a batch's history
        return await self._access.screen_event(caller, event_view(row, caller))

    # --- owners and stakes, exchange rates, custody models -------------------------------------------------

    async def owners(self, *, limit: int = 100, after: str | None = None) -> OwnerList:
        limit = max(1, min(limit, MAX_PAGE))
        query = sa.select(owners_t).order_by(owners_t.c.id).limit(limit + 1)
        if after is not None:
            query = query.where(owners_t.c.id > after)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            page, more = rows[:limit], len(rows) > limit
            views = await self._owner_views(conn, page)
        return OwnerList(items=views, next_cursor=page[-1].id if more and page else None)

    async def owner(self, owner_id: str) -> OwnerView:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(owners_t).where(owners_t.c.id == owner_id))).all()
            if not rows:
                raise NotFound(f"owner {owner_id!r} does not exist")
            return (await self._owner_views(conn, rows))[0]

    async def _owner_views(self, conn: Any, rows: Sequence[Any]) -> list[OwnerView]:
        ids = [row.id for row in rows]
        holds: dict[str, list[StakeView]] = defaultdict(list)
        held_by: dict[str, list[StakeView]] = defaultdict(list)
        if ids:
            stake_rows = await conn.execute(
                sa.select(stakes_t)
                .where(sa.or_(stakes_t.c.holder.in_(ids), stakes_t.c.subject.in_(ids)))
                .order_by(stakes_t.c.log_index)
            )
            for row in stake_rows:
                if row.holder in ids:
                    holds[row.holder].append(stake_view(row))
                if row.subject in ids:
                    held_by[row.subject].append(stake_view(row))
        return [
            OwnerView(
                id=row.id,
                name=row.name,
                kind=row.kind,
                country=row.country,
                registered_event=row.registered_event,
                holds=holds[row.id],
                held_by=held_by[row.id],
            )
            for row in rows
        ]

    async def participant_stakes(self, participant_id: str) -> StakeList:
        """Every stake record held in a participant (direct holdings, history in log order)."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                sa.select(participants_t.c.id).where(participants_t.c.id == participant_id)
            )
            if found is None:
                raise NotFound(f"participant {participant_id!r} does not exist")
            rows = await conn.execute(
                sa.select(stakes_t).where(stakes_t.c.subject == participant_id).order_by(stakes_t.c.log_index)
            )
            return StakeList(subject=participant_id, items=[stake_view(row) for row in rows])

    async def exchange_rates(self, day: date) -> ExchangeRateList:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(rates_t)
                    .where(rates_t.c.day == day.isoformat())
                    .order_by(rates_t.c.from_currency, rates_t.c.to_currency)
                )
            ).all()
        if not rows:
            raise NotFound(f"no exchange rates were published for {day.isoformat()}")
        return ExchangeRateList(
            date=day.isoformat(),
            items=[
                ExchangeRateView(
                    from_=row.from_currency, to=row.to_currency, rate=row.rate, event_id=row.event_id
                )
                for row in rows
            ],
        )

    async def custody_model(self, facility_id: str, on: date) -> CustodyModelHistory:
        """A facility's chain-of-custody declarations and the one in force on ``on``."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(sa.select(facilities_t.c.id).where(facilities_t.c.id == facility_id))
            if found is None:
                raise NotFound(f"facility {facility_id!r} does not exist")
            rows = await conn.execute(
                sa.select(custody_models_t)
                .where(custody_models_t.c.facility_id == facility_id)
                .order_by(custody_models_t.c.log_index)
            )
            history = [custody_model_from_row(row) for row in rows]
        in_force = model_in_force(history, on)

        def view(record: Any) -> CustodyModelView:
            return CustodyModelView(
                model=record.model,
                period=record.period,
                conversion_factors=record.conversion_factors,
                effective_date=record.effective_date,
                event_id=record.event_id,
                log_index=record.log_index,
            )

        return CustodyModelHistory(
            facility=facility_id,
            on=on.isoformat(),
            in_force=view(in_force) if in_force is not None else None,
            declarations=[view(r) for r in sorted(history, key=lambda r: (r.effective_date, r.log_index))],
        )
