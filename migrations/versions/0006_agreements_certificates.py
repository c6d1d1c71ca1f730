"""Published trade-agreement origin profiles and certifications of origin (projections of the
agreement_published and certificate events; ordinary tables, rebuilt by replaying the log).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledger.store.models import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "published_agreements",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("content_hash", sa.String(length=71), nullable=False),
        sa.Column("event_id", sa.String(length=71), nullable=False),
        sa.Column("published_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", "version", name=op.f("pk_published_agreements")),
    )
    op.create_table(
        "certificates",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=71), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("certifier", sa.String(length=128), nullable=False),
        sa.Column("agreement", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_certificates")),
        sa.UniqueConstraint("event_id", name=op.f("uq_certificates_event_id")),
    )
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_certificates_certifier"), ["certifier"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_certificates_certifier"))
    op.drop_table("certificates")
    op.drop_table("published_agreements")
