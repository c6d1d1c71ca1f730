"""Indexes for read scoping evaluated in the database (ledger/services/access.py).

- ``batch_holders (participant_id, batch_id)`` replaces ``(participant_id)``: a participant's batches are listed a
  page at a time from a cursor, in id order, straight off the index (no sort of the whole holding). The primary
  key ``(batch_id, participant_id)`` answers "does p hold b".
- ``batch_events (log_index)``: the batches an event touched (reading one event), without scanning the table.

``batch_edges`` already has what the lineage walks need: its primary key ``(parent_batch, child_batch)`` going
down, ``ix_batch_edges_child`` going up.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batch_holders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_batch_holders_participant_batch", ["participant_id", "batch_id"], unique=False
        )
        batch_op.drop_index("ix_batch_holders_participant")
    with op.batch_alter_table("batch_events", schema=None) as batch_op:
        batch_op.create_index("ix_batch_events_log_index", ["log_index"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("batch_events", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_events_log_index")
    with op.batch_alter_table("batch_holders", schema=None) as batch_op:
        batch_op.create_index("ix_batch_holders_participant", ["participant_id"], unique=False)
        batch_op.drop_index("ix_batch_holders_participant_batch")
