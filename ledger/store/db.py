"""Engines for SQLite and PostgreSQL, migrations, and the schema-version check.

Bounds that keep a busy process answering: a request waits at most ``pool_timeout`` seconds for a connection
(then 503 ``overloaded`` with ``Retry-After``, not a 30 s queue ending in 500), and on PostgreSQL a statement runs
at most ``statement_timeout_ms`` (then 503 ``overloaded`` too), so that no request holds a connection for long.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool, PoolProxiedConnection, PoolResetState

from ledger.errors import NotMigrated, Overloaded
from ledger.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"

WRITE = {"ledger_write": True}
"""Execution options for a write transaction: on SQLite it begins with ``BEGIN IMMEDIATE``."""


class SheddingPool(AsyncAdaptedQueuePool):
    """The usual async queue pool, except that a request that waited ``timeout`` seconds for a connection is shed
    with :class:`Overloaded` (503 and ``Retry-After``) instead of SQLAlchemy's TimeoutError (a 500). Every place
    that takes a connection (``engine.connect()``, ``engine.begin()``) goes through here."""

    def connect(self) -> PoolProxiedConnection:
        try:
            return super().connect()
        except sa.exc.TimeoutError as exc:
            raise Overloaded(
                f"every database connection of this process stayed busy for {self.timeout():g} s "
                "(LEDGER_DB_POOL_SIZE, LEDGER_DB_POOL_TIMEOUT); retry shortly"
            ) from exc


def _statement_cancelled(context: ExceptionContext) -> BaseException | None:
    """A statement cancelled by PostgreSQL's ``statement_timeout`` (SQLSTATE 57014) becomes :class:`Overloaded`."""
    original = context.original_exception
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if state == "57014":
        return Overloaded(
            "a database statement ran longer than LEDGER_STATEMENT_TIMEOUT_MS and was cancelled; retry later, "
            "or ask for less (fewer levels, a smaller page)"
        )
    return None


