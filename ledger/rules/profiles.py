"""Rule profiles: versioned, signed data that says what qualifies.

A profile is a TOML file (the built-in ones live under ``ledger/rules/profiles/``) or the JSON carried by a
``profile_published`` registry event; both are validated by :func:`parse_profile`, which names the place, the
field and what is allowed. Its content hash is the SHA-256 of the RFC 8785 canonical JSON of its content, so
the hash names what the profile says, not how a file is formatted; a determination names id, version and hash.
"""

from __future__ import annotations

import hashlib
import tomllib
from datetime import date
from decimal import Decimal
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from ledger.domain import vocab
from ledger.domain.canonical import canonical_bytes
from ledger.domain.events import DATE_PATTERN, DECIMAL_PATTERN, FRACTION_PATTERN, parse_share
from ledger.errors import LedgerError, NotFound

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

IRMA_LEVELS = vocab.IRMA_LEVELS
STANDARD_LEVELS = vocab.STANDARD_LEVELS
FEOC_ACTIVITIES = ("extraction", "processing", "recycling", "component_manufacturing", "handling")
"""Activities for which a profile may set its own foreign-entity effective date."""

Share = Annotated[str, msgspec.Meta(pattern=FRACTION_PATTERN)]
DateText = Annotated[str, msgspec.Meta(pattern=DATE_PATTERN)]
ProfileId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]


class ProfileError(LedgerError):
    """A profile is malformed."""

    status = 422
    code = "bad-profile"
    title = "Malformed rule profile"


class _Base(msgspec.Struct, forbid_unknown_fields=True, dict=True, omit_defaults=True):
    pass


class Threshold(_Base):
    from_: DateText = msgspec.field(name="from")
    share: Share

    @property
    def start(self) -> date:
        return date.fromisoformat(self.from_)


class RecycledMinimum(_Base):
    """A minimum recycled share of one mineral, by mass, from a date (e.g. Regulation (EU) 2023/1542 Art. 8)."""

    mineral: str
    from_: DateText = msgspec.field(name="from")
    share: Share


class AttestationOption(_Base):
    standard: str
    min_level: str | None = None
    levels: list[str] | None = None


class AttestationRequirement(_Base):
    name: str
    activity: Literal["extraction", "processing", "recycling"]
    facility_kinds: list[str]
    any_of: Annotated[list[AttestationOption], msgspec.Meta(min_length=1)]


class ForeignEntityRule(_Base):
    covered_nations: list[str]
    control_threshold: Share
    effective_date: DateText
    """From this local date of the determining event the rule applies (to activities not named below)."""
    effective_dates: dict[str, DateText] = {}
    """Per activity (``FEOC_ACTIVITIES``): a different start, e.g. earlier for component manufacturing."""
    treated_as_government: list[str] = msgspec.field(default_factory=lambda: ["government"])
    """Owner kinds (``vocab.OWNER_KINDS``) whose holdings count as the government of their country."""
    attribution: Literal["proportional", "control"] = "proportional"
    """How holdings through intermediates count: ``proportional`` multiplies the stakes along each chain and sums
    the chains; ``control`` also treats an intermediate that its government holds at least ``control_share`` of
    (in the measure tested) as that government itself."""
    control_share: Share | None = None


class ProcessingRule(_Base):
    value_added_share: Share
    """A source counts as processed in members when at least this share of the value added by its mineral-
    processing steps arose in members."""
    mineral_processing: Annotated[list[str], msgspec.Meta(min_length=1)]
    """Process types that are mineral processing: they can confer origin."""
    assembly: list[str]
    """Process types that are component manufacturing or assembly: they never confer origin."""
    value_added_until: DateText | None = None
    """After this local date of the determining event the value-added alternative no longer applies."""


class TransitRule(_Base):
    """Goods crossing a third country that is not a member keep their origin only under these conditions."""

    requires_customs_control: bool = True
    allowed_operations: list[str] = []
    """Operations (``vocab.TRANSIT_OPERATIONS``) that may happen there without losing origin."""


class CurrencyRule(_Base):
    base: str = "USD"
    """Every value is converted into this currency before values are added or compared."""
    rate_date: Literal["event", "determination"] = "event"
    """Which date's published rate applies: the local date of the event that declared the value, or the local
    date of the determining event."""
    max_rate_age_days: Annotated[int, msgspec.Meta(ge=0, le=31)] = 0
    """A rate published up to this many days before that date may stand in (0: the rate of that very day)."""


