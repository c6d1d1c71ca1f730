"""The eligibility engine: a pure function from (events, profile, determination date) to a determination.

The same function runs on the server (over events read from the database) and in ``ledger verify bundle`` (over
the envelopes in a proof bundle): one implementation, two callers. The rules are written out for people, with worked
examples, in ``docs/eligibility.md``; each rule is one small function here.

Model. Every batch is a mixture of *sources*: extracted lots and recycled lots. The tracer follows each source
through transfers, transforms, splits, merges and blends as *paths*: a path is the part of a source that took one
history (which ESG gates it passed, whether it kept its origin through transit, how much value its mineral
processing added and where). A batch holds, per path, the exact fraction of the source it contains and the grams
of the batch that come from it. At the end each path qualifies or not under the profile's origin rule, and the
share is qualifying traced value (or mass) over the traced value (or mass) of the batch's critical minerals.
Nothing is rounded: fractions throughout, rounding only for display.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from typing import Any, Literal, NamedTuple, get_args

import msgspec
from gmpy2 import mpq

from ledger.domain import events as ev
from ledger.errors import InvalidInput, NotFound
from ledger.rules.facts import (
    ONE,
    ZERO,
    AttestationGate,
    Converter,
    FacilityFacts,
    Facts,
    LoggedEvent,
    MissingValue,
    OwnershipGraph,
    ParticipantFacts,
    collect_facts,
    describe_requirement,
    exact_decimal,
)
from ledger.rules.profiles import Profile, RecycledMinimum

__all__ = [
    "Determination",
    "LoggedEvent",
    "Reason",
    "determination_document",
    "determine",
    "exact_decimal",
    "percent_display",
    "recycled_content",
    "site_credits",
    "summarise",
]

Activity = Literal["extraction", "processing", "recycling", "component_manufacturing", "handling"]
ACTIVITIES: tuple[Activity, ...] = get_args(Activity)


# --- output ------------------------------------------------------------------------------------------------


class Reason(msgspec.Struct, omit_defaults=True):
    code: str
    outcome: Literal["pass", "fail", "info"]
    message: str
    event_id: str | None = None
    batch: str | None = None
    facility: str | None = None
    participant: str | None = None


class ThresholdView(msgspec.Struct):
    share: str
    in_force_from: str
    determining_event: str
    determining_date: str
    why: str


class SourceView(msgspec.Struct):
    batch: str
    kind: Literal["extraction", "recycling"]
    event_id: str
    facility: str
    country: str
    mineral: str
    critical: bool
    """Whether the profile counts this mineral; only critical minerals enter the share."""
    mass_g: int
    """The source's declared mass."""
    value: dict[str, Any] | None
    """The source's declared value (amount and currency), where declared."""
    traced_fraction: str
    """Exact fraction of the source that this batch contains."""
    traced_mass_g: str
    """Grams of this batch that come from the source."""
    traced_value: str | None
    """The source's declared value times the traced fraction, in ``currency``."""
    currency: str
    qualifying_fraction: str
    """Exact fraction of the traced part that qualifies."""
    rule: str
    """The rule that decided (e.g. extracted-in-member, processed-in-members, not-originating)."""
    why: list[str]
    contribution: str
    """Exact share of the batch's mass that comes from this source (first release's field, kept)."""
    contribution_g: str


class Verdict(msgspec.Struct):
    """What every answer states: the verdict and the share against its threshold."""

    batch: str
    profile: dict[str, Any]
    at: str
    verdict: Literal["eligible", "not_eligible", "not_applicable"]
    share_basis: str
    origin_rule: str
    qualifying_share: str
    """Exact: a terminating decimal when there is one, otherwise the fraction ``n/d``."""
    qualifying_share_fraction: str
    qualifying_share_percent: str
    """For display only: truncated (never rounded up) to two decimals."""
    qualifying_total: str
    """Qualifying traced value (in ``unit``) or mass (grams)."""
    total: str
    unit: str
    threshold: ThresholdView | None
    mass_g: int
    foreign_entity_of_concern: bool
    events_considered: int


class Determination(Verdict):
    """The engine's full answer: every reason and every source."""

    reasons: list[Reason]
    sources: list[SourceView]


class SourceTotal(msgspec.Struct):
    """Sources grouped by the rule that decided them, their kind, country and mineral."""

    rule: str
    kind: str
    country: str
    mineral: str
    sources: int
    traced_mass_g: str
    qualifying_mass_g: str
    traced_value: str | None
    """None when any source of the group has no traced value (not critical, mass basis, or not the caller's to
    see)."""
    qualifying_value: str | None


class DeterminationSummary(Verdict):
    """What a person needs first: the verdict, the share against its threshold, the reasons that decided, and
    the sources in groups. ``detail=full`` gives every reason and every source."""

    deciding_reasons: list[Reason]
    """Every failing reason (at most MAX_DECIDING), and the reason that compares the share with the threshold."""
    reason_counts: dict[str, int]
    source_totals: list[SourceTotal]
    sources: int
    reasons: int
    detail: str = "summary: ask with detail=full for every reason and every source"


MAX_DECIDING = 100
DECIDING_CODES = frozenset(
    {"share-meets-threshold", "share-below-threshold", "no-threshold-in-force", "no-critical-mineral"}
)


def summarise(determination: Determination) -> DeterminationSummary:
    """The summary of a full determination (pure: the same numbers, grouped)."""
    deciding = [r for r in determination.reasons if r.outcome == "fail" or r.code in DECIDING_CODES]
    counts: dict[str, int] = {}
    for reason in determination.reasons:
        counts[reason.code] = counts.get(reason.code, 0) + 1
    groups: dict[tuple[str, str, str, str], list[SourceView]] = {}
    for source in determination.sources:
        groups.setdefault((source.rule, source.kind, source.country, source.mineral), []).append(source)
    totals = []
    for (rule, kind, country, mineral), members in sorted(groups.items()):
        mass, good_mass, value, good_value = _ExactSum(), _ExactSum(), _ExactSum(), _ExactSum()
        for m in members:
            grams, good = _exact(m.traced_mass_g), _exact(m.qualifying_fraction)
            mass.add(grams)
            good_mass.add(_times(grams, good))
            if m.traced_value is not None:
                traced = _exact(m.traced_value)
                value.add(traced)
                good_value.add(_times(traced, good))
        valued = all(m.traced_value is not None for m in members)
        totals.append(
            SourceTotal(
                rule=rule,
                kind=kind,
                country=country,
                mineral=mineral,
                sources=len(members),
                traced_mass_g=exact_decimal(mass.total()),
                qualifying_mass_g=exact_decimal(good_mass.total()),
                traced_value=exact_decimal(value.total()) if valued else None,
                qualifying_value=exact_decimal(good_value.total()) if valued else None,
            )
        )
    fields = {name: getattr(determination, name) for name in Verdict.__struct_fields__}
    return DeterminationSummary(
        **fields,
        deciding_reasons=deciding[:MAX_DECIDING],
        reason_counts=counts,
        source_totals=totals,
        sources=len(determination.sources),
        reasons=len(determination.reasons),
    )