def create_engine(
    url: str,
    pool_size: int = 10,
    *,
    pool_timeout: float | None = None,
    statement_timeout_ms: int | None = None,
    server_settings: dict[str, str] | None = None,
) -> AsyncEngine:
    """An async engine with the settings each database needs for a durable, serialisable log.

    ``pool_timeout`` (seconds) and ``statement_timeout_ms`` (PostgreSQL; 0 for none) default to
    ``LEDGER_DB_POOL_TIMEOUT`` and ``LEDGER_STATEMENT_TIMEOUT_MS`` (see :class:`ledger.settings.Settings`);
    ``server_settings`` are further PostgreSQL settings for every connection of the engine.
    """
    if pool_timeout is None or statement_timeout_ms is None:
        configured = Settings.from_env()
        pool_timeout = configured.pool_timeout if pool_timeout is None else pool_timeout
        if statement_timeout_ms is None:
            statement_timeout_ms = configured.statement_timeout_ms
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(
                url,
                connect_args={"timeout": 30},
                poolclass=SheddingPool,
                pool_timeout=pool_timeout,
                pool_reset_on_return=None,  # see _configure_sqlite's reset
            )
        else:
            engine = create_async_engine(url, connect_args={"timeout": 30}, pool_reset_on_return=None)
        _configure_sqlite(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_driver_name() == "asyncpg":
        settings = dict(server_settings or {})
        if statement_timeout_ms > 0:
            settings["statement_timeout"] = str(statement_timeout_ms)
        if settings:
            connect_args["server_settings"] = settings
    # no pre-ping: it costs a round trip per checkout; a dead connection fails the request, and the pool drops it
    engine = create_async_engine(
        url,
        poolclass=SheddingPool,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        pool_recycle=3600,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine, "handle_error", _statement_cancelled)
    return engine


WRITE_PATH_SETTINGS = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off", "jit": "off"}
"""The plans of the write path's engine (PostgreSQL): key lookups whatever the statistics say, as the sequencer's
transaction sets them for itself (see ``ledger.store.repo._LOCK_SEQUENCER_POSTGRESQL``), for the reads and writes
the submitter makes outside a transaction. No JIT compilation: with sequential scans off, the one statement that
must scan (the registrar check, a handful of rows) is costed at 10^10 and was compiled, 40 ms of the first
commit's 45 for a table of one row."""


_BEGIN_UNSETTLED = "ledger_begin_unsettled"
"""Set in a SQLite connection's pool record while its BEGIN awaits the driver's answer."""


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that we can BEGIN IMMEDIATE for writes.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable at commit: an accepted event survives power loss
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
        from ledger.store import lite, pg

        for statement in lite.group_writer(pg.BATCH_COLUMNS):  # the write path's temporary view
            cursor.execute(statement)
        cursor.close()

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
        # A connection back in the pool is rolled back only if a transaction is still open on it (SQLAlchemy's
        # documented custom reset, with pool_reset_on_return=None). Every transaction of the ledger's ends in a
        # commit or a rollback, and the pool's unconditional rollback after it was one more trip to aiosqlite's
        # thread per use of a connection: a ninth of a single event's commit. Asking costs no trip
        # (sqlite3_get_autocommit, read in this thread). A connection that cannot answer or roll back is
        # dropped by the pool, as after a failed rollback.
        # A BEGIN still unanswered (its caller was cancelled while it waited for the write lock) may yet open a
        # transaction on aiosqlite's thread: then the rollback is queued behind it, as the pool's always was.
        unsettled = record.info.pop(_BEGIN_UNSETTLED, False)
        if state.asyncio_safe and (unsettled or dbapi_connection.driver_connection.in_transaction):
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A writer takes the database's write lock at BEGIN, so that what it reads stays current until it commits.
        # Straight through the driver (SQLAlchemy's documented run_async): one trip to aiosqlite's thread instead
        # of a cursor's three, each a thread hop and a wake-up of the event loop.
        from ledger.store.lite import translated

        statement = "BEGIN IMMEDIATE" if conn.get_execution_options().get("ledger_write") else "BEGIN"
        info = conn.connection.info
        info[_BEGIN_UNSETTLED] = (
            True  # until the driver has answered; a cancellation leaves it (see _on_reset)
        )
        try:
            try:
                # refused (locked past the busy timeout, ...): SQLAlchemy's error, as before
                with translated(statement):
                    conn.connection.dbapi_connection.run_async(lambda raw: raw.execute_fetchall(statement))
            except sa.exc.DBAPIError:
                raise
            except Exception:
                # anything else (aiosqlite's connection or thread gone): again through SQLAlchemy's adapter, which
                # knows a lost connection when it sees one and has the pool drop it
                conn.exec_driver_sql(statement)
        except Exception:
            info.pop(_BEGIN_UNSETTLED, None)  # answered, with an error
            raise
        info.pop(_BEGIN_UNSETTLED, None)


async def driver(conn: AsyncConnection) -> Any:
    """The driver's own connection under ``conn`` (asyncpg's or aiosqlite's), inside whatever transaction
    SQLAlchemy has begun on it: for hot paths where SQLAlchemy's statement building and result rows cost more than
    the database's work."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    return raw


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that writes. On SQLite it takes the write lock at BEGIN (BEGIN IMMEDIATE), so it waits for
    other writers (busy timeout) instead of failing when it upgrades from reading to writing; writers of the same
    process wait for each other in line first (:func:`_one_writer`)."""
    async with _one_writer(engine), engine.connect() as conn:
        conn = await conn.execution_options(**WRITE)
        async with conn.begin():
            yield conn


@asynccontextmanager
async def driver_transaction(
    engine: AsyncEngine,
) -> AsyncIterator[tuple[AsyncConnection, Callable[[], None]]]:
    """SQLite: a connection, in this process's line of writers (:func:`_one_writer`), on which the caller opens
    and ends a transaction through the driver itself, unknown to SQLAlchemy: ``BEGIN IMMEDIATE`` in the same trip
    to aiosqlite's thread as its first statement, ``COMMIT`` in the same trip as its last (two trips for a group
    commit instead of five). Nothing may go through SQLAlchemy on it meanwhile (it would begin a transaction of
    its own).

    Also yields ``answered``, to be called once the trip with the ``BEGIN`` has come back (with its answer or an
    error): until then the connection is handed back to the pool with a rollback queued behind that trip, as for
    an unanswered ``BEGIN`` of :func:`write_transaction` (a cancelled caller). A transaction still open on the way
    out (an error before the ``COMMIT``, or the ``COMMIT`` failed) is rolled back by the pool's reset too."""
    async with _one_writer(engine), engine.connect() as conn:
        info = (await conn.get_raw_connection()).info
        info[_BEGIN_UNSETTLED] = True
        yield conn, functools.partial(info.pop, _BEGIN_UNSETTLED, None)


SQLITE_BUSY_SECONDS = 30.0
"""SQLite's busy timeout (``PRAGMA busy_timeout``): how long a writer waits for the database's write lock."""

_WRITERS: weakref.WeakKeyDictionary[sa.Engine, dict[asyncio.AbstractEventLoop, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def _one_writer(engine: AsyncEngine) -> AsyncIterator[None]:
    """On SQLite, one write transaction of this process at a time, the others waiting in line on the event loop.

    SQLite's own wait for a lock held by another connection is a sleep of 1, 2, 5, 10, then up to 100 ms between
    attempts (its busy handler), whatever the moment the lock is freed: the sequencer's commit, finding the log's
    integrator (or another request's write) in the middle of a transaction, slept on past its end, and the single
    POSTs waiting for that commit with it. In line here, the next writer starts as soon as the last one is done.
    Writers of other processes (``ledger`` commands beside the server) still meet SQLite's busy handler. A writer
    still in line after :data:`SQLITE_BUSY_SECONDS`, as long as SQLite lets one wait for the lock, is refused with
    :class:`Overloaded` (503, ``Retry-After``), having written nothing."""
    if engine.dialect.name != "sqlite":
        yield
        return
    by_loop = _WRITERS.setdefault(engine.sync_engine, {})
    lock = by_loop.get(asyncio.get_running_loop())
    if lock is None:
        # a new loop (tests run one per test): forget the locks of loops closed since
        for closed in [loop for loop in by_loop if loop.is_closed()]:
            del by_loop[closed]
        lock = by_loop[asyncio.get_running_loop()] = asyncio.Lock()
    try:
        async with asyncio.timeout(SQLITE_BUSY_SECONDS):
            await lock.acquire()
    except TimeoutError:
        raise Overloaded(
            f"this write waited {SQLITE_BUSY_SECONDS:g} s for its turn at the SQLite database's write lock and was "
            "not started; nothing was written, retry shortly"
        ) from None
    try:
        yield
    finally:
        lock.release()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def upgrade(engine: AsyncEngine) -> None:
    """Run ``alembic upgrade head`` on ``engine`` (the cookbook's "sharing a connection" recipe)."""

    def _upgrade(sync_conn: sa.Connection) -> None:
        config = alembic_config(str(engine.url))
        config.attributes["connection"] = sync_conn
        command.upgrade(config, "head")

    from ledger.store import lite, pg

    async with engine.begin() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if not sqlite:
            # a migration may build an index over a large table: no statement timeout for it
            await conn.execute(sa.text("SET LOCAL statement_timeout = 0"))
        else:
            # SQLite checks every trigger, temporary ones too, when a migration renames a table it rebuilt (batch
            # mode): the write path's view and trigger go for the migrations and come back after them, in the
            # same transaction (if it rolls back, so do both)
            for statement in lite.GROUP_WRITER_DROP:
                await conn.exec_driver_sql(statement)
        await conn.run_sync(_upgrade)
        if sqlite:
            for statement in lite.group_writer(pg.BATCH_COLUMNS):
                await conn.exec_driver_sql(statement)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Raise :class:`NotMigrated` naming the fix unless the schema is at this code's head revision."""
    try:
        current = await current_revision(engine)
    except Overloaded:
        raise  # reachable but busy: 503 overloaded with Retry-After, not "cannot reach"
    except Exception as exc:  # unreachable server, bad credentials: say so rather than crash later
        raise NotMigrated(f"cannot reach the database at {engine.url.render_as_string()}: {exc}") from exc
    head = head_revision()
    if current != head:
        where = (
            "has no ledger schema" if current is None else f"is at revision {current}, the code needs {head}"
        )
        raise NotMigrated(
            f"the database {where}; run `ledger db upgrade` (with the same LEDGER_DATABASE_URL)"
        )
