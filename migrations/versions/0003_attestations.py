"""Attestations of facilities and participants (a projection of attest/revoke/suspend events).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attestations",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("auditor", sa.String(length=128), nullable=False),
        sa.Column("subject_kind", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        sa.Column("standard", sa.String(length=80), nullable=False),
        sa.Column("level", sa.String(length=80), nullable=False),
        sa.Column("minerals", sa.Text(), nullable=False),
        sa.Column("activities", sa.Text(), nullable=False),
        sa.Column("valid_from", sa.String(length=10), nullable=False),
        sa.Column("valid_to", sa.String(length=10), nullable=False),
        sa.Column("report_sha256", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=71), nullable=False),
        sa.Column("revoked_on", sa.String(length=10), nullable=True),
        sa.Column("suspended_on", sa.String(length=10), nullable=True),
        sa.Column("changes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attestations")),
    )
    with op.batch_alter_table("attestations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_attestations_subject_id"), ["subject_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("attestations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attestations_subject_id"))
    op.drop_table("attestations")
