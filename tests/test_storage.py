"""Storage on both databases: migrations, the append-only log, readiness, and refusal to serve unmigrated."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from api.app import create_app
from ledger.domain import events as ev
from ledger.errors import NotMigrated, Overloaded
from ledger.services.container import Services
from ledger.settings import Settings
from ledger.store.db import create_engine, current_revision, ensure_migrated, head_revision
from tests.support import T0, World


async def test_schema_is_at_head(engine: sa.ext.asyncio.AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision()
    await ensure_migrated(engine)


async def test_text_compares_bytewise_whatever_the_database_locale(
    engine: sa.ext.asyncio.AsyncEngine,
) -> None:
    """Every text column compares byte by byte: SQLite's BINARY collation, and on PostgreSQL ``COLLATE "C"`` on each
    column (migration 0008), not the database's default, which an operator chooses (``en_US.UTF-8`` sorts "a-b"
    after "ab" and before "a.c"; ``C.UTF-8`` compares through strcoll, 12-20 % slower on index inserts). Listings,
    keyset pagination and uniqueness then agree with Python's order on both databases, and with the migration a
    new text column must be given the collation too."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            ordered = await conn.scalar(
                sa.text(
                    "SELECT group_concat(x, ' ') FROM (SELECT x FROM (SELECT 'ab' AS x "
                    "UNION ALL SELECT 'a-b' UNION ALL SELECT 'B' UNION ALL SELECT 'a.c') ORDER BY x)"
                )
            )
            assert ordered == " ".join(sorted(["ab", "a-b", "B", "a.c"]))  # "B a-b a.c ab"
            return
        columns = (
            await conn.execute(
                sa.text(
                    "SELECT c.table_name || '.' || c.column_name, coalesce(c.collation_name, '(database default)') "
                    "FROM information_schema.columns c JOIN information_schema.tables t "
                    "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
                    "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
                    "AND c.data_type IN ('text', 'character varying') AND c.table_name <> 'alembic_version'"
                )
            )
        ).all()
        assert len(columns) > 90  # every table's ids, names and texts
        assert {name: collation for name, collation in columns if collation != "C"} == {}
        ordered = await conn.scalar(
            sa.text(
                "SELECT string_agg(id, ' ' ORDER BY id) FROM (SELECT (CAST(x AS text) COLLATE \"C\") AS id FROM "
                "unnest(ARRAY['ab', 'a-b', 'B', 'a.c']) AS x) AS u"
            )
        )
        assert ordered == "B a-b a.c ab"


async def test_an_event_id_is_stored_once(world: World, backend: str) -> None:
    """The database itself refuses a second row with an event id already in the log, whatever the sequencer does:
    a unique index on SQLite, on PostgreSQL an exclusion constraint over a hash index (migration 0009: a random
    SHA-256 key lands on a random page, and a hash index is a few times smaller than a B-tree of 71-character ids),
    which lookups of many ids at once use too."""
    engine = world.services.engine
    columns = "event_id, kind, actor, key_id, payload_type, payload, signatures, timestamp, accepted_at"
    copy = (
        f"INSERT INTO events (log_index, {columns}) SELECT 1000000, {columns} FROM events WHERE log_index = 0"
    )
    with pytest.raises(sa.exc.IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(sa.text(copy))
    assert await world.count_events() == 1
    if backend != "postgresql":
        return
    async with engine.connect() as conn:
        constraint = await conn.scalar(
            sa.text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'ex_events_event_id'"
            )
        )
        assert constraint == "EXCLUDE USING hash (event_id WITH =)"
        await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(
            row[0]
            for row in await conn.execute(
                sa.text("EXPLAIN SELECT log_index FROM events WHERE event_id = ANY(CAST(:ids AS text[]))"),
                {"ids": ["sha256:" + "0" * 64, "sha256:" + "1" * 64]},
            )
        )
        assert "ex_events_event_id" in plan


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET kind = 'extract'",
        "UPDATE events SET payload = payload WHERE log_index = 0",
        "DELETE FROM events",
        "DELETE FROM events WHERE log_index = 0",
    ],
)
async def test_events_are_append_only(world: World, statement: str) -> None:
    engine = world.services.engine
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement))
    assert await world.count_events() == 1


