"""Trade-agreement origin of a good: a pure function from (events, agreement, date, method) to a determination.

The question a customs broker asks: does this good (a batch with a 6-digit HS code) originate under the agreement
(USMCA first), and under which criterion? The rules are written out for people, with worked examples, in
``docs/eligibility.md`` (part II); each is one small function here, citing the article it follows.

Model. The walk goes through the log in order, as the eligibility engine's does, over the same lineage. Every
batch is a *good* whose origin comes from how it was made: extracted (Art. 4.3(a): wholly obtained in a party, or
not originating), recycled (Art. 4.3: waste and scrap collected and recovered in the parties), produced by a
transform (Art. 4.2: its materials are the transform's inputs, each originating or not as it was when consumed),
or merged from like goods. Splits and receipts pass the origin on; a receipt judges the route (Art. 4.18). The
production of the good asked about is judged under the requested method; every material's status is the one it
had when it was consumed, judged by the method most favourable to its own producer (the claimant of that
material chooses, Art. 4.5.1). Values are exact fractions of the producer's declared amounts; nothing is rounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

import msgspec

from ledger.domain import events as ev
from ledger.errors import InvalidInput, NotFound
from ledger.rules.agreement import LEVEL_DIGITS, Agreement, Alternative, Method, ProductRule
from ledger.rules.engine import Reason, percent_display
from ledger.rules.facts import FacilityFacts, LoggedEvent, collect_facts, exact_decimal

ZERO = Fraction(0)
METHODS: tuple[Method, ...] = ("transaction_value", "net_cost")
METHOD_NAMES = {"transaction_value": "transaction-value", "net_cost": "net-cost"}
METHOD_PARAM: dict[str, Method] = {"tv": "transaction_value", "nc": "net_cost"}
"""The API's short names for the methods (``method=tv|nc``)."""
CRITERIA = {
    "A": "wholly obtained or produced entirely in the territory of one or more of the Parties (Art. 4.2(a), 4.3)",
    "B": "produced entirely in the territory of one or more of the Parties using non-originating materials that "
    "satisfy the product-specific rule of Annex 4-B (Art. 4.2(b))",
    "C": "produced entirely in the territory of one or more of the Parties exclusively from originating materials "
    "(Art. 4.2(c))",
    "D": "produced entirely in the territory of one or more of the Parties, a non-originating material classified "
    "in the good's own subheading, and the regional value content criterion D asks (Art. 4.2(d))",
}

__all__ = [
    "METHOD_PARAM",
    "OriginDetermination",
    "determine_origin",
    "origin_document",
]


# --- output ------------------------------------------------------------------------------------------------


class RvcView(msgspec.Struct):
    """The regional value content of the good under one method (Art. 4.5), worked out."""

    method: Method
    base: str | None
    """The good's transaction value or net cost, as declared (``None``: not declared)."""
    vnm: str | None
    """Value of non-originating materials allocated to the good (``None``: a material's value is missing)."""
    rvc: str | None
    """Exact: ``(base - vnm) / base``; a decimal when one exists, otherwise ``n/d``."""
    rvc_percent: str | None
    """For display only: truncated to two decimals."""
    currency: str | None
    formula: str


class MaterialView(msgspec.Struct, omit_defaults=True):
    """One material of the good's production (an input of the transform that made it) and its status."""

    batch: str
    event_id: str
    """The event that made the material (its origin is the one it had when consumed)."""
    hs6: str | None
    originating: bool
    code: str
    why: str
    mass_g: int
    value: str | None
    """The material's declared value (Art. 4.7), allocated to the good by its share of the output mass."""
    currency: str | None = None
    criterion: str | None = None
    tariff_change: dict[str, bool] = {}
    """For a non-originating material: at each level the product rule asks, whether its classification changes."""


class DeMinimisView(msgspec.Struct):
    """Art. 4.12: the non-originating materials that do not make the tariff change, against the limit."""

    basis: Literal["transaction_value", "total_cost"]
    share: str
    limit: str | None
    """``share`` x the good's transaction value (or total cost); ``None``: that value is not declared."""
    non_shifting_value: str | None
    """Value of the non-originating materials that do not make the change (``None``: a value is missing)."""
    within: bool
    materials: list[str]


