"""The write path's hot statements on PostgreSQL, straight through asyncpg inside SQLAlchemy's transaction.

Why not SQLAlchemy here: per group the sequencer loads a few hundred rows by id and writes a few thousand, and the
statement building, parameter processing and result rows of the ORM layer cost more than the database's own work
(a third of the critical section). Two further reasons:

- Every lookup by id is one array parameter, ``= ANY($1::text[])``, never a long ``IN ($1, ..., $500)`` list:
  PostgreSQL switches a prepared statement to a generic plan after five runs, and with stale statistics (a table
  that grew since the last ``ANALYZE``) the generic plan of a long list can scan the whole table. One array is
  planned as an index lookup whatever the statistics say, so the cost per event stays flat as the ledger grows.
- A group's new and changed rows go in one statement (:func:`write_group`), each table's rows one JSON parameter.

Errors are raised as SQLAlchemy's own exception classes (``IntegrityError``, ``DataError``, ...), so the submitter
treats a refusal by the database the same way on both paths; a cancelled statement is :class:`Overloaded`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import msgspec
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.errors import Overloaded
from ledger.store import db


def _row(record: asyncpg.Record) -> SimpleNamespace:
    """An asyncpg record read by attribute, as the ``*_from_row`` converters read SQLAlchemy rows (a plain namespace:
    attribute reads cost nothing extra, where a ``__getattr__`` wrapper cost a Python call per column)."""
    return SimpleNamespace(**dict(record.items()))


async def driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under ``conn``, whose transaction SQLAlchemy has begun (statements run inside it)."""
    return cast(asyncpg.Connection, await db.driver(conn))


@contextlib.contextmanager
def translated(statement: str) -> Iterator[None]:
    """Raise asyncpg's errors as SQLAlchemy's, so that callers handle one family of database errors."""
    try:
        yield
    except asyncpg.QueryCanceledError as error:
        raise Overloaded(
            "a database statement ran longer than LEDGER_STATEMENT_TIMEOUT_MS and was cancelled; retry later"
        ) from error
    except asyncpg.IntegrityConstraintViolationError as error:
        raise sa_exc.IntegrityError(statement, None, error) from error
    except asyncpg.DataError as error:
        raise sa_exc.DataError(statement, None, error) from error
    except asyncpg.PostgresError as error:
        raise sa_exc.ProgrammingError(statement, None, error) from error
    except (asyncpg.InterfaceError, OSError) as error:
        raise sa_exc.OperationalError(statement, None, error) from error


async def select_by_ids(
    conn: AsyncConnection, table: str, column: str, ids: Iterable[str], columns: str = "*"
) -> list[SimpleNamespace]:
    """Rows of ``table`` whose ``column`` is among ``ids``, in one statement with one array parameter."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    statement = f"SELECT {columns} FROM {table} WHERE {column} = ANY($1::text[])"
    raw = await driver(conn)
    with translated(statement):
        return [_row(r) for r in await raw.fetch(statement, wanted)]


@functools.cache
def load_group_statement(
    tables: tuple[tuple[str, str], ...], keys_table: str, with_size: bool = False
) -> str:
    """The statement of :func:`load_group` for ``(table, id column)`` pairs; its parameters are one id array per
    table, then the referenced event ids, then the event ids to look for in the log. ``with_size`` adds the
    sequencer's size, read in the same snapshot, as the last column."""
    parts: list[str] = []
    key_param = 0
    for number, (table, column) in enumerate(tables, 1):
        parts.append(f"ARRAY(SELECT t FROM {table} AS t WHERE t.{column} = ANY(${number}::text[]))")
        if table == keys_table:
            key_param = number
    wanted = f"${len(tables) + 1}::text[]"
    if key_param:
        # one array (an init plan), not an OR with a subquery: that would scan the whole events table
        wanted += f" || ARRAY(SELECT k.added_event FROM {keys_table} AS k WHERE k.key_id = ANY(${key_param}::text[]))"
    parts.append(
        f"ARRAY(SELECT ROW(e.event_id, e.actor, e.timestamp) FROM events AS e WHERE e.event_id = ANY({wanted}))"
    )
    parts.append(
        "ARRAY(SELECT ROW(e.event_id, e.log_index, e.actor, e.key_id) FROM events AS e "
        f"WHERE e.event_id = ANY(${len(tables) + 2}::text[]))"
    )
    if with_size:
        parts.append("(SELECT size FROM log_state WHERE id = 1)")
    return "SELECT " + ", ".join(parts)