class Profile(_Base):
    id: ProfileId
    name: str
    version: Annotated[int, msgspec.Meta(ge=1)]
    description: str
    members: Annotated[list[str], msgspec.Meta(min_length=1)]
    critical_minerals: Annotated[list[str], msgspec.Meta(min_length=1)]
    """Minerals the share is computed over; material of any other mineral is left out of it."""
    share_basis: Literal["value", "mass"]
    origin_rule: Literal["extracted_or_processed", "last_substantial_transformation"]
    recycling_members: list[str]
    """Where recycling makes a new qualifying source (empty: recycling never counts as origin)."""
    foreign_entity: ForeignEntityRule
    thresholds: Annotated[list[Threshold], msgspec.Meta(min_length=1)]
    processing: ProcessingRule
    currency: CurrencyRule
    attestations: list[AttestationRequirement] = []
    """The ESG gate (empty: no gate)."""
    transit: TransitRule | None = None
    """No transit rule: the route does not matter."""
    recycled_content: list[RecycledMinimum] = []
    references: list[str] = []
    """The public texts the numbers come from."""
    default: bool = False

    @cached_property
    def content_hash(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_bytes(self.document())).hexdigest()

    def document(self) -> dict[str, Any]:
        """The profile as JSON (what the content hash covers, what is published and what a bundle carries)."""
        document: dict[str, Any] = msgspec.to_builtins(self)
        return document

    def reference(self) -> dict[str, Any]:
        """How a determination names the profile it used."""
        return {"id": self.id, "name": self.name, "version": self.version, "content_hash": self.content_hash}

    @cached_property
    def member_set(self) -> frozenset[str]:
        return frozenset(self.members)

    @cached_property
    def recycling_set(self) -> frozenset[str]:
        return frozenset(self.recycling_members)

    @cached_property
    def covered_set(self) -> frozenset[str]:
        return frozenset(self.foreign_entity.covered_nations)

    @cached_property
    def critical_set(self) -> frozenset[str]:
        return frozenset(self.critical_minerals)

    @cached_property
    def control_threshold(self) -> Fraction:
        return parse_share(self.foreign_entity.control_threshold)

    @cached_property
    def value_added_share(self) -> Fraction:
        return parse_share(self.processing.value_added_share)

    @cached_property
    def process_class(self) -> dict[str, Literal["mineral_processing", "assembly"]]:
        classes: dict[str, Literal["mineral_processing", "assembly"]] = dict.fromkeys(
            self.processing.mineral_processing, "mineral_processing"
        )
        classes.update(dict.fromkeys(self.processing.assembly, "assembly"))
        return classes

    def foreign_entity_from(self, activity: str) -> date:
        """From which local date of the determining event the foreign-entity rule applies to ``activity``."""
        rule = self.foreign_entity
        return date.fromisoformat(rule.effective_dates.get(activity, rule.effective_date))

    def value_added_applies(self, day: date) -> bool:
        until = self.processing.value_added_until
        return until is None or day <= date.fromisoformat(until)

    def threshold_on(self, day: date) -> Threshold | None:
        """The threshold in force on ``day``: the latest one that started on or before it."""
        applicable = [t for t in self.thresholds if t.start <= day]
        return max(applicable, key=lambda t: t.start) if applicable else None


