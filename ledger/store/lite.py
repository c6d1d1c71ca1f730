"""The write path's hot statements on SQLite, straight through the driver inside SQLAlchemy's transaction.

The same reasons as on PostgreSQL (:mod:`ledger.store.pg`): per group the sequencer looks up a few hundred rows by
id and writes a few thousand, and SQLAlchemy's statement building and per-row parameter processing cost more than
SQLite's own work. Here each lookup is plain ``IN (?, ...)`` lists of at most :data:`IN_CHUNK` ids (SQLite has no
generic plans to go wrong), and new rows go in a few statements, a single trip to the driver's thread: events in
multi-row ``INSERT``s, the rest of a group through one row of a temporary view (:func:`group_writer`).

Values are the ones SQLAlchemy would bind: the only typed column on this path, ``events.accepted_at``, goes
through the column type's own bind processor. Errors are raised as SQLAlchemy's exception classes, so the
submitter treats a refusal by the database the same way on every path.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.store.db import driver

_JSON = msgspec.json.Encoder()

IN_CHUNK = 500
"""Ids per ``IN (...)`` list, well under SQLite's bound-parameter limit."""

T = TypeVar("T")


async def on_driver_thread(raw: Any, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work(connection)`` on the thread of aiosqlite's connection ``raw``, which owns the ``sqlite3`` connection:
    several statements for one trip to that thread and one wake-up of the event loop (the public calls are one
    trip per statement). Through aiosqlite's ``_execute``, the queue every one of its calls goes through, so
    ``work`` runs in order with them."""
    return await raw._execute(lambda: work(raw._conn))  # type: ignore[no-any-return]


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


_DECODE_PARTS = msgspec.json.Decoder(list[tuple[int, list[Any]]])


@dataclass(frozen=True)
class Lookup:
    """One part of :func:`load_group`: the rows of ``table`` (``columns``, or all) whose ``column`` is among
    ``ids``, or, with ``through=(other table, its column, its id column)``, whose ``column`` is that column of the
    rows of the other table whose id is among ``ids`` (the events that added some keys, say)."""

    table: sa.Table
    column: str
    ids: Collection[str]
    columns: Sequence[str] = ()
    through: tuple[str, str, str] | None = None


_Shape = tuple[list[str], list[Any], frozenset[int]]
"""A lookup's column names, their result processors, and the positions of its ``BLOB`` columns."""


@functools.lru_cache(maxsize=256)
def _load_plan(
    plan: tuple[tuple[sa.Table, str, tuple[str, ...], tuple[str, str, str] | None, bool], ...],
    with_size: bool,
    dialect: Any,
) -> tuple[str, list[_Shape]]:
    """:func:`load_group`'s statement and the shape of each lookup's rows, built once for each combination of
    lookups with and without ids (a handful per engine)."""
    parts: list[str] = []
    shapes: list[_Shape] = []
    for number, (table, column, columns, through, any_ids) in enumerate(plan):
        names = list(columns) or [c.name for c in table.columns]
        binary = frozenset(
            i for i, name in enumerate(names) if isinstance(table.c[name].type, sa.LargeBinary)
        )
        shapes.append(
            (names, [table.c[name].type._cached_result_processor(dialect, None) for name in names], binary)
        )
        if not any_ids:
            continue
        listed = "(SELECT value FROM json_each(?))"
        if through is not None:
            other, other_column, other_id = through
            listed = f"(SELECT {other_column} FROM {other} WHERE {other_id} IN {listed})"
        values = ", ".join(
            f"iif({name} IS NULL, NULL, hex({name}))" if i in binary else name for i, name in enumerate(names)
        )
        parts.append(
            f"SELECT {number} AS part, json_array({values}) AS row FROM {table.name} WHERE {column} IN {listed}"
        )
    if with_size:
        parts.append(f"SELECT {len(plan)} AS part, json_array(size) AS row FROM log_state WHERE id = 1")
    if not parts:
        return "", shapes
    # one row of every row: each row the driver steps to is a release and a retaking of the GIL (see load_group_here)
    return f"SELECT json_group_array(json_array(part, json(row))) FROM ({' UNION ALL '.join(parts)})", shapes


async def load_group(
    conn: AsyncConnection, lookups: Sequence[Lookup], *, with_size: bool = False
) -> tuple[list[list[SimpleNamespace]], int | None]:
    """The rows of every lookup, and with ``with_size`` the sequencer's size, in one statement: one trip to the
    driver's thread instead of one per table (each trip is a thread hop and a wake-up of the event loop, 90-240
    µs here, which for a single event's commit was most of its time). See :func:`load_group_here`."""
    raw = await driver(conn)
    dialect = conn.dialect
    return await on_driver_thread(
        raw, lambda lite: load_group_here(lite, dialect, lookups, with_size=with_size)
    )


def load_group_here(
    lite: sqlite3.Connection,
    dialect: Any,
    lookups: Sequence[Lookup],
    *,
    with_size: bool = False,
    begin: str | None = None,
) -> tuple[list[list[SimpleNamespace]], int | None]:
    """:func:`load_group` on the driver's own connection, in the thread that owns it.

    Each lookup is a ``UNION ALL`` part whose rows come back as JSON arrays (``json_array``; tables differ in
    their columns), tagged with the part's number, and all of them as one row (``json_group_array``: each row the
    driver steps to lets go of the GIL and takes it back); ``BLOB`` columns travel as ``hex()`` (JSON holds no
    bytes; a NULL stays NULL).
    The ids are one JSON array parameter per part (``IN (SELECT value FROM json_each(?))``: no bound on their
    number, and the same statement text, so the same prepared statement, whatever their number). Values are then
    converted by each column type's own result processor, as :func:`select_by_ids` does.

    ``begin`` (``"BEGIN IMMEDIATE"``) opens a transaction on the connection first."""
    plan = tuple(
        (lookup.table, lookup.column, tuple(lookup.columns), lookup.through, bool(lookup.ids))
        for lookup in lookups
    )
    statement, shapes = _load_plan(plan, with_size, dialect)
    found: list[list[SimpleNamespace]] = [[] for _ in lookups]
    if begin is not None:
        with translated(begin):
            lite.execute(begin)
    if not statement:
        return found, None
    parameters = [_JSON.encode(lookup.ids).decode() for lookup in lookups if lookup.ids]
    with translated(statement):
        ((text,),) = lite.execute(statement, parameters).fetchall()
    size: int | None = None
    for number, values in _DECODE_PARTS.decode(text):
        if number == len(lookups):
            (size,) = values
            continue
        names, processors, binary = shapes[number]
        for i in binary:
            if values[i] is not None:
                values[i] = bytes.fromhex(values[i])
        converted = [value if p is None else p(value) for p, value in zip(processors, values, strict=True)]
        found[number].append(SimpleNamespace(**dict(zip(names, converted, strict=True))))
    if with_size and size is None:
        raise sa_exc.OperationalError(
            statement, None, RuntimeError("the sequencer's row (log_state) is missing")
        )
    return found, size


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


GROUP_ROWS = "ledger_group_rows"
"""A temporary view on each SQLite connection: inserting one row of JSON arrays into it writes a group's custody
rows but its events (see :func:`group_writer`)."""

_EDGE_COLUMNS = ("parent_batch", "child_batch", "event_id", "mass_g")

GROUP_WRITER_DROP = (
    f"DROP TRIGGER IF EXISTS temp.{GROUP_ROWS}_write",
    f"DROP VIEW IF EXISTS temp.{GROUP_ROWS}",
)
"""Remove what :func:`group_writer` created from a connection (for migrations, see ``ledger.store.db.upgrade``)."""


def group_writer(batch_columns: Sequence[str]) -> list[str]:
    """The statements that create :data:`GROUP_ROWS` and its ``INSTEAD OF INSERT`` trigger on a connection (they
    are temporary: nothing in the database file, nothing for a migration to create; ``ledger.store.db.upgrade``
    takes them off its connection while migrations run), for :func:`write_group`.

    The trigger writes new batches, changed batches, batch histories, lineage edges and holders, each read back
    from a JSON array of arrays (``json_each``, ``->>``: the values the driver would have bound, text, integers
    and NULL; ``->>`` would end a text at a NUL, which no stored text holds: payloads with control characters are
    refused before this), and the sequencer's new size, all in one statement: SQLite runs every part of it or none, and a
    constraint it breaks fails the statement as an ``executemany`` would have. One trip to aiosqlite's thread
    instead of one per table."""

    def values(columns: Sequence[str]) -> str:
        return ", ".join(f"value->>{i}" for i in range(len(columns)))

    key = batch_columns[0]
    changed = ", ".join(f"{c} = u.value->>{i}" for i, c in enumerate(batch_columns) if c != key)
    return [
        f"CREATE TEMP VIEW IF NOT EXISTS {GROUP_ROWS} "
        "(new_batches, changed_batches, batch_events, edges, holders, size) AS "
        "SELECT NULL, NULL, NULL, NULL, NULL, NULL",
        f"CREATE TEMP TRIGGER IF NOT EXISTS {GROUP_ROWS}_write INSTEAD OF INSERT ON {GROUP_ROWS} BEGIN "
        f"INSERT INTO batches ({', '.join(batch_columns)}) "
        f"SELECT {values(batch_columns)} FROM json_each(NEW.new_batches); "
        f"UPDATE batches SET {changed} FROM json_each(NEW.changed_batches) AS u WHERE batches.{key} = u.value->>0; "
        "INSERT INTO batch_events (batch_id, log_index) SELECT value->>0, value->>1 FROM json_each(NEW.batch_events); "
        f"INSERT INTO batch_edges ({', '.join(_EDGE_COLUMNS)}) "
        f"SELECT {values(_EDGE_COLUMNS)} FROM json_each(NEW.edges); "
        "INSERT OR IGNORE INTO batch_holders (batch_id, participant_id) "
        "SELECT value->>0, value->>1 FROM json_each(NEW.holders); "
        "UPDATE log_state SET size = NEW.size WHERE id = 1; "
        "END",
    ]


ROWS_PER_INSERT = 256
"""Most rows per multi-row ``INSERT`` of events on SQLite: 256 rows of a dozen columns are some 3,000 parameters, far
under SQLite's bound of 32,766. One statement, not an ``executemany`` of a statement per row: the driver lets go
of the GIL for every step of a statement and must take it back from the busy event loop each time, which for a
single-event group commit under load cost more than SQLite's own work."""


ROWS_EXACT = 64
"""Up to this many rows, an ``INSERT`` of events has exactly as many rows as there are events; beyond, the rows go
in statements of a power of two rows (see :func:`_statement_rows`)."""


def _statement_rows(rows: int) -> Iterator[int]:
    """The rows of each successive multi-row ``INSERT`` for ``rows`` rows: :data:`ROWS_PER_INSERT` while that many
    are left, the rest exactly if :data:`ROWS_EXACT` or fewer, else the largest power of two that fits. So a
    connection sees at most ``ROWS_EXACT`` + 3 statement texts, all in the driver's cache of 128 prepared
    statements (preparing a 256-row statement costs 600 µs; with a text for every count from 1 to 256 they kept
    falling out of the cache, and varied group sizes were slower than an ``executemany``)."""
    while rows > 0:
        if rows >= ROWS_PER_INSERT:
            take = ROWS_PER_INSERT
        elif rows <= ROWS_EXACT:
            take = rows
        else:
            take = 1 << (rows.bit_length() - 1)
        yield take
        rows -= take


@functools.lru_cache(maxsize=512)
def _insert_statement(table: str, columns: tuple[str, ...], rows: int) -> str:
    """``INSERT INTO table (columns) VALUES (?, ...), ...`` for ``rows`` rows (the driver keeps each prepared)."""
    row = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)}"