class OriginDetermination(msgspec.Struct):
    """The answer for one good under one agreement at one date."""

    batch: str
    agreement: dict[str, Any]
    at: str
    method: Method
    """The method the claimant asked for."""
    rvc_method: Method
    """The method the regional value content was judged by: the one asked for, unless the good's rule allows only
    the other (USMCA Art. 4.5: net cost where the rule requires it)."""
    verdict: Literal["originating", "not_originating"]
    criterion: Literal["A", "B", "C", "D"] | None
    criterion_text: str | None
    hs6: str | None
    rule: dict[str, Any] | None
    """The product-specific rule applied (``hs``, ``description``, ``alternatives``), if the good needed one."""
    produced_by: str | None
    """The event that made the good (a transform, an extraction, a recycling or a merge)."""
    produced_in: str | None
    determining_event: str
    determining_date: str
    rvc: list[RvcView]
    """The regional value content under each method, whatever the rule asks."""
    de_minimis: DeMinimisView | None
    materials: list[MaterialView]
    reasons: list[Reason]
    not_originating: list[Reason]
    """Every reason the good does not originate (empty when it does). A determination depends only on the good's
    own lineage (not on how much other evidence was read), so a certificate's bundle can re-derive it."""


def origin_document(determination: OriginDetermination) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(determination)
    return document


# --- goods while the walk goes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """Whether a good originates, under which criterion, and why (every reason, the failing ones marked)."""

    originating: bool
    criterion: Literal["A", "B", "C", "D"] | None
    code: str
    why: str
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class Material:
    """An input of a production, with the status it had when consumed."""

    batch: str
    made_by: str
    made_in: str | None
    hs6: str | None
    mass_g: int
    value: ev.Money | None
    status: Status


@dataclass(frozen=True)
class Production:
    """A transform's making of one output good in a facility (Art. 4.2)."""

    logged: LoggedEvent
    facility: FacilityFacts
    output: ev.Output
    share: Fraction
    """The output's share of the production's mass: its share of every material's value."""
    materials: tuple[Material, ...]


@dataclass(frozen=True)
class Good:
    """A batch as the walk knows it: how it was made, and what happened to it since (transits)."""

    batch: str
    hs6: str | None
    made_by: LoggedEvent
    facility: str | None
    made_in: str | None
    """The country it was extracted, recovered or produced in (a merged lot: that of its first part)."""
    base: Status | None = None
    """For an extracted, recycled or merged good: its status when made (a production is judged on demand)."""
    production: Production | None = None
    losses: tuple[Reason, ...] = ()
    """Transits after which the good no longer originates (Art. 4.18)."""
    route: tuple[ev.RouteLeg, ...] = ()
    cache: dict[str | None, Status] = field(default_factory=dict, compare=False, hash=False)


def _amount(money: ev.Money | None) -> Fraction | None:
    return None if money is None else Fraction(Decimal(money.amount))


def _hs_text(hs6: str | None, level: str = "subheading") -> str:
    if hs6 is None:
        return "no HS code"
    digits = hs6[: LEVEL_DIGITS[level]]
    return {2: f"chapter {digits}", 4: f"heading {digits[:2]}.{digits[2:]}"}.get(
        len(digits), f"subheading {digits[:4]}.{digits[4:]}"
    )


