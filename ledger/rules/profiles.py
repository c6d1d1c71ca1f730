"""Rule profiles: versioned data files (TOML) under ``ledger/rules/profiles/`` that say what qualifies.

A profile is validated strictly when loaded: a malformed file fails loudly, naming the file and the field. Its
content hash is the SHA-256 of the RFC 8785 canonical JSON of its content, so that the hash names what the
profile says, not how the file is formatted; a determination names the hash it used.
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
from ledger.domain.events import DATE_PATTERN, DECIMAL_PATTERN
from ledger.errors import LedgerError, NotFound

PROFILE_DIR = Path(__file__).resolve().parent / "profiles"

IRMA_LEVELS = vocab.IRMA_LEVELS
STANDARD_LEVELS = vocab.STANDARD_LEVELS


Share = Annotated[str, msgspec.Meta(pattern=DECIMAL_PATTERN)]
DateText = Annotated[str, msgspec.Meta(pattern=DATE_PATTERN)]


class ProfileError(LedgerError):
    """A profile file is malformed."""

    status = 500
    code = "bad-profile"
    title = "Malformed rule profile"


class _Base(msgspec.Struct, forbid_unknown_fields=True, dict=True):
    pass


class Threshold(_Base):
    from_: DateText = msgspec.field(name="from")
    share: Share

    @property
    def start(self) -> date:
        return date.fromisoformat(self.from_)


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


class ProcessingRule(_Base):
    value_added_share: Share


class TransitRule(_Base):
    non_member_requires_customs_control: bool = True


class Profile(_Base):
    id: str
    name: str
    version: int
    description: str
    members: Annotated[list[str], msgspec.Meta(min_length=1)]
    recycling_members: list[str]
    foreign_entity: ForeignEntityRule
    thresholds: Annotated[list[Threshold], msgspec.Meta(min_length=1)]
    processing: ProcessingRule
    transit: TransitRule
    attestations: list[AttestationRequirement]
    default: bool = False

    @cached_property
    def content_hash(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_bytes(self.document())).hexdigest()

    def document(self) -> dict[str, Any]:
        """The profile as JSON (what the content hash covers, and what a bundle carries)."""
        document: dict[str, Any] = msgspec.to_builtins(self)
        return document

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
    def control_threshold(self) -> Fraction:
        return Fraction(Decimal(self.foreign_entity.control_threshold))

    @cached_property
    def foreign_entity_from(self) -> date:
        return date.fromisoformat(self.foreign_entity.effective_date)

    @cached_property
    def value_added_share(self) -> Fraction:
        return Fraction(Decimal(self.processing.value_added_share))

    def threshold_on(self, day: date) -> Threshold | None:
        """The threshold in force on ``day``: the latest one that started on or before it."""
        applicable = [t for t in self.thresholds if t.start <= day]
        return max(applicable, key=lambda t: t.start) if applicable else None


def _check(profile: Profile, where: str) -> None:
    def bad(field: str, message: str) -> ProfileError:
        return ProfileError(f"rule profile {where}: field `{field}` {message}")

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
    for field, value in (
        ("foreign_entity.control_threshold", profile.foreign_entity.control_threshold),
        ("processing.value_added_share", profile.processing.value_added_share),
        *((f"thresholds[{i}].share", t.share) for i, t in enumerate(profile.thresholds)),
    ):
        if Decimal(value) > 1:
            raise bad(field, f"is {value}; a share lies between 0 and 1")
    dates: list[date] = []
    for field, text in (
        ("foreign_entity.effective_date", profile.foreign_entity.effective_date),
        *((f"thresholds[{i}].from", t.from_) for i, t in enumerate(profile.thresholds)),
    ):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise bad(field, f"is {text!r}, not a calendar date") from None
        if field.startswith("thresholds"):
            dates.append(day)
    if dates != sorted(set(dates)):
        raise bad("thresholds", "must be in increasing order of `from`, each date once")
    for i, requirement in enumerate(profile.attestations):
        for kind in requirement.facility_kinds:
            if kind not in vocab.FACILITY_KINDS:
                raise bad(f"attestations[{i}].facility_kinds", f"lists {kind!r}, not a facility kind")
        for j, option in enumerate(requirement.any_of):
            field = f"attestations[{i}].any_of[{j}]"
            levels = STANDARD_LEVELS.get(option.standard)
            if levels is None and not option.standard.startswith("other:"):
                raise bad(
                    f"{field}.standard",
                    f"is {option.standard!r}; use one of {', '.join(STANDARD_LEVELS)} or other:<name>",
                )
            if (option.min_level is None) == (option.levels is None):
                raise bad(field, "needs exactly one of min_level and levels")
            if levels is not None:
                named = [option.min_level] if option.min_level else list(option.levels or [])
                for level in named:
                    if level not in levels:
                        raise bad(
                            field,
                            f"names level {level!r}, which {option.standard} does not have ({', '.join(levels)})",
                        )
                if option.min_level is not None and option.standard != "irma":
                    raise bad(
                        f"{field}.min_level",
                        "is only meaningful for IRMA's ordered levels; list `levels` instead",
                    )


def load_profile(path: Path) -> Profile:
    """Load and validate one profile file; raise :class:`ProfileError` naming the file and the field."""
    where = path.name
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"rule profile {where} is not valid TOML: {exc}") from None
    try:
        profile = msgspec.convert(raw, type=Profile, strict=True)
    except msgspec.ValidationError as exc:
        raise ProfileError(f"rule profile {where}: {exc}") from None
    if f"{profile.id}.toml" != path.name:
        raise ProfileError(
            f"rule profile {where}: field `id` is {profile.id!r} but the file must be named after it"
        )
    _check(profile, where)
    return profile


def profile_from_document(document: Any) -> Profile:
    """A profile carried in a bundle (JSON); validated like a file."""
    try:
        profile = msgspec.convert(document, type=Profile, strict=True)
    except msgspec.ValidationError as exc:
        raise ProfileError(f"the bundle's rule profile is malformed: {exc}") from None
    _check(profile, f"{profile.id} (from the bundle)")
    return profile


class Profiles:
    """All shipped profiles, loaded once at start (so that a bad file stops the service from starting)."""

    def __init__(self, directory: Path = PROFILE_DIR) -> None:
        files = sorted(directory.glob("*.toml"))
        if not files:
            raise ProfileError(f"no rule profiles in {directory}")
        self.by_id: dict[str, Profile] = {}
        for path in files:
            profile = load_profile(path)
            self.by_id[profile.id] = profile
        defaults = [p.id for p in self.by_id.values() if p.default]
        if len(defaults) != 1:
            raise ProfileError(
                f"exactly one rule profile must say default = true; found {defaults or 'none'}"
            )
        self.default_id = defaults[0]

    def get(self, profile_id: str | None) -> Profile:
        profile = self.by_id.get(profile_id or self.default_id)
        if profile is None:
            raise NotFound(
                f"there is no rule profile {profile_id!r}; profiles are {', '.join(sorted(self.by_id))}"
            )
        return profile

    def all(self) -> list[Profile]:
        return [self.by_id[i] for i in sorted(self.by_id)]
