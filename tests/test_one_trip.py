"""Group commits in one trip to aiosqlite's thread (SQLite): ``BEGIN IMMEDIATE``, the statement that reads the
referenced rows, the acceptance rules, the custody rows and ``COMMIT``, all on SQLite's own connection. Anything else
(registry changes, references the one statement does not read, duplicates, a failure) goes through the transaction
SQLAlchemy manages, with the outcome it would have had there, and leaves no transaction open behind it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.services.submit import Submitter
from ledger.store import lite, repo
from tests.support import T0, Chain


@pytest.fixture
def sqlite(chain: Chain) -> Chain:
    if chain.world.services.engine.dialect.name != "sqlite":
        pytest.skip("aiosqlite's trips are SQLite's")
    return chain


def _path(chain: Chain) -> str:
    path = chain.world.services.engine.url.database
    assert path is not None
    return path


def _nobody_holds_the_write_lock(chain: Chain) -> bool:
    other = sqlite3.connect(_path(chain), timeout=2, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


def _stored(chain: Chain) -> tuple[int, int]:
    """(sequencer size, event rows), read by a connection of its own: what is committed."""
    other = sqlite3.connect(_path(chain), isolation_level=None)
    try:
        ((size,),) = other.execute("SELECT size FROM log_state WHERE id = 1").fetchall()
        ((events,),) = other.execute("SELECT count(*) FROM events").fetchall()
    finally:
        other.close()
    return int(size), int(events)


def _record_trips(monkeypatch: pytest.MonkeyPatch) -> list[tuple[aiosqlite.Connection, str]]:
    """Every call queued to an aiosqlite connection's thread from now on: (connection, what it runs)."""
    trips: list[tuple[aiosqlite.Connection, str]] = []
    queue = aiosqlite.Connection._execute

    async def recorded(self: aiosqlite.Connection, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        trips.append((self, getattr(fn, "__qualname__", repr(fn))))
        return await queue(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", recorded)
    return trips


async def _extract(chain: Chain, batch_id: str) -> Any:
    submitter = chain.world.services.submitter
    (result,) = await submitter.submit(
        [envelope_for(chain.extract(batch_id, 5_000), chain.miner.key)], submitter=chain.miner.id
    )
    return result


async def test_a_custody_event_commits_in_one_trip_to_the_driver(
    sqlite: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = sqlite
    assert (await _extract(chain, "two-0")).status == "accepted"  # the miner's key is cached from here on
    size, events = _stored(chain)
    trips = _record_trips(monkeypatch)
    result = await _extract(chain, "two-1")
    assert (result.status, result.log_index) == ("accepted", size)
    writer = {conn for conn, name in trips if name.startswith("on_driver_thread")}
    assert len(writer) == 1  # one connection did the commit ...
    assert [name for conn, name in trips if conn in writer] == ["on_driver_thread.<locals>.<lambda>"]
    assert _stored(chain) == (size + 1, events + 1)  # ... in one trip, committed: another connection sees it
    assert (await chain.batch("two-1"))["mass_g"] == 5_000
    assert _nobody_holds_the_write_lock(chain)


async def test_a_registry_change_goes_through_the_transaction_path(
    sqlite: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A facility registration changes the registry, which only the transaction path writes: the one-trip commit
    reads and checks it, finds a change it does not write, rolls back, and the transaction path accepts it; so
    does a duplicate, whose signer's key it does not read."""
    chain = sqlite
    world = chain.world
    submitter = world.services.submitter
    taken: list[str] = []
    one_trip, transaction = Submitter._one_trip, Submitter._accept_groups

    async def spied_one_trip(self: Submitter, groups: Any) -> Any:
        outcome = await one_trip(self, groups)
        taken.append("one trip" if outcome is not None else "declined")
        return outcome

    async def spied_transaction(self: Submitter, groups: Any) -> Any:
        taken.append("transaction")
        return await transaction(self, groups)

    monkeypatch.setattr(Submitter, "_one_trip", spied_one_trip)
    monkeypatch.setattr(Submitter, "_accept_groups", spied_transaction)
    size, events = _stored(chain)
    registration = ev.FacilityRegistered(
        actor=world.registrar.id,
        timestamp=T0,
        facility=ev.FacilityInfo(
            id="smelter-on", participant=chain.refiner.id, kind="smelter", country="CA", name="smelter-on"
        ),
    )
    (result,) = await submitter.submit([envelope_for(registration, world.registrar.key)], world.registrar.id)
    assert (result.status, result.log_index) == ("accepted", size)
    assert taken == ["declined", "transaction"]
    assert _stored(chain) == (size + 1, events + 1)  # written once, by the transaction
    assert _nobody_holds_the_write_lock(chain)

    taken.clear()
    after = envelope_for(chain.extract("two-after", 5_000), chain.miner.key)
    (first,) = await submitter.submit([after], chain.miner.id)
    assert first.status == "accepted"
    assert taken == ["one trip"]
    taken.clear()
    (again,) = await submitter.submit([after], chain.miner.id)
    assert (again.status, again.log_index) == ("duplicate", first.log_index)
    assert taken == ["declined", "transaction"]


async def test_a_write_the_database_refuses_leaves_nothing_and_the_transaction_path_decides(
    sqlite: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write fails after its statements ran, before its COMMIT: the pool rolls the transaction back, so nothing
    of it stays, and the transaction path accepts the event once."""
    chain = sqlite
    failed: list[int] = []

    write = repo.write_here

    def write_then_fail(
        connection: sqlite3.Connection, dialect: Any, rows: repo.HotRows, *, commit: bool = True
    ) -> None:
        write(connection, dialect, rows, commit=False)
        if not commit:
            return  # the transaction path's write, which SQLAlchemy's transaction commits
        failed.append(len(rows.events))
        raise sa.exc.IntegrityError("COMMIT", None, sqlite3.IntegrityError("refused for the test"))

    monkeypatch.setattr(repo, "write_here", write_then_fail)
    size, events = _stored(chain)
    result = await _extract(chain, "two-refused")
    assert failed == [1]  # the event's rows were written, not committed
    assert (result.status, result.log_index) == ("accepted", size)  # then accepted by the transaction
    assert _stored(chain) == (size + 1, events + 1)  # once
    assert (await chain.batch("two-refused"))["mass_g"] == 5_000
    assert _nobody_holds_the_write_lock(chain)


@pytest.mark.parametrize("message", ["database is locked", "no such column: x"])
async def test_an_operational_error_fails_the_commit_only_when_the_database_is_locked(
    sqlite: Chain, monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    """SQLite's busy timeout running out in the trip fails the group (the transaction path would wait as long
    again); any other operational error, which may be the statement's, leaves the group to the transaction path."""
    from ledger.errors import NotStored

    chain = sqlite

    write = repo.write_here

    def refuse(
        connection: sqlite3.Connection, dialect: Any, rows: repo.HotRows, *, commit: bool = True
    ) -> None:
        if not commit:
            return write(connection, dialect, rows, commit=False)  # the transaction path's write goes through
        raise sa.exc.OperationalError("INSERT", None, sqlite3.OperationalError(message))

    monkeypatch.setattr(repo, "write_here", refuse)
    size, events = _stored(chain)
    if message == "database is locked":
        with pytest.raises((sa.exc.OperationalError, NotStored)):
            await _extract(chain, "busy")
        assert _stored(chain) == (size, events)
    else:
        result = await _extract(chain, "busy")
        assert (result.status, result.log_index) == ("accepted", size)
        assert _stored(chain) == (size + 1, events + 1)
    assert _nobody_holds_the_write_lock(chain)


async def test_a_commit_cancelled_while_its_begin_waits_for_the_lock_leaves_no_transaction_behind(
    sqlite: Chain,
) -> None:
    """The commit task is cancelled (the server stops) while its ``BEGIN IMMEDIATE`` waits for another holder of
    the write lock: that BEGIN goes on in aiosqlite's thread and succeeds once the lock is free, and the rest of
    the trip, told it was abandoned, writes nothing; the connection, back in the pool, is rolled back behind it.
    The waiting submission fails with the cancellation, and nothing of it is stored."""
    chain = sqlite
    submitter = chain.world.services.submitter
    assert (await _extract(chain, "two-warm")).status == "accepted"
    size, events = _stored(chain)
    holder = sqlite3.connect(_path(chain), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiting = asyncio.create_task(_extract(chain, "two-cancelled"))
        await asyncio.sleep(0.3)  # the commit waits in BEGIN IMMEDIATE (busy timeout)
        committer = submitter._committer
        assert committer is not None
        committer.cancel()
        await asyncio.sleep(0.1)
    finally:
        holder.execute("COMMIT")  # the pending BEGIN IMMEDIATE now succeeds on aiosqlite's thread
        holder.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0.3)
    assert _nobody_holds_the_write_lock(chain)  # locked out if the cancelled commit's transaction stayed open
    assert _stored(chain) == (size, events)
    assert (await _extract(chain, "two-after-cancel")).status == "accepted"
    assert _stored(chain) == (size + 1, events + 1)


async def test_events_beyond_rows_per_insert_are_written_in_several_statements_of_one_trip(
    sqlite: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group's events go in multi-row INSERTs of at most ROWS_PER_INSERT rows: seven events with three rows per
    statement are three statements (3 + 3 + 1), all in the commit's one trip, every event stored at its own
    index; and a refusal in the last statement (an event id already stored) takes the earlier ones back with it."""
    chain = sqlite
    submitter = chain.world.services.submitter
    assert (await _extract(chain, "rows-warm")).status == "accepted"
    monkeypatch.setattr(lite, "ROWS_PER_INSERT", 3)
    monkeypatch.setattr(lite, "ROWS_EXACT", 1)
    statements: list[int] = []
    insert = lite._insert_statement

    def counted(table: str, columns: tuple[str, ...], rows: int) -> str:
        statements.append(rows)
        return insert(table, columns, rows)

    monkeypatch.setattr(lite, "_insert_statement", counted)
    size, events = _stored(chain)
    envelopes = [envelope_for(chain.extract(f"rows-{i}", 1_000), chain.miner.key) for i in range(7)]
    trips = _record_trips(monkeypatch)
    results = await submitter.submit(envelopes, submitter=chain.miner.id)
    assert [(r.status, r.log_index) for r in results] == [("accepted", size + i) for i in range(7)]
    assert statements == [3, 3, 1]
    assert [name for _, name in trips if name.startswith("on_driver_thread")] == [
        "on_driver_thread.<locals>.<lambda>"
    ]
    assert _stored(chain) == (size + 7, events + 7)
    other = sqlite3.connect(_path(chain), isolation_level=None)
    try:
        stored = other.execute(
            "SELECT log_index, event_id FROM events WHERE log_index >= ? ORDER BY log_index", (size,)
        ).fetchall()
    finally:
        other.close()
    assert stored == [(size + i, r.event_id) for i, r in enumerate(results)]

    # the 7th row of the next group collides (a trigger refuses it), after two statements of three went in
    statements.clear()
    refused = [envelope_for(chain.extract(f"rows-late-{i}", 1_000), chain.miner.key) for i in range(7)]
    other = sqlite3.connect(_path(chain), isolation_level=None)
    try:
        other.execute(
            "CREATE TRIGGER refuse_late BEFORE INSERT ON events WHEN NEW.log_index = "
            f"{size + 7 + 6} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    finally:
        other.close()
    results = await submitter.submit(refused, submitter=chain.miner.id)
    assert statements[:3] == [3, 3, 1]  # the one trip: refused in its third statement, the first two undone
    assert [r.status for r in results][:6] == ["accepted"] * 6  # the group is retried without the offender
    assert results[6].status == "rejected"
    assert _stored(chain) == (size + 7 + 6, events + 7 + 6)
    assert _nobody_holds_the_write_lock(chain)


async def test_a_sqlite_commit_first_lets_the_event_loop_catch_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """``_caught_up`` yields turns of the event loop until one is quick, at most CATCH_UP_TURNS: one turn when
    every turn counts as quick, CATCH_UP_TURNS when none does (the loop stays busy: the commit goes anyway)."""
    from ledger.services import submit

    turns = 0
    running = True

    async def busy() -> None:
        nonlocal turns
        while running:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(busy())
    await asyncio.sleep(0)
    try:
        for quiet, expected in ((3600.0, 1), (0.0, submit.CATCH_UP_TURNS)):
            monkeypatch.setattr(submit, "QUIET_TURN_SECONDS", quiet)
            before = turns
            await submit._caught_up()
            assert turns - before == expected
    finally:
        running = False
        await other


def test_a_group_of_events_is_inserted_in_a_bounded_set_of_statement_sizes() -> None:
    """Exactly as many rows as events up to ROWS_EXACT (64), ROWS_PER_INSERT (256) while that many are left, else
    the largest power of two that fits: 100 = 64 + 36, 200 = 128 + 64 + 8, 300 = 256 + 44,
    600 = 256 + 256 + 64 + 24; so every count from 1 to 2,000 needs at most 64 + 3 statement texts."""
    rows = lite._statement_rows
    assert list(rows(0)) == []
    assert list(rows(1)) == [1]
    assert list(rows(64)) == [64]
    assert list(rows(65)) == [64, 1]
    assert list(rows(100)) == [64, 36]
    assert list(rows(200)) == [128, 64, 8]
    assert list(rows(300)) == [256, 44]
    assert list(rows(600)) == [256, 256, 64, 24]
    texts = {size for n in range(1, 2_001) for size in rows(n)}
    assert texts == set(range(1, 65)) | {128, 256}
    assert all(sum(rows(n)) == n for n in range(2_001))


async def test_a_load_of_the_size_alone_answers_the_size(sqlite: Chain) -> None:
    """The load statement with no ids to look up and the sequencer's size asked for: the size, and no rows."""
    chain = sqlite
    size, _ = _stored(chain)
    async with chain.world.services.engine.connect() as conn:
        found, loaded = await lite.load_group(conn, [lite.Lookup(repo.batches_t, "id", [])], with_size=True)
    assert (found, loaded) == ([[]], size)


async def test_only_sqlite_commits_wait_for_the_event_loop_to_catch_up(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each SQLite group commit first lets the event loop catch up (see ``submit._caught_up``); PostgreSQL's,
    which run on the event loop itself, do not."""
    from ledger.services import submit

    calls: list[None] = []

    async def counted() -> None:
        calls.append(None)

    monkeypatch.setattr(submit, "_caught_up", counted)
    assert (await _extract(chain, "caught-up")).status == "accepted"
    sqlite = chain.world.services.engine.dialect.name == "sqlite"
    assert len(calls) == (1 if sqlite else 0)
