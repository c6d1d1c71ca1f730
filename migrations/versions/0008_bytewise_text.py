"""Text compares bytewise on PostgreSQL (COLLATE "C" on every text column).

The database's default collation is the operator's choice: under ``en_US.UTF-8`` ids sort in another order than on
SQLite (BINARY) and in Python, and even ``C.UTF-8`` compares through the C library's strcoll, which made index
inserts on the write path's text keys 12-20 % dearer than a byte comparison. Changing a column's collation keeps its
type, so PostgreSQL rebuilds the indexes on it but does not rewrite the table. A text column added later needs
``COLLATE "C"`` too (``tests/test_storage.py`` checks every one).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _text_columns(bind: sa.Connection) -> list[tuple[str, str, str]]:
    """(table, column, its type as declared) of every text column of the schema's tables."""
    rows = bind.execute(
        sa.text(
            "SELECT c.table_name, c.column_name, c.data_type, c.character_maximum_length FROM information_schema.columns c "
            "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
            "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
            "AND c.data_type IN ('text', 'character varying') AND c.table_name <> 'alembic_version' "
            "ORDER BY c.table_name, c.ordinal_position"
        )
    )
    return [
        (r[0], r[1], "text" if r[2] == "text" else f"varchar({r[3]})" if r[3] else "varchar") for r in rows
    ]


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, column, type_ in _text_columns(bind):
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {type_} COLLATE "C"')


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for table, column, type_ in _text_columns(bind):
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {type_} COLLATE "default"')
