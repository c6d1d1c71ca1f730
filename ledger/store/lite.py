"""The write path's hot statements on SQLite, straight through the driver inside SQLAlchemy's transaction.

The same reasons as on PostgreSQL (:mod:`ledger.store.pg`): per group the sequencer looks up a few hundred rows by
id and writes a few thousand, and SQLAlchemy's statement building and per-row parameter processing cost more than
SQLite's own work. Here each lookup is plain ``IN (?, ...)`` lists of at most :data:`IN_CHUNK` ids (SQLite has no
generic plans to go wrong), and each table's new rows are one ``executemany`` of tuples, a single trip to the
driver's thread.

Values are the ones SQLAlchemy would bind: the only typed column on this path, ``events.accepted_at``, goes
through the column type's own bind processor. Errors are raised as SQLAlchemy's exception classes, so the
submitter treats a refusal by the database the same way on every path.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.store.db import driver

IN_CHUNK = 500
"""Ids per ``IN (...)`` list, well under SQLite's bound-parameter limit."""


@contextlib.contextmanager
def translated(statement: str) -> Iterator[None]:
    """Raise sqlite3's errors as SQLAlchemy's, so that callers handle one family of database errors."""
    try:
        yield
    except sqlite3.IntegrityError as error:
        raise sa_exc.IntegrityError(statement, None, error) from error
    except sqlite3.DataError as error:
        raise sa_exc.DataError(statement, None, error) from error
    except sqlite3.OperationalError as error:
        raise sa_exc.OperationalError(statement, None, error) from error
    except sqlite3.DatabaseError as error:
        raise sa_exc.DatabaseError(statement, None, error) from error


async def select_by_ids(
    conn: AsyncConnection, table: sa.Table, column: str, ids: Iterable[str], columns: Sequence[str] = ()
) -> list[SimpleNamespace]:
    """Rows of ``table`` (all columns, or ``columns``) whose ``column`` is among ``ids``, read by attribute and
    converted by each column type's own result processor (timestamps come back as datetimes, as through
    SQLAlchemy), in ``IN`` lists of :data:`IN_CHUNK` ids."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    names = list(columns) or [c.name for c in table.columns]
    processors = [table.c[name].type._cached_result_processor(conn.dialect, None) for name in names]
    raw = await driver(conn)
    found: list[SimpleNamespace] = []
    for start in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[start : start + IN_CHUNK]
        statement = (
            f"SELECT {', '.join(names)} FROM {table.name} WHERE {column} IN ({', '.join('?' * len(chunk))})"
        )
        with translated(statement):
            rows = await raw.execute_fetchall(statement, chunk)  # one trip to the driver's thread, not three
        for row in rows:
            values = [value if p is None else p(value) for p, value in zip(processors, row, strict=True)]
            found.append(SimpleNamespace(**dict(zip(names, values, strict=True))))
    return found


async def sequencer_size(conn: AsyncConnection) -> int:
    """The sequencer's size (``log_state.size``), in one trip to the driver's thread: through SQLAlchemy a
    statement is four (a cursor, the statement, its rows, closing the cursor), each a thread hop and a wake-up of
    the event loop, about as long as SQLite's own work for a single event's commit."""
    statement = "SELECT size FROM log_state WHERE id = 1"
    raw = await driver(conn)
    with translated(statement):
        ((size,),) = await raw.execute_fetchall(statement)
    return int(size)


async def insert_rows(
    conn: AsyncConnection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Append ``rows`` (plain values, as the driver binds them) to ``table`` in one ``executemany``."""
    if not rows:
        return
    statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    raw = await driver(conn)
    with translated(statement):
        await raw.executemany(statement, rows)


async def write_group(
    conn: AsyncConnection,
    *,
    events: Sequence[tuple[Any, ...]],
    event_columns: Sequence[str],
    accepted_at: sa.Column[Any],
    new_batches: Sequence[tuple[Any, ...]],
    changed_batches: Sequence[tuple[Any, ...]],
    batch_columns: Sequence[str],
    batch_events: Sequence[tuple[str, int]],
    edges: Sequence[tuple[str, str, str, int]],
    holders: Sequence[tuple[str, str]],
    size: int,
) -> None:
    """A group's hot rows, one ``executemany`` per table: events (``event_columns`` order; ``accepted_at`` is that
    column, bound as SQLAlchemy binds it), new and changed batches (``batch_columns`` order, the id first), batch
    histories, lineage edges, holders (pairs already recorded are skipped) and the sequencer's new size."""
    raw = await driver(conn)
    bind = accepted_at.type._cached_bind_processor(conn.dialect)
    at = list(event_columns).index(accepted_at.name)
    if bind is not None:
        events = [(*e[:at], bind(e[at]), *e[at + 1 :]) for e in events]

    async def many(statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            with translated(statement):
                await raw.executemany(statement, rows)

    def insert(table: str, columns: Sequence[str], verb: str = "INSERT") -> str:
        return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    await many(insert("events", event_columns), events)
    await many(insert("batches", batch_columns), new_batches)
    assignments = ", ".join(f"{c} = ?" for c in batch_columns[1:])
    await many(
        f"UPDATE batches SET {assignments} WHERE {batch_columns[0]} = ?",
        [(*b[1:], b[0]) for b in changed_batches],
    )
    await many(insert("batch_events", ("batch_id", "log_index")), batch_events)
    await many(insert("batch_edges", ("parent_batch", "child_batch", "event_id", "mass_g")), edges)
    await many(insert("batch_holders", ("batch_id", "participant_id"), "INSERT OR IGNORE"), holders)
    statement = "UPDATE log_state SET size = ? WHERE id = 1"
    with translated(statement):
        await raw.execute(statement, (size,))
