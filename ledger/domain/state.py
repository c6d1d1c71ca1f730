"""The ledger's current state as plain objects, and the working set that acceptance reads and changes.

The store loads the rows an incoming group of envelopes refers to into a :class:`WorkingSet`; acceptance
(``ledger.domain.accept``) checks each event against it and records its effects there; the store then writes
what changed in a few bulk statements. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from ledger.errors import LedgerError


@dataclass
class Participant:
    id: str
    name: str
    roles: frozenset[str]
    country: str
    ownership: dict[str, Any]
    admitted_event: str
    admitted_at: datetime


@dataclass
class Facility:
    id: str
    participant_id: str
    kind: str
    country: str
    name: str
    loss_tolerance: Decimal
    registered_event: str


@dataclass
class Key:
    key_id: str
    participant_id: str
    public_key: bytes
    added_at: datetime
    added_event: str
    revoked_at: datetime | None = None
    compromised_since: datetime | None = None
    revoked_reason: str | None = None
    revoked_event: str | None = None
    valid_from: datetime | None = field(default=None, compare=False)
    """The signed time of the event that introduced the key: nothing it signs may be dated earlier (derived
    from that event, so not a stored column)."""

    def valid_at(self, when: datetime) -> bool:
        return self.added_at <= when and (self.revoked_at is None or when < self.revoked_at)


AT_FACILITY = "at_facility"
IN_TRANSIT = "in_transit"
CONSUMED = "consumed"
SPLIT = "split"
MERGED = "merged"


@dataclass
class Batch:
    id: str
    mineral: str
    form: str
    mass_g: int
    status: str
    custodian: str
    facility_id: str | None
    head: str
    created_event: str
    receiver: str | None = None
    receiver_facility: str | None = None
    value_amount: str | None = None
    value_currency: str | None = None
    lost_g: int = 0


@dataclass
class Attestation:
    id: str
    auditor: str
    subject_kind: str
    """``facility`` or ``participant``."""
    subject_id: str
    standard: str
    level: str
    minerals: tuple[str, ...]
    activities: tuple[str, ...]
    valid_from: date
    valid_to: date
    report_sha256: str
    event_id: str
    revoked_on: date | None = None
    suspended_on: date | None = None
    changes: list[dict[str, str]] = field(default_factory=list)
    """Revocations and suspensions in log order: kind, effective_date, reason, event_id."""


@dataclass
class Owner:
    """An owner that is not a participant (a government, a state enterprise, a fund...)."""

    id: str
    name: str
    kind: str
    country: str
    registered_event: str


@dataclass(frozen=True)
class Stake:
    """One ``stake_recorded`` event: ``holder`` holds these shares of ``subject`` from ``effective_date``.

    Shares are kept as the exact strings signed ("0.25", "1/3"); a later record for the pair supersedes it."""

    event_id: str
    log_index: int
    holder: str
    subject: str
    effective_date: str
    equity: str
    votes: str
    board_seats: str


@dataclass(frozen=True)
class RateRecord:
    """One published exchange rate: units of ``to`` for one unit of ``from_``, on ``day``."""

    day: str
    from_: str
    to: str
    rate: str
    event_id: str


@dataclass(frozen=True)
class PublishedProfile:
    id: str
    version: int
    content_hash: str
    event_id: str
    published_at: datetime


@dataclass(frozen=True)
class CustodyModelRecord:
    """One ``custody_model`` declaration; a facility's declarations form its history."""

    event_id: str
    log_index: int
    facility_id: str
    model: str
    period: str
    conversion_factors: dict[str, str]
    effective_date: str


@dataclass(frozen=True)
class ClaimRecord:
    """One accepted mass-balance claim: ``mass_g`` of ``batch`` counts under ``profile`` (credits of ``period``)."""

    event_id: str
    log_index: int
    participant_id: str
    facility_id: str
    profile_id: str
    period: str
    batch_id: str
    mass_g: int


@dataclass(frozen=True)
class Creation:
    """How a batch came to be, as far as claims need it: the creating event's kind, facility, signed timestamp
    and the mass it gave each batch it created."""

    event_id: str
    kind: str
    facility_id: str | None
    timestamp: str
    masses: dict[str, int]


@dataclass(frozen=True)
class CertificateRecord:
    """A certification of origin in the log: its id, the event carrying it, its certifier and agreement."""

    id: str
    event_id: str
    log_index: int
    certifier: str
    agreement: str


@dataclass(frozen=True)
class OriginDeterminationRecord:
    """What a certification of origin checks of a recorded origin determination it cites."""

    event_id: str
    batch: str
    agreement: str
    verdict: str
    criterion: str | None
    hs6: str | None


@dataclass(frozen=True)
class AcceptedEvent:
    log_index: int
    event_id: str
    kind: str
    actor: str
    key_id: str
    payload_type: str
    payload: bytes
    signatures: str
    timestamp: str
    accepted_at: datetime


@dataclass(frozen=True)
class Edge:
    parent_batch: str
    child_batch: str
    event_id: str
    mass_g: int