class Walker:
    """Walks the log in order and keeps every batch's origin; one method per event kind."""

    def __init__(self, agreement: Agreement, events: Sequence[LoggedEvent]) -> None:
        self.agreement = agreement
        self.facts = collect_facts(events)
        self.goods: dict[str, Good] = {}

    def facility(self, facility_id: str, logged: LoggedEvent) -> FacilityFacts:
        found = self.facts.facilities.get(facility_id)
        if found is None:
            raise InvalidInput(
                f"event {logged.event_id} names facility {facility_id!r}, which the evidence does not register"
            )
        return found

    def good(self, batch: str, logged: LoggedEvent) -> Good:
        found = self.goods.get(batch)
        if found is None:
            raise InvalidInput(
                f"event {logged.event_id} uses batch {batch!r}, whose earlier events are missing from the evidence"
            )
        return found

    def party(self, country: str) -> bool:
        return country in self.agreement.party_set

    def status(self, good: Good, method: Method | None) -> Status:
        """The good's status, its production judged by ``method`` (``None``: the method most favourable)."""
        found = good.cache.get(method)
        if found is None:
            found = judge_good(self.agreement, good, method)
            good.cache[method] = found
        return found

    # custody events

    def extract(self, logged: LoggedEvent, event: ev.Extract) -> None:
        """Art. 4.3(a): a mineral good extracted in the territory of a party is wholly obtained there."""
        site = self.facility(event.facility, logged)
        batch = event.batch
        if self.party(site.country):
            status = Status(
                True,
                "A",
                "wholly-obtained",
                f"extracted at {site.id} in {site.country}, a party: wholly obtained (Art. 4.3(a))",
            )
        else:
            status = Status(
                False,
                None,
                "extracted-outside-parties",
                f"extracted at {site.id} in {site.country}, which is not a party to {self.agreement.id}",
            )
        self.goods[batch.id] = Good(batch.id, batch.hs6, logged, site.id, site.country, base=status)

    def recycle(self, logged: LoggedEvent, event: ev.Recycle) -> None:
        """Art. 4.3: waste and scrap derived from production or used goods collected in the parties, recovered
        there, is wholly obtained; feedstock collected elsewhere (or not said where) is not shown to be."""
        site = self.facility(event.facility, logged)
        outside = sorted({f.origin_country or "unknown" for f in event.feedstock} - self.agreement.party_set)
        if not self.party(site.country):
            status = Status(
                False,
                None,
                "recycled-outside-parties",
                f"recycled at {site.id} in {site.country}, which is not a party to {self.agreement.id}",
            )
        elif outside:
            status = Status(
                False,
                None,
                "feedstock-not-from-parties",
                f"recycled at {site.id} in {site.country} from feedstock collected in {', '.join(outside)}, not "
                "in a party: not wholly obtained (Art. 4.3)",
            )
        else:
            status = Status(
                True,
                "A",
                "recovered-in-parties",
                f"recovered at {site.id} in {site.country} from scrap collected in the parties: wholly obtained "
                "(Art. 4.3)",
            )
        for output in event.outputs:
            self.goods[output.id] = Good(output.id, output.hs6, logged, site.id, site.country, base=status)

    def transfer(self, logged: LoggedEvent, event: ev.Transfer) -> None:
        good = self.good(event.batch, logged)
        self.goods[event.batch] = replace(good, route=tuple(event.route), cache={})

    def receive(self, logged: LoggedEvent, event: ev.Receive) -> None:
        good = self.good(event.batch, logged)
        destination = self.facility(event.facility, logged)
        losses = good.losses
        if self.status(good, None).originating:
            losses += tuple(judge_transit(self, logged, good, destination))
        self.goods[event.batch] = replace(good, facility=destination.id, route=(), losses=losses, cache={})

    def transform(self, logged: LoggedEvent, event: ev.Transform) -> None:
        """Art. 4.2: the outputs are goods produced from the inputs, their materials. The evidence of a batch
        holds the later events that consumed it; an output made with it and with materials outside that lineage
        is not a good this walk is asked about, and is left out."""
        if any(item.batch not in self.goods for item in event.inputs):
            return
        site = self.facility(event.facility, logged)
        materials = []
        for item in event.inputs:
            good = self.good(item.batch, logged)
            materials.append(
                Material(
                    item.batch,
                    good.made_by.event_id,
                    good.made_in,
                    good.hs6,
                    item.mass_g,
                    item.value,
                    self.status(good, None),
                )
            )
        produced = sum(o.mass_g for o in event.outputs)
        for output in event.outputs:
            production = Production(logged, site, output, Fraction(output.mass_g, produced), tuple(materials))
            self.goods[output.id] = Good(
                output.id, output.hs6, logged, site.id, site.country, production=production
            )

    def split(self, logged: LoggedEvent, event: ev.Split) -> None:
        good = self.good(event.batch, logged)
        for part in event.outputs:
            self.goods[part.id] = replace(good, batch=part.id, cache={})

    def merge(self, logged: LoggedEvent, event: ev.Merge) -> None:
        """Like goods commingled: the lot originates only if every part does (no inventory management method,
        Art. 4.13, is recorded, so an originating part cannot be told from a non-originating one)."""
        if any(item.batch not in self.goods for item in event.inputs):
            return  # as for a transform: a lot made with material outside the lineage asked about
        parts = [self.good(item.batch, logged) for item in event.inputs]
        statuses = [(part.batch, self.status(part, None)) for part in parts]
        codes = {part.hs6 for part in parts}
        hs6 = codes.pop() if len(codes) == 1 else None
        failing = [batch for batch, status in statuses if not status.originating]
        if failing:
            status = Status(
                False,
                None,
                "commingled-with-non-originating",
                f"merged from {', '.join(b for b, _ in statuses)}, of which {', '.join(failing)} do not originate; "
                "without an inventory management method (Art. 4.13) the lot does not originate",
            )
        else:
            criteria = sorted({s.criterion or "" for _, s in statuses})
            status = Status(
                True,
                min(s.criterion or "C" for _, s in statuses),
                "merged-originating-goods",
                f"merged from {', '.join(b for b, _ in statuses)}, every part originating (criteria "
                f"{', '.join(criteria)}); the lot states the first",
            )
        self.goods[event.output] = Good(
            event.output, hs6, logged, parts[0].facility, parts[0].made_in, base=status
        )

    def run(self, ordered: Sequence[LoggedEvent], until: date) -> int:
        handlers: dict[type, Any] = {
            ev.Extract: self.extract,
            ev.Recycle: self.recycle,
            ev.Transfer: self.transfer,
            ev.Receive: self.receive,
            ev.Transform: self.transform,
            ev.Split: self.split,
            ev.Merge: self.merge,
        }
        considered = 0
        for logged in ordered:
            handler = handlers.get(type(logged.event))
            if handler is None or logged.local_date > until:
                continue
            considered += 1
            handler(logged, logged.event)
        return considered


