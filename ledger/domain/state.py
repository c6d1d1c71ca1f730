"""The ledger's current state as plain objects, and the working set that acceptance reads and changes.

The store loads the rows an incoming group of envelopes refers to into a :class:`WorkingSet`; acceptance
(``ledger.domain.accept``) checks each event against it and records its effects there; the store then writes
what changed in a few bulk statements. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any


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
    """Actors of events that an incoming event refers to by id (reaffirmations)."""
    known_event_ids: dict[str, int] = field(default_factory=dict)
    """Event ids already in the log (loaded or accepted in this group) -> log index, for idempotent replies."""

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
