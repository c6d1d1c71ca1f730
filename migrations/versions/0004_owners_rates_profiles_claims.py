"""Owners and stakes, exchange rates, published rule profiles, custody models and mass-balance claims
(projections of the owner_registered, stake_recorded, exchange_rates, profile_published, custody_model and claim
events; ordinary tables, rebuilt by replaying the log).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledger.store.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "owners",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("registered_event", sa.String(length=71), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_owners")),
    )
    op.create_table(
        "stakes",
        sa.Column("event_id", sa.String(length=71), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=False),
        sa.Column("effective_date", sa.String(length=10), nullable=False),
        sa.Column("equity", sa.String(length=40), nullable=False),
        sa.Column("votes", sa.String(length=40), nullable=False),
        sa.Column("board_seats", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_stakes")),
    )
    with op.batch_alter_table("stakes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stakes_holder"), ["holder"], unique=False)
        batch_op.create_index(batch_op.f("ix_stakes_subject"), ["subject"], unique=False)

    op.create_table(
        "exchange_rates",
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("from_currency", sa.String(length=3), nullable=False),
        sa.Column("to_currency", sa.String(length=3), nullable=False),
        sa.Column("rate", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=71), nullable=False),
        sa.PrimaryKeyConstraint("day", "from_currency", "to_currency", name=op.f("pk_exchange_rates")),
    )
    op.create_table(
        "published_profiles",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("content_hash", sa.String(length=71), nullable=False),
        sa.Column("event_id", sa.String(length=71), nullable=False),
        sa.Column("published_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", "version", name=op.f("pk_published_profiles")),
    )
    op.create_table(
        "custody_models",
        sa.Column("event_id", sa.String(length=71), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("facility_id", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("conversion_factors", sa.Text(), nullable=False),
        sa.Column("effective_date", sa.String(length=10), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_custody_models")),
    )
    with op.batch_alter_table("custody_models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_custody_models_facility_id"), ["facility_id"], unique=False)

    op.create_table(
        "claims",
        sa.Column("event_id", sa.String(length=71), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("participant_id", sa.String(length=128), nullable=False),
        sa.Column("facility_id", sa.String(length=128), nullable=False),
        sa.Column("profile_id", sa.String(length=128), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("mass_g", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_claims")),
    )
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.create_index(
            "ix_claims_facility_profile_period", ["facility_id", "profile_id", "period"], unique=False
        )
        batch_op.create_index("ix_claims_batch_profile", ["batch_id", "profile_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_index("ix_claims_batch_profile")
        batch_op.drop_index("ix_claims_facility_profile_period")
    op.drop_table("claims")
    with op.batch_alter_table("custody_models", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custody_models_facility_id"))
    op.drop_table("custody_models")
    op.drop_table("published_profiles")
    op.drop_table("exchange_rates")
    with op.batch_alter_table("stakes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stakes_subject"))
        batch_op.drop_index(batch_op.f("ix_stakes_holder"))
    op.drop_table("stakes")
    op.drop_table("owners")