@dataclass
class WorkingSet:
    """Rows loaded for one group of envelopes, plus everything the group has changed so far.

    ``None`` in a mapping means "looked up, does not exist", so acceptance never needs to ask the store twice.
    """

    next_index: int
    registrar_exists: bool
    log_key: bytes | None = None
    """The ledger's own public log key, which alone signs ``determination`` events."""
    participants: dict[str, Participant | None] = field(default_factory=dict)
    facilities: dict[str, Facility | None] = field(default_factory=dict)
    keys: dict[str, Key | None] = field(default_factory=dict)
    batches: dict[str, Batch | None] = field(default_factory=dict)
    attestations: dict[str, Attestation | None] = field(default_factory=dict)
    event_actors: dict[str, str | None] = field(default_factory=dict)
    """Actors of events that an incoming event refers to by id (reaffirmations, parents)."""
    event_times: dict[str, str] = field(default_factory=dict)
    """Signed timestamps of the events an incoming event refers to by id (its parents must not be later)."""
    known_event_ids: dict[str, int] = field(default_factory=dict)
    known_signers: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Event id -> (actor, key id) of events in the log: a duplicate is acknowledged only to its own signer."""
    """Event ids already in the log (loaded or accepted in this group) -> log index, for idempotent replies."""
    owners: dict[str, Owner | None] = field(default_factory=dict)
    stake_edges: dict[str, set[str]] = field(default_factory=dict)
    """The ownership graph: holder -> subjects it holds (every stake ever recorded with a non-zero measure)."""
    stakes_loaded: bool = False
    """Whether ``stake_edges`` holds the whole graph (the store loads it once, for groups that record stakes)."""
    rates: dict[str, dict[tuple[str, str], RateRecord]] = field(default_factory=dict)
    """Published rates by date (loaded for the dates a group publishes; a missing date has none)."""
    profile_versions: dict[str, dict[int, PublishedProfile]] = field(default_factory=dict)
    """Published versions of each referenced profile id (empty: never published)."""
    custody_models: dict[str, list[CustodyModelRecord]] = field(default_factory=dict)
    """Declarations of each referenced facility, in log order (missing or empty: none)."""
    creations: dict[str, Creation | None] = field(default_factory=dict)
    """Creating events of the batches that claims name, by event id."""
    batch_claimed: dict[tuple[str, str], int] = field(default_factory=dict)
    """(batch, profile) -> grams already claimed, over every period."""
    period_claimed: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(facility, profile, period) -> grams already claimed from that period's credits."""
    credit_limits: dict[tuple[str, str, str], Fraction] = field(default_factory=dict)
    """(facility, profile, period) -> mass-balance credits in grams, exact; computed by the submitter (through the
    eligibility engine) before the group is accepted."""
    credit_errors: dict[tuple[str, str, str], LedgerError] = field(default_factory=dict)
    """Why the credits of a (facility, profile, period) could not be computed, when they could not."""
    check_balance: bool = True
    """False when replaying the log (``ledger audit``): credits are the engine's view at acceptance time, which a
    replay cannot reproduce, so claims are checked for everything but the credit balance."""

    events: list[AcceptedEvent] = field(default_factory=list)
    new_participants: list[str] = field(default_factory=list)
    changed_participants: set[str] = field(default_factory=set)
    new_facilities: list[str] = field(default_factory=list)
    new_keys: list[str] = field(default_factory=list)
    changed_keys: set[str] = field(default_factory=set)
    new_batches: list[str] = field(default_factory=list)
    changed_batches: set[str] = field(default_factory=set)
    new_attestations: list[str] = field(default_factory=list)
    changed_attestations: set[str] = field(default_factory=set)
    batch_events: list[tuple[str, int]] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    holders: set[tuple[str, str]] = field(default_factory=set)
    new_owners: list[str] = field(default_factory=list)
    new_stakes: list[Stake] = field(default_factory=list)
    new_rates: list[RateRecord] = field(default_factory=list)
    new_profiles: list[PublishedProfile] = field(default_factory=list)
    new_custody_models: list[CustodyModelRecord] = field(default_factory=list)
    new_claims: list[ClaimRecord] = field(default_factory=list)
    agreement_versions: dict[str, dict[int, PublishedProfile]] = field(default_factory=dict)
    """Published versions of each referenced trade-agreement origin profile (empty: never published)."""
    certificates: dict[str, CertificateRecord | None] = field(default_factory=dict)
    origin_determinations: dict[str, OriginDeterminationRecord | None] = field(default_factory=dict)
    """Recorded origin determinations that certificates cite, by event id (``None``: not one)."""
    new_agreements: list[PublishedProfile] = field(default_factory=list)
    new_certificates: list[CertificateRecord] = field(default_factory=list)

    def pending(self) -> set[str]:
        """The names of the fields among :data:`PENDING` that hold changes not yet written."""
        return {name for name in PENDING if getattr(self, name)}


HOT = ("events", "new_batches", "changed_batches", "batch_events", "edges", "holders")
"""The pending changes of custody events: new events, batches and their histories, lineage and holders (what
:func:`ledger.store.pg.write_group` writes in one statement)."""

PENDING = (
    *HOT,
    "new_participants",
    "changed_participants",
    "new_facilities",
    "new_keys",
    "changed_keys",
    "new_attestations",
    "changed_attestations",
    "new_owners",
    "new_stakes",
    "new_rates",
    "new_profiles",
    "new_custody_models",
    "new_claims",
    "new_agreements",
    "new_certificates",
)
"""Every field of :class:`WorkingSet` that holds changes to write (the others are rows loaded, or caches)."""
