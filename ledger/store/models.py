"""SQLAlchemy 2 table definitions, identical on SQLite and PostgreSQL.

``events`` is the log: append-only (database triggers reject UPDATE and DELETE, see the migrations). Every
other table is a projection that can be rebuilt by replaying ``events`` in log-index order, except ``api_tokens``
(credentials, not ledger state) and ``log_state`` (the sequencer's counter).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both databases (SQLite keeps no offset, so we add it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class EventRow(Base):
    """One accepted envelope. ``log_index`` is gap-free and assigned in acceptance order."""

    __tablename__ = "events"

    log_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # unique: on PostgreSQL through a hash index, EXCLUDE USING hash (event_id WITH =) (migration 0009)
    event_id: Mapped[str] = mapped_column(String(71), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(128), index=True)
    key_id: Mapped[str] = mapped_column(String(64))
    payload_type: Mapped[str] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    signatures: Mapped[str] = mapped_column(Text)
    """The envelope's ``signatures`` member as JSON; with ``payload_type`` and ``payload`` it is the envelope."""
    timestamp: Mapped[str] = mapped_column(String(40))
    """The event's own timestamp as signed, offset kept."""
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LogState(Base):
    """The sequencer: a single row whose lock serialises writers and whose counter hands out log indices."""

    __tablename__ = "log_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)


class ParticipantRow(Base):
    __tablename__ = "participants"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(500))
    roles: Mapped[str] = mapped_column(Text)
    """JSON list of roles."""
    country: Mapped[str] = mapped_column(String(2))
    ownership: Mapped[str] = mapped_column(Text)
    """JSON of the current ownership facts (history lives in the events)."""
    admitted_event: Mapped[str] = mapped_column(String(71))
    admitted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FacilityRow(Base):
    __tablename__ = "facilities"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    country: Mapped[str] = mapped_column(String(2))
    name: Mapped[str] = mapped_column(String(500))
    loss_tolerance: Mapped[str] = mapped_column(String(40))
    registered_event: Mapped[str] = mapped_column(String(71))


class KeyRow(Base):
    __tablename__ = "keys"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)
    added_event: Mapped[str] = mapped_column(String(71))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """When the revocation was accepted: from then on the key signs nothing new."""
    compromised_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """The revocation's effective time when it lies in the past: events signed after it are suspect."""
    revoked_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    revoked_event: Mapped[str | None] = mapped_column(String(71), nullable=True)


class TokenRow(Base):
    """An API token: ``tok_<id>_<secret>``; only a SHA-256 of the secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), index=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    label: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BatchRow(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    mineral: Mapped[str] = mapped_column(String(40))
    form: Mapped[str] = mapped_column(String(40))
    mass_g: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20))
    custodian: Mapped[str] = mapped_column(String(128), index=True)
    facility_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    receiver: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """While in transit: the participant named to receive it."""
    receiver_facility: Mapped[str | None] = mapped_column(String(128), nullable=True)
    head: Mapped[str] = mapped_column(String(71))
    created_event: Mapped[str] = mapped_column(String(71))
    value_amount: Mapped[str | None] = mapped_column(String(40), nullable=True)
    value_currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    lost_g: Mapped[int] = mapped_column(BigInteger, default=0)


class BatchEventRow(Base):
    """Which events touched which batch (history), in log order."""

    __tablename__ = "batch_events"

    batch_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    log_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)


class BatchEdgeRow(Base):
    """Lineage: ``child`` was made from ``mass_g`` grams of ``parent`` by event ``event_id``."""

    __tablename__ = "batch_edges"

    parent_batch: Mapped[str] = mapped_column(String(128), primary_key=True)
    child_batch: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(71))
    mass_g: Mapped[int] = mapped_column(BigInteger)


class HolderRow(Base):
    """Every participant that ever held a batch (for read scoping)."""

    __tablename__ = "batch_holders"

    batch_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    participant_id: Mapped[str] = mapped_column(String(128), primary_key=True)


Index("ix_batch_edges_child", BatchEdgeRow.child_batch)
Index("ix_batch_holders_participant_batch", HolderRow.participant_id, HolderRow.batch_id)
Index("ix_batch_events_log_index", BatchEventRow.log_index)


class MerkleNodeRow(Base):
    """A complete subtree hash of the RFC 9162 tree: (level, index) covers leaves [index*2^level, (index+1)*2^level)."""

    __tablename__ = "merkle_nodes"

    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class LogTreeRow(Base):
    """The integrated tree: how many log entries it covers, and its right edge (a serialised Frontier)."""

    __tablename__ = "log_tree"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[bytes] = mapped_column(LargeBinary)


class CheckpointRow(Base):
    """A signed checkpoint (C2SP tlog-checkpoint note) of the tree at ``size``."""

    __tablename__ = "checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CosignatureRow(Base):
    """A witness's cosignature (C2SP tlog-cosignature line) on the checkpoint of tree ``size``: collected after the
    checkpoint is signed, appended to its note when served."""

    __tablename__ = "cosignatures"
    __table_args__ = (Index("ix_cosignatures_witness_size", "witness", "size"),)

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    witness: Mapped[str] = mapped_column(String(255), primary_key=True)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    line: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AttestationRow(Base):
    """An auditor's attestation of a facility or participant, with its revocations and suspensions."""

    __tablename__ = "attestations"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    auditor: Mapped[str] = mapped_column(String(128))
    subject_kind: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str] = mapped_column(String(128), index=True)
    standard: Mapped[str] = mapped_column(String(80))
    level: Mapped[str] = mapped_column(String(80))
    minerals: Mapped[str] = mapped_column(Text)
    activities: Mapped[str] = mapped_column(Text)
    valid_from: Mapped[str] = mapped_column(String(10))
    valid_to: Mapped[str] = mapped_column(String(10))
    report_sha256: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(71))
    revoked_on: Mapped[str | None] = mapped_column(String(10), nullable=True)
    suspended_on: Mapped[str | None] = mapped_column(String(10), nullable=True)
    changes: Mapped[str] = mapped_column(Text)


