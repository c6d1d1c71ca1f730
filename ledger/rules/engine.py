"""The eligibility engine: a pure function from (events, profile, determination date) to a determination.

The same function runs on the server (over events read from the database) and in ``ledger verify bundle`` (over
the envelopes in a proof bundle): one implementation, two callers.

Model. Every batch carries two exact fractions (``fractions.Fraction``) of its mass:

- ``e``, the share whose every handling passed the profile's ESG gates (attestations valid on the day);
- ``q``, the share that also has preferential origin (so ``q <= e``): this is the qualifying share.

An extraction starts a batch at ``e = 1`` if the mine's attestation held on the extraction's local date (else 0)
and ``q = e`` if the mine lies in a member country (else 0). A transfer with a leg through a non-member country
without customs control sets ``q`` to 0. A transform at a facility combines its inputs by consumed mass; its
processing gate multiplies both shares; in a member, when members added at least the profile's share of the
processing value, origin is conferred (``q = e``); outside the members origin is lost (``q = 0``); recycling
where the profile allows makes the output a new source (``q = e = gate``). Merges weight by mass, splits keep
the shares. Nothing is rounded: the share is compared with its threshold exactly, and rounded only for display.

Every state is a node of a linear graph, so a reverse pass attributes the result exactly to the source batches
(extractions and recyclings): their qualifying contributions add up to the batch's qualifying share.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from functools import cached_property
from typing import Any, Literal

import msgspec

from ledger.domain import events as ev
from ledger.domain.vocab import IRMA_LEVELS
from ledger.errors import InvalidInput, NotFound
from ledger.rules.profiles import AttestationOption, AttestationRequirement, Profile

ZERO = Fraction(0)
ONE = Fraction(1)


@dataclass(frozen=True)
class LoggedEvent:
    """An accepted event as the engine sees it: decoded payload plus its place in the log."""

    log_index: int
    event_id: str
    event: ev.Event
    key_id: str | None = None
    """The key that signed it (to tell events signed after a key's reported compromise)."""

    @cached_property
    def local_date(self) -> date:
        """The calendar date in the signer's own UTC offset (the offset in its timestamp)."""
        return ev.parse_timestamp(self.event.timestamp).date()


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
    mass_g: int
    value: dict[str, Any] | None
    contribution: str
    """Exact share of the determined batch's mass that comes from this source."""
    contribution_g: str
    qualifying_fraction: str
    """Exact share of this source's contribution that qualifies."""
    why: list[str]


class Determination(msgspec.Struct):
    batch: str
    profile: dict[str, str]
    at: str
    verdict: Literal["eligible", "not_eligible"]
    qualifying_share: str
    """Exact: a terminating decimal when there is one, otherwise the fraction ``n/d``."""
    qualifying_share_fraction: str
    qualifying_share_percent: str
    """For display only: truncated (never rounded up) to two decimals."""
    threshold: ThresholdView | None
    mass_g: int
    foreign_entity_of_concern: bool
    reasons: list[Reason]
    sources: list[SourceView]
    events_considered: int


def exact_decimal(value: Fraction) -> str:
    """A terminating decimal for ``value`` if one exists (denominator of 2s and 5s), else ``n/d``."""
    denominator = value.denominator
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = value * 10**places
    assert scaled.denominator == 1
    text = str(Decimal(scaled.numerator).scaleb(-places))
    return text if "E" not in text else format(Decimal(scaled.numerator).scaleb(-places), "f")


def percent_display(value: Fraction) -> str:
    truncated = Decimal(value.numerator * 100) / Decimal(value.denominator)
    return str(truncated.quantize(Decimal("0.01"), rounding=ROUND_DOWN))


# --- registry facts from events ----------------------------------------------------------------------------


@dataclass
class ParticipantFacts:
    id: str
    roles: frozenset[str]
    country: str
    ownership: list[tuple[date, ev.Ownership]] = field(default_factory=list)

    def ownership_on(self, day: date) -> ev.Ownership | None:
        """The ownership facts in effect on ``day``; before the first record, the facts given at admission."""
        current = self.ownership[0][1] if self.ownership else None
        for since, ownership in self.ownership:
            if since <= day:
                current = ownership
        return current


@dataclass(frozen=True)
class FacilityFacts:
    id: str
    participant: str
    kind: str
    country: str


@dataclass
class AttestationFacts:
    id: str
    auditor: str
    event_id: str
    info: ev.AttestationInfo
    valid_from: date
    valid_to: date
    revoked_on: date | None = None
    suspended_on: date | None = None

    def counts_on(self, day: date) -> bool:
        """Valid on ``day`` (both ends inclusive) and not revoked or suspended on or before it."""
        if not self.valid_from <= day <= self.valid_to:
            return False
        if self.revoked_on is not None and self.revoked_on <= day:
            return False
        return not (self.suspended_on is not None and self.suspended_on <= day)


@dataclass
class Facts:
    compromised: dict[str, datetime] = field(default_factory=dict)
    """Key id -> the moment from which its compromise was reported (a revocation effective in the past)."""
    reaffirmed: dict[str, set[str]] = field(default_factory=dict)
    """Event id -> participants that reaffirmed it."""
    participants: dict[str, ParticipantFacts] = field(default_factory=dict)
    facilities: dict[str, FacilityFacts] = field(default_factory=dict)
    attestations: dict[str, AttestationFacts] = field(default_factory=dict)
    by_subject: dict[str, list[AttestationFacts]] = field(default_factory=dict)


def collect_facts(events: Iterable[LoggedEvent]) -> Facts:
    facts = Facts()
    for logged in events:
        event = logged.event
        match event:
            case ev.ParticipantAdmitted(participant=p):
                facts.participants[p.id] = ParticipantFacts(
                    p.id, frozenset(p.roles), p.country, [(logged.local_date, p.ownership)]
                )
            case ev.OwnershipChanged(participant=pid, effective_date=day, ownership=ownership):
                if pid in facts.participants:
                    facts.participants[pid].ownership.append((date.fromisoformat(day), ownership))
                    facts.participants[pid].ownership.sort(key=lambda item: item[0])
            case ev.FacilityRegistered(facility=f):
                facts.facilities[f.id] = FacilityFacts(f.id, f.participant, f.kind, f.country)
            case ev.Attest(attestation=a):
                record = AttestationFacts(
                    a.id,
                    event.actor,
                    logged.event_id,
                    a,
                    date.fromisoformat(a.valid_from),
                    date.fromisoformat(a.valid_to),
                )
                facts.attestations[a.id] = record
                subject = (
                    f"facility:{a.subject.facility}"
                    if a.subject.facility
                    else f"participant:{a.subject.participant}"
                )
                facts.by_subject.setdefault(subject, []).append(record)
            case ev.KeyRevoked(key_id=kid, effective_at=reported) if reported is not None:
                since = ev.parse_timestamp(reported, "effective_at")
                if since < ev.parse_timestamp(event.timestamp):
                    facts.compromised[kid] = min(since, facts.compromised.get(kid, since))
            case ev.Reaffirm(events=event_ids):
                for event_id in event_ids:
                    facts.reaffirmed.setdefault(event_id, set()).add(event.actor)
            case ev.RevokeAttestation(attestation=aid, effective_date=day):
                if aid in facts.attestations:
                    record = facts.attestations[aid]
                    effective = date.fromisoformat(day)
                    record.revoked_on = (
                        effective if record.revoked_on is None else min(record.revoked_on, effective)
                    )
            case ev.SuspendAttestation(attestation=aid, effective_date=day):
                if aid in facts.attestations:
                    record = facts.attestations[aid]
                    effective = date.fromisoformat(day)
                    record.suspended_on = (
                        effective if record.suspended_on is None else min(record.suspended_on, effective)
                    )
            case _:
                pass
    return facts


# --- rules -------------------------------------------------------------------------------------------------


def _level_ok(option: AttestationOption, level: str) -> bool:
    if option.min_level is not None:
        if level not in IRMA_LEVELS:
            return False
        return IRMA_LEVELS.index(level) >= IRMA_LEVELS.index(option.min_level)
    return level in (option.levels or [])


class AttestationGate:
    """ESG: the profile's attestation requirements for an activity at a kind of facility, checked on a date."""

    def __init__(self, requirements: Sequence[AttestationRequirement], facts: Facts) -> None:
        self.requirements = requirements
        self.facts = facts
        self._found: dict[tuple[int, str, frozenset[str], str, date], AttestationFacts | None] = {}

    def check(
        self, activity: str, facility: FacilityFacts, minerals: set[str], day: date, logged: LoggedEvent
    ) -> tuple[bool, list[Reason]]:
        reasons: list[Reason] = []
        ok = True
        for requirement in self.requirements:
            if requirement.activity != activity or facility.kind not in requirement.facility_kinds:
                continue
            memo = (id(requirement), facility.id, frozenset(minerals), activity, day)
            if memo not in self._found:
                self._found[memo] = self._find(requirement, facility, minerals, activity, day)
            found = self._found[memo]
            wanted = " or ".join(
                f"{o.standard.upper()} {o.min_level or '/'.join(o.levels or [])}"
                + (" or better" if o.min_level else "")
                for o in requirement.any_of
            )
            if found is None:
                ok = False
                reasons.append(
                    Reason(
                        code="attestation-missing",
                        outcome="fail",
                        message=(
                            f"{facility.kind} {facility.id} had no valid {wanted} attestation "
                            f"covering {', '.join(sorted(minerals))} {activity} on {day.isoformat()}, "
                            f"the local date of event {logged.event_id} ({requirement.name})"
                        ),
                        event_id=logged.event_id,
                        facility=facility.id,
                    )
                )
            else:
                reasons.append(
                    Reason(
                        code="attestation-valid",
                        outcome="pass",
                        message=(
                            f"{facility.kind} {facility.id} held attestation {found.id} ({found.info.standard} "
                            f"{found.info.level}, valid {found.info.valid_from} to {found.info.valid_to}) on "
                            f"{day.isoformat()} for event {logged.event_id}"
                        ),
                        event_id=logged.event_id,
                        facility=facility.id,
                    )
                )
        return ok, reasons

    def _find(
        self,
        requirement: AttestationRequirement,
        facility: FacilityFacts,
        minerals: set[str],
        activity: str,
        day: date,
    ) -> AttestationFacts | None:
        candidates = self.facts.by_subject.get(f"facility:{facility.id}", []) + self.facts.by_subject.get(
            f"participant:{facility.participant}", []
        )
        for record in sorted(candidates, key=lambda r: r.id):
            auditor = self.facts.participants.get(record.auditor)
            if auditor is None or "auditor" not in auditor.roles:
                continue
            info = record.info
            if info.minerals and not minerals <= set(info.minerals):
                continue
            if info.activities and activity not in info.activities:
                continue
            if not record.counts_on(day):
                continue
            if any(o.standard == info.standard and _level_ok(o, info.level) for o in requirement.any_of):
                return record
        return None


class ForeignEntityRule:
    """A hard fail: a participant incorporated, headquartered or acting in a covered nation, or in which a
    covered-nation government holds at least the threshold of equity, votes or board seats (each on its own)."""

    def __init__(self, profile: Profile, facts: Facts) -> None:
        self.profile = profile
        self.facts = facts
        self._memo: dict[tuple[str, str | None, date], list[str]] = {}

    def findings(self, actor: str, facility: FacilityFacts | None, day: date) -> list[str]:
        """What makes ``actor`` a foreign entity of concern for an event on ``day`` (empty if nothing)."""
        memo = (actor, facility.id if facility else None, day)
        cached = self._memo.get(memo)
        if cached is None:
            cached = self._memo[memo] = self._findings(actor, facility, day)
        return cached

    def _findings(self, actor: str, facility: FacilityFacts | None, day: date) -> list[str]:
        covered = self.profile.covered_set
        participant = self.facts.participants.get(actor)
        found: list[str] = []
        if participant is not None:
            ownership = participant.ownership_on(day)
            if ownership is not None:
                if ownership.incorporated_in in covered:
                    found.append(f"is incorporated in {ownership.incorporated_in}")
                if ownership.headquartered_in in covered:
                    found.append(f"is headquartered in {ownership.headquartered_in}")
                threshold = self.profile.control_threshold
                for stake in ownership.government_stakes:
                    if stake.country not in covered:
                        continue
                    for measure, value in (
                        ("equity", stake.equity),
                        ("votes", stake.votes),
                        ("board seats", stake.board_seats),
                    ):
                        if Fraction(Decimal(value)) >= threshold:
                            found.append(
                                f"has {value} of its {measure} held by the government of {stake.country} "
                                f"(threshold {self.profile.foreign_entity.control_threshold})"
                            )
        if facility is not None and facility.country in covered:
            found.append(f"handled the material at {facility.id} in {facility.country}")
        return found


# --- the linear graph --------------------------------------------------------------------------------------

Mode = Literal["source", "gate", "mass", "conferred", "lost"]


@dataclass
class Node:
    mode: Mode
    event: LoggedEvent
    batch: str
    q: Fraction
    e: Fraction
    parents: list[tuple[int, Fraction]] = field(default_factory=list)
    gate: Fraction = ONE
    """For ``gate`` nodes: the factor on q. For combinations: the ESG factor on both shares."""
    source_kind: Literal["extraction", "recycling"] | None = None
    facility: str | None = None
    actor: str | None = None


@dataclass
class BatchState:
    node: int
    mass_g: int
    va_total: Fraction = ZERO
    va_member: Fraction = ZERO
    currencies: frozenset[str] = frozenset()
    value: dict[str, str] | None = None
    source_mass_g: int = 0


def _combine(
    nodes: list[Node], parents: list[tuple[int, Fraction]], mode: Mode, gate: Fraction
) -> tuple[Fraction, Fraction]:
    e = gate * sum((w * nodes[i].e for i, w in parents), ZERO)
    if mode == "mass":
        q = gate * sum((w * nodes[i].q for i, w in parents), ZERO)
    elif mode == "conferred":
        q = e
    else:
        q = ZERO
    return q, e


def determine(events: Sequence[LoggedEvent], batch_id: str, profile: Profile, at: date) -> Determination:
    """Decide whether ``batch_id`` qualifies under ``profile``, considering events up to local date ``at``."""
    ordered = sorted(events, key=lambda item: item.log_index)
    facts = collect_facts(ordered)
    esg = AttestationGate(profile.attestations, facts)
    feoc = ForeignEntityRule(profile, facts)
    members = profile.member_set
    nodes: list[Node] = []
    state: dict[str, BatchState] = {}
    reasons_by_node: dict[int, list[Reason]] = {}
    last_on_target: LoggedEvent | None = None
    considered = 0

    def add(node: Node, reasons: list[Reason]) -> int:
        nodes.append(node)
        reasons_by_node[len(nodes) - 1] = reasons
        return len(nodes) - 1

    def facility_of(facility_id: str, logged: LoggedEvent) -> FacilityFacts:
        facility = facts.facilities.get(facility_id)
        if facility is None:
            raise InvalidInput(
                f"event {logged.event_id} names facility {facility_id!r}, which the evidence does not register"
            )
        return facility

    def batch_of(batch: str, logged: LoggedEvent) -> BatchState:
        current = state.get(batch)
        if current is None:
            raise InvalidInput(
                f"event {logged.event_id} uses batch {batch!r}, whose earlier events are missing from the evidence"
            )
        return current

    for logged in ordered:
        event = logged.event
        if ev.kind_of(event) not in ev.CUSTODY_KINDS or logged.local_date > at:
            continue
        considered += 1
        day = logged.local_date
        match event:
            case ev.Extract(facility=facility_id, batch=new):
                facility = facility_of(facility_id, logged)
                ok, reasons = esg.check("extraction", facility, {new.mineral}, day, logged)
                member = facility.country in members
                reasons.append(
                    Reason(
                        code="extracted-in-member" if member else "extracted-outside-members",
                        outcome="pass" if member else "fail",
                        message=f"batch {new.id} was extracted at {facility.id} in {facility.country}, "
                        + ("a member country" if member else f"which is not a member of {profile.id}"),
                        event_id=logged.event_id,
                        batch=new.id,
                        facility=facility.id,
                    )
                )
                e = ONE if ok else ZERO
                index = add(
                    Node(
                        "source",
                        logged,
                        new.id,
                        e if member else ZERO,
                        e,
                        source_kind="extraction",
                        facility=facility.id,
                        actor=event.actor,
                    ),
                    reasons,
                )
                value = {"amount": new.value.amount, "currency": new.value.currency} if new.value else None
                state[new.id] = BatchState(index, new.mass_g, value=value, source_mass_g=new.mass_g)
            case ev.Transfer(batch=batch, route=route):
                current = batch_of(batch, logged)
                open_legs = [
                    leg.country for leg in route if leg.country not in members and not leg.customs_control
                ]
                bonded = [leg.country for leg in route if leg.country not in members and leg.customs_control]
                reasons = []
                parent = nodes[current.node]
                if open_legs and profile.transit.non_member_requires_customs_control:
                    if parent.q > 0:  # material without origin has none to lose: no reason to report
                        reasons.append(
                            Reason(
                                code="transit-without-customs-control",
                                outcome="fail",
                                message=f"batch {batch} crossed {', '.join(open_legs)} (not members) without customs control, so it lost its origin",
                                event_id=logged.event_id,
                                batch=batch,
                            )
                        )
                    gate = ZERO
                else:
                    gate = ONE
                    if bonded:
                        reasons.append(
                            Reason(
                                code="transit-under-customs-control",
                                outcome="pass",
                                message=f"batch {batch} crossed {', '.join(bonded)} under customs control and untransformed: origin kept",
                                event_id=logged.event_id,
                                batch=batch,
                            )
                        )
                parent = nodes[current.node]
                index = add(
                    Node(
                        "gate",
                        logged,
                        batch,
                        gate * parent.q,
                        parent.e,
                        [(current.node, ONE)],
                        gate=gate,
                        actor=event.actor,
                    ),
                    reasons,
                )
                current.node = index
            case ev.Receive(batch=batch, mass_g=mass):
                current = batch_of(batch, logged)
                parent = nodes[current.node]
                # a custody change: no effect on the shares, but the receiver handled the material
                index = add(
                    Node(
                        "gate",
                        logged,
                        batch,
                        parent.q,
                        parent.e,
                        [(current.node, ONE)],
                        facility=event.facility,
                        actor=event.actor,
                    ),
                    [],
                )
                scale = Fraction(mass, current.mass_g) if current.mass_g else ONE
                current.node, current.mass_g = index, mass
                current.va_total *= scale
                current.va_member *= scale
            case ev.Transform(
                facility=facility_id, inputs=inputs, outputs=outputs, value_added=added, process=process
            ):
                facility = facility_of(facility_id, logged)
                consumed = sum(item.mass_g for item in inputs)
                parents: list[tuple[int, Fraction]] = []
                va_total, va_member, currencies = ZERO, ZERO, {added.currency}
                minerals = {o.mineral for o in outputs}
                for item in inputs:
                    current = batch_of(item.batch, logged)
                    parents.append((current.node, Fraction(item.mass_g, consumed)))
                    share = Fraction(item.mass_g, current.mass_g) if current.mass_g else ZERO
                    va_total += current.va_total * share
                    va_member += current.va_member * share
                    currencies |= current.currencies
                    current.va_total -= current.va_total * share
                    current.va_member -= current.va_member * share
                    current.mass_g -= item.mass_g
                amount = Fraction(Decimal(added.amount))
                member = facility.country in members
                va_total += amount
                if member:
                    va_member += amount
                recycling = process == "recycling"
                activity = "recycling" if recycling else "processing"
                ok, reasons = esg.check(activity, facility, minerals, day, logged)
                gate = ONE if ok else ZERO
                mode: Mode = "mass"
                if recycling:
                    allowed = facility.country in profile.recycling_set
                    reasons.append(
                        Reason(
                            code="recycled-where-allowed" if allowed else "recycled-where-not-allowed",
                            outcome="pass" if allowed else "fail",
                            message=f"recycled at {facility.id} in {facility.country}: "
                            + (
                                "recycling there counts as origin"
                                if allowed
                                else f"{profile.id} counts recycling only in {', '.join(profile.recycling_members)}"
                            ),
                            event_id=logged.event_id,
                            facility=facility.id,
                        )
                    )
                elif not member:
                    mode = "lost"
                    reasons.append(
                        Reason(
                            code="transformed-outside-members",
                            outcome="fail",
                            message=f"transformed ({process}) at {facility.id} in {facility.country}, not a member: the material lost its origin",
                            event_id=logged.event_id,
                            facility=facility.id,
                        )
                    )
                else:
                    mode = "mass"
                    if len(currencies) > 1:
                        reasons.append(
                            Reason(
                                code="value-added-not-comparable",
                                outcome="info",
                                message=f"value added at {facility.id} is declared in several currencies ({', '.join(sorted(currencies))}); the value-added test cannot confer origin",
                                event_id=logged.event_id,
                                facility=facility.id,
                            )
                        )
                    elif va_total > 0:
                        share = va_member / va_total
                        passed = share >= profile.value_added_share
                        if passed:
                            mode = "conferred"
                        reasons.append(
                            Reason(
                                code="value-added-test-passed" if passed else "value-added-test-failed",
                                outcome="pass" if passed else "info",
                                message=(
                                    f"members added {exact_decimal(share)} of the processing value up to {facility.id} "
                                    f"({percent_display(share)} %); the profile asks {profile.processing.value_added_share}: "
                                    + (
                                        "processing confers origin"
                                        if passed
                                        else "origin comes only from the inputs"
                                    )
                                ),
                                event_id=logged.event_id,
                                facility=facility.id,
                            )
                        )
                produced = sum(o.mass_g for o in outputs)
                for output in outputs:
                    portion = Fraction(output.mass_g, produced)
                    if recycling:
                        allowed_share = gate if facility.country in profile.recycling_set else ZERO
                        index = add(
                            Node(
                                "source",
                                logged,
                                output.id,
                                allowed_share,
                                gate,
                                source_kind="recycling",
                                facility=facility.id,
                                actor=event.actor,
                            ),
                            reasons,
                        )
                    else:
                        q, e = _combine(nodes, parents, mode, gate)
                        index = add(
                            Node(
                                mode,
                                logged,
                                output.id,
                                q,
                                e,
                                parents,
                                gate=gate,
                                facility=facility.id,
                                actor=event.actor,
                            ),
                            reasons,
                        )
                    value = (
                        {"amount": output.value.amount, "currency": output.value.currency}
                        if output.value
                        else None
                    )
                    state[output.id] = BatchState(
                        index,
                        output.mass_g,
                        va_total=va_total * portion,
                        va_member=va_member * portion,
                        currencies=frozenset(currencies),
                        value=value,
                        source_mass_g=output.mass_g,
                    )
                    reasons = []  # the transform's reasons are reported once
            case ev.Split(batch=batch, outputs=parts):
                current = batch_of(batch, logged)
                parent = nodes[current.node]
                total = sum(p.mass_g for p in parts)
                for part in parts:
                    portion = Fraction(part.mass_g, total)
                    index = add(
                        Node(
                            "mass",
                            logged,
                            part.id,
                            parent.q,
                            parent.e,
                            [(current.node, ONE)],
                            actor=event.actor,
                        ),
                        [],
                    )
                    state[part.id] = BatchState(
                        index,
                        part.mass_g,
                        va_total=current.va_total * portion,
                        va_member=current.va_member * portion,
                        currencies=current.currencies,
                    )
                current.mass_g = 0
            case ev.Merge(inputs=merge_inputs, output=output_id):
                currents = [batch_of(item.batch, logged) for item in merge_inputs]
                total = sum(c.mass_g for c in currents)
                parents = [(c.node, Fraction(c.mass_g, total)) for c in currents]
                q, e = _combine(nodes, parents, "mass", ONE)
                index = add(Node("mass", logged, output_id, q, e, parents, actor=event.actor), [])
                state[output_id] = BatchState(
                    index,
                    total,
                    va_total=sum((c.va_total for c in currents), ZERO),
                    va_member=sum((c.va_member for c in currents), ZERO),
                    currencies=frozenset().union(*(c.currencies for c in currents)),
                )
                for c in currents:
                    c.mass_g = 0
        touched = _batches_of(event)
        if batch_id in touched:
            last_on_target = logged

    target = state.get(batch_id)
    if target is None or last_on_target is None:
        raise NotFound(f"batch {batch_id!r} has no events on or before {at.isoformat()} in the evidence")
    return _conclude(
        nodes, reasons_by_node, target, batch_id, last_on_target, profile, at, feoc, facts, considered
    )


def _batches_of(event: ev.Event) -> set[str]:
    match event:
        case ev.Extract(batch=new):
            return {new.id}
        case ev.Transfer(batch=b) | ev.Receive(batch=b):
            return {b}
        case ev.Transform(inputs=inputs, outputs=outputs):
            return {i.batch for i in inputs} | {o.id for o in outputs}
        case ev.Split(batch=b, outputs=parts):
            return {b} | {p.id for p in parts}
        case ev.Merge(inputs=inputs, output=out):
            return {i.batch for i in inputs} | {out}
    return set()


def _conclude(
    nodes: list[Node],
    reasons_by_node: dict[int, list[Reason]],
    target: BatchState,
    batch_id: str,
    determining: LoggedEvent,
    profile: Profile,
    at: date,
    feoc: ForeignEntityRule,
    facts: Facts,
    considered: int,
) -> Determination:
    root = target.node
    # reverse pass: mass contribution c, and the weights of q and e on the result
    c = [ZERO] * (root + 1)
    wq = [ZERO] * (root + 1)
    we = [ZERO] * (root + 1)
    c[root], wq[root] = ONE, ONE
    sources: list[int] = []
    # When no transit cut, lost or conferred origin, or closed gate lies in the graph, every source's material
    # keeps its own share all the way down: only the mass contributions need the reverse pass.
    simple = all(node.mode in ("source", "gate", "mass") and node.gate != 0 for node in nodes[: root + 1])
    if simple:
        wq[root] = ZERO
    for index in range(root, -1, -1):
        ci, wqi, wei = c[index], wq[index], we[index]
        if not (ci or wqi or wei):
            continue
        node = nodes[index]
        if node.mode == "source":
            sources.append(index)
            continue
        # gates are 0 or 1: branch on them rather than multiply (exact Fractions are the engine's main cost)
        open_gate = node.gate != 0
        if node.mode == "gate":
            ((parent, _),) = node.parents
            c[parent] += ci
            if open_gate and wqi:
                wq[parent] += wqi
            if wei:
                we[parent] += wei
            continue
        pulled = (wqi + wei) if node.mode == "conferred" else wei
        for parent, weight in node.parents:
            c[parent] += weight * ci
            if not open_gate:
                continue
            if node.mode == "mass" and wqi:
                wq[parent] += weight * wqi
            if pulled:
                we[parent] += weight * pulled

    share = nodes[root].q
    contributing = [i for i in range(root + 1) if c[i] > 0]
    reasons: list[Reason] = []
    seen: set[tuple[str, str, str | None]] = set()
    for index in contributing:
        for reason in reasons_by_node.get(index, []):
            key = (reason.code, reason.message, reason.event_id)
            if key not in seen:
                seen.add(key)
                reasons.append(reason)

    determining_date = determining.local_date
    feoc_found: list[Reason] = []
    if determining_date >= profile.foreign_entity_from:
        # one reason per participant and finding, naming the first event and how many events it concerns
        grouped: dict[tuple[str, str], list[LoggedEvent]] = {}
        checked: set[tuple[str, str | None, str]] = set()
        for index in contributing:
            node = nodes[index]
            if node.actor is None or (node.actor, node.facility, node.event.event_id) in checked:
                continue
            checked.add((node.actor, node.facility, node.event.event_id))
            facility = facts.facilities.get(node.facility) if node.facility else None
            for what in feoc.findings(node.actor, facility, node.event.local_date):
                grouped.setdefault((node.actor, what), []).append(node.event)
        for (actor, what), handled in sorted(grouped.items()):
            first = min(handled, key=lambda item: item.log_index)
            count = len({item.event_id for item in handled})
            feoc_found.append(
                Reason(
                    code="foreign-entity-of-concern",
                    outcome="fail",
                    message=(
                        f"participant {actor} {what} when it handled this material ({count} "
                        f"event{'s' if count > 1 else ''}, first {first.event_id} on {first.local_date.isoformat()})"
                    ),
                    event_id=first.event_id,
                    participant=actor,
                )
            )
    else:
        reasons.append(
            Reason(
                code="foreign-entity-rule-not-in-force",
                outcome="info",
                message=f"the foreign-entity-of-concern rule applies from {profile.foreign_entity.effective_date}; "
                f"the determining event's local date is {determining_date.isoformat()}",
                event_id=determining.event_id,
            )
        )
    reasons.extend(feoc_found)

    suspect = _suspect_events(nodes, contributing, facts)
    reasons.extend(suspect)
    failed_by_suspect = any(r.outcome == "fail" for r in suspect)

    threshold = profile.threshold_on(determining_date)
    threshold_view: ThresholdView | None = None
    if threshold is None:
        eligible_by_share = False
        reasons.append(
            Reason(
                code="no-threshold-in-force",
                outcome="fail",
                message=f"{profile.id} sets no required share before {profile.thresholds[0].from_}; "
                f"the determining event's local date is {determining_date.isoformat()}",
                event_id=determining.event_id,
            )
        )
    else:
        required = Fraction(Decimal(threshold.share))
        eligible_by_share = share >= required
        explanation = (
            f"the determining event {determining.event_id} (the last event on {batch_id} on or before "
            f"{at.isoformat()}) is dated {determining.event.timestamp}, local date {determining_date.isoformat()}; "
            f"the share required from {threshold.from_} is {threshold.share}"
        )
        threshold_view = ThresholdView(
            share=threshold.share,
            in_force_from=threshold.from_,
            determining_event=determining.event_id,
            determining_date=determining_date.isoformat(),
            why=explanation,
        )
        reasons.append(
            Reason(
                code="share-meets-threshold" if eligible_by_share else "share-below-threshold",
                outcome="pass" if eligible_by_share else "fail",
                message=f"qualifying share {exact_decimal(share)} ({percent_display(share)} %) "
                + (">=" if eligible_by_share else "<")
                + f" required {threshold.share}",
                batch=batch_id,
            )
        )
    eligible = eligible_by_share and not feoc_found and not failed_by_suspect
    source_views = []
    for index in sorted(sources, key=lambda i: (nodes[i].batch, i)):
        node = nodes[index]
        facility = facts.facilities[node.facility] if node.facility else None
        if simple:
            qualifying = node.q
        else:
            qualifying = (wq[index] * node.q + we[index] * node.e) / c[index] if c[index] else ZERO
        why = [
            r.message
            for r in reasons_by_node.get(index, [])
            if r.outcome != "pass" or r.code.startswith(("extracted", "recycled"))
        ]
        mass = target.mass_g
        event = node.event.event
        value = None
        if isinstance(event, ev.Extract) and event.batch.value:
            value = {"amount": event.batch.value.amount, "currency": event.batch.value.currency}
        source_mass = (
            event.batch.mass_g
            if isinstance(event, ev.Extract)
            else next((o.mass_g for o in event.outputs if o.id == node.batch), 0)
            if isinstance(event, ev.Transform)
            else 0
        )
        source_views.append(
            SourceView(
                batch=node.batch,
                kind=node.source_kind or "extraction",
                event_id=node.event.event_id,
                facility=facility.id if facility else "",
                country=facility.country if facility else "",
                mass_g=source_mass,
                value=value,
                contribution=exact_decimal(c[index]),
                contribution_g=exact_decimal(c[index] * mass),
                qualifying_fraction=exact_decimal(qualifying),
                why=why,
            )
        )
    return Determination(
        batch=batch_id,
        profile={"id": profile.id, "name": profile.name, "content_hash": profile.content_hash},
        at=at.isoformat(),
        verdict="eligible" if eligible else "not_eligible",
        qualifying_share=exact_decimal(share),
        qualifying_share_fraction=f"{share.numerator}/{share.denominator}",
        qualifying_share_percent=percent_display(share),
        threshold=threshold_view,
        mass_g=target.mass_g,
        foreign_entity_of_concern=bool(feoc_found),
        reasons=reasons,
        sources=source_views,
        events_considered=considered,
    )


def _suspect_events(nodes: list[Node], contributing: list[int], facts: Facts) -> list[Reason]:
    """Events that handled the material, signed with a key at or after its reported compromise: each fails the
    batch unless the signer (with a valid key) or the registrar reaffirmed it (a ``reaffirm`` event)."""
    found: list[Reason] = []
    seen: set[str] = set()
    for index in contributing:
        logged = nodes[index].event
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
        if logged.event.actor in vouchers or registrars:
            found.append(
                Reason(
                    code="suspect-event-reaffirmed",
                    outcome="info",
                    message=f"event {logged.event_id} was signed with key {logged.key_id} after its reported "
                    f"compromise ({since.isoformat()}) but was reaffirmed by {', '.join(sorted(vouchers))}",
                    event_id=logged.event_id,
                    participant=logged.event.actor,
                )
            )
        else:
            found.append(
                Reason(
                    code="suspect-event",
                    outcome="fail",
                    message=f"event {logged.event_id} by {logged.event.actor} was signed with key {logged.key_id} at or "
                    f"after its reported compromise ({since.isoformat()}); it counts only once {logged.event.actor} or "
                    "the registrar reaffirms it",
                    event_id=logged.event_id,
                    participant=logged.event.actor,
                )
            )
    return found


def determination_document(determination: Determination) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(determination)
    return document