def _check(profile: Profile, where: str) -> None:
    def bad(field: str, message: str) -> ProfileError:
        return ProfileError(f"rule profile {where}: field `{field}` {message}")

    def one_of(field: str, values: list[str], allowed: frozenset[str] | tuple[str, ...]) -> None:
        for value in values:
            if value not in allowed:
                raise bad(field, f"lists {value!r}; allowed: {', '.join(sorted(allowed))}")
        if len(set(values)) != len(values):
            raise bad(field, "lists a value twice")

    for field, countries in (
        ("members", profile.members),
        ("recycling_members", profile.recycling_members),
        ("foreign_entity.covered_nations", profile.foreign_entity.covered_nations),
    ):
        for country in countries:
            if country not in vocab.COUNTRIES:
                raise bad(field, f"lists {country!r}, which is not an ISO 3166-1 alpha-2 code")
        if len(set(countries)) != len(countries):
            raise bad(field, "lists a country twice")
    one_of("critical_minerals", profile.critical_minerals, vocab.MINERALS)
    one_of(
        "foreign_entity.treated_as_government",
        profile.foreign_entity.treated_as_government,
        vocab.OWNER_KINDS,
    )
    one_of("foreign_entity.effective_dates", list(profile.foreign_entity.effective_dates), FEOC_ACTIVITIES)
    if (profile.foreign_entity.attribution == "control") != (
        profile.foreign_entity.control_share is not None
    ):
        raise bad("foreign_entity.control_share", "is required with attribution = 'control' and only then")
    processing = profile.processing
    one_of("processing.mineral_processing", processing.mineral_processing, vocab.PROCESS_TYPES)
    one_of("processing.assembly", processing.assembly, vocab.PROCESS_TYPES)
    both = set(processing.mineral_processing) & set(processing.assembly)
    if both:
        raise bad(
            "processing", f"classes {', '.join(sorted(both))} both as mineral processing and as assembly"
        )
    unclassed = (
        vocab.PROCESS_TYPES - {"recycling"} - set(processing.mineral_processing) - set(processing.assembly)
    )
    if unclassed:
        raise bad(
            "processing",
            f"does not class {', '.join(sorted(unclassed))}; list each process type under mineral_processing or assembly",
        )
    if "recycling" in both | set(processing.mineral_processing) | set(processing.assembly):
        raise bad("processing", "classes 'recycling'; recycling is its own event kind and never classed")
    if profile.currency.base not in vocab.CURRENCIES:
        raise bad("currency.base", f"is {profile.currency.base!r}, not an ISO 4217 currency code")
    if profile.transit is not None:
        one_of("transit.allowed_operations", profile.transit.allowed_operations, vocab.TRANSIT_OPERATIONS)
    shares = [
        ("foreign_entity.control_threshold", profile.foreign_entity.control_threshold),
        ("processing.value_added_share", processing.value_added_share),
        *((f"thresholds[{i}].share", t.share) for i, t in enumerate(profile.thresholds)),
        *((f"recycled_content[{i}].share", m.share) for i, m in enumerate(profile.recycled_content)),
    ]
    if profile.foreign_entity.control_share is not None:
        shares.append(("foreign_entity.control_share", profile.foreign_entity.control_share))
    for field, value in shares:
        if parse_share(value) > 1:
            raise bad(field, f"is {value}; a share lies between 0 and 1")
    dates: list[date] = []
    for field, text in (
        ("foreign_entity.effective_date", profile.foreign_entity.effective_date),
        *(
            (f"foreign_entity.effective_dates.{k}", v)
            for k, v in profile.foreign_entity.effective_dates.items()
        ),
        ("processing.value_added_until", processing.value_added_until or "2000-01-01"),
        *((f"thresholds[{i}].from", t.from_) for i, t in enumerate(profile.thresholds)),
        *((f"recycled_content[{i}].from", m.from_) for i, m in enumerate(profile.recycled_content)),
    ):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise bad(field, f"is {text!r}, not a calendar date") from None
        if field.startswith("thresholds"):
            dates.append(day)
    if dates != sorted(set(dates)):
        raise bad("thresholds", "must be in increasing order of `from`, each date once")
    for i, minimum in enumerate(profile.recycled_content):
        if minimum.mineral not in profile.critical_set:
            raise bad(
                f"recycled_content[{i}].mineral",
                f"is {minimum.mineral!r}, which is not one of this profile's critical_minerals",
            )
    for i, requirement in enumerate(profile.attestations):
        _check_requirement(requirement, f"attestations[{i}]", bad)