async def test_truncate_is_refused_on_postgresql(world: World, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    with pytest.raises(DBAPIError, match="append-only"):
        async with world.services.engine.begin() as conn:
            await conn.execute(sa.text("TRUNCATE events CASCADE"))


async def test_unmigrated_database_is_not_ready_and_says_how_to_fix(blank_sqlite_url: str) -> None:
    engine = create_engine(blank_sqlite_url)
    try:
        with pytest.raises(NotMigrated, match="ledger db upgrade"):
            await ensure_migrated(engine)
        services = Services(Settings(database_url=blank_sqlite_url), engine=engine)
        app = create_app(services=services)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "ledger db upgrade" in ready.json()["detail"]
    finally:
        await engine.dispose()


async def test_unreachable_database_is_not_ready() -> None:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(NotMigrated, match="cannot reach the database"):
            await ensure_migrated(engine)
    finally:
        await engine.dispose()


async def test_the_write_paths_lookups_are_planned_as_index_scans(world: World) -> None:
    """The sequencer reads a group's rows in one statement (``pg.load_group``) under generic plans with sequential
    scans disfavoured; every part of it must have an index path, or at 1,000,000 events each group would scan the
    events table (an ``OR`` with a subquery did: 74 events/s instead of 7,000 in ``ingest-growth``)."""
    from ledger.store import pg, repo
    from ledger.store.db import write_transaction

    engine = world.services.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner; SQLite reads with IN lists")
    statement = pg.load_group_statement(repo.LOAD_TABLES, repo.keys_t.name)
    async with write_transaction(engine) as conn:
        await repo.lock_sequencer(conn)  # the same settings as the write path's transaction
        raw = await pg.driver(conn)
        rows = await raw.fetch("EXPLAIN " + statement, *([["some-id"]] * (len(repo.LOAD_TABLES) + 2)))
    plan = "\n".join(r[0] for r in rows)
    assert "Seq Scan" not in plan, plan
    for table, _ in repo.LOAD_TABLES:
        assert f" on {table} " in plan, plan  # every table is read, through an index


async def test_a_sqlite_write_transaction_holds_the_write_lock_from_its_begin(world: World) -> None:
    """BEGIN IMMEDIATE goes straight through the driver: a write transaction holds SQLite's write lock from its
    first statement (another writer is refused at once), a read transaction does not, and a BEGIN the database
    refuses is raised as SQLAlchemy's OperationalError, like any other statement's refusal."""

    from sqlalchemy.exc import OperationalError

    from ledger.store.db import WRITE, driver, write_transaction

    engine = world.services.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's BEGIN IMMEDIATE")
    path = engine.url.database
    assert path is not None

    def another_writer_can_begin() -> bool:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError as error:
            assert "locked" in str(error)
            return False
        finally:
            other.close()

    async with write_transaction(engine) as conn:
        await conn.execute(sa.select(1))
        assert not another_writer_can_begin()
    assert another_writer_can_begin()
    async with engine.begin() as conn:  # a reader's BEGIN is deferred: no lock taken
        await conn.execute(sa.select(1))
        assert another_writer_can_begin()

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        async with engine.connect() as conn:
            raw = await driver(conn)
            await raw.execute_fetchall("PRAGMA busy_timeout = 0")  # refused at once instead of after 30 s
            writer = await conn.execution_options(**WRITE)
            with pytest.raises(OperationalError, match="locked"):
                async with writer.begin():
                    pass
            await conn.invalidate()  # not back into the pool with that setting
    finally:
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_sqlite_connection_whose_driver_died_is_dropped_at_begin(world: World) -> None:
    """BEGIN straight through the driver still notices a connection whose aiosqlite thread is gone: SQLAlchemy's
    disconnect error, the connection invalidated (not handed back to the pool as healthy), and the next transaction
    gets a working one."""
    from ledger.store.db import driver, write_transaction

    engine = world.services.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("aiosqlite's connections")
    async with engine.connect() as conn:
        raw = await driver(conn)
        await raw.close()  # the driver's connection and thread end, as if they had died
        with pytest.raises(DBAPIError):
            async with conn.begin():
                pass
        assert conn.invalidated
    async with write_transaction(engine) as conn:
        assert (await conn.execute(sa.select(1))).scalar_one() == 1


async def test_sqlite_reads_a_groups_rows_in_one_statement_as_each_table_lookup_reads_them(
    chain: Any,
) -> None:
    """The sequencer's one-statement load on SQLite (``lite.load_group``: every table's rows as JSON arrays under
    one ``UNION ALL``, ``BLOB`` columns as hex) gives exactly the rows, types and values of one plain lookup per
    table (``lite.select_by_ids``), absent ids included, and the sequencer's size as ``log_state`` holds it."""
    from ledger.store import lite
    from ledger.store.db import write_transaction
    from ledger.store.repo import (
        batches_t,
        events_t,
        facilities_t,
        keys_t,
        owners_t,
        participants_t,
    )

    world = chain.world
    engine = world.services.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's load")
    batch = "lot-load-1"
    await chain.send(chain.extract(batch), chain.miner)
    await chain.ship(batch, chain.miner, chain.refiner, "refinery-tx", 1_000_000)
    revoked = ev.KeyRevoked(
        actor="registrar",
        timestamp=T0,
        participant=chain.maker.id,
        key_id=chain.maker.key.key_id,
        reason="rotated",
        effective_at="2026-08-01T00:00:00Z",
    )
    await world.submit(revoked, world.registrar)  # a key with every timestamp set (revoked, compromised)

    async with engine.connect() as conn:
        column_of = {
            participants_t: "id",
            facilities_t: "id",
            keys_t: "key_id",
            batches_t: "id",
            owners_t: "id",
        }
        ids = {
            table: {row[0] for row in await conn.execute(sa.text(f"SELECT {column} FROM {table.name}"))}
            | {"absent-id"}
            for table, column in column_of.items()
        }
        event_ids = {row[0] for row in await conn.execute(sa.text("SELECT event_id FROM events"))}
        stored = (await conn.execute(sa.text("SELECT size FROM log_state WHERE id = 1"))).scalar_one()
        columns = ("event_id", "log_index", "actor", "key_id", "timestamp")
        expected = [await lite.select_by_ids(conn, t, c, ids[t]) for t, c in column_of.items()]
        expected.append(await lite.select_by_ids(conn, events_t, "event_id", event_ids | {"absent"}, columns))
        added = {k.added_event for k in expected[2]}  # the keys' rows name the events that added them
        expected.append(await lite.select_by_ids(conn, events_t, "event_id", added, columns))

    async with write_transaction(engine) as conn:
        found, size = await lite.load_group(
            conn,
            [
                *(lite.Lookup(t, c, ids[t]) for t, c in column_of.items()),
                lite.Lookup(events_t, "event_id", event_ids | {"absent"}, columns),
                lite.Lookup(
                    events_t, "event_id", ids[keys_t], columns, through=("keys", "added_event", "key_id")
                ),
            ],
            with_size=True,
        )
        nothing, no_size = await lite.load_group(conn, [lite.Lookup(batches_t, "id", set())])

    def by_value(rows: list[Any]) -> list[dict[str, Any]]:
        return sorted((vars(row) for row in rows), key=repr)

    assert [by_value(rows) for rows in found] == [by_value(rows) for rows in expected]
    assert size == stored == len(event_ids)
    # 3 participants and the registrar, each with one key; 3 facilities; one batch; no owners
    assert [len(rows) for rows in found[:5]] == [4, 3, 4, 1, 0]
    maker_key = next(k for k in found[2] if k.key_id == chain.maker.key.key_id)
    assert isinstance(maker_key.public_key, bytes) and len(maker_key.public_key) == 32
    assert maker_key.revoked_at is not None and maker_key.revoked_at.tzinfo is not None
    assert (nothing, no_size) == ([[]], None)


async def test_sqlite_rolls_back_a_connection_back_in_the_pool_only_if_a_transaction_is_open(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No trip to aiosqlite's thread for a rollback after a transaction that ended (committed or rolled back), but
    a connection that comes back with one still open (begun behind SQLAlchemy's back) is rolled back, and its
    write lock released, before anyone else gets it."""
    import aiosqlite

    from ledger.store.db import driver, write_transaction

    engine = world.services.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("aiosqlite's connections")
    rollbacks = 0
    plain = aiosqlite.Connection.rollback

    async def counted(self: aiosqlite.Connection) -> None:
        nonlocal rollbacks
        rollbacks += 1
        await plain(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)
    async with write_transaction(engine) as conn:
        await conn.execute(sa.text("UPDATE log_state SET size = size WHERE id = 1"))
    async with engine.connect() as conn:
        await conn.execute(sa.select(1))
    assert rollbacks == 1  # the reader's transaction, which SQLAlchemy ends; none by the pool

    async with engine.connect() as conn:
        raw = await driver(conn)
        await raw.execute_fetchall("BEGIN IMMEDIATE")
        await raw.execute_fetchall("UPDATE log_state SET size = size + 1000 WHERE id = 1")
        assert raw.in_transaction
    assert rollbacks == 2  # the pool's
    async with write_transaction(engine) as conn:  # the lock is free, and nothing of that transaction stayed
        size = (await conn.execute(sa.text("SELECT size FROM log_state WHERE id = 1"))).scalar_one()
    assert size == await world.count_events()


async def test_sqlite_writes_a_groups_custody_rows_in_one_statement_or_none_of_them(world: World) -> None:
    """``repo.write_here`` on SQLite: events in a multi-row INSERT, everything else one row of JSON arrays into the
    connection's temporary view, whose trigger writes new and changed batches, histories, edges and holders (a
    pair already recorded skipped) and the size, with the values as given (NULLs, integers and text alike). A
    constraint it breaks fails the statement and the transaction keeps nothing of the group."""
    from sqlalchemy.exc import IntegrityError

    from ledger.store import lite, repo
    from ledger.store.db import driver, write_transaction
    from ledger.store.pg import BATCH_COLUMNS, EVENT_COLUMNS

    engine = world.services.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write path")

    async def write_group(conn: Any, **rows: Any) -> None:
        dialect = conn.dialect
        await lite.on_driver_thread(
            await driver(conn), lambda c: repo.write_here(c, dialect, repo.HotRows(**rows), commit=False)
        )

    async with engine.connect() as conn:
        size = (await conn.execute(sa.text("SELECT size FROM log_state WHERE id = 1"))).scalar_one()
        await conn.execute(sa.text("INSERT INTO batch_holders VALUES ('lot-a', 'miner-x')"))
        await conn.commit()
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    event = (
        size,
        "sha256:" + "ab" * 32,
        "extract",
        "miner-x",
        "k1",
        "application/x",
        b"\x00\xff{}",
        "[]",
        T0,
        at,
    )
    assert len(event) == len(EVENT_COLUMNS)
    # id, mineral, form, mass_g, status, custodian, facility_id, receiver, receiver_facility, head, created_event,
    # value_amount, value_currency, lost_g
    new_a = ("lot-a", "lithium", "ore", 9_007_199_254_740_993, "at_facility", "miner-x", "mine-1", None, None,
             "e1", "e1", "12.50", "USD", 0)  # fmt: skip
    new_b = (
        "lot-b",
        "cobalt",
        "ore",
        5,
        "at_facility",
        "miner-x",
        None,
        None,
        None,
        "e1",
        "e1",
        None,
        None,
        0,
    )
    rows = {
        "events": [event],
        "new_batches": [new_a, new_b],
        "changed_batches": [],
        "batch_events": [("lot-a", size), ("lot-b", size)],
        "edges": [("lot-a", "lot-b", "e1", 7)],
        "holders": [("lot-a", "miner-x"), ("lot-b", "miner-x")],
        "size": size + 1,
    }
    async with write_transaction(engine) as conn:
        await write_group(conn, **rows)
    # lot-b changes: 5 -> 3 grams, in transit to a receiver
    changed_b = ("lot-b", "cobalt", "ore", 3, "in_transit", "miner-x", None, "maker-y", "plant-2", "e2", "e1",
                 None, None, 2)  # fmt: skip
    async with write_transaction(engine) as conn:
        await write_group(
            conn,
            **{**rows, "events": [], "new_batches": [], "changed_batches": [changed_b], "batch_events": [],
               "edges": [], "holders": [("lot-b", "maker-y")], "size": size + 1},
        )  # fmt: skip

    async def table(statement: str) -> list[tuple[Any, ...]]:
        async with engine.connect() as conn:
            return [tuple(row) for row in await conn.execute(sa.text(statement))]

    columns = ", ".join(BATCH_COLUMNS)
    assert await table(f"SELECT {columns} FROM batches WHERE id LIKE 'lot-%' ORDER BY id") == [
        new_a,
        changed_b,
    ]
    assert await table("SELECT typeof(mass_g), typeof(facility_id) FROM batches WHERE id = 'lot-b'") == [
        ("integer", "null")
    ]
    assert await table("SELECT * FROM batch_events WHERE batch_id LIKE 'lot-%' ORDER BY batch_id") == [
        ("lot-a", size),
        ("lot-b", size),
    ]
    assert await table("SELECT * FROM batch_edges") == [("lot-a", "lot-b", "e1", 7)]
    assert await table("SELECT * FROM batch_holders WHERE batch_id LIKE 'lot-%' ORDER BY 1, 2") == [
        ("lot-a", "miner-x"),
        ("lot-b", "maker-y"),
        ("lot-b", "miner-x"),
    ]
    assert await table(f"SELECT payload, typeof(payload) FROM events WHERE log_index = {size}") == [
        (b"\x00\xff{}", "blob")
    ]
    assert await table("SELECT size FROM log_state") == [(size + 1,)]

    again = (size + 1, "sha256:" + "cd" * 32, *event[2:])
    with pytest.raises(IntegrityError, match=r"batches\.id"):
        async with write_transaction(engine) as conn:  # lot-a exists: the whole group is refused
            await write_group(conn, **{**rows, "events": [again], "new_batches": [new_a], "size": size + 2})
    assert await table(f"SELECT count(*) FROM events WHERE log_index > {size}") == [(0,)]
    assert await table("SELECT size FROM log_state") == [(size + 1,)]
    assert await table("SELECT count(*) FROM batch_events WHERE batch_id LIKE 'lot-%'") == [(2,)]


async def test_sqlite_writer_cancelled_while_waiting_for_the_lock_leaves_no_transaction_behind(
    world: World,
) -> None:
    """A writer cancelled while its ``BEGIN IMMEDIATE`` still waits for another holder of the write lock: that BEGIN
    goes on in aiosqlite's thread and succeeds once the lock is free, so the connection, back in the pool, must
    still be rolled back behind it (no transaction left open there, holding the lock against every other writer)."""
    from ledger.store.db import write_transaction

    engine = world.services.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    path = engine.url.database
    assert path is not None
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    async def writer() -> None:
        async with write_transaction(engine) as conn:
            await conn.execute(sa.select(1))

    task = asyncio.create_task(writer())
    await asyncio.sleep(0.3)  # the writer waits in BEGIN IMMEDIATE (busy timeout)
    task.cancel()
    await asyncio.sleep(
        0.1
    )  # its connection goes back to the pool: a rollback queued behind the waiting BEGIN
    holder.execute("COMMIT")  # the pending BEGIN IMMEDIATE now succeeds on aiosqlite's thread
    holder.close()
    with pytest.raises(asyncio.CancelledError):
        await task  # done once that rollback ran
    await asyncio.sleep(0.3)

    other = sqlite3.connect(path, isolation_level=None, timeout=2)
    try:
        other.execute("BEGIN IMMEDIATE")  # locked out if the cancelled writer's transaction had stayed open
        other.execute("ROLLBACK")
    finally:
        other.close()
    async with write_transaction(engine) as conn:
        assert (await conn.execute(sa.select(1))).scalar_one() == 1


async def test_a_migration_may_rebuild_a_table_the_sqlite_write_path_writes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alembic's batch mode rebuilds a SQLite table (create, copy, drop, rename), and SQLite checks every trigger
    when a table is renamed, temporary ones included: ``db.upgrade`` takes the write path's temporary trigger off
    its connection while migrations run, and puts it back for the writes after them."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    from ledger.store import db

    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's table rebuilds")

    def a_future_migration(config: Any, revision: str) -> None:
        connection = config.attributes["connection"]
        operations = Operations(MigrationContext.configure(connection, opts={"render_as_batch": True}))
        with operations.batch_alter_table("batches", recreate="always") as batch:
            batch.alter_column("value_currency", type_=sa.String(8), existing_nullable=True)

    engine = create_engine(database_url)
    try:
        monkeypatch.setattr(db.command, "upgrade", a_future_migration)
        await db.upgrade(engine)
        async with engine.connect() as conn:
            ddl = (
                await conn.execute(sa.text("SELECT sql FROM sqlite_master WHERE name = 'batches'"))
            ).scalar_one()
            assert "VARCHAR(8)" in ddl  # rebuilt
            temp = await conn.execute(sa.text("SELECT type, name FROM sqlite_temp_master ORDER BY type"))
            assert [tuple(row) for row in temp] == [
                ("trigger", "ledger_group_rows_write"),
                ("view", "ledger_group_rows"),
            ]
    finally:
        await engine.dispose()


async def test_sqlite_writers_of_one_process_wait_in_line_not_in_sqlites_busy_handler(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write transactions of one process take turns on the event loop, first come first served, each starting as
    soon as the one before it ended: none of them meets the write lock held (here SQLite's busy timeout is 0, so
    one that did would be refused at once, "database is locked"), none sleeps in SQLite's busy handler past the
    moment the lock was freed. A writer that has waited in line as long as SQLite would have waited is refused
    (503), having written nothing."""
    from sqlalchemy import event

    from ledger.store import db

    if world.services.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    engine = create_engine(str(world.services.engine.url))

    @event.listens_for(engine.sync_engine, "connect")
    def no_busy_wait(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 0")
        cursor.close()

    order: list[str] = []
    release, holding = asyncio.Event(), asyncio.Event()

    async def writer(name: str, hold: bool = False) -> None:
        async with db.write_transaction(engine) as conn:
            order.append(f"{name} in")
            await conn.execute(sa.text("UPDATE log_state SET size = size WHERE id = 1"))
            if hold:
                holding.set()
                await release.wait()
            order.append(f"{name} out")

    try:
        first = asyncio.create_task(writer("A", hold=True))
        await holding.wait()
        others = [asyncio.create_task(writer(name)) for name in ("B", "C")]
        await asyncio.sleep(0.2)
        assert order == ["A in"]  # B and C wait in line, not in SQLite
        release.set()
        await asyncio.gather(first, *others)
        assert order == ["A in", "A out", "B in", "B out", "C in", "C out"]

        # the line's wait is bounded: a writer kept waiting past SQLITE_BUSY_SECONDS is refused, writing nothing
        monkeypatch.setattr(db, "SQLITE_BUSY_SECONDS", 0.05)
        async with db._one_writer(engine):  # the line held, by a caller that writes nothing itself
            with pytest.raises(Overloaded, match=r"waited 0.05 s for its turn .* nothing was written, retry"):
                await writer("D")
        assert "D in" not in order
        await writer("E")  # the line is free again
        assert order[-2:] == ["E in", "E out"]
    finally:
        await engine.dispose()