# --- rules ------------------------------------------------------------------------------------------------


def judge_transit(
    walker: Walker, logged: LoggedEvent, good: Good, destination: FacilityFacts
) -> list[Reason]:
    """Art. 4.18: an originating good keeps its status through a non-party only if it stays under customs control
    there and undergoes nothing but unloading, reloading, splitting, storage, labelling or preservation; and it
    must arrive in a party (a good delivered to a non-party has left the territory)."""
    agreement = walker.agreement
    rule = agreement.transit
    start = (
        walker.facts.facilities[good.facility].country if good.facility in walker.facts.facilities else None
    )
    failures: list[str] = []
    for leg in good.route:
        if leg.country in (start, destination.country) or walker.party(leg.country):
            continue
        problems = []
        if rule.requires_customs_control and not leg.customs_control:
            problems.append("without customs control")
        if leg.released_for_free_circulation:
            problems.append("released into free circulation there")
        wrong = [op for op in leg.operations if op not in rule.allowed_operations]
        if wrong:
            problems.append(f"with {', '.join(wrong)}, which Art. 4.18 does not allow")
        if problems:
            failures.append(f"{leg.country} ({'; '.join(problems)})")
    if not walker.party(destination.country):
        failures.append(f"delivery to {destination.id} in {destination.country}, outside the parties")
    if not failures:
        return []
    return [
        Reason(
            "transit-origin-lost",
            "fail",
            f"batch {good.batch} went through {', '.join(failures)}: it lost its originating status (Art. 4.18)",
            logged.event_id,
            good.batch,
        )
    ]


def judge_good(agreement: Agreement, good: Good, method: Method | None) -> Status:
    """The good's status: how it was made, then whatever a transit took away."""
    if good.production is not None:
        status = judge_production(agreement, good.production, method)
    else:
        assert good.base is not None
        status = good.base
    if good.losses and status.originating:
        return Status(
            False, None, "transit-origin-lost", good.losses[-1].message, status.reasons + good.losses
        )
    return replace(status, reasons=status.reasons + good.losses)


@dataclass
class Judged:
    """What judging a production found: the reasons, and the figures a determination shows."""

    reasons: list[Reason] = field(default_factory=list)
    rvc: list[RvcView] = field(default_factory=list)
    de_minimis: DeMinimisView | None = None
    rule: ProductRule | None = None
    shifts: dict[str, dict[str, bool]] = field(default_factory=dict)
    method: Method | None = None
    non_shifting: list[list[Material]] = field(default_factory=list)
    """Per alternative with a tariff change: the non-originating materials that do not make it."""


def judge_production(agreement: Agreement, production: Production, method: Method | None) -> Status:
    return judge_production_in_full(agreement, production, method)[0]


def judge_production_in_full(
    agreement: Agreement, production: Production, method: Method | None
) -> tuple[Status, Judged]:
    """Art. 4.2, in the order a broker asks: produced in the parties at all; then A (only wholly obtained
    materials, Art. 4.3), C (only originating materials), B (the product-specific rule, with de minimis), D."""
    logged, site, output = production.logged, production.facility, production.output
    judged = Judged(method=method)
    where = f"{output.id} was produced at {site.id} in {site.country} (event {logged.event_id})"
    foreign = [m for m in production.materials if not counts_as_originating(agreement, m, site.country)]
    judged.rvc = [_rvc_view(production, m, _vnm(production, foreign)) for m in METHODS]
    if site.country not in agreement.party_set:
        reason = Reason(
            "produced-outside-parties",
            "fail",
            f"{where}, which is not a party to {agreement.id}: not produced in the territory (Art. 4.2)",
            logged.event_id,
            output.id,
            site.id,
        )
        return Status(False, None, reason.code, reason.message, (reason,)), judged
    if not foreign:
        wholly = all(m.status.criterion == "A" for m in production.materials)
        code = "produced-from-wholly-obtained-materials" if wholly else "produced-from-originating-materials"
        text = (
            "exclusively from wholly obtained materials (Art. 4.3)"
            if wholly
            else "exclusively from originating materials (Art. 4.2(c))"
        )
        reason = Reason(code, "pass", f"{where}, a party, {text}", logged.event_id, output.id, site.id)
        return Status(True, "A" if wholly else "C", code, reason.message, (reason,)), judged
    return judge_rule(agreement, production, foreign, method, judged, where)


def counts_as_originating(agreement: Agreement, material: Material, country: str) -> bool:
    """Art. 4.11 (accumulation): a material originating in any party counts as originating wherever in the
    parties it is used; an agreement without accumulation counts only those that originate where it is used."""
    if not material.status.originating:
        return False
    return agreement.accumulation or material.made_in == country


