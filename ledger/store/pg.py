"""The write path's hot statements on PostgreSQL, straight through asyncpg inside SQLAlchemy's transaction.

Why not SQLAlchemy here: per group the sequencer loads a few hundred rows by id and writes a few thousand, and the
statement building, parameter processing and result rows of the ORM layer cost more than the database's own work
(a third of the critical section). Two further reasons:

- Every lookup by id is one array parameter, ``= ANY($1::text[])``, never a long ``IN ($1, ..., $500)`` list:
  PostgreSQL switches a prepared statement to a generic plan after five runs, and with stale statistics (a table
  that grew since the last ``ANALYZE``) the generic plan of a long list can scan the whole table. One array is
  planned as an index lookup whatever the statistics say, so the cost per event stays flat as the ledger grows.
- New rows go in with ``COPY``, and changed batches with one ``UPDATE ... FROM unnest(...)``.

Errors are raised as SQLAlchemy's own exception classes (``IntegrityError``, ``DataError``, ...), so the submitter
treats a refusal by the database the same way on both paths; a cancelled statement is :class:`Overloaded`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.errors import Overloaded


class Record:
    """An asyncpg record read by attribute, as the ``*_from_row`` converters read SQLAlchemy rows."""

    __slots__ = ("_record",)

    def __init__(self, record: asyncpg.Record) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, index: int) -> Any:
        return self._record[index]


async def driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under ``conn``, whose transaction SQLAlchemy has begun (statements run inside it)."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    return raw


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
) -> list[Record]:
    """Rows of ``table`` whose ``column`` is among ``ids``, in one statement with one array parameter."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    statement = f"SELECT {columns} FROM {table} WHERE {column} = ANY($1::text[])"
    raw = await driver(conn)
    with translated(statement):
        return [Record(r) for r in await raw.fetch(statement, wanted)]


async def copy_rows(
    conn: AsyncConnection, table: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Append ``rows`` to ``table`` with ``COPY`` (binary protocol)."""
    if not rows:
        return
    raw = await driver(conn)
    with translated(f"COPY {table}"):
        await raw.copy_records_to_table(table, records=rows, columns=list(columns))


async def execute(conn: AsyncConnection, statement: str, *args: Any) -> None:
    raw = await driver(conn)
    with translated(statement):
        await raw.execute(statement, *args)


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
_BATCH_TYPES = {"mass_g": "bigint", "lost_g": "bigint"}

UPDATE_BATCHES = (
    "UPDATE batches AS b SET "
    + ", ".join(f"{c} = u.{c}" for c in BATCH_COLUMNS[1:])
    + " FROM unnest("
    + ", ".join(f"${i}::{_BATCH_TYPES.get(c, 'text')}[]" for i, c in enumerate(BATCH_COLUMNS, 1))
    + ") AS u("
    + ", ".join(BATCH_COLUMNS)
    + ") WHERE b.id = u.id"
)
"""Every changed batch in one statement: one array per column, zipped by ``unnest``."""

INSERT_HOLDERS = (
    "INSERT INTO batch_holders (batch_id, participant_id) "
    "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING"
)
"""Who held which batch; pairs already recorded are skipped."""


async def update_batches(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Write ``rows`` (values in :data:`BATCH_COLUMNS` order) over the batches with their ids."""
    if rows:
        await execute(conn, UPDATE_BATCHES, *(list(column) for column in zip(*rows, strict=True)))


async def insert_holders(conn: AsyncConnection, pairs: Sequence[tuple[str, str]]) -> None:
    if pairs:
        await execute(conn, INSERT_HOLDERS, [b for b, _ in pairs], [p for _, p in pairs])
