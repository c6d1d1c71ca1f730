"""Initial schema: the append-only event log, the sequencer and the registry and custody projections.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 02:50:36.057972
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from ledger.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_edges",
        sa.Column("parent_batch", sa.String(length=128), nullable=False),
        sa.Column("child_batch", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=71), nullable=False),
        sa.Column("mass_g", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("parent_batch", "child_batch", name=op.f("pk_batch_edges")),
    )
    with op.batch_alter_table("batch_edges", schema=None) as batch_op:
        batch_op.create_index("ix_batch_edges_child", ["child_batch"], unique=False)

    op.create_table(
        "batch_events",
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("log_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "log_index", name=op.f("pk_batch_events")),
    )
    op.create_table(
        "batch_holders",
        sa.Column("batch_id", sa.String(length=128), nullable=False),
        sa.Column("participant_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "participant_id", name=op.f("pk_batch_holders")),
    )
    with op.batch_alter_table("batch_holders", schema=None) as batch_op:
        batch_op.create_index("ix_batch_holders_participant", ["participant_id"], unique=False)

    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("mineral", sa.String(length=40), nullable=False),
        sa.Column("form", sa.String(length=40), nullable=False),
        sa.Column("mass_g", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("custodian", sa.String(length=128), nullable=False),
        sa.Column("facility_id", sa.String(length=128), nullable=True),
        sa.Column("receiver", sa.String(length=128), nullable=True),
        sa.Column("receiver_facility", sa.String(length=128), nullable=True),
        sa.Column("head", sa.String(length=71), nullable=False),
        sa.Column("created_event", sa.String(length=71), nullable=False),
        sa.Column("value_amount", sa.String(length=40), nullable=True),
        sa.Column("value_currency", sa.String(length=3), nullable=True),
        sa.Column("lost_g", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batches_custodian"), ["custodian"], unique=False)

    op.create_table(
        "events",
        sa.Column("log_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.String(length=71), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("payload_type", sa.String(length=200), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("signatures", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.String(length=40), nullable=False),
        sa.Column("accepted_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("log_index", name=op.f("pk_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_events_event_id")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_actor"), ["actor"], unique=False)

    op.create_table(
        "log_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_log_state")),
    )
    op.create_table(
        "participants",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("ownership", sa.Text(), nullable=False),
        sa.Column("admitted_event", sa.String(length=71), nullable=False),
        sa.Column("admitted_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_participants")),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("participant_id", sa.String(length=128), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"], ["participants.id"], name=op.f("fk_api_tokens_participant_id_participants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_participant_id"), ["participant_id"], unique=False)

    op.create_table(
        "facilities",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("participant_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("loss_tolerance", sa.String(length=40), nullable=False),
        sa.Column("registered_event", sa.String(length=71), nullable=False),
        sa.ForeignKeyConstraint(
            ["participant_id"], ["participants.id"], name=op.f("fk_facilities_participant_id_participants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_facilities")),
    )
    with op.batch_alter_table("facilities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_facilities_participant_id"), ["participant_id"], unique=False)

    op.create_table(
        "keys",
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("participant_id", sa.String(length=128), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("added_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("added_event", sa.String(length=71), nullable=False),
        sa.Column("revoked_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("compromised_since", UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(length=500), nullable=True),
        sa.Column("revoked_event", sa.String(length=71), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"], ["participants.id"], name=op.f("fk_keys_participant_id_participants")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_keys")),
    )
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_keys_participant_id"), ["participant_id"], unique=False)

    op.execute(sa.text("INSERT INTO log_state (id, size) VALUES (1, 0)"))
    for table in APPEND_ONLY:
        create_append_only_trigger(table)


APPEND_ONLY = ("events",)


def create_append_only_trigger(table: str) -> None:
    """Reject UPDATE and DELETE on ``table`` in the database itself, so no code path can rewrite history."""
    message = f"{table} is append-only: UPDATE and DELETE are refused"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            sa.text(
                f"""
                CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger AS $$
                BEGIN
                    RAISE EXCEPTION '{message}';
                END;
                $$ LANGUAGE plpgsql
                """
            )
        )
        op.execute(
            sa.text(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
            )
        )
        op.execute(
            sa.text(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()"
            )
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                sa.text(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
                )
            )


def drop_append_only_trigger(table: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
        op.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"))
        op.execute(sa.text(f"DROP FUNCTION IF EXISTS {table}_append_only()"))
    else:
        op.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
        op.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))


def downgrade() -> None:
    for table in APPEND_ONLY:
        drop_append_only_trigger(table)
    with op.batch_alter_table("keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_keys_participant_id"))

    op.drop_table("keys")
    with op.batch_alter_table("facilities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_facilities_participant_id"))

    op.drop_table("facilities")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_participant_id"))

    op.drop_table("api_tokens")
    op.drop_table("participants")
    op.drop_table("log_state")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_actor"))

    op.drop_table("events")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_custodian"))

    op.drop_table("batches")
    with op.batch_alter_table("batch_holders", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_holders_participant")

    op.drop_table("batch_holders")
    op.drop_table("batch_events")
    with op.batch_alter_table("batch_edges", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_edges_child")

    op.drop_table("batch_edges")