def judge_rule(
    agreement: Agreement,
    production: Production,
    foreign: list[Material],
    method: Method | None,
    judged: Judged,
    where: str,
) -> tuple[Status, Judged]:
    """Criteria B and D for a good made with non-originating materials."""
    logged, output = production.logged, production.output
    reasons = judged.reasons
    reasons.append(
        Reason(
            "non-originating-materials",
            "info",
            f"{where}, a party, using non-originating materials {', '.join(m.batch for m in foreign)}: it must "
            "meet its product-specific rule (Art. 4.2(b))",
            logged.event_id,
            output.id,
        )
    )
    if output.hs6 is None:
        reasons.append(
            Reason(
                "no-hs-code",
                "fail",
                f"{output.id} declares no HS code, so no product-specific rule can be applied; the producer must "
                "classify the output (hs6)",
                logged.event_id,
                output.id,
            )
        )
        return _failed(reasons), judged
    rule = agreement.rule_for(output.hs6)
    judged.rule = rule
    vnm = _vnm(production, foreign)
    if rule is None:
        reasons.append(
            Reason(
                "no-product-rule",
                "fail",
                f"{agreement.id} has no product-specific rule for {_hs_text(output.hs6)} ({output.hs6}), so a good "
                "made with non-originating materials cannot originate under criterion B",
                logged.event_id,
                output.id,
            )
        )
        return _failed(reasons), judged
    if vnm is None:
        missing = [m.batch for m in foreign if m.value is None]
        reasons.append(
            Reason(
                "material-value-missing",
                "fail",
                f"the producer declared no value for the non-originating materials {', '.join(missing)} (inputs' "
                "value, Art. 4.7): neither the regional value content nor de minimis can be computed",
                logged.event_id,
                output.id,
            )
        )
    passed: list[tuple[int, list[Reason]]] = []
    for index, alternative in enumerate(rule.alternatives):
        ok, found = judge_alternative(
            agreement, production, foreign, rule, index, alternative, method, vnm, judged
        )
        reasons.extend(found)
        if ok:
            passed.append((index, found))
    if passed:
        reasons.append(
            Reason(
                "product-rule-met",
                "pass",
                f"{output.id} ({_hs_text(output.hs6)}) meets alternative {passed[0][0] + 1} of the rule for "
                f"{rule.hs} ({rule.description}): criterion B",
                logged.event_id,
                output.id,
            )
        )
        return Status(True, "B", "product-rule-met", reasons[-1].message, tuple(reasons)), judged
    return judge_criterion_d(agreement, production, foreign, method, vnm, judged)


def judge_criterion_d(
    agreement: Agreement,
    production: Production,
    foreign: list[Material],
    method: Method | None,
    vnm: Fraction | None,
    judged: Judged,
) -> tuple[Status, Judged]:
    """Art. 4.2(d): when every non-originating material that fails the tariff change is classified in the good's
    own subheading, the good still originates with the regional value content criterion D asks."""
    output = production.output
    reasons = judged.reasons
    candidates = [
        materials
        for materials in judged.non_shifting
        if materials and all(m.hs6 is not None and m.hs6 == output.hs6 for m in materials)
    ]
    if not candidates:
        return _failed(reasons), judged
    same = candidates[0]
    ok, found = _rvc_test(production, agreement.criterion_d, method, vnm, "criterion D (Art. 4.2(d))")
    reasons.extend(found)
    if not ok:
        return _failed(reasons), judged
    reasons.append(
        Reason(
            "criterion-d-met",
            "pass",
            f"the non-originating materials {', '.join(m.batch for m in same)} are classified in the good's own "
            f"subheading {output.hs6}, and the regional value content meets criterion D",
            production.logged.event_id,
            output.id,
        )
    )
    return Status(True, "D", "criterion-d-met", reasons[-1].message, tuple(reasons)), judged


def _failed(reasons: list[Reason]) -> Status:
    failing = [r for r in reasons if r.outcome == "fail"]
    why = failing[0].message if failing else "it meets no alternative of its product-specific rule"
    return Status(False, None, failing[0].code if failing else "product-rule-not-met", why, tuple(reasons))


def changes(material_hs6: str | None, good_hs6: str, level: str, except_from: Sequence[str]) -> bool:
    """Annex 4-B: a non-originating material makes the change the rule asks if its classification differs from
    the good's at that level (chapter: 2 digits, heading: 4, subheading: 6), and it is not classified under a
    chapter, heading or subheading the rule excepts."""
    if material_hs6 is None:
        return False
    digits = LEVEL_DIGITS[level]
    if material_hs6[:digits] == good_hs6[:digits]:
        return False
    return not any(material_hs6.startswith(prefix) for prefix in except_from)