async def load_group(
    conn: AsyncConnection,
    by_id: Sequence[tuple[str, str, Iterable[str]]],
    *,
    keys_table: str,
    referenced: Iterable[str],
    known: Iterable[str],
    with_size: bool = False,
) -> tuple[list[list[SimpleNamespace]], list[SimpleNamespace], list[SimpleNamespace], int | None]:
    """Everything a group's acceptance reads, in one statement (one round trip instead of eight):

    - for each ``(table, column, ids)`` of ``by_id``, the whole rows whose ``column`` is among ``ids``;
    - ``event_id, actor, timestamp`` of the events among ``referenced`` and of the events that introduced the keys
      loaded from ``keys_table`` (the table among ``by_id`` named so);
    - ``event_id, log_index, actor, key_id`` of the events among ``known`` (already in the log?).

    Each part is an ``ARRAY(SELECT ...)`` of the table's row type, which asyncpg decodes with its column names; the
    lookups are array parameters, as in :func:`select_by_ids`, planned as index lookups at any size. With
    ``with_size``, the sequencer's size as of the same snapshot comes last (else None)."""
    statement = load_group_statement(
        tuple((table, column) for table, column, _ in by_id), keys_table, with_size
    )
    params = [sorted(set(ids)) for _, _, ids in by_id] + [sorted(set(referenced)), sorted(set(known))]
    raw = await driver(conn)
    with translated(statement):
        found = await raw.fetchrow(statement, *params)
    assert found is not None
    tables = [[_row(r) for r in found[i]] for i in range(len(by_id))]
    facts = [SimpleNamespace(event_id=r[0], actor=r[1], timestamp=r[2]) for r in found[len(by_id)]]
    logged = [
        SimpleNamespace(event_id=r[0], log_index=r[1], actor=r[2], key_id=r[3]) for r in found[len(by_id) + 1]
    ]
    return tables, facts, logged, (int(found[len(by_id) + 2]) if with_size else None)


