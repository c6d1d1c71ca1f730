"""Witness cosignatures on checkpoints (C2SP tlog-cosignature lines, collected after signing).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledger.store.models import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cosignatures",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("witness", sa.String(length=255), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", "witness", name=op.f("pk_cosignatures")),
    )
    # how far each witness has cosigned (metrics, the cosigner's start): max(size) per witness
    op.create_index("ix_cosignatures_witness_size", "cosignatures", ["witness", "size"])


def downgrade() -> None:
    op.drop_index("ix_cosignatures_witness_size", table_name="cosignatures")
    op.drop_table("cosignatures")