def judge_alternative(
    agreement: Agreement,
    production: Production,
    foreign: list[Material],
    rule: ProductRule,
    index: int,
    alternative: Alternative,
    method: Method | None,
    vnm: Fraction | None,
    judged: Judged,
) -> tuple[bool, list[Reason]]:
    """One alternative of a product rule: the tariff change for every non-originating material (de minimis
    forgiving those that do not make it) and the regional value content, where it asks for them."""
    output = production.output
    assert output.hs6 is not None
    label = f"alternative {index + 1} of the rule for {rule.hs}"
    found: list[Reason] = []
    ok = True
    if alternative.shift is not None:
        level = alternative.shift
        non_shifting = []
        for material in foreign:
            shifted = changes(material.hs6, output.hs6, level, alternative.except_from)
            judged.shifts.setdefault(material.batch, {})[level] = shifted
            if not shifted:
                non_shifting.append(material)
        judged.non_shifting.append(non_shifting)
        target = _hs_text(output.hs6, level)
        if not non_shifting:
            found.append(
                Reason(
                    "tariff-change-met",
                    "pass",
                    f"{label}: every non-originating material changes to {target} from another {level}",
                    production.logged.event_id,
                    output.id,
                )
            )
        else:
            listed = ", ".join(
                f"{m.batch} ({_hs_text(m.hs6, level)}{', excepted' if m.hs6 and m.hs6[: LEVEL_DIGITS[level]] != output.hs6[: LEVEL_DIGITS[level]] else ''})"
                for m in non_shifting
            )
            tolerated, minimis, view = de_minimis(agreement, production, rule, non_shifting, label)
            found.append(minimis)
            if judged.de_minimis is None or (view.within and not judged.de_minimis.within):
                judged.de_minimis = view
            if tolerated:
                found.insert(
                    0,
                    Reason(
                        "tariff-change-not-met",
                        "info",
                        f"{label}: {listed} do not change to {target} from another {level}",
                        production.logged.event_id,
                        output.id,
                    ),
                )
            else:
                ok = False
                found.insert(
                    0,
                    Reason(
                        "tariff-change-not-met",
                        "fail",
                        f"{label}: {listed} do not change to {target} from another {level}",
                        production.logged.event_id,
                        output.id,
                    ),
                )
    if alternative.rvc is not None:
        rvc_ok, rvc_reasons = _rvc_test(production, alternative.rvc, method, vnm, label)
        found.extend(rvc_reasons)
        ok = ok and rvc_ok
    return ok, found


def de_minimis(
    agreement: Agreement,
    production: Production,
    rule: ProductRule,
    non_shifting: list[Material],
    label: str,
) -> tuple[bool, Reason, DeMinimisView]:
    """Art. 4.12: the non-shifting non-originating materials are forgiven if their value is at most the
    de minimis share (10 %) of the good's transaction value, or of its total cost where the rule says so."""
    output, logged = production.output, production.logged
    basis = rule.de_minimis_basis or agreement.de_minimis.basis
    base = _amount(output.transaction_value if basis == "transaction_value" else output.total_cost)
    share = agreement.de_minimis_share
    values = [_amount(m.value) for m in non_shifting]
    basis_words = "transaction value" if basis == "transaction_value" else "total cost"
    total = None
    if all(v is not None for v in values):
        total = sum((v for v in values if v is not None), ZERO) * production.share
    limit = None if not base else share * base
    within = limit is not None and total is not None and total <= limit
    view = DeMinimisView(
        basis=basis,
        share=exact_decimal(share),
        limit=None if limit is None else exact_decimal(limit),
        non_shifting_value=None if total is None else exact_decimal(total),
        within=within,
        materials=[m.batch for m in non_shifting],
    )
    if limit is None or base is None:
        text = f"{label}: de minimis cannot help, since {output.id} declares no {basis_words}"
        return False, Reason("de-minimis-unavailable", "fail", text, logged.event_id, output.id), view
    if total is None:
        text = f"{label}: de minimis cannot help, since a non-shifting material's value is not declared"
        return False, Reason("de-minimis-unavailable", "fail", text, logged.event_id, output.id), view
    text = (
        f"{label}: the non-shifting non-originating materials are worth {exact_decimal(total)}; the de minimis "
        f"limit (Art. 4.12) is {exact_decimal(share)} x {basis_words} {exact_decimal(base)} = "
        f"{exact_decimal(limit)}: {exact_decimal(total)} {'<=' if within else '>'} {exact_decimal(limit)}"
        + ("; their value still counts in VNM" if within else "")
    )
    code = "de-minimis-met" if within else "de-minimis-exceeded"
    return within, Reason(code, "pass" if within else "fail", text, logged.event_id, output.id), view


def _vnm(production: Production, foreign: list[Material]) -> Fraction | None:
    """Art. 4.5: the value of non-originating materials, allocated to the good by its share of the production's
    output mass; ``None`` when a value is not declared."""
    values = [_amount(m.value) for m in foreign]
    if any(v is None for v in values):
        return None
    return sum((v for v in values if v is not None), ZERO) * production.share