def _exact(text: str) -> tuple[int, int]:
    """The numerator and denominator (not reduced) of an exact figure as :func:`exact_decimal` writes it: ``n/d``
    or a decimal. The same value as ``ev.parse_share(text)``, without building a Fraction per figure."""
    if "/" in text:
        numerator, denominator = text.split("/")
        return int(numerator), int(denominator)
    whole, _, decimals = text.partition(".")
    return int(whole + decimals), 10 ** len(decimals)


def _times(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return a[0] * b[0], a[1] * b[1]


class _ExactSum:
    """An exact sum of many fractions: numerators are added per denominator (integer additions), and the few
    distinct denominators are combined once at the end, instead of reducing a Fraction at every step."""

    def __init__(self) -> None:
        self.by_denominator: dict[int, int] = {}

    def add(self, term: tuple[int, int]) -> None:
        numerator, denominator = term
        self.by_denominator[denominator] = self.by_denominator.get(denominator, 0) + numerator

    def total(self) -> mpq:
        return sum((mpq(n, d) for d, n in self.by_denominator.items()), ZERO)


def percent_display(value: Fraction | mpq) -> str:
    truncated = Decimal(int(value.numerator) * 100) / Decimal(int(value.denominator))
    return str(truncated.quantize(Decimal("0.01"), rounding=ROUND_DOWN))


def determination_document(determination: Determination) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(determination)
    return document


# --- sources and paths -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """An extracted or recycled lot: where every batch's material starts."""

    index: int
    batch: str
    kind: Literal["extraction", "recycling"]
    logged: LoggedEvent
    facility: FacilityFacts
    mineral: str
    mass_g: int
    value: ev.Money | None
    origin: bool
    """Extracted in a member, or recycled where the profile counts recycling."""
    why: str


class Path(NamedTuple):
    """One history of part of a source. Equal histories add up, so a batch holds one entry per distinct path.
    (A named tuple: paths are dictionary keys, and a tuple's hash is computed in C.)"""

    source: int
    esg: bool = True
    """Every ESG gate on the way passed."""
    kept: bool = True
    """Origin kept through every third-country transit (a failed leg clears origin and value added so far)."""
    va_total: mpq = ZERO
    """Value added by mineral processing on this path, per unit of the source (base currency)."""
    va_member: mpq = ZERO
    last_member: bool | None = None
    """For last-substantial-transformation: origin of the last conferring step (extraction sets it first)."""
    claimed: bool | None = None
    """At a mass-balance credit site: whether credits were claimed for this part (None: not such a site)."""


Content = dict[Path, tuple[mpq, mpq]]
"""Path -> (fraction of the source, grams of the batch)."""


def _scaled(content: Content, amount: mpq, mass: mpq) -> Content:
    if amount == 1 and mass == 1:
        return dict(content)
    return {p: (a * amount, m * mass) for p, (a, m) in content.items()}


def _add(content: Content, path: Path, amount: mpq, mass: mpq) -> None:
    found = content.get(path)
    content[path] = (amount, mass) if found is None else (found[0] + amount, found[1] + mass)


def _pool(contents: Iterable[Content]) -> Content:
    pooled: Content = {}
    for content in contents:
        for path, value in content.items():
            found = pooled.get(path)
            pooled[path] = value if found is None else (found[0] + value[0], found[1] + value[1])
    return pooled


@dataclass(slots=True)
class Lot:
    """A batch while the tracer walks the log."""

    node: int
    mass_g: int
    content: Content
    facility: str | None
    route: list[ev.RouteLeg] = field(default_factory=list)

    def take(self, grams: int) -> Content:
        """Remove ``grams`` from the lot, pro rata over its paths, and return what was removed. A lot used up
        keeps its last composition, so that a determination of a consumed batch describes it as it was."""
        if self.mass_g <= 0:
            return {}
        if grams == self.mass_g:
            self.mass_g = 0
            return self.content
        share = mpq(grams, self.mass_g)
        taken = _scaled(self.content, share, share)
        if grams < self.mass_g:
            self.content = _scaled(self.content, 1 - share, 1 - share)
        self.mass_g -= grams
        return taken


@dataclass(slots=True)
class Node:
    """An event's effect on one batch: who did what where, and which earlier nodes its material came from."""

    logged: LoggedEvent
    batch: str
    actor: str
    facility: str | None
    activity: Activity
    parents: tuple[int, ...]
    reasons: list[Reason]


# --- the tracer --------------------------------------------------------------------------------------------


class Tracer:
    """Walks the log in order and keeps every batch's content; one method per event kind."""

    def __init__(self, profile: Profile, facts: Facts, determining_day: date) -> None:
        self.profile = profile
        self.facts = facts
        self.day = determining_day
        self.esg = AttestationGate(profile.attestations, facts)
        self.money = Converter(profile, facts)
        self.value_added_share = mpq(profile.value_added_share)
        """The profile's share as a GMP rational: compared once per path, never converted again."""
        self.sources: list[Source] = []
        self.nodes: list[Node] = []
        self.lots: dict[str, Lot] = {}
        self.credits: list[tuple[LoggedEvent, str, mpq]] = []
        """(event, consumed batch, qualifying grams x conversion factor) at every credit-method site input."""
        self.credit_site: tuple[str, date, date] | None = None

    # helpers

    def node(
        self,
        logged: LoggedEvent,
        batch: str,
        activity: Activity,
        parents: Sequence[int],
        facility: str | None = None,
        reasons: list[Reason] | None = None,
    ) -> int:
        self.nodes.append(
            Node(logged, batch, logged.event.actor, facility, activity, tuple(parents), reasons or [])
        )
        return len(self.nodes) - 1

    def facility(self, facility_id: str, logged: LoggedEvent) -> FacilityFacts:
        found = self.facts.facilities.get(facility_id)
        if found is None:
            raise InvalidInput(
                f"event {logged.event_id} names facility {facility_id!r}, which the evidence does not register"
            )
        return found

    def lot(self, batch: str, logged: LoggedEvent) -> Lot:
        found = self.lots.get(batch)
        if found is None:
            raise InvalidInput(
                f"event {logged.event_id} uses batch {batch!r}, whose earlier events are missing from the evidence"
            )
        return found

    def value_day(self, logged: LoggedEvent) -> date:
        return logged.local_date if self.profile.currency.rate_date == "event" else self.day

    def gate(
        self, activity: str, facility: FacilityFacts, minerals: frozenset[str], logged: LoggedEvent
    ) -> tuple[bool, list[Reason]]:
        """The profile's ESG gate for ``activity`` at ``facility`` on the event's local date."""
        ok, reasons = True, []
        for requirement in self.esg.applicable(activity, facility):
            found = self.esg.find(requirement, facility, minerals, logged.local_date)
            day = logged.local_date.isoformat()
            if found is None:
                ok = False
                reasons.append(
                    Reason(
                        "attestation-missing",
                        "fail",
                        f"{facility.kind} {facility.id} had no valid {describe_requirement(requirement)} attestation "
                        f"covering {', '.join(sorted(minerals))} {activity} on {day}, the local date of event "
                        f"{logged.event_id} ({requirement.name}): material handled there does not qualify",
                        event_id=logged.event_id,
                        facility=facility.id,
                    )
                )
            else:
                reasons.append(
                    Reason(
                        "attestation-valid",
                        "pass",
                        f"{facility.kind} {facility.id} held attestation {found.id} ({found.info.standard} "
                        f"{found.info.level}, valid {found.info.valid_from} to {found.info.valid_to}) on {day} "
                        f"for event {logged.event_id}",
                        event_id=logged.event_id,
                        facility=facility.id,
                    )
                )
        return ok, reasons

    def new_source(
        self,
        logged: LoggedEvent,
        kind: Literal["extraction", "recycling"],
        facility: FacilityFacts,
        batch: str,
        mineral: str,
        mass_g: int,
        value: ev.Money | None,
    ) -> None:
        """Extraction and recycling start sources (docs/eligibility.md section 2)."""
        activity: Activity = "extraction" if kind == "extraction" else "recycling"
        esg_ok, reasons = self.gate(activity, facility, frozenset({mineral}), logged)
        if kind == "extraction":
            origin = facility.country in self.profile.member_set
            code = "extracted-in-member" if origin else "extracted-outside-members"
            why = f"extracted at {facility.id} in {facility.country}, " + (
                "a member country" if origin else f"which is not a member of {self.profile.id}"
            )
        else:
            origin = facility.country in self.profile.recycling_set
            code = "recycled-where-counts" if origin else "recycled-where-not-counted"
            why = f"recycled at {facility.id} in {facility.country}: " + (
                "recycling there counts as origin"
                if origin
                else f"{self.profile.id} counts recycling only in {', '.join(self.profile.recycling_members) or 'no country'}"
            )
        reasons.append(
            Reason(
                code,
                "pass" if origin else "info",
                f"source {batch} was {why}",
                logged.event_id,
                batch,
                facility.id,
            )
        )
        index = len(self.sources)
        self.sources.append(Source(index, batch, kind, logged, facility, mineral, mass_g, value, origin, why))
        path = Path(index, esg=esg_ok, last_member=origin, claimed=self.claim_state(facility.id, logged))
        node = self.node(logged, batch, activity, (), facility=facility.id, reasons=reasons)
        self.lots[batch] = Lot(node, mass_g, {path: (ONE, mpq(mass_g))}, facility.id)

    def claim_state(self, facility_id: str, logged: LoggedEvent) -> bool | None:
        model = self.facts.custody_model(facility_id, logged.local_date)
        return False if model is not None and model.model == "mass_balance_credit" else None

    # custody events

    def extract(self, logged: LoggedEvent, event: ev.Extract) -> None:
        facility = self.facility(event.facility, logged)
        new = event.batch
        self.new_source(logged, "extraction", facility, new.id, new.mineral, new.mass_g, new.value)

    def recycle(self, logged: LoggedEvent, event: ev.Recycle | ev.Transform) -> None:
        """A recycling ends the traced material it consumes (feedstock) and starts a new source per output. A
        transform with process ``recycling`` is the first release's form of the same step."""
        facility = self.facility(event.facility, logged)
        for item in event.inputs:
            self.lot(item.batch, logged).take(item.mass_g)
        for output in event.outputs:
            self.new_source(
                logged, "recycling", facility, output.id, output.mineral, output.mass_g, output.value
            )

    def transfer(self, logged: LoggedEvent, event: ev.Transfer) -> None:
        lot = self.lot(event.batch, logged)
        lot.route = list(event.route)
        lot.node = self.node(logged, event.batch, "handling", (lot.node,), reasons=[])

    def receive(self, logged: LoggedEvent, event: ev.Receive) -> None:
        lot = self.lot(event.batch, logged)
        destination = self.facility(event.facility, logged)
        reasons = self.judge_transit(logged, event.batch, lot, destination)
        if lot.mass_g and event.mass_g != lot.mass_g:  # loss in transit: the lost part carries its share away
            share = mpq(event.mass_g, lot.mass_g)
            lot.content = _scaled(lot.content, share, share)
        lot.mass_g, lot.facility, lot.route = event.mass_g, destination.id, []
        lot.node = self.node(
            logged, event.batch, "handling", (lot.node,), facility=destination.id, reasons=reasons
        )

    def judge_transit(
        self, logged: LoggedEvent, batch: str, lot: Lot, destination: FacilityFacts
    ) -> list[Reason]:
        """docs/eligibility.md section 10: the countries a shipment starts and ends in are not transit; a leg through a third
        country (not a member) keeps origin only under customs control, not released into free circulation, and
        with only the operations the profile allows. A profile without a transit rule ignores the route."""
        rule = self.profile.transit
        if rule is None or not lot.route:
            return []
        start = self.facts.facilities[lot.facility].country if lot.facility in self.facts.facilities else None
        ends = {start, destination.country}
        failures: list[str] = []
        passed: list[str] = []
        for leg in lot.route:
            if leg.country in ends or leg.country in self.profile.member_set:
                continue
            wrong = [op for op in leg.operations if op not in rule.allowed_operations]
            problems = []
            if rule.requires_customs_control and not leg.customs_control:
                problems.append("without customs control")
            if leg.released_for_free_circulation:
                problems.append("released into free circulation there")
            if wrong:
                problems.append(f"with {', '.join(wrong)}, which the transit rule does not allow")
            (failures if problems else passed).append(
                f"{leg.country} ({'; '.join(problems) or 'under customs control'})"
            )
        if failures:
            lot.content = _pool(
                {p._replace(kept=False, va_total=ZERO, va_member=ZERO, last_member=False): v}
                for p, v in lot.content.items()
            )
            return [
                Reason(
                    "transit-origin-lost",
                    "fail",
                    f"batch {batch} crossed {', '.join(failures)}, a third country: its material lost the origin it "
                    "had (only later mineral processing can confer one again)",
                    logged.event_id,
                    batch,
                )
            ]
        if passed:
            return [
                Reason(
                    "transit-origin-kept",
                    "pass",
                    f"batch {batch} crossed {', '.join(passed)} as allowed by the transit rule: origin kept",
                    logged.event_id,
                    batch,
                )
            ]
        return []

    def transform(self, logged: LoggedEvent, event: ev.Transform) -> None:
        if event.process == "recycling":
            self.recycle(logged, event)
            return
        facility = self.facility(event.facility, logged)
        klass = self.profile.process_class.get(event.process)
        if klass is None:
            raise InvalidInput(f"profile {self.profile.id} does not class process {event.process!r}")
        parents = tuple(self.lot(item.batch, logged).node for item in event.inputs)
        consumed_lots = [(item.batch, self.lot(item.batch, logged), item.mass_g) for item in event.inputs]
        self.note_credits(logged, facility, event.process, consumed_lots)
        pooled = _pool(lot.take(grams) for _, lot, grams in consumed_lots)
        consumed = sum(item.mass_g for item in event.inputs)
        reasons: list[Reason] = []
        site_esg = True
        if klass == "mineral_processing":
            minerals = frozenset(o.mineral for o in event.outputs)
            esg_ok, reasons = self.gate("processing", facility, minerals, logged)
            site_esg = esg_ok
            pooled = self.process(logged, facility, pooled, consumed, esg_ok, reasons)
            activity: Activity = "processing"
        else:
            reasons.append(
                Reason(
                    "assembly-confers-no-origin",
                    "info",
                    f"{event.process} at {facility.id} in {facility.country} is component manufacturing or assembly "
                    f"under {self.profile.id}: it confers no origin; the product's share is traced source by source",
                    logged.event_id,
                    facility=facility.id,
                )
            )
            activity = "component_manufacturing"
        produced = sum(o.mass_g for o in event.outputs)
        claimed = self.claim_state(facility.id, logged)
        for output in event.outputs:
            content = _scaled(pooled, mpq(output.mass_g, produced), mpq(output.mass_g, consumed))
            if claimed is not None:  # a credit site's output: the site's own gate and later handling decide
                content = _pool(
                    {p._replace(claimed=False, kept=True, esg=site_esg): v} for p, v in content.items()
                )
            node = self.node(logged, output.id, activity, parents, facility=facility.id, reasons=reasons)
            self.lots[output.id] = Lot(node, output.mass_g, content, facility.id)
            reasons = []  # reported once per event

    def process(
        self,
        logged: LoggedEvent,
        facility: FacilityFacts,
        pooled: Content,
        consumed: int,
        esg_ok: bool,
        reasons: list[Reason],
    ) -> Content:
        """A mineral-processing step: its value added is shared among the paths pro rata by consumed mass, kept per
        source (never pooled into one test); a member step can confer origin under last-substantial-transformation,
        a non-member step removes it."""
        event = logged.event
        assert isinstance(event, ev.Transform)
        added = self.money.convert(event.value_added, self.value_day(logged))
        member = facility.country in self.profile.member_set
        reasons.append(
            Reason(
                "processed-in-member" if member else "processed-outside-members",
                "info",
                f"{event.process} at {facility.id} in {facility.country} ("
                + ("a member" if member else "not a member")
                + ") added value to the material it refined (the amount is the processor's declared value)",
                logged.event_id,
                facility=facility.id,
            )
        )
        result: Content = {}
        for path, (amount, mass) in pooled.items():
            share = added * mass / consumed / amount if amount else ZERO
            va_total = path.va_total + share
            va_member = path.va_member + (share if member else ZERO)
            last = path.last_member
            if not member:
                last = False
            elif va_total and va_member / va_total >= self.value_added_share:
                last = True
            updated = Path(
                path.source, path.esg and esg_ok, path.kept, va_total, va_member, last, path.claimed
            )
            _add(result, updated, amount, mass)
        return result

    def split(self, logged: LoggedEvent, event: ev.Split) -> None:
        lot = self.lot(event.batch, logged)
        whole = lot.mass_g
        content = lot.content
        for part in event.outputs:
            share = mpq(part.mass_g, whole) if whole else ZERO
            node = self.node(logged, part.id, "handling", (lot.node,), facility=lot.facility, reasons=[])
            self.lots[part.id] = Lot(node, part.mass_g, _scaled(content, share, share), lot.facility)
        lot.mass_g = 0  # used up: keeps its last composition (see Lot.take)

    def merge(self, logged: LoggedEvent, event: ev.Merge) -> None:
        lots = [self.lot(item.batch, logged) for item in event.inputs]
        node = self.node(
            logged,
            event.output,
            "handling",
            [lot.node for lot in lots],
            facility=lots[0].facility,
            reasons=[],
        )
        content = _pool(lot.content for lot in lots)
        self.lots[event.output] = Lot(node, sum(lot.mass_g for lot in lots), content, lots[0].facility)
        for lot in lots:
            lot.mass_g = 0  # used up: keeps its last composition (see Lot.take)

    def claim(self, logged: LoggedEvent, event: ev.Claim) -> None:
        """ISO 22095 credit method: a claim under this profile makes that many grams of the output qualify."""
        lot = self.lot(event.batch, logged)
        if event.profile != self.profile.id:
            return
        unclaimed = sum((m for p, (_, m) in lot.content.items() if p.claimed is False), ZERO)
        if not unclaimed:
            return
        share = min(ONE, mpq(event.mass_g) / unclaimed)
        moved: list[Content] = []
        for path, (amount, mass) in lot.content.items():
            if path.claimed is False:
                moved.append({path._replace(claimed=True): (amount * share, mass * share)})
                moved.append({path: (amount * (1 - share), mass * (1 - share))})
            else:
                moved.append({path: (amount, mass)})
        lot.content = _pool(moved)
        reason = Reason(
            "mass-balance-claim",
            "pass",
            f"{event.actor} allocated {event.mass_g} g of {event.period} credits at {event.facility} to batch "
            f"{event.batch} under {event.profile} (credit method)",
            logged.event_id,
            event.batch,
            event.facility,
        )
        lot.node = self.node(
            logged, event.batch, "handling", (lot.node,), facility=event.facility, reasons=[reason]
        )

    def note_credits(
        self, logged: LoggedEvent, facility: FacilityFacts, process: str, inputs: list[tuple[str, Lot, int]]
    ) -> None:
        """When asked for a site's credits: qualifying input mass times the conversion factor, per input."""
        if self.credit_site is None or facility.id != self.credit_site[0]:
            return
        if not self.credit_site[1] <= logged.local_date <= self.credit_site[2]:
            return
        model = self.facts.custody_model(facility.id, logged.local_date)
        factor = model.conversion_factors.get(process, ONE) if model else ONE
        for batch, lot, grams in inputs:
            share = qualifying_mass_share(self, lot, logged.local_date)
            self.credits.append((logged, batch, share * grams * factor))

    def run(self, ordered: Sequence[LoggedEvent], until: date) -> int:
        considered = 0
        handlers: dict[type, Any] = {
            ev.Extract: self.extract,
            ev.Recycle: self.recycle,
            ev.Transfer: self.transfer,
            ev.Receive: self.receive,
            ev.Transform: self.transform,
            ev.Split: self.split,
            ev.Merge: self.merge,
            ev.Claim: self.claim,
        }
        for logged in ordered:
            handler = handlers.get(type(logged.event))
            if handler is None or logged.local_date > until:
                continue
            considered += 1
            handler(logged, logged.event)
        return considered


# --- qualification -----------------------------------------------------------------------------------------


def qualifies(path: Path, source: Source, profile: Profile, day: date) -> tuple[bool, str]:
    """Whether one path of a source qualifies under the profile's origin rule, and the rule that decided."""
    if not path.esg:
        return False, "esg-gate-failed"
    if (
        path.claimed is not None
    ):  # origin comes from the site's credits; a later failed transit still removes it
        good = path.claimed and path.kept
        return good, "mass-balance-claimed" if good else "mass-balance-unclaimed"
    if profile.origin_rule == "last_substantial_transformation":
        return bool(
            path.last_member
        ), "last-transformation-in-member" if path.last_member else "last-transformation-outside"
    return qualifies_extracted_or_processed(path, source, profile, day)


def qualifies_extracted_or_processed(
    path: Path, source: Source, profile: Profile, day: date
) -> tuple[bool, str]:
    """docs/eligibility.md section 4, ``extracted_or_processed``: extracted in a member, or processed in
    members (enough of the value its own mineral processing added arose in members), or recycled where the
    profile counts recycling. Later handling outside the members does not take that away; a failed transit does."""
    if source.origin and path.kept:
        return True, "extracted-in-member" if source.kind == "extraction" else "recycled-where-counts"
    if path.va_total and profile.value_added_applies(day):
        if path.va_member / path.va_total >= profile.value_added_share:
            return True, "processed-in-members"
        return False, "value-added-test-failed"
    if path.va_total:
        return False, "value-added-test-expired"
    return False, "not-originating"


def qualifying_mass_share(tracer: Tracer, lot: Lot, day: date) -> mpq:
    """The share of a lot's mass (critical minerals and others alike) whose paths qualify on ``day``."""
    total = sum((m for _, m in lot.content.values()), ZERO)
    if not total:
        return ZERO
    good = sum(
        (
            m
            for p, (_, m) in lot.content.items()
            if qualifies(p, tracer.sources[p.source], tracer.profile, day)[0]
        ),
        ZERO,
    )
    return good / total


# --- determine ----------------------------------------------------------------------------------------------


def _touches(event: ev.Event, batch_id: str) -> bool:
    match event:
        case ev.Extract(batch=new):
            return new.id == batch_id
        case ev.Transfer(batch=b) | ev.Receive(batch=b) | ev.Claim(batch=b):
            return b == batch_id
        case ev.Transform(inputs=inputs, outputs=outputs) | ev.Recycle(inputs=inputs, outputs=outputs):
            return any(i.batch == batch_id for i in inputs) or any(o.id == batch_id for o in outputs)
        case ev.Split(batch=b, outputs=parts):
            return b == batch_id or any(p.id == batch_id for p in parts)
        case ev.Merge(inputs=inputs, output=out):
            return out == batch_id or any(i.batch == batch_id for i in inputs)
    return False


def determining_event(ordered: Sequence[LoggedEvent], batch_id: str, at: date) -> LoggedEvent:
    """docs/eligibility.md section 7: the last custody event on the batch whose local date is on or before ``at``."""
    for logged in reversed(ordered):  # the last one in log order is the first one from the end
        if (
            ev.kind_of(logged.event) in ev.CUSTODY_KINDS
            and logged.local_date <= at
            and _touches(logged.event, batch_id)
        ):
            return logged
    raise NotFound(f"batch {batch_id!r} has no events on or before {at.isoformat()} in the evidence")


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one run of the engine. A run allocates an object or more per
    event (paths, nodes, reasons, views), so the collector would walk the growing heap again and again (about a
    third of a large determination's time); what the run leaves behind is freed by reference counting anyway,
    and the collector resumes afterwards."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def determine(events: Sequence[LoggedEvent], batch_id: str, profile: Profile, at: date) -> Determination:
    """Decide whether ``batch_id`` qualifies under ``profile``, considering events up to local date ``at``."""
    with collector_paused():
        return _determine(events, batch_id, profile, at)


def _determine(events: Sequence[LoggedEvent], batch_id: str, profile: Profile, at: date) -> Determination:
    ordered = sorted(events, key=lambda item: item.log_index)
    determining = determining_event(ordered, batch_id, at)
    facts = collect_facts(ordered)
    tracer = Tracer(profile, facts, determining.local_date)
    considered = tracer.run(ordered, at)
    lot = tracer.lots.get(batch_id)
    if lot is None:
        raise NotFound(f"batch {batch_id!r} has no events on or before {at.isoformat()} in the evidence")
    return conclude(tracer, lot, batch_id, determining, at, considered)


@dataclass(slots=True)
class Tally:
    """Per source: traced fraction, grams, value, and what of it qualifies."""

    amount: mpq = ZERO
    mass: mpq = ZERO
    value: mpq = ZERO
    good_amount: mpq = ZERO
    good_mass: mpq = ZERO
    good_value: mpq = ZERO
    value_added: mpq = ZERO
    """Value added by mineral processing to the traced part, base currency; ``value_added_member`` in members."""
    value_added_member: mpq = ZERO
    rules: set[str] = field(default_factory=set)


def tally(tracer: Tracer, lot: Lot, day: date) -> dict[int, Tally]:
    """Sum the lot's paths per source, with each source's declared value traced pro rata."""
    profile = tracer.profile
    by_value, critical = profile.share_basis == "value", profile.critical_set
    by_source: dict[int, Tally] = {}
    for path, (amount, mass) in lot.content.items():
        if not amount and not mass:
            continue
        source = tracer.sources[path.source]
        entry = by_source.get(path.source)
        if entry is None:
            entry = by_source[path.source] = Tally()
        value = ZERO
        if by_value and source.mineral in critical:
            if source.value is None:
                raise MissingValue(
                    f"source {source.batch} ({source.kind} at {source.facility.id}, event {source.logged.event_id}) "
                    f"declares no value, and profile {profile.id} weighs sources by value; the "
                    f"{'miner' if source.kind == 'extraction' else 'recycler'} must declare it"
                )
            value = tracer.money.convert(source.value, tracer.value_day(source.logged)) * amount
        good, rule = qualifies(path, source, profile, day)
        entry.amount += amount
        entry.mass += mass
        entry.value += value
        entry.value_added += path.va_total * amount
        entry.value_added_member += path.va_member * amount
        entry.rules.add(rule)
        if good:
            entry.good_amount += amount
            entry.good_mass += mass
            entry.good_value += value
    return by_source


def contributing_nodes(tracer: Tracer, lot: Lot) -> list[int]:
    """Every node whose material reaches the lot, in log order."""
    seen = {lot.node}
    stack = [lot.node]
    while stack:
        for parent in tracer.nodes[stack.pop()].parents:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return sorted(seen)


def conclude(
    tracer: Tracer, lot: Lot, batch_id: str, determining: LoggedEvent, at: date, considered: int
) -> Determination:
    profile, day = tracer.profile, determining.local_date
    sources = tally(tracer, lot, day)
    critical = {i: t for i, t in sources.items() if tracer.sources[i].mineral in profile.critical_set}
    by_value = profile.share_basis == "value"
    total = sum(((t.value if by_value else t.mass) for t in critical.values()), ZERO)
    good = sum(((t.good_value if by_value else t.good_mass) for t in critical.values()), ZERO)
    if critical and not total:
        raise MissingValue(
            f"the critical minerals in batch {batch_id} have a traced {profile.share_basis} of 0, so no share can "
            "be computed; a source must declare a value above 0"
        )
    share = good / total if total else ZERO
    contributing = contributing_nodes(tracer, lot)
    reasons = _event_reasons(tracer, contributing)
    reasons.extend(_source_reasons(tracer, critical, sources))
    feoc = foreign_entity_findings(tracer, contributing, day, reasons, determining)
    suspect = suspect_events(tracer, contributing)
    reasons.extend(feoc + suspect)
    threshold = profile.threshold_on(day)
    verdict, threshold_view = _verdict(
        tracer, batch_id, share, total, bool(critical), threshold, determining, at, reasons
    )
    if verdict == "eligible" and (feoc or any(r.outcome == "fail" for r in suspect)):
        verdict = "not_eligible"
    unit = profile.currency.base if by_value else "g"
    return Determination(
        batch=batch_id,
        profile=profile.reference(),
        at=at.isoformat(),
        verdict=verdict,
        share_basis=profile.share_basis,
        origin_rule=profile.origin_rule,
        qualifying_share=exact_decimal(share),
        qualifying_share_fraction=f"{share.numerator}/{share.denominator}",
        qualifying_share_percent=percent_display(share),
        qualifying_total=exact_decimal(good),
        total=exact_decimal(total),
        unit=unit,
        threshold=threshold_view,
        mass_g=lot.mass_g,
        foreign_entity_of_concern=bool(feoc),
        reasons=reasons,
        sources=_source_views(tracer, lot, sources),
        events_considered=considered,
    )


def _verdict(
    tracer: Tracer,
    batch_id: str,
    share: mpq,
    total: mpq,
    has_critical: bool,
    threshold: Any,
    determining: LoggedEvent,
    at: date,
    reasons: list[Reason],
) -> tuple[Literal["eligible", "not_eligible", "not_applicable"], ThresholdView | None]:
    """docs/eligibility.md section 7: the local date of the determining event picks the threshold; before the first one,
    or with no critical mineral in the batch, the test does not apply."""
    profile, day = tracer.profile, determining.local_date
    if not has_critical:
        reasons.append(
            Reason(
                "no-critical-mineral",
                "info",
                f"batch {batch_id} contains none of {profile.id}'s critical minerals "
                f"({', '.join(profile.critical_minerals)}): the test does not apply",
                batch=batch_id,
            )
        )
        return "not_applicable", None
    if threshold is None:
        reasons.append(
            Reason(
                "no-threshold-in-force",
                "info",
                f"{profile.id} sets no required share before {profile.thresholds[0].from_}; the determining event "
                f"{determining.event_id} is dated {determining.event.timestamp}, local date {day.isoformat()}",
                event_id=determining.event_id,
            )
        )
        return "not_applicable", None
    required = ev.parse_share(threshold.share)
    met = share >= required
    basis = "traced value" if profile.share_basis == "value" else "traced mass"
    reasons.append(
        Reason(
            "share-meets-threshold" if met else "share-below-threshold",
            "pass" if met else "fail",
            f"qualifying share of {basis} {exact_decimal(share)} ({percent_display(share)} %) "
            + (">=" if met else "<")
            + f" required {threshold.share}",
            batch=batch_id,
        )
    )
    view = ThresholdView(
        share=threshold.share,
        in_force_from=threshold.from_,
        determining_event=determining.event_id,
        determining_date=day.isoformat(),
        why=(
            f"the determining event {determining.event_id} (the last event on {batch_id} on or before "
            f"{at.isoformat()}) is dated {determining.event.timestamp}, local date {day.isoformat()}; "
            f"the share required from {threshold.from_} is {threshold.share}"
        ),
    )
    return ("eligible" if met else "not_eligible"), view


def _event_reasons(tracer: Tracer, contributing: list[int]) -> list[Reason]:
    reasons: list[Reason] = []
    seen: set[tuple[str, str, str | None]] = set()
    for index in contributing:
        for reason in tracer.nodes[index].reasons:
            key = (reason.code, reason.message, reason.event_id)
            if key not in seen:
                seen.add(key)
                reasons.append(reason)
    return reasons


RULE_WORDS = {
    "extracted-in-member": "extracted in a member",
    "recycled-where-counts": "recycled where recycling counts",
    "processed-in-members": "processed in members (value-added test met)",
    "value-added-test-failed": "processed, but members added less than the required share of its processing value",
    "value-added-test-expired": "processed, but the value-added alternative no longer applies",
    "not-originating": "neither extracted nor processed in a member",
    "esg-gate-failed": "an ESG attestation was missing where it was handled",
    "last-transformation-in-member": "its last substantial transformation was in a member",
    "last-transformation-outside": "its last substantial transformation was not in a member",
    "mass-balance-claimed": "credits were claimed for it at a mass-balance site",
    "mass-balance-unclaimed": "made at a mass-balance credit site with no credits claimed for it",
}


def _source_reasons(tracer: Tracer, critical: dict[int, Tally], sources: dict[int, Tally]) -> list[Reason]:
    reasons: list[Reason] = []
    profile = tracer.profile
    for index in sorted(sources):
        source = tracer.sources[index]
        entry = sources[index]
        if index not in critical:
            reasons.append(
                Reason(
                    "not-a-critical-mineral",
                    "info",
                    f"source {source.batch} is {source.mineral}, not a critical mineral under {profile.id}: left out of the share",
                    source.logged.event_id,
                    source.batch,
                )
            )
            continue
        qualified = entry.good_amount == entry.amount
        partly = bool(entry.good_amount) and not qualified
        words = "; ".join(RULE_WORDS[r] for r in sorted(entry.rules))
        if entry.value_added and entry.rules & {
            "processed-in-members",
            "value-added-test-failed",
            "value-added-test-expired",
        }:
            member_share = entry.value_added_member / entry.value_added
            words += (
                f" (members added {exact_decimal(member_share)} of the value its mineral processing added, "
                f"{percent_display(member_share)} %; the profile asks {profile.processing.value_added_share})"
            )
        reasons.append(
            Reason(
                "source-qualifies"
                if qualified
                else "source-partly-qualifies"
                if partly
                else "source-does-not-qualify",
                "pass" if qualified else "info" if partly else "fail",
                f"source {source.batch} ({source.mineral}, {source.kind} at {source.facility.id} in "
                f"{source.facility.country}): {words}",
                source.logged.event_id,
                source.batch,
                source.facility.id,
            )
        )
    return reasons


def _source_views(tracer: Tracer, lot: Lot, sources: dict[int, Tally]) -> list[SourceView]:
    profile = tracer.profile
    lot_mass = sum((m for _, m in lot.content.values()), ZERO)
    views = []
    for index in sorted(sources, key=lambda i: (tracer.sources[i].batch, i)):
        source, entry = tracer.sources[index], sources[index]
        critical = source.mineral in profile.critical_set
        valued = profile.share_basis == "value" and critical
        contribution = entry.mass / lot_mass if lot_mass else ZERO
        rules = sorted(entry.rules)
        grams = exact_decimal(entry.mass)
        if entry.good_amount == entry.amount:  # all or none of it qualifies, as most sources: no division
            qualifying = ONE if entry.amount else ZERO
        else:
            qualifying = entry.good_amount / entry.amount if entry.amount else ZERO
        views.append(
            SourceView(
                batch=source.batch,
                kind=source.kind,
                event_id=source.logged.event_id,
                facility=source.facility.id,
                country=source.facility.country,
                mineral=source.mineral,
                critical=critical,
                mass_g=source.mass_g,
                value={"amount": source.value.amount, "currency": source.value.currency}
                if source.value
                else None,
                traced_fraction=exact_decimal(entry.amount),
                traced_mass_g=grams,
                traced_value=exact_decimal(entry.value) if valued else None,
                currency=profile.currency.base,
                qualifying_fraction=exact_decimal(qualifying),
                rule=rules[0] if len(rules) == 1 else "mixed: " + ", ".join(rules),
                why=[source.why, *(RULE_WORDS[r] for r in rules)],
                contribution=exact_decimal(contribution),
                contribution_g=grams,
            )
        )
    return views


# --- foreign entity of concern, suspect events ---------------------------------------------------------------


def foreign_entity_findings(
    tracer: Tracer, contributing: list[int], day: date, reasons: list[Reason], determining: LoggedEvent
) -> list[Reason]:
    """docs/eligibility.md section 9: a hard fail for the whole batch. A participant that handled the
    material is one if it is incorporated, headquartered or performs the activity in a covered nation, or if a
    covered-nation government holds at least the threshold of its equity, votes or board seats, each tested
    alone, directly or through owners. The rule applies to an activity from its effective date."""
    profile = tracer.profile
    graph = OwnershipGraph(profile, tracer.facts)
    grouped: dict[tuple[str, str], list[LoggedEvent]] = {}
    checked: set[tuple[str, str | None, str]] = set()
    not_in_force: set[str] = set()
    in_force = {activity: profile.foreign_entity_from(activity) <= day for activity in ACTIVITIES}
    # the findings depend only on who acted, where and on which local date: many events share them
    findings: dict[tuple[str, str | None, date], list[str]] = {}
    for index in contributing:
        node = tracer.nodes[index]
        if not in_force[node.activity]:
            not_in_force.add(node.activity)
            continue
        asked = (node.actor, node.facility, node.logged.local_date)
        whats = findings.get(asked)
        if whats is None:
            facility = tracer.facts.facilities.get(node.facility) if node.facility else None
            whats = findings[asked] = _feoc_findings(tracer, graph, node.actor, facility, asked[2])
        if not whats:
            continue
        key = (node.actor, node.facility, node.logged.event_id)
        if key in checked:
            continue
        checked.add(key)
        for what in whats:
            grouped.setdefault((node.actor, what), []).append(node.logged)
    for activity in sorted(not_in_force):
        reasons.append(
            Reason(
                "foreign-entity-rule-not-in-force",
                "info",
                f"the foreign-entity-of-concern rule applies to {activity.replace('_', ' ')} from "
                f"{profile.foreign_entity_from(activity).isoformat()}; the determining event's local date is {day.isoformat()}",
                event_id=determining.event_id,
            )
        )
    found = []
    for (actor, what), handled in sorted(grouped.items()):
        first = min(handled, key=lambda item: item.log_index)
        count = len({item.event_id for item in handled})
        found.append(
            Reason(
                "foreign-entity-of-concern",
                "fail",
                f"participant {actor} {what} when it handled this material ({count} event{'s' if count > 1 else ''}, "
                f"first {first.event_id} on {first.local_date.isoformat()})",
                event_id=first.event_id,
                participant=actor,
            )
        )
    return found


def _feoc_findings(
    tracer: Tracer, graph: OwnershipGraph, actor: str, facility: FacilityFacts | None, day: date
) -> list[str]:
    profile = tracer.profile
    covered = profile.covered_set
    participant = tracer.facts.participants.get(actor)
    found: list[str] = []
    ownership = participant.ownership_on(day) if participant else None
    if ownership is not None:
        if ownership.incorporated_in in covered:
            found.append(f"is incorporated in {ownership.incorporated_in}")
        if ownership.headquartered_in in covered:
            found.append(f"is headquartered in {ownership.headquartered_in}")
    for holding in graph.holdings(actor, day):
        if holding.country in covered and holding.share >= profile.control_threshold:
            found.append(
                f"has {exact_decimal(holding.share)} of its {holding.measure.replace('_', ' ')} held by the government "
                f"of {holding.country} (threshold {profile.foreign_entity.control_threshold}: "
                + "; ".join(holding.chains)
                + ")"
            )
    if facility is not None and facility.country in covered:
        found.append(f"handled the material at {facility.id} in {facility.country}")
    return found


def suspect_events(tracer: Tracer, contributing: list[int]) -> list[Reason]:
    """Events that handled the material, signed with a key at or after its reported compromise: each fails the
    batch unless the signer (with a valid key) or the registrar reaffirmed it (a ``reaffirm`` event)."""
    facts = tracer.facts
    found: list[Reason] = []
    seen: set[str] = set()
    for index in contributing:
        logged = tracer.nodes[index].logged
        since = facts.compromised.get(logged.key_id or "")
        if since is None or logged.event_id in seen:
            continue
        seen.add(logged.event_id)
        if ev.parse_timestamp(logged.event.timestamp) < since:
            continue
        vouchers = facts.reaffirmed.get(logged.event_id, set())
        registrars = {
            p
            for p in vouchers
            if "registrar" in facts.participants.get(p, ParticipantFacts(p, frozenset(), "")).roles
        }
        actor = logged.event.actor
        if actor in vouchers or registrars:
            found.append(
                Reason(
                    "suspect-event-reaffirmed",
                    "info",
                    f"event {logged.event_id} was signed with key {logged.key_id} after its reported compromise "
                    f"({since.isoformat()}) but was reaffirmed by {', '.join(sorted(vouchers))}",
                    event_id=logged.event_id,
                    participant=actor,
                )
            )
        else:
            found.append(
                Reason(
                    "suspect-event",
                    "fail",
                    f"event {logged.event_id} by {actor} was signed with key {logged.key_id} at or after its reported "
                    f"compromise ({since.isoformat()}); it counts only once {actor} or the registrar reaffirms it",
                    event_id=logged.event_id,
                    participant=actor,
                )
            )
    return found


# --- recycled content and mass-balance credits ----------------------------------------------------------------


class MineralContent(msgspec.Struct):
    mineral: str
    mass_g: str
    recycled_g: str
    recycled_share: str
    recycled_share_percent: str
    minimum: str | None
    minimum_from: str | None
    meets_minimum: bool | None


class RecycledContent(msgspec.Struct):
    batch: str
    profile: dict[str, Any]
    at: str
    minerals: list[MineralContent]
    all_minimums_met: bool | None
    """None when no minimum is in force for any mineral in the batch."""


def recycled_content(
    events: Sequence[LoggedEvent], batch_id: str, profile: Profile, at: date
) -> RecycledContent:
    """The recycled share of each mineral in the batch, by mass (grams of the batch traced to recycled sources
    over grams traced to all sources of that mineral), against the profile's minimums in force on ``at``."""
    ordered = sorted(events, key=lambda item: item.log_index)
    determining = determining_event(ordered, batch_id, at)
    day = determining.local_date  # as for thresholds: the determining event's local date picks the minimums
    tracer = Tracer(profile, collect_facts(ordered), day)
    tracer.run(ordered, at)
    lot = tracer.lots[batch_id]
    per_mineral: dict[str, list[mpq]] = {}
    for path, (_, mass) in lot.content.items():
        source = tracer.sources[path.source]
        totals = per_mineral.setdefault(source.mineral, [ZERO, ZERO])
        totals[0] += mass
        if source.kind == "recycling":
            totals[1] += mass
    minimums: dict[str, RecycledMinimum] = {}
    for entry in profile.recycled_content:
        if date.fromisoformat(entry.from_) <= day:
            minimums[entry.mineral] = entry  # later entries of a mineral supersede earlier ones
    minerals = []
    for mineral, (mass, recycled) in sorted(per_mineral.items()):
        share = recycled / mass if mass else ZERO
        minimum = minimums.get(mineral)
        minerals.append(
            MineralContent(
                mineral=mineral,
                mass_g=exact_decimal(mass),
                recycled_g=exact_decimal(recycled),
                recycled_share=exact_decimal(share),
                recycled_share_percent=percent_display(share),
                minimum=minimum.share if minimum else None,
                minimum_from=minimum.from_ if minimum else None,
                meets_minimum=share >= ev.parse_share(minimum.share) if minimum else None,
            )
        )
    judged = [m.meets_minimum for m in minerals if m.meets_minimum is not None]
    return RecycledContent(
        batch=batch_id,
        profile=profile.reference(),
        at=at.isoformat(),
        minerals=minerals,
        all_minimums_met=all(judged) if judged else None,
    )


def site_credits(
    events: Sequence[LoggedEvent], facility_id: str, profile: Profile, start: date, end: date
) -> list[tuple[LoggedEvent, str, mpq]]:
    """docs/eligibility.md section 11, credit method: every input consumed at the facility between
    ``start`` and ``end`` (local dates, inclusive) makes credits of its qualifying mass times the conversion factor
    of the process. Returns (consuming event, input batch, credits in grams)."""
    ordered = sorted(events, key=lambda item: item.log_index)
    tracer = Tracer(profile, collect_facts(ordered), end)
    tracer.credit_site = (facility_id, start, end)
    tracer.run(ordered, end)
    return tracer.credits
