"""Event ids unique through a hash index on PostgreSQL (an exclusion constraint), not a B-tree.

An event id is a SHA-256 (``sha256:`` and 64 hex digits), so each new event lands on a random page of the index
that keeps ids unique, and each lookup of a group's own ids (already in the log?) reads one. A B-tree of 71-character
keys is about 80 MB at 1,000,000 events: past PostgreSQL's default 128 MB of shared buffers together with the rest,
its pages came from the operating system's cache and each one's first change after a checkpoint wrote a full page
image to the write-ahead log. With stale statistics and a million events stored, ingest ran at 76-82 % of its rate
on an empty database. A hash index holds a 4-byte hash and the row's address per id, a few times smaller, and
``EXCLUDE USING hash (event_id WITH =)`` enforces uniqueness with it (concurrent inserts of one id wait for each
other, as with a unique index; the violation is SQLSTATE 23P01, an integrity error like 23505). Lookups by id,
one (``=``) or many (``= ANY``, as a bitmap scan), use it; nothing orders or ranges over event ids. SQLite keeps its
unique index.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE events ADD CONSTRAINT ex_events_event_id EXCLUDE USING hash (event_id WITH =)")
    op.execute("ALTER TABLE events DROP CONSTRAINT uq_events_event_id")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE events ADD CONSTRAINT uq_events_event_id UNIQUE (event_id)")
    op.execute("ALTER TABLE events DROP CONSTRAINT ex_events_event_id")