def _base(output: ev.Output, method: Method) -> Fraction | None:
    return _amount(output.transaction_value if method == "transaction_value" else output.net_cost)


def rvc(base: Fraction, vnm: Fraction) -> Fraction:
    """Art. 4.5: RVC = (TV - VNM) / TV under the transaction-value method, (NC - VNM) / NC under net cost."""
    return (base - vnm) / base


def _rvc_view(production: Production, method: Method, vnm: Fraction | None) -> RvcView:
    output = production.output
    money = output.transaction_value if method == "transaction_value" else output.net_cost
    base = _amount(money)
    name = "TV" if method == "transaction_value" else "NC"
    if base is None or not base:
        return RvcView(
            method,
            None if base is None else "0",
            None if vnm is None else exact_decimal(vnm),
            None,
            None,
            None,
            f"{name} not declared" if base is None else f"{name} is 0",
        )
    if vnm is None:
        return RvcView(
            method, exact_decimal(base), None, None, None, money.currency if money else None, "VNM unknown"
        )
    value = rvc(base, vnm)
    return RvcView(
        method,
        exact_decimal(base),
        exact_decimal(vnm),
        exact_decimal(value),
        percent_display(value),
        money.currency if money else None,
        f"({name} {exact_decimal(base)} - VNM {exact_decimal(vnm)}) / {name} {exact_decimal(base)} = "
        f"{exact_decimal(value)}",
    )


def _rvc_test(
    production: Production,
    minimums: Any,
    method: Method | None,
    vnm: Fraction | None,
    label: str,
) -> tuple[bool, list[Reason]]:
    """Art. 4.5: the claimant chooses the method, unless the rule allows only net cost. ``method`` ``None``: the
    method most favourable to the producer of a material (each method the rule allows is tried)."""
    output, logged = production.output, production.logged
    allowed = [m for m in METHODS if minimums.minimum(m) is not None]
    reasons: list[Reason] = []
    if method is None:
        tried = allowed
    elif method in allowed:
        tried = [method]
    else:
        tried = allowed
        reasons.append(
            Reason(
                "rvc-method-required",
                "info",
                f"{label} allows only the {' or '.join(METHOD_NAMES[m] for m in allowed)} method, so it is used "
                f"instead of the {METHOD_NAMES[method]} method asked for (Art. 4.5)",
                logged.event_id,
                output.id,
            )
        )
    results: list[tuple[bool, Reason]] = []
    for chosen in tried:
        minimum = minimums.minimum(chosen)
        assert minimum is not None
        base = _base(output, chosen)
        name = "transaction value" if chosen == "transaction_value" else "net cost"
        short = "TV" if chosen == "transaction_value" else "NC"
        if base is None or not base:
            results.append(
                (
                    False,
                    Reason(
                        "rvc-value-missing",
                        "fail",
                        f"{label}: {output.id} declares no {name} (a positive one), so its regional value content "
                        f"under the {METHOD_NAMES[chosen]} method cannot be computed",
                        logged.event_id,
                        output.id,
                    ),
                )
            )
            continue
        if vnm is None:
            results.append(
                (
                    False,
                    Reason(
                        "rvc-value-missing",
                        "fail",
                        f"{label}: the value of non-originating materials is unknown, so the regional value "
                        f"content under the {METHOD_NAMES[chosen]} method cannot be computed",
                        logged.event_id,
                        output.id,
                    ),
                )
            )
            continue
        value = rvc(base, vnm)
        ok = value >= minimum
        results.append(
            (
                ok,
                Reason(
                    "rvc-met" if ok else "rvc-below",
                    "pass" if ok else "fail",
                    f"{label}: regional value content ({short} {exact_decimal(base)} - VNM {exact_decimal(vnm)}) / "
                    f"{short} {exact_decimal(base)} = {exact_decimal(value)} ({percent_display(value)} %) "
                    f"{'>=' if ok else '<'} {exact_decimal(minimum)} under the {METHOD_NAMES[chosen]} method",
                    logged.event_id,
                    output.id,
                ),
            )
        )
    passing = [reason for ok, reason in results if ok]
    if passing:
        return True, reasons + passing[:1]
    return False, reasons + [reason for _, reason in results]


# --- determine ------------------------------------------------------------------------------------------


def _makes_or_moves(event: ev.Event, batch_id: str) -> bool:
    """Whether the event made the good or moved it (a later production that consumed it does not change it)."""
    match event:
        case ev.Extract(batch=new):
            return new.id == batch_id
        case ev.Transfer(batch=b) | ev.Receive(batch=b):
            return b == batch_id
        case ev.Transform(outputs=outputs) | ev.Recycle(outputs=outputs):
            return any(o.id == batch_id for o in outputs)
        case ev.Split(outputs=parts):
            return any(p.id == batch_id for p in parts)
        case ev.Merge(output=out):
            return out == batch_id
    return False


