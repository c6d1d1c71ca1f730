"""What the services return: msgspec structs that the API serialises and the client decodes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from ledger.domain.dsse import Signature


class View(msgspec.Struct, kw_only=True):
    pass


class KeyView(View):
    key_id: str
    public_key: str
    added_at: datetime
    added_event: str
    revoked_at: datetime | None = None
    compromised_since: datetime | None = None
    revoked_reason: str | None = None
    revoked_event: str | None = None


class FacilityView(View):
    id: str
    participant: str
    kind: str
    country: str
    name: str
    loss_tolerance: str
    registered_event: str


class ParticipantView(View):
    id: str
    name: str
    roles: list[str]
    country: str
    ownership: dict[str, Any]
    admitted_event: str
    admitted_at: datetime
    keys: list[KeyView] = []
    facilities: list[FacilityView] = []


class ParticipantList(View):
    items: list[ParticipantView]
    next_cursor: str | None = None


class EventView(View):
    """An accepted event: the envelope exactly as signed, where it sits in the log, and its decoded payload."""

    event_id: str
    log_index: int
    kind: str
    actor: str
    key_id: str
    timestamp: str
    accepted_at: datetime
    envelope: EnvelopeView | None
    """The envelope exactly as signed; withheld (null) when it carries commercial values the caller may not see."""
    payload: dict[str, Any]
    redacted: bool = False


class EnvelopeView(View):
    payloadType: str
    payload: str
    signatures: list[Signature]


class SubmitResultView(View):
    status: str
    event_id: str | None = None
    log_index: int | None = None
    problem: dict[str, Any] | None = None


class BatchSubmitView(View):
    results: list[SubmitResultView]
    accepted: int
    duplicate: int
    rejected: int


class TokenView(View):
    id: str
    participant: str
    label: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class IssuedTokenView(View):
    token: str
    """The bearer token itself. Shown once: only its hash is stored."""
    id: str
    participant: str
    label: str
    created_at: datetime
    expires_at: datetime | None = None


class TokenList(View):
    items: list[TokenView]


class MoneyView(View):
    amount: str
    currency: str


class BatchView(View):
    id: str
    mineral: str
    form: str
    mass_g: int
    status: str
    custodian: str
    facility: str | None
    head: str
    created_event: str
    lost_g: int = 0
    receiver: str | None = None
    receiver_facility: str | None = None
    value: MoneyView | None = None
    value_redacted: bool = False
    """True when a value was declared but the caller may not see it."""


class BatchList(View):
    items: list[BatchView]
    next_cursor: str | None = None


class HistoryView(View):
    batch: str
    events: list[EventView]


class LineageEdgeView(View):
    parent: str
    child: str
    event_id: str
    mass_g: int


class LineageNodeView(BatchView):
    depth: int = 0
    used_up_g: int | None = None
    """For a batch that holds nothing any more (consumed, split, merged): the grams it held when used up."""


class LineageView(View):
    root: str
    direction: str
    batches: list[LineageNodeView]
    edges: list[LineageEdgeView]


class CheckpointView(View):
    size: int
    root_hash: str
    """Standard base64 of the 32-byte root hash."""
    note: str
    """The C2SP signed note: the log's signature, then the cosignatures of witnesses collected so far."""
    created_at: datetime
    cosigned_by: list[str] = msgspec.field(default_factory=list)
    """The witnesses whose cosignatures the note carries."""


class CheckpointList(View):
    items: list[CheckpointView]


class InclusionProofView(View):
    """RFC 9162 section 2.1.3 inclusion proof; hashes are standard base64."""

    event_id: str
    log_index: int
    tree_size: int
    leaf_hash: str
    hashes: list[str]
    root_hash: str


class ConsistencyProofView(View):
    """RFC 9162 section 2.1.4 consistency proof; hashes are standard base64."""

    first: int
    second: int
    hashes: list[str]
    first_root: str
    second_root: str


class EntriesView(View):
    start: int
    entries: list[EventView]


class AttestationChangeView(View):
    kind: str
    effective_date: str
    reason: str
    event_id: str


class AttestationView(View):
    id: str
    auditor: str
    subject_kind: str
    subject_id: str
    standard: str
    level: str
    minerals: list[str]
    activities: list[str]
    valid_from: str
    valid_to: str
    report_sha256: str
    event_id: str
    revoked_on: str | None = None
    suspended_on: str | None = None
    changes: list[AttestationChangeView] = []
    valid_on: bool | None = None
    """Whether it counted on the date asked for (``on``): inside its validity, not revoked or suspended by then."""


class AttestationList(View):
    facility: str
    on: str | None
    items: list[AttestationView]


class ProfileView(View):
    id: str
    name: str
    version: int
    content_hash: str
    default: bool
    published: bool
    """Whether this version was published in the log (``profile_published``); else it is the built-in file."""
    document: dict[str, Any]


class ProfileList(View):
    items: list[ProfileView]


class StakeView(View):
    """One stake record: ``holder`` holds these shares of ``subject`` from ``effective_date`` (exact strings, as
    signed: decimals or n/d)."""

    holder: str
    subject: str
    effective_date: str
    equity: str
    votes: str
    board_seats: str
    event_id: str
    log_index: int


class OwnerView(View):
    id: str
    name: str
    kind: str
    country: str
    registered_event: str
    holds: list[StakeView] = []
    """Stakes this owner holds in others, every record in log order."""
    held_by: list[StakeView] = []
    """Stakes others hold in this owner, every record in log order."""


class OwnerList(View):
    items: list[OwnerView]
    next_cursor: str | None = None


class StakeList(View):
    subject: str
    items: list[StakeView]
    """Every record of a stake held in ``subject``, in log order (a later record for a holder supersedes an
    earlier one from its effective date)."""


class ExchangeRateView(View):
    from_: str = msgspec.field(name="from")
    to: str
    rate: str
    """Units of ``to`` for one unit of ``from``, exactly as published."""
    event_id: str


class ExchangeRateList(View):
    date: str
    items: list[ExchangeRateView]


class CustodyModelView(View):
    model: str
    period: str
    conversion_factors: dict[str, str]
    effective_date: str
    event_id: str
    log_index: int


class CustodyModelHistory(View):
    facility: str
    on: str
    """The date ``in_force`` answers for (today unless asked)."""
    in_force: CustodyModelView | None
    """The declaration in force on ``on``: the latest effective on or before it (null: none)."""
    declarations: list[CustodyModelView]
    """Every declaration, by effective date."""
