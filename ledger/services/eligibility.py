"""Eligibility use cases: gather the evidence for a batch, determine, record a determination, build a bundle."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from typing import Any, NamedTuple

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.domain.keys import b64encode
from ledger.errors import Forbidden, InvalidInput, NotFound
from ledger.log import merkle
from ledger.rules.bundle import BUNDLE_FORMAT
from ledger.rules.engine import (
    Determination,
    DeterminationSummary,
    LoggedEvent,
    RecycledContent,
    collector_paused,
    determination_document,
    determine,
    recycled_content,
    site_credits,
    summarise,
)
from ledger.rules.facts import exact_decimal
from ledger.rules.profiles import Profile, Profiles, profile_from_document
from ledger.services.access import REDACTED, Access, declares_values, privileged, sees_values_of
from ledger.services.custody import MAX_LINEAGE_BATCHES, Custody
from ledger.services.log import TransparencyLog
from ledger.services.submit import Submitter
from ledger.services.tokens import Caller
from ledger.services.views import ProfileList, ProfileView, SubmitResultView
from ledger.store.db import driver as db_driver
from ledger.store.repo import IN_CHUNK, batch_events_t, events_t, log_state_t

_decoder = msgspec.json.Decoder(ev.Event)

REGISTRY_AND_ATTESTATION_KINDS = sorted(ev.FACT_KINDS | ev.ATTESTATION_KINDS | {"reaffirm"})
ENGINE_KINDS = sorted(ev.CUSTODY_KINDS | set(REGISTRY_AND_ATTESTATION_KINDS))
"""What the engine reads (not recorded determinations, which a batch's events include)."""

ENGINE_COLUMNS = (events_t.c.log_index, events_t.c.event_id, events_t.c.key_id, events_t.c.payload)
"""What the engine needs of an event."""

ENVELOPE_COLUMNS = (
    events_t.c.log_index,
    events_t.c.payload_type,
    events_t.c.payload,
    events_t.c.signatures,
    events_t.c.accepted_at,
)
"""What a bundle needs of an event besides: its envelope, and when the ledger accepted it."""

REDACTED_TEXT = "redacted"
"""Stands for a sum of values the caller may not see."""

DETERMINATION_CACHE_SIZE = 256
"""Determinations kept per process (least recently asked dropped first)."""

DECODED_EVENTS_KEPT = 120_000
"""Decoded events kept per process for the next determination (about 1 KB each): a lineage of 100,000 events fits."""

BUNDLE_WAIT_SECONDS = 5.0
"""How long a bundle request waits for the Merkle tree to cover its events before answering 503."""


def parse_period(text: str) -> tuple[date, date]:
    """``YYYY``, ``YYYY-Qn`` or ``YYYY-MM`` -> its first and last day."""
    try:
        if "-Q" in text:
            year, quarter = text.split("-Q")
            start = date(int(year), 3 * int(quarter) - 2, 1)
            months = 3
        elif "-" in text:
            year, month = text.split("-")
            start = date(int(year), int(month), 1)
            months = 1
        else:
            start = date(int(text), 1, 1)
            months = 12
    except ValueError:
        raise InvalidInput(f"period={text!r} is not YYYY, YYYY-Qn or YYYY-MM") from None
    if not ev.MIN_YEAR <= start.year <= ev.MAX_YEAR:
        raise InvalidInput(f"period={text!r} lies outside the years {ev.MIN_YEAR} to {ev.MAX_YEAR}")
    end_month = start.month + months
    end = date(start.year + (end_month - 1) // 12, (end_month - 1) % 12 + 1, 1) - timedelta(days=1)
    return start, end


class CreditView(msgspec.Struct):
    event_id: str
    date: str
    batch: str
    """The input consumed."""
    credits_g: str


class ClaimView(msgspec.Struct):
    event_id: str
    date: str
    batch: str
    """The output the credits were allocated to."""
    mass_g: int


class BalanceView(msgspec.Struct):
    facility: str
    profile: dict[str, Any]
    period: str
    start: str
    end: str
    model: str | None
    credits_g: str
    claimed_g: str
    balance_g: str
    credits: list[CreditView]
    claims: list[ClaimView]


def parse_day(text: str | None) -> date:
    """``at``: a date, or by default today as far ahead as any time zone is (UTC+14), so that every event already
    signed (whatever its signer's offset) has a local date on or before it."""
    if text is None or text == "":
        return (datetime.now(UTC) + timedelta(hours=14)).date()
    return ev.parse_date(text, "at")


class DecodedEvents:
    """Accepted events, decoded, by log index; the least recently used are dropped first. Decoding is most of the
    cost of reading a large lineage (every field is checked against its pattern), and an entry never goes stale:
    the log is append-only, and the database refuses to change or delete an event."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._events: OrderedDict[int, LoggedEvent] = OrderedDict()

    async def read(self, conn: AsyncConnection, indices: list[int]) -> dict[int, LoggedEvent]:
        """The custody, registry and attestation events at ``indices`` (others, such as recorded determinations, are
        left out): those not kept are read (only the columns the engine needs) and decoded."""
        kept = self._events
        found: dict[int, LoggedEvent] = {}
        missing: list[int] = []
        for index in indices:
            logged = kept.get(index)
            if logged is None:
                missing.append(index)
            else:
                kept.move_to_end(index)
                found[index] = logged
        rows = await _engine_rows(conn, missing)
        with collector_paused():  # thousands of new objects, all kept: nothing for the collector to find
            for index, event_id, key_id, payload in rows:
                found[index] = kept[index] = LoggedEvent(index, event_id, _decoder.decode(payload), key_id)
        while len(kept) > self._size:
            kept.popitem(last=False)
        return found


class RegistryIndices:
    """The log indices of the registry and attestation events, as the log grows: only the entries appended since
    the last look are searched (there is no index by kind, and the log only grows). Log indices are handed out
    under the sequencer's lock, held until commit, so no event ever appears below one already seen."""

    def __init__(self) -> None:
        self._indices: list[int] = []
        self._seen = -1
        """The last log index searched."""

    async def indices(self, conn: AsyncConnection) -> list[int]:
        last = (await conn.execute(sa.select(sa.func.max(events_t.c.log_index)))).scalar()
        if last is not None and last > self._seen:
            found = await conn.execute(
                sa.select(events_t.c.log_index)
                .where(
                    events_t.c.log_index > self._seen,
                    events_t.c.log_index <= last,
                    events_t.c.kind.in_(REGISTRY_AND_ATTESTATION_KINDS),
                )
                .order_by(events_t.c.log_index)
            )
            # another request may have searched meanwhile: keep only what lies beyond what it found
            self._indices.extend(index for (index,) in found if index > self._seen)
            self._seen = max(self._seen, last)
        return list(self._indices)


@dataclass
class Evidence:
    events: list[LoggedEvent]
    rows: dict[int, EnvelopeRow]
    """log index -> what the stored event's envelope needs (for bundles; empty unless asked for)."""


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
        self._profiles_seen = -1
        self._log_size = -1
        self._cache: OrderedDict[tuple[str, str, date, int], tuple[Determination, dict[str, str]]] = (
            OrderedDict()
        )
        self._summaries: OrderedDict[tuple[str, str, date, int], DeterminationSummary] = OrderedDict()
        self._log = log
        self._submitter = submitter
        self._events = DecodedEvents(DECODED_EVENTS_KEPT)
        self._registry = RegistryIndices()

    async def profile(self, profile_id: str | None, version: int | None = None) -> Profile:
        """A rule profile: the latest published version (or the one asked for), else the built-in one."""
        await self._refresh_profiles()
        return self._profiles.get(profile_id, version)

    async def profiles(self) -> Profiles:
        await self._refresh_profiles()
        return self._profiles

    async def _refresh_profiles(self) -> None:
        """Note the log's size, and read the ``profile_published`` events not yet seen when it has grown (the log
        only grows, so the last index seen suffices). The size also keys the determination cache."""
        async with self._engine.connect() as conn:
            size = int(
                (await conn.execute(sa.select(log_state_t.c.size).where(log_state_t.c.id == 1))).scalar_one()
            )
            if size == self._log_size:
                return
            rows = await conn.execute(
                sa.select(events_t.c.log_index, events_t.c.payload)
                .where(events_t.c.kind == "profile_published", events_t.c.log_index > self._profiles_seen)
                .order_by(events_t.c.log_index)
            )
            for index, payload in rows:
                event = _decoder.decode(bytes(payload))
                assert isinstance(event, ev.ProfilePublished)
                self._profiles.add(profile_from_document(event.profile, "published in the log"))
                self._profiles_seen = max(self._profiles_seen, index)
        self._log_size = size

    def _view(self, profile: Profile) -> ProfileView:
        published = self._profiles.versions.get(profile.id, {}).get(profile.version) is not None
        return ProfileView(
            id=profile.id,
            name=profile.name,
            version=profile.version,
            content_hash=profile.content_hash,
            default=profile.id == self._profiles.default_id,
            published=published,
            document=profile.document(),
        )

    async def profile_list(self) -> ProfileList:
        await self._refresh_profiles()
        return ProfileList(items=[self._view(p) for p in self._profiles.all()])

    async def profile_view(self, profile_id: str, version: int | None = None) -> ProfileView:
        return self._view(await self.profile(profile_id, version))

    async def profile_versions(self, profile_id: str) -> ProfileList:
        await self._refresh_profiles()
        versions = dict(self._profiles.versions.get(profile_id, {}))
        builtin = self._profiles.builtin.get(profile_id)
        if builtin is not None and builtin.version not in versions:
            versions[builtin.version] = builtin
        if not versions:
            raise NotFound(f"there is no rule profile {profile_id!r}")
        return ProfileList(items=[self._view(versions[v]) for v in sorted(versions)])

    async def evidence(
        self, batch_id: str, profile: Profile | None = None, *, envelopes: bool = False
    ) -> Evidence:
        """The custody events of the batch's upstream lineage and the registry and attestation events they rely on;
        with ``envelopes``, each row also holds what a bundle needs to rebuild the signed envelope."""
        return await self.evidence_for({batch_id}, profile, envelopes=envelopes)

    async def evidence_for(
        self, roots: set[str], profile: Profile | None = None, *, envelopes: bool = False
    ) -> Evidence:
        """Evidence for several batches at once (a site's inputs): the union of their lineages."""
        async with self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # index look-ups one batch at a time: compiling them (PostgreSQL's JIT, which the planner's estimates
                # for a large lineage switch on) takes longer than running them
                await conn.execute(sa.text("SET LOCAL jit = off"))
            custody_indices = await self._custody_indices(conn, roots)
            registry_indices = await self._registry.indices(conn)
            logged = await self._events.read(conn, custody_indices + registry_indices)
            # a determination recorded on a batch of the lineage is not read
            custody_indices = [i for i in custody_indices if i in logged]
            custody = [logged[i].event for i in custody_indices]
            registry = [(logged[i], logged[i].event) for i in registry_indices]
            chosen = self._chosen(custody, registry, profile)
            indices = sorted([*custody_indices, *chosen])
            rows = await _envelope_rows(conn, indices) if envelopes else {}
        return Evidence(events=[logged[i] for i in indices], rows=rows)

    async def _custody_indices(self, conn: AsyncConnection, roots: set[str]) -> list[int]:
        """The log indices of the events of ``roots`` and of every batch upstream of them (on PostgreSQL, a
        determination recorded on one of them too: :meth:`DecodedEvents.read` leaves it out)."""
        if conn.dialect.name == "postgresql":
            return await _lineage_indices_pg(conn, roots)
        upstream: set[str] = set()
        for root in roots:
            upstream |= await self._custody.upstream_ids(root)
        batch_ids = sorted(upstream)
        indices: set[int] = set()
        for start in range(0, len(batch_ids), IN_CHUNK):
            query = (
                sa.select(batch_events_t.c.log_index)
                .join(events_t, events_t.c.log_index == batch_events_t.c.log_index)
                .where(
                    batch_events_t.c.batch_id.in_(batch_ids[start : start + IN_CHUNK]),
                    events_t.c.kind.in_(sorted(ev.CUSTODY_KINDS)),
                )
            )
            indices.update(index for (index,) in await conn.execute(query))
        return sorted(indices)

    @staticmethod
    def _chosen(
        custody: list[ev.Event], registry: list[tuple[LoggedEvent, ev.Event]], profile: Profile | None
    ) -> list[int]:
        """The log indices of the registry and attestation events that the custody events rely on."""
        actors = {event.actor for event in custody}
        facilities = {f for f in map(_facility_of, custody) if f}
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
        # owners: every stake is a fact the look-through may need; the participants holding stakes are involved
        involved |= {event.holder for _, event in registry if isinstance(event, ev.StakeRecorded)}
        signers = {
            event.actor
            for _, event in registry
            if _relevant(event, involved, facilities, attestations, profile)
        }
        involved |= signers
        return [
            registered.log_index
            for registered, event in registry
            if _relevant(event, involved, facilities, attestations, profile)
        ]

    async def determine(
        self, batch_id: str, profile_id: str | None, at: str | None, caller: Caller | None = None
    ) -> Determination:
        """The determination as ``caller`` may see it (source values redacted unless it declared them)."""
        profile = await self.profile(profile_id)
        day = parse_day(at)
        await self._access.require_batch(caller, batch_id)
        determination, actors = await self._determined(batch_id, profile, day)
        if privileged(caller):
            return determination
        shown = msgspec.structs.replace(determination, sources=list(determination.sources))
        hidden = False
        for i, source in enumerate(shown.sources):
            if source.value is not None and not sees_values_of(caller, actors.get(source.event_id, "")):
                shown.sources[i] = msgspec.structs.replace(source, value=REDACTED, traced_value=None)
                hidden = True
        if hidden and shown.unit != "g":  # sums of values others declared are theirs too
            shown = msgspec.structs.replace(shown, qualifying_total=REDACTED_TEXT, total=REDACTED_TEXT)
        return shown

    async def summary(
        self, batch_id: str, profile_id: str | None, at: str | None, caller: Caller | None = None
    ) -> DeterminationSummary:
        """The summary of :meth:`determine`; for the privileged roles (who see every value) kept with the cached
        determination, so that a repeated question costs one query."""
        if not privileged(caller):
            return summarise(await self.determine(batch_id, profile_id, at, caller))
        profile = await self.profile(profile_id)
        day = parse_day(at)
        key = await self._cache_key(batch_id, profile, day)
        found = self._summaries.get(key)
        if found is None:
            found = summarise(await self.determine(batch_id, profile_id, at, caller))
            self._summaries[key] = found
            while len(self._summaries) > DETERMINATION_CACHE_SIZE:
                self._summaries.popitem(last=False)
        return found

    async def _cache_key(self, batch_id: str, profile: Profile, day: date) -> tuple[str, str, date, int]:
        """The question and the log's size as last read (every caller has just asked for the profile, which
        reads it): a grown log makes a new key, so a cached answer is never older than the size it names."""
        return (batch_id, profile.content_hash, day, self._log_size)

    async def _determined(
        self, batch_id: str, profile: Profile, day: date
    ) -> tuple[Determination, dict[str, str]]:
        """The determination and the actor of every evidence event, from a cache keyed by the question and the
        log's size: any accepted event (custody, registry, attestation) makes a new size, so a cached answer is
        exactly what the engine would say now. Callers must not change what it returns."""
        async with self._engine.connect() as conn:
            size = (
                await conn.execute(sa.select(log_state_t.c.size).where(log_state_t.c.id == 1))
            ).scalar_one()
        key = (batch_id, profile.content_hash, day, int(size))
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        evidence = await self.evidence(batch_id, profile)
        determination = determine(evidence.events, batch_id, profile, day)
        actors = {logged.event_id: logged.event.actor for logged in evidence.events}
        self._cache[key] = (determination, actors)
        while len(self._cache) > DETERMINATION_CACHE_SIZE:
            self._cache.popitem(last=False)
        return determination, actors

    async def record(
        self,
        batch_id: str,
        profile_id: str | None,
        at: str | None,
        requested_by: str,
        caller: Caller | None = None,
    ) -> SubmitResultView:
        """Determine, then append the determination to the log as an event signed with the ledger's log key."""
        profile = await self.profile(profile_id)
        await self._access.require_batch(caller, batch_id)
        evidence = await self.evidence(batch_id, profile)
        determination = determine(evidence.events, batch_id, profile, parse_day(at))
        return await self.record_document(batch_id, requested_by, determination_document(determination))

    async def record_document(
        self, batch_id: str, requested_by: str, document: dict[str, Any]
    ) -> SubmitResultView:
        """Sign ``document`` (a determination of ``batch_id``, of any kind) with the log key and log it."""
        signer = self._log.signer
        if signer is None:
            raise InvalidInput(
                "this server has no log key, so it cannot sign determinations; run `ledger init`"
            )
        event = ev.DeterminationRecorded(
            actor=ev.LEDGER_ACTOR,
            timestamp=datetime.now(UTC).replace(microsecond=0).isoformat(),
            batch=batch_id,
            requested_by=requested_by,
            determination=document,
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
        profile = await self.profile(profile_id)
        day = parse_day(at)
        await self._access.require_batch(caller, batch_id)
        evidence = await self.evidence(batch_id, profile, envelopes=True)
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
        checkpoint = await self._log.checkpoint_covering(needed, BUNDLE_WAIT_SECONDS)
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
                    # when the ledger accepted it, beside the time its signer chose (not covered by the proofs)
                    "accepted_at": _utc_text(row.accepted_at),
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

    async def recycled_content(
        self, batch_id: str, profile_id: str | None, at: str | None, caller: Caller | None = None
    ) -> RecycledContent:
        profile = await self.profile(profile_id)
        await self._access.require_batch(caller, batch_id)
        evidence = await self.evidence(batch_id, profile)
        return recycled_content(evidence.events, batch_id, profile, parse_day(at))

    async def _site_events(self, facility_id: str) -> list[tuple[str, ev.Event]]:
        """Transforms, recyclings, claims and custody models at a facility, with their event ids (read whole and
        filtered here: there is no index by facility, and claims are rare)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(events_t.c.event_id, events_t.c.payload)
                .where(events_t.c.kind.in_(["transform", "recycle", "claim", "custody_model"]))
                .order_by(events_t.c.log_index)
            )
            decoded = [(event_id, _decoder.decode(bytes(payload))) for event_id, payload in rows]
        return [(i, e) for i, e in decoded if getattr(e, "facility", None) == facility_id]

    async def credits(self, facility_id: str, profile_id: str, period: str) -> Fraction:
        """Mass-balance credits a facility made in a period under a profile (grams, exact)."""
        site = await self._site_events(facility_id)
        return (await self._credits(facility_id, await self.profile(profile_id), period, site))[0]

    async def _credits(
        self, facility_id: str, profile: Profile, period: str, site: list[tuple[str, ev.Event]]
    ) -> tuple[Fraction, list[CreditView]]:
        start, end = parse_period(period)
        inputs = {
            item.batch
            for _, event in site
            if isinstance(event, ev.Transform | ev.Recycle)
            and start <= ev.parse_timestamp(event.timestamp).date() <= end
            for item in event.inputs
        }
        if not inputs:
            return Fraction(0), []
        evidence = await self.evidence_for(inputs, profile)
        found = site_credits(evidence.events, facility_id, profile, start, end)
        views = [
            CreditView(logged.event_id, logged.local_date.isoformat(), batch, exact_decimal(grams))
            for logged, batch, grams in found
        ]
        total = sum((grams for _, _, grams in found), Fraction(0))
        return Fraction(
            int(total.numerator), int(total.denominator)
        ), views  # the submitter compares Fractions

    async def balance(
        self, facility_id: str, period: str, profile_id: str | None, caller: Caller | None = None
    ) -> BalanceView:
        """Credits in, claimed and left for one period, each traced to its events; for the facility's owner and
        the privileged roles."""
        profile = await self.profile(profile_id)
        start, end = parse_period(period)
        owner = await self._access.facility_owner(facility_id)
        if owner is None or not (privileged(caller) or (caller is not None and caller.participant == owner)):
            raise NotFound(f"facility {facility_id!r} does not exist")
        site = await self._site_events(facility_id)
        credits, views = await self._credits(facility_id, profile, period, site)
        claims = [
            ClaimView(event_id, ev.parse_timestamp(e.timestamp).date().isoformat(), e.batch, e.mass_g)
            for event_id, e in site
            if isinstance(e, ev.Claim) and e.profile == profile.id and e.period == period
        ]
        claimed = Fraction(sum(c.mass_g for c in claims))
        models = [
            (e.effective_date, e.model)
            for _, e in site
            if isinstance(e, ev.CustodyModelDeclared) and date.fromisoformat(e.effective_date) <= end
        ]
        return BalanceView(
            facility=facility_id,
            profile=profile.reference(),
            period=period,
            start=start.isoformat(),
            end=end.isoformat(),
            model=max(models)[1] if models else None,
            credits_g=exact_decimal(credits),
            claimed_g=exact_decimal(claimed),
            balance_g=exact_decimal(credits - claimed),
            credits=views,
            claims=claims,
        )


def _utc_text(when: datetime) -> str:
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="seconds")


async def _lineage_indices_pg(conn: AsyncConnection, roots: set[str]) -> list[int]:
    """The log indices of the events of ``roots`` and of every batch upstream of them, in one round trip: a
    recursive walk up ``batch_edges`` (``UNION`` keeps each batch once), then each batch's events. ``OFFSET 0``
    keeps both look-ups one index probe per batch, whatever the planner estimates for tables not yet analysed
    (otherwise it may scan ``batch_edges`` whole at every level). As with ``Custody.upstream_ids``, an unknown batch
    is not found and a lineage has a bounded size."""
    driver = await db_driver(conn)
    record = await driver.fetchrow(
        "WITH RECURSIVE upstream(batch_id) AS ("
        " SELECT id FROM batches WHERE id = ANY($1::text[])"
        " UNION"
        " SELECT p.parent_batch FROM upstream u"
        " CROSS JOIN LATERAL (SELECT parent_batch FROM batch_edges WHERE child_batch = u.batch_id OFFSET 0) p"
        "), events_of AS ("
        " SELECT b.log_index FROM upstream u"
        " CROSS JOIN LATERAL (SELECT log_index FROM batch_events WHERE batch_id = u.batch_id OFFSET 0) b"
        ") SELECT array(SELECT batch_id FROM upstream WHERE batch_id = ANY($1::text[])) AS found,"
        " (SELECT count(*) FROM upstream) AS batches,"
        " array(SELECT DISTINCT log_index FROM events_of ORDER BY log_index) AS indices",
        sorted(roots),
    )
    found, batches, indices = record
    missing = roots - set(found)
    if missing:
        raise NotFound(f"batch {min(missing)!r} does not exist")
    if batches > MAX_LINEAGE_BATCHES:
        raise InvalidInput(
            f"the upstream lineage of {min(roots)!r} exceeds {MAX_LINEAGE_BATCHES} batches; "
            "ask for fewer levels with max_depth"
        )
    return list(indices)


async def _engine_rows(conn: AsyncConnection, indices: list[int]) -> list[tuple[int, str, str, bytes]]:
    """What the engine needs of the events at ``indices``: log index, event id, key id and payload."""
    if not indices:
        return []
    if conn.dialect.name == "postgresql":
        driver = await db_driver(conn)
        records = await driver.fetch(
            "SELECT log_index, event_id, key_id, payload FROM events "
            "WHERE log_index = ANY($1::bigint[]) AND kind = ANY($2::text[])",
            indices,
            ENGINE_KINDS,
        )
        return [(r[0], r[1], r[2], r[3]) for r in records]
    found: list[tuple[int, str, str, bytes]] = []
    for start in range(0, len(indices), IN_CHUNK):
        query = sa.select(*ENGINE_COLUMNS).where(
            events_t.c.log_index.in_(indices[start : start + IN_CHUNK]), events_t.c.kind.in_(ENGINE_KINDS)
        )
        found.extend((r[0], r[1], r[2], r[3]) for r in await conn.execute(query))
    return found


class EnvelopeRow(NamedTuple):
    log_index: int
    payload_type: str
    payload: bytes
    signatures: str
    accepted_at: datetime


async def _envelope_rows(conn: AsyncConnection, indices: list[int]) -> dict[int, EnvelopeRow]:
    """What a bundle needs of the events at ``indices`` to rebuild their envelopes, and when each was accepted."""
    if conn.dialect.name == "postgresql":
        driver = await db_driver(conn)
        records = await driver.fetch(
            "SELECT log_index, payload_type, payload, signatures, accepted_at FROM events "
            "WHERE log_index = ANY($1::bigint[])",
            indices,
        )
        return {record[0]: EnvelopeRow(*record) for record in records}
    rows: dict[int, EnvelopeRow] = {}
    for start in range(0, len(indices), IN_CHUNK):
        query = sa.select(*ENVELOPE_COLUMNS).where(
            events_t.c.log_index.in_(indices[start : start + IN_CHUNK])
        )
        for row in await conn.execute(query):
            rows[row.log_index] = EnvelopeRow(*row)
    return rows


def _facility_of(event: ev.Event) -> str | None:
    """Where a custody event handled its material (a transfer: where it was sent)."""
    if isinstance(event, ev.Extract | ev.Receive | ev.Transform):
        return event.facility
    if isinstance(event, ev.Transfer):
        return event.to_facility
    return None


def _relevant(
    event: ev.Event, involved: set[str], facilities: set[str], attestations: set[str], profile: Profile | None
) -> bool:
    match event:
        case ev.OwnerRegistered() | ev.StakeRecorded() | ev.ExchangeRatesPublished():
            return True
        case ev.ProfilePublished(profile=document):
            return (
                profile is not None
                and document.get("id") == profile.id
                and document.get("version") == profile.version
            )
        case ev.CustodyModelDeclared(facility=f):
            return f in facilities
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