def write_group_here(
    lite: sqlite3.Connection,
    dialect: Any,
    *,
    events: Sequence[tuple[Any, ...]],
    event_columns: Sequence[str],
    accepted_at: sa.Column[Any],
    new_batches: Sequence[tuple[Any, ...]],
    changed_batches: Sequence[tuple[Any, ...]],
    batch_events: Sequence[tuple[str, int]],
    edges: Sequence[tuple[str, str, str, int]],
    holders: Sequence[tuple[str, str]],
    size: int,
    commit: bool = False,
) -> None:
    """A group's hot rows on the driver's own connection, in the thread that owns it: its events
    (``event_columns`` order; ``accepted_at`` is that column, bound as SQLAlchemy binds it) in multi-row
    ``INSERT``s of up to :data:`ROWS_PER_INSERT` rows, their ``BLOB`` payloads bound as bytes; then new and changed batches (in the column order
    :func:`group_writer` was given, the id first), batch histories, lineage edges, holders (pairs already recorded
    are skipped) and the sequencer's new size as one row of JSON arrays inserted into :data:`GROUP_ROWS`. With
    ``commit``, the connection's transaction (one :func:`load_group_here` began) is committed after them."""
    bind = accepted_at.type._cached_bind_processor(dialect)
    at = list(event_columns).index(accepted_at.name)
    if bind is not None:
        events = [(*e[:at], bind(e[at]), *e[at + 1 :]) for e in events]
    insert_group = (
        f"INSERT INTO {GROUP_ROWS} (new_batches, changed_batches, batch_events, edges, holders, size) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    try:
        rows = [
            _JSON.encode(r).decode() for r in (new_batches, changed_batches, batch_events, edges, holders)
        ]
    except (TypeError, ValueError) as error:  # a value JSON cannot carry: refused like a bad parameter
        raise sa_exc.DataError(insert_group, None, error) from error
    start = 0
    for rows_in_statement in _statement_rows(len(events)):
        chunk = events[start : start + rows_in_statement]
        start += rows_in_statement
        insert_events = _insert_statement("events", tuple(event_columns), rows_in_statement)
        with translated(insert_events):
            lite.execute(insert_events, [value for event in chunk for value in event])
    with translated(insert_group):
        lite.execute(insert_group, (*rows, size))
    if commit:
        with translated("COMMIT"):
            lite.execute("COMMIT")