class OwnerRow(Base):
    """An owner that is not a participant (government, state enterprise, fund, person...)."""

    __tablename__ = "owners"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(40))
    country: Mapped[str] = mapped_column(String(2))
    registered_event: Mapped[str] = mapped_column(String(71))


class StakeRow(Base):
    """One ``stake_recorded`` event: ``holder`` holds these shares (exact strings, as signed) of ``subject`` from
    ``effective_date``. Every record is kept; the latest effective one for a pair is in force."""

    __tablename__ = "stakes"

    event_id: Mapped[str] = mapped_column(String(71), primary_key=True)
    log_index: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str] = mapped_column(String(128), index=True)
    subject: Mapped[str] = mapped_column(String(128), index=True)
    effective_date: Mapped[str] = mapped_column(String(10))
    equity: Mapped[str] = mapped_column(String(40))
    votes: Mapped[str] = mapped_column(String(40))
    board_seats: Mapped[str] = mapped_column(String(40))


class ExchangeRateRow(Base):
    """A published reference rate: ``rate`` units of ``to_currency`` for one ``from_currency`` on ``day``."""

    __tablename__ = "exchange_rates"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)
    from_currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    to_currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    rate: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(71))


class PublishedProfileRow(Base):
    """A rule profile version published in the log (``profile_published``)."""

    __tablename__ = "published_profiles"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    content_hash: Mapped[str] = mapped_column(String(71))
    event_id: Mapped[str] = mapped_column(String(71))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CustodyModelRow(Base):
    """A facility's chain-of-custody declaration (``custody_model``); all declarations are kept."""

    __tablename__ = "custody_models"

    event_id: Mapped[str] = mapped_column(String(71), primary_key=True)
    log_index: Mapped[int] = mapped_column(BigInteger)
    facility_id: Mapped[str] = mapped_column(String(128), index=True)
    model: Mapped[str] = mapped_column(String(40))
    period: Mapped[str] = mapped_column(String(10))
    conversion_factors: Mapped[str] = mapped_column(Text)
    """JSON object: process type -> factor (decimal string)."""
    effective_date: Mapped[str] = mapped_column(String(10))


class ClaimRow(Base):
    """An accepted mass-balance claim: ``mass_g`` of ``batch_id`` counts under ``profile_id``, drawn from the
    credits of (``facility_id``, ``profile_id``, ``period``)."""

    __tablename__ = "claims"

    event_id: Mapped[str] = mapped_column(String(71), primary_key=True)
    log_index: Mapped[int] = mapped_column(BigInteger)
    participant_id: Mapped[str] = mapped_column(String(128))
    facility_id: Mapped[str] = mapped_column(String(128))
    profile_id: Mapped[str] = mapped_column(String(128))
    period: Mapped[str] = mapped_column(String(7))
    batch_id: Mapped[str] = mapped_column(String(128))
    mass_g: Mapped[int] = mapped_column(BigInteger)


Index("ix_claims_facility_profile_period", ClaimRow.facility_id, ClaimRow.profile_id, ClaimRow.period)
Index("ix_claims_batch_profile", ClaimRow.batch_id, ClaimRow.profile_id)


class PublishedAgreementRow(Base):
    """A trade-agreement origin profile version published in the log (``agreement_published``)."""

    __tablename__ = "published_agreements"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    content_hash: Mapped[str] = mapped_column(String(71))
    event_id: Mapped[str] = mapped_column(String(71))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CertificateRow(Base):
    """A certification of origin (``certificate``): its id, the event that carries it, who certified it and under
    which agreement; the batches it covers are in ``batch_events``."""

    __tablename__ = "certificates"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(71), unique=True)
    log_index: Mapped[int] = mapped_column(BigInteger)
    certifier: Mapped[str] = mapped_column(String(128), index=True)
    agreement: Mapped[str] = mapped_column(String(64))