async def copy_rows(
    conn: AsyncConnection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Append ``rows`` to ``table`` with ``COPY`` (binary protocol)."""
    if not rows:
        return
    raw = await driver(conn)
    with translated(f"COPY {table}"):
        await raw.copy_records_to_table(table, records=rows, columns=list(columns))


BATCH_COLUMNS = (
    "id",
    "mineral",
    "form",
    "mass_g",
    "status",
    "custodian",
    "facility_id",
    "receiver",
    "receiver_facility",
    "head",
    "created_event",
    "value_amount",
    "value_currency",
    "lost_g",
)
EVENT_COLUMNS = (
    "log_index",
    "event_id",
    "kind",
    "actor",
    "key_id",
    "payload_type",
    "payload",
    "signatures",
    "timestamp",
    "accepted_at",
)
_TYPES = {
    "log_index": "bigint",
    "mass_g": "bigint",
    "lost_g": "bigint",
    "payload": "bytea",
    "accepted_at": "timestamptz",
}


_JSON = msgspec.json.Encoder()


class _Rows:
    """Positional parameters of one statement: ``add(columns, rows)`` passes the rows as one JSON array of arrays
    (one text parameter, which msgspec encodes in C) and returns the subquery that reads them back as typed rows.

    Not one array parameter per column: asyncpg checks every element of an array parameter against three abstract
    base classes, each check a Python call, which made encoding a group's write (a few thousand elements) cost the
    event loop 10-15 ms per 250 events against 3 ms for the JSON text, and PostgreSQL parses JSON in C. Ingest,
    ``python -m tests.bench --only ingest`` alternating with the array version: 3,050-3,240 -> 3,510-3,660 events/s,
    the server process's CPU 10.1-10.3 -> 8.6-9.1 s per 30,000 events, PostgreSQL's unchanged."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> str:
        binary = [i for i, c in enumerate(columns) if _TYPES.get(c) == "bytea"]
        values = [_hex(row, binary) for row in rows] if binary else rows
        try:
            self.values.append(_JSON.encode(values).decode())
        except (TypeError, ValueError) as error:  # a value JSON cannot carry: refused like a bad parameter
            raise sa_exc.DataError(f"rows for {', '.join(columns)}", None, error) from error
        fields = ", ".join(f"(r->>{i})::{_TYPES.get(c, 'text')} AS {c}" for i, c in enumerate(columns))
        return f"(SELECT {fields} FROM jsonb_array_elements(${len(self.values)}::jsonb) AS r) AS u"


def _hex(row: tuple[Any, ...], binary: Sequence[int]) -> list[Any]:
    """``row`` with its ``bytes`` values at ``binary`` in PostgreSQL's hex format for ``bytea`` (``\\x...``)."""
    values = list(row)
    for i in binary:
        if values[i] is not None:
            values[i] = "\\x" + values[i].hex()
    return values


async def write_group(
    conn: AsyncConnection,
    *,
    events: Sequence[tuple[Any, ...]],
    new_batches: Sequence[tuple[Any, ...]],
    changed_batches: Sequence[tuple[Any, ...]],
    batch_events: Sequence[tuple[str, int]],
    edges: Sequence[tuple[str, str, str, int]],
    holders: Sequence[tuple[str, str]],
    size: int,
    expect: int | None = None,
) -> bool:
    """A group's hot rows in one statement (one round trip): its events (values in :data:`EVENT_COLUMNS` order),
    new and changed batches (:data:`BATCH_COLUMNS` order), batch histories, lineage edges, holders (pairs already
    recorded are skipped), and the sequencer's new size, as data-modifying ``WITH`` clauses over one JSON parameter
    per table (:class:`_Rows`). PostgreSQL runs every clause or none.

    With ``expect``, the statement first locks the sequencer row, waiting for any transaction that holds it, and
    writes only if the size is then still ``expect`` (every clause is conditioned on that); outside a
    transaction, it commits by itself. Returns whether it wrote (always True without ``expect``)."""
    inputs = _Rows()
    clauses: list[str] = []
    guard = ""
    if expect is not None:
        inputs.values.append(expect)
        guard = " WHERE EXISTS (SELECT FROM s)"

    def insert(table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]], tail: str = "") -> None:
        if rows:
            source = inputs.add(columns, rows)
            listed = ", ".join(columns)
            clauses.append(f"INSERT INTO {table} ({listed}) SELECT {listed} FROM {source}{guard}{tail}")

    insert("events", EVENT_COLUMNS, events)
    insert("batches", BATCH_COLUMNS, new_batches)
    if changed_batches:
        source = inputs.add(BATCH_COLUMNS, changed_batches)
        assignments = ", ".join(f"{c} = u.{c}" for c in BATCH_COLUMNS[1:])
        also = " AND EXISTS (SELECT FROM s)" if guard else ""
        clauses.append(f"UPDATE batches AS b SET {assignments} FROM {source} WHERE b.id = u.id{also}")
    insert("batch_events", ("batch_id", "log_index"), batch_events)
    insert("batch_edges", ("parent_batch", "child_batch", "event_id", "mass_g"), edges)
    insert("batch_holders", ("batch_id", "participant_id"), holders, " ON CONFLICT DO NOTHING")
    params = [*inputs.values, size]
    last = f"UPDATE log_state SET size = ${len(params)}::bigint WHERE id = 1"
    ctes = [f"w{i} AS ({c})" for i, c in enumerate(clauses)]
    if guard:
        last += " AND EXISTS (SELECT FROM s)"
        ctes.insert(0, "s AS (SELECT size FROM log_state WHERE id = 1 AND size = $1::bigint FOR UPDATE)")
    if ctes:
        last = "WITH " + ", ".join(ctes) + " " + last
    raw = await driver(conn)
    with translated(last):
        status = await raw.execute(last, *params)
    return expect is None or status == "UPDATE 1"