def _check_requirement(requirement: AttestationRequirement, where: str, bad: Any) -> None:
    for kind in requirement.facility_kinds:
        if kind not in vocab.FACILITY_KINDS:
            raise bad(f"{where}.facility_kinds", f"lists {kind!r}, not a facility kind")
    for j, option in enumerate(requirement.any_of):
        field = f"{where}.any_of[{j}]"
        levels = STANDARD_LEVELS.get(option.standard)
        if levels is None and not option.standard.startswith("other:"):
            raise bad(
                f"{field}.standard",
                f"is {option.standard!r}; use one of {', '.join(STANDARD_LEVELS)} or other:<name>",
            )
        if (option.min_level is None) == (option.levels is None):
            raise bad(field, "needs exactly one of min_level and levels")
        if levels is None:
            continue
        named = [option.min_level] if option.min_level else list(option.levels or [])
        for level in named:
            if level not in levels:
                raise bad(
                    field,
                    f"names level {level!r}, which {option.standard} does not have ({', '.join(levels)})",
                )
        if option.min_level is not None and option.standard != "irma":
            raise bad(
                f"{field}.min_level", "is only meaningful for IRMA's ordered levels; list `levels` instead"
            )


def parse_profile(document: Any, where: str) -> Profile:
    """Validate a profile document (decoded TOML or JSON); raise :class:`ProfileError` naming ``where`` and the
    field."""
    try:
        profile = msgspec.convert(document, type=Profile, strict=True)
    except msgspec.ValidationError as exc:
        raise ProfileError(f"rule profile {where}: {exc}") from None
    _check(profile, where)
    return profile


def load_profile(path: Path) -> Profile:
    """Load and validate one profile file; raise :class:`ProfileError` naming the file and the field."""
    where = path.name
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"rule profile {where} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"rule profile {where} is not UTF-8 text") from None
    return parse_profile(raw, where)


def profile_from_document(document: Any, where: str = "from the bundle") -> Profile:
    """A profile carried as JSON (a bundle, a ``profile_published`` event); validated like a file."""
    if not isinstance(document, dict):
        raise ProfileError(f"rule profile {where} is not a JSON object")
    return parse_profile(document, f"{document.get('id', '?')} ({where})")


def decimal_share(value: str) -> Decimal:
    """A share as a Decimal for display (fractions such as 1/3 are shown to 6 places)."""
    share = parse_share(value)
    return Decimal(share.numerator) / Decimal(share.denominator)


class Profiles:
    """The built-in profiles, loaded once at start (so that a bad file stops the service from starting), and
    versions published in the log, which the eligibility service adds with :meth:`add`."""

    def __init__(self, directory: Path = PROFILE_DIR) -> None:
        files = sorted(directory.glob("*.toml"))
        if not files:
            raise ProfileError(f"no rule profiles in {directory}")
        self.builtin: dict[str, Profile] = {}
        for path in files:
            profile = load_profile(path)
            if f"{profile.id}.toml" != path.name:
                raise ProfileError(
                    f"rule profile {path.name}: field `id` is {profile.id!r} but the file must be named after it"
                )
            self.builtin[profile.id] = profile
        defaults = [p.id for p in self.builtin.values() if p.default]
        if len(defaults) != 1:
            raise ProfileError(
                f"exactly one rule profile must say default = true; found {defaults or 'none'}"
            )
        self.default_id = defaults[0]
        self.versions: dict[str, dict[int, Profile]] = {}
        """Published versions by id and version number (from ``profile_published`` events)."""

    @property
    def by_id(self) -> dict[str, Profile]:
        """The current profile of every id: its latest published version, else the built-in one."""
        current = dict(self.builtin)
        for profile_id, versions in self.versions.items():
            current[profile_id] = versions[max(versions)]
        return current

    def add(self, profile: Profile) -> None:
        self.versions.setdefault(profile.id, {})[profile.version] = profile

    def get(self, profile_id: str | None, version: int | None = None) -> Profile:
        wanted = profile_id or self.default_id
        if version is not None:
            found = self.versions.get(wanted, {}).get(version)
            if found is None:
                builtin = self.builtin.get(wanted)
                if builtin is not None and builtin.version == version:
                    return builtin
                raise NotFound(f"rule profile {wanted!r} has no version {version}")
            return found
        profile = self.by_id.get(wanted)
        if profile is None:
            raise NotFound(
                f"there is no rule profile {wanted!r}; profiles are {', '.join(sorted(self.by_id))}"
            )
        return profile

    def all(self) -> list[Profile]:
        current = self.by_id
        return [current[i] for i in sorted(current)]


__all__ = ["DECIMAL_PATTERN", "Profile", "ProfileError", "Profiles", "load_profile", "parse_profile"]
