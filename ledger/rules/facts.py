"""Registry facts as the eligibility engine reads them from signed events: participants, facilities, owners and
stakes, attestations, exchange rates, chain-of-custody models and key compromises. Pure functions, no I/O.

Each rule here is a small function citing what it follows; ``ledger.rules.engine`` composes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from gmpy2 import mpq

from ledger.domain import events as ev
from ledger.domain.vocab import IRMA_LEVELS
from ledger.errors import InvalidInput
from ledger.rules.profiles import AttestationOption, AttestationRequirement, Profile

# The engine computes with GMP's rationals: exact like ``Fraction`` (equal to it, hashed like it), and about ten
# times faster, which matters when a lineage of 100,000 events makes hundreds of thousands of operations.
ZERO = mpq(0)
ONE = mpq(1)
MEASURES = ("equity", "votes", "board_seats")


class MissingExchangeRate(InvalidInput):
    """A value cannot be converted because no rate was published for the pair and date."""

    status = 422
    code = "missing-exchange-rate"


class MissingValue(InvalidInput):
    """The profile weighs by value, but a source declares none."""

    status = 422
    code = "missing-value"


class OwnershipCycleFound(InvalidInput):
    status = 422
    code = "ownership-cycle"


class _LocalDate:
    """``LoggedEvent.local_date``, worked out on first use and then kept: what ``functools.cached_property`` does,
    without the lock it takes in Python 3.11 (every event of a lineage is asked for its date)."""

    def __get__(self, logged: LoggedEvent, owner: type[LoggedEvent]) -> date:
        day = logged.__dict__["local_date"] = local_date_of(logged.event.timestamp)
        return day


@dataclass(frozen=True)
class LoggedEvent:
    """An accepted event as the engine sees it: decoded payload plus its place in the log."""

    log_index: int
    event_id: str
    event: ev.Event
    key_id: str | None = None
    """The key that signed it (to tell events signed after a key's reported compromise)."""

    local_date = _LocalDate()
    """The calendar date in the signer's own UTC offset (the offset in its timestamp)."""


def local_date_of(timestamp: str) -> date:
    """What ``ev.parse_timestamp(timestamp).date()`` returns, without its regular expression and UTC conversion in
    the common case (every event of a lineage asks): Python 3.11 reads the ``Z`` suffix itself, and a year strictly
    inside the allowed range stays inside it in UTC (an offset moves a time by less than a day). Anything else goes
    through ``parse_timestamp``, with its checks and its error."""
    try:
        value = datetime.fromisoformat(timestamp)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None or not ev.MIN_YEAR < value.year < ev.MAX_YEAR:
        return ev.parse_timestamp(timestamp).date()
    return value.date()


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


@dataclass(frozen=True)
class CustodyModel:
    model: str
    period: str
    conversion_factors: dict[str, mpq]
    since: date
    event_id: str


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
    owners: dict[str, ev.OwnerInfo] = field(default_factory=dict)
    stakes: dict[str, list[tuple[str, date, ev.StakeRecorded]]] = field(default_factory=dict)
    """Subject -> (holder, effective date, record), in log order."""
    rates: dict[date, dict[tuple[str, str], mpq]] = field(default_factory=dict)
    custody_models: dict[str, list[CustodyModel]] = field(default_factory=dict)

    def custody_model(self, facility: str, day: date) -> CustodyModel | None:
        """The facility's chain-of-custody model in effect on ``day`` (the latest declared from on or before it)."""
        current = None
        for model in self.custody_models.get(facility, []):
            if model.since <= day:
                current = model
        return current


def collect_facts(events: Iterable[LoggedEvent]) -> Facts:
    facts = Facts()
    for logged in events:
        if type(logged.event) not in _NOT_FACTS:  # custody events, most of a lineage, state no registry fact
            _collect(facts, logged)
    for models in facts.custody_models.values():
        models.sort(key=lambda m: m.since)
    return facts


def _collect(facts: Facts, logged: LoggedEvent) -> None:
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
        case ev.OwnerRegistered(owner=owner):
            facts.owners[owner.id] = owner
        case ev.StakeRecorded(holder=holder, subject=subject, effective_date=day):
            facts.stakes.setdefault(subject, []).append((holder, date.fromisoformat(day), event))
        case ev.ExchangeRatesPublished(date=day, rates=rates):
            table = facts.rates.setdefault(date.fromisoformat(day), {})
            for rate in rates:
                table[(rate.from_, rate.to)] = mpq(Decimal(rate.rate))
        case ev.CustodyModelDeclared(facility=fid, model=model, period=period, conversion_factors=factors):
            facts.custody_models.setdefault(fid, []).append(
                CustodyModel(
                    model,
                    period,
                    {k: mpq(Decimal(v)) for k, v in factors.items()},
                    date.fromisoformat(event.effective_date),
                    logged.event_id,
                )
            )
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
        case ev.RevokeAttestation(attestation=aid, effective_date=day) if aid in facts.attestations:
            record = facts.attestations[aid]
            effective = date.fromisoformat(day)
            record.revoked_on = effective if record.revoked_on is None else min(record.revoked_on, effective)
        case ev.SuspendAttestation(attestation=aid, effective_date=day) if aid in facts.attestations:
            record = facts.attestations[aid]
            effective = date.fromisoformat(day)
            record.suspended_on = (
                effective if record.suspended_on is None else min(record.suspended_on, effective)
            )
        case _:
            pass


_NOT_FACTS = frozenset(
    {ev.Extract, ev.Transfer, ev.Receive, ev.Transform, ev.Split, ev.Merge, ev.Recycle, ev.Claim}
)


# --- currencies ----------------------------------------------------------------------------------------------


class Converter:
    """Converts declared values into the profile's base currency with rates published as signed registry data.

    docs/eligibility.md section 6: a missing rate is an error naming the pair and the date, never a guess. A rate
    published for the pair in either direction serves (the inverse is exact: 1/rate as a fraction); with
    ``max_rate_age_days`` the latest rate up to that many days earlier stands in (weekends, holidays).
    """

    def __init__(self, profile: Profile, facts: Facts) -> None:
        self.base = profile.currency.base
        self.max_age = timedelta(days=profile.currency.max_rate_age_days)
        self.profile_id = profile.id
        self.rates = facts.rates
        self._converted: dict[tuple[str, str, date], mpq] = {}

    def rate(self, currency: str, day: date) -> mpq:
        if currency == self.base:
            return ONE
        for age in range(self.max_age.days + 1):
            table = self.rates.get(day - timedelta(days=age))
            if table is None:
                continue
            if (currency, self.base) in table:
                return table[(currency, self.base)]
            if (self.base, currency) in table:
                return 1 / table[(self.base, currency)]
        window = f" or up to {self.max_age.days} days before" if self.max_age.days else ""
        raise MissingExchangeRate(
            f"no exchange rate {currency}/{self.base} was published for {day.isoformat()}{window}; profile "
            f"{self.profile_id} converts values into {self.base}. The registrar publishes rates with "
            "`ledger rates publish`"
        )

    def convert(self, money: ev.Money, day: date) -> mpq:
        key = (money.amount, money.currency, day)
        found = self._converted.get(key)
        if found is None:
            found = self._converted[key] = mpq(Decimal(money.amount)) * self.rate(money.currency, day)
        return found


# --- ESG attestations ------------------------------------------------------------------------------------------


def _level_ok(option: AttestationOption, level: str) -> bool:
    if option.min_level is not None:
        if level not in IRMA_LEVELS:
            return False
        return IRMA_LEVELS.index(level) >= IRMA_LEVELS.index(option.min_level)
    return level in (option.levels or [])


def describe_requirement(requirement: AttestationRequirement) -> str:
    return " or ".join(
        f"{o.standard.upper()} {o.min_level or '/'.join(o.levels or [])}"
        + (" or better" if o.min_level else "")
        for o in requirement.any_of
    )


class AttestationGate:
    """docs/eligibility.md section 8: an attestation counts for an event only if the event's local date lies inside
    its validity (both ends inclusive) and it was not revoked or suspended on or before it."""

    def __init__(self, requirements: Sequence[AttestationRequirement], facts: Facts) -> None:
        self.requirements = requirements
        self.facts = facts
        self._found: dict[tuple[int, str, frozenset[str], str, date], AttestationFacts | None] = {}
        self._applicable: dict[tuple[str, str], list[AttestationRequirement]] = {}

    def applicable(self, activity: str, facility: FacilityFacts) -> list[AttestationRequirement]:
        key = (activity, facility.kind)
        found = self._applicable.get(key)
        if found is None:
            found = self._applicable[key] = [
                r for r in self.requirements if r.activity == activity and facility.kind in r.facility_kinds
            ]
        return found

    def find(
        self,
        requirement: AttestationRequirement,
        facility: FacilityFacts,
        minerals: frozenset[str],
        day: date,
    ) -> AttestationFacts | None:
        memo = (id(requirement), facility.id, minerals, requirement.activity, day)
        if memo not in self._found:
            self._found[memo] = self._search(requirement, facility, minerals, day)
        return self._found[memo]

    def _search(
        self,
        requirement: AttestationRequirement,
        facility: FacilityFacts,
        minerals: frozenset[str],
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
            if info.activities and requirement.activity not in info.activities:
                continue
            if not record.counts_on(day):
                continue
            if any(o.standard == info.standard and _level_ok(o, info.level) for o in requirement.any_of):
                return record
        return None


# --- ownership: foreign entity of concern -----------------------------------------------------------------------


@dataclass(frozen=True)
class Holding:
    """A covered government's share of one measure of a participant, and the chains that make it up."""

    country: str
    measure: str
    share: Fraction
    chains: tuple[str, ...]


class OwnershipGraph:
    """docs/eligibility.md section 9: governments of covered nations (and the owner kinds the profile
    treats as such) holding at least the threshold of equity, votes or board seats, each tested alone, counting
    indirect holdings: by default proportionally (products along a chain, summed over chains, per government);
    under ``attribution = "control"`` an intermediate its government holds at least ``control_share`` of counts
    as that government."""

    def __init__(self, profile: Profile, facts: Facts) -> None:
        self.facts = facts
        self.rule = profile.foreign_entity
        self.government_kinds = frozenset(profile.foreign_entity.treated_as_government)
        self.control_share = ev.parse_share(self.rule.control_share) if self.rule.control_share else None
        self._memo: dict[tuple[str, str, date], dict[str, tuple[Fraction, tuple[str, ...]]]] = {}

    def holdings(self, participant: str, day: date) -> list[Holding]:
        """Every covered-or-not government's holding in ``participant`` on ``day``, per measure."""
        found: list[Holding] = []
        for measure in MEASURES:
            for country, (share, chains) in sorted(self._exposure(participant, measure, day, ()).items()):
                found.append(Holding(country, measure, share, chains))
        return found

    def _stakes_in(self, subject: str, day: date) -> dict[str, ev.StakeRecorded]:
        """The record in effect on ``day`` for each holder of ``subject`` (the latest from on or before it)."""
        current: dict[str, tuple[date, ev.StakeRecorded]] = {}
        for holder, since, record in self.facts.stakes.get(subject, []):
            if since <= day and (holder not in current or current[holder][0] <= since):
                current[holder] = (since, record)
        return {holder: record for holder, (_, record) in current.items()}

    def _exposure(
        self, subject: str, measure: str, day: date, seen: tuple[str, ...]
    ) -> dict[str, tuple[Fraction, tuple[str, ...]]]:
        if subject in seen:
            raise OwnershipCycleFound(
                "the ownership records form a cycle: " + " -> ".join((*seen[seen.index(subject) :], subject))
            )
        memo = (subject, measure, day)
        if memo in self._memo:
            return self._memo[memo]
        total: dict[str, tuple[Fraction, tuple[str, ...]]] = {}

        def add(country: str, share: Fraction, chain: str) -> None:
            before, chains = total.get(country, (ZERO, ()))
            total[country] = (before + share, (*chains, chain))

        participant = self.facts.participants.get(subject)
        ownership = participant.ownership_on(day) if participant else None
        for stake in ownership.government_stakes if ownership else []:  # direct stakes recorded at admission
            share = ev.parse_share(getattr(stake, measure))
            if share:
                add(
                    stake.country,
                    share,
                    f"government of {stake.country} holds {getattr(stake, measure)} directly",
                )
        for holder, record in sorted(self._stakes_in(subject, day).items()):
            share = ev.parse_share(getattr(record, measure))
            if not share:
                continue
            owner = self.facts.owners.get(holder)
            if owner is not None and owner.kind in self.government_kinds:
                add(
                    owner.country,
                    share,
                    f"{holder} ({owner.kind}, {owner.country}) holds {getattr(record, measure)}",
                )
                continue
            for country, (inner, chains) in self._exposure(holder, measure, day, (*seen, subject)).items():
                controlled = self.control_share is not None and inner >= self.control_share
                attributed = share if controlled else share * inner
                how = "controlled by its government, so counted in full" if controlled else f"x {inner}"
                for chain in chains:
                    add(
                        country,
                        ZERO,
                        f"{holder} holds {getattr(record, measure)} of {subject} ({how}); {chain}",
                    )
                before, chains_so_far = total[country]
                total[country] = (before + attributed, chains_so_far)
        self._memo[memo] = total
        return total


def exact_decimal(value: Fraction | mpq) -> str:
    """A terminating decimal for ``value`` if one exists (denominator of 2s and 5s), else ``n/d``."""
    numerator, denominator = int(value.numerator), int(value.denominator)
    if denominator == 1:
        return str(numerator)
    twos = (denominator & -denominator).bit_length() - 1  # the power of 2 in the denominator
    rest = denominator >> twos
    fives = 0
    while rest % 5 == 0:
        rest //= 5
        fives += 1
    if rest != 1:
        return f"{numerator}/{denominator}"
    places = max(twos, fives)
    scaled = numerator * 10**places // denominator  # exact: the denominator divides 10**places
    return format(Decimal(scaled).scaleb(-places), "f")