def determining_event(ordered: Sequence[LoggedEvent], batch_id: str, at: date) -> LoggedEvent:
    """The last event on or before ``at`` (local date) that made or moved the good: its date decides whether the
    agreement was in force."""
    found = None
    for logged in ordered:
        if logged.local_date <= at and _makes_or_moves(logged.event, batch_id):
            found = logged
    if found is None:
        raise NotFound(f"batch {batch_id!r} has no events on or before {at.isoformat()} in the evidence")
    return found


def determine_origin(
    events: Sequence[LoggedEvent],
    batch_id: str,
    agreement: Agreement,
    at: date,
    method: Method = "transaction_value",
) -> OriginDetermination:
    """Does ``batch_id`` originate under ``agreement``, considering events up to local date ``at``, with the
    regional value content computed by ``method`` where the rule allows it?"""
    ordered = sorted(events, key=lambda item: item.log_index)
    determining = determining_event(ordered, batch_id, at)
    walker = Walker(agreement, ordered)
    walker.run(ordered, at)
    good = walker.goods.get(batch_id)
    if good is None:
        raise NotFound(f"batch {batch_id!r} has no events on or before {at.isoformat()} in the evidence")
    judged = Judged(method=method)
    if good.production is not None:
        base, judged = judge_production_in_full(agreement, good.production, method)
        status = judge_good(agreement, replace(good, production=None, base=base, cache={}), method)
    else:
        status = walker.status(good, method)
    reasons = list(status.reasons)
    in_force = date.fromisoformat(agreement.in_force_from)
    if determining.local_date < in_force:
        reasons.append(
            Reason(
                "agreement-not-in-force",
                "fail",
                f"{agreement.id} applies from {agreement.in_force_from}; the determining event "
                f"{determining.event_id} is dated {determining.local_date.isoformat()}",
                determining.event_id,
                batch_id,
            )
        )
        status = replace(status, originating=False, criterion=None)
    if status.originating:
        reasons.append(
            Reason(
                "originating",
                "pass",
                f"{batch_id} originates under {agreement.id}, criterion {status.criterion}: "
                f"{CRITERIA[status.criterion or 'C']}",
                batch=batch_id,
            )
        )
    failing = [] if status.originating else [r for r in reasons if r.outcome == "fail"]
    if not status.originating and not failing:
        failing = [Reason(status.code, "fail", status.why, good.made_by.event_id, batch_id)]
        reasons.append(failing[0])
    used = _method_used(judged, method)
    production = good.production
    return OriginDetermination(
        batch=batch_id,
        agreement=agreement.reference(),
        at=at.isoformat(),
        method=method,
        rvc_method=used,
        verdict="originating" if status.originating else "not_originating",
        criterion=status.criterion if status.originating else None,
        criterion_text=CRITERIA[status.criterion] if status.originating and status.criterion else None,
        hs6=good.hs6,
        rule=msgspec.to_builtins(judged.rule) if judged.rule is not None else None,
        produced_by=good.made_by.event_id,
        produced_in=good.made_in,
        determining_event=determining.event_id,
        determining_date=determining.local_date.isoformat(),
        rvc=judged.rvc,
        de_minimis=judged.de_minimis,
        materials=_material_views(agreement, production, judged) if production is not None else [],
        reasons=reasons,
        not_originating=failing,
    )


def _method_used(judged: Judged, asked: Method) -> Method:
    """The method asked for, unless every RVC alternative of the good's rule allows only the other one."""
    rule = judged.rule
    if rule is None:
        return asked
    with_rvc = [a.rvc for a in rule.alternatives if a.rvc is not None]
    if with_rvc and all(r.minimum(asked) is None for r in with_rvc):
        other: Method = "net_cost" if asked == "transaction_value" else "transaction_value"
        return other
    return asked


def _material_views(agreement: Agreement, production: Production, judged: Judged) -> list[MaterialView]:
    views = []
    for material in production.materials:
        value = _amount(material.value)
        counted = counts_as_originating(agreement, material, production.facility.country)
        code, why = material.status.code, material.status.why
        if material.status.originating and not counted:
            code = "not-accumulated"
            why = (
                f"{why}; it originates in {material.made_in}, and {agreement.id} does not accumulate origin "
                f"across parties, so in {production.facility.country} it is a non-originating material"
            )
        views.append(
            MaterialView(
                batch=material.batch,
                event_id=material.made_by,
                hs6=material.hs6,
                originating=counted,
                code=code,
                why=why,
                mass_g=material.mass_g,
                value=None if value is None else exact_decimal(value * production.share),
                currency=material.value.currency if material.value is not None else None,
                criterion=material.status.criterion if counted else None,
                tariff_change=judged.shifts.get(material.batch, {}),
            )
        )
    return views
