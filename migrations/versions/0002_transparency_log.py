"""Transparency log: stored Merkle nodes, the integrated tree's state, and signed checkpoints.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

from ledger.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_initial = importlib.import_module("migrations.versions.0001_initial")

APPEND_ONLY = ("merkle_nodes", "checkpoints")


def upgrade() -> None:
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_merkle_nodes")),
    )
    op.create_table(
        "log_tree",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_tree")),
    )
    op.create_table(
        "checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_checkpoints")),
    )
    # an empty tree: size 0, empty frontier (8-byte big-endian size, no hashes)
    log_tree = sa.table("log_tree", sa.column("id"), sa.column("size"), sa.column("frontier", sa.LargeBinary))
    op.bulk_insert(log_tree, [{"id": 1, "size": 0, "frontier": bytes(8)}])
    for table in APPEND_ONLY:
        _initial.create_append_only_trigger(table)


def downgrade() -> None:
    for table in APPEND_ONLY:
        _initial.drop_append_only_trigger(table)
    op.drop_table("checkpoints")
    op.drop_table("log_tree")
    op.drop_table("merkle_nodes")
