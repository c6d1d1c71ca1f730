"""Commits without a transaction (PostgreSQL): rows read and acceptance run without the sequencer's lock, then one
statement that takes the lock, writes only if the size is unchanged, and commits by itself. When another writer
moved the size in between, nothing of the group is written and the group goes through a transaction under the lock,
with exactly the outcome it would have had there."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ledger.client import envelope_for
from ledger.services.submit import Submitter
from ledger.store import pg, repo
from tests.support import TS, Chain


@pytest.fixture
def postgresql(chain: Chain) -> Chain:
    if chain.world.services.engine.dialect.name != "postgresql":
        pytest.skip("commits without a transaction are PostgreSQL's")
    return chain


async def _size_and_events(chain: Chain) -> tuple[int, int]:
    async with chain.world.services.engine.connect() as conn:
        size = (await conn.execute(sa.text("SELECT size FROM log_state WHERE id = 1"))).scalar_one()
        events = (await conn.execute(sa.text("SELECT count(*) FROM events"))).scalar_one()
    return int(size), int(events)


def _event(index: int) -> tuple[Any, ...]:
    """An events row in EVENT_COLUMNS order, for the guarded statement alone (no domain meaning)."""
    return (index, f"sha256:{index:064x}", "k", "a", "kid", "pt", b"{}", "[]", "t", datetime.now(UTC))


async def _guarded(chain: Chain, expect: int, first: int) -> bool:
    engine = chain.world.services.write_engine
    assert engine is not None
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        rows = repo.HotRows([_event(first)], [], [], [], [], [], first + 1)
        return await repo.write_ahead(conn, rows, expect)


async def test_the_guarded_write_waits_for_the_lock_and_writes_nothing_once_the_size_moved(
    postgresql: Chain,
) -> None:
    chain = postgresql
    size, events = await _size_and_events(chain)
    assert (size, events) == (size, size)  # every sequenced event is a row
    assert not await _guarded(chain, size - 1, size)  # a stale size: nothing written
    assert await _size_and_events(chain) == (size, size)

    # another transaction holds the sequencer row and sequences an event meanwhile: the write waits for it, then
    # finds the size moved and writes nothing
    url = chain.world.services.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    holder = await asyncpg.connect(url)
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.fetchval("SELECT size FROM log_state WHERE id = 1 FOR UPDATE")
        waiting = asyncio.ensure_future(_guarded(chain, size, size))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # blocked on the row lock
        other = _event(size)
        columns = ", ".join(pg.EVENT_COLUMNS)
        await holder.execute(
            f"INSERT INTO events ({columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", *other
        )
        await holder.execute("UPDATE log_state SET size = $1 WHERE id = 1", size + 1)
        await transaction.commit()
        assert await waiting is False
        assert await _size_and_events(chain) == (size + 1, size + 1)  # the holder's event only

        # the holder lets go without sequencing anything: the write goes ahead, and commits by itself
        transaction = holder.transaction()
        await transaction.start()
        await holder.fetchval("SELECT size FROM log_state WHERE id = 1 FOR UPDATE")
        waiting = asyncio.ensure_future(_guarded(chain, size + 1, size + 1))
        await asyncio.sleep(0.3)
        await transaction.rollback()
        assert await waiting is True
    finally:
        await holder.close()
    assert await _size_and_events(chain) == (size + 2, size + 2)


async def test_the_guarded_write_refuses_a_connection_inside_a_transaction(postgresql: Chain) -> None:
    """Acknowledged only once committed: inside a transaction the write could still be rolled back."""
    engine = postgresql.world.services.engine
    async with engine.connect() as conn, conn.begin():
        await conn.execute(sa.text("SELECT 1"))
        with pytest.raises(RuntimeError, match="outside any transaction"):
            await repo.write_ahead(conn, repo.HotRows([], [], [], [], [], [], 0), 0)


async def test_the_one_statement_write_stores_every_value_exactly(postgresql: Chain) -> None:
    """The write passes each table's rows as one JSON parameter (pg._Rows): bytes, text that JSON escapes, NULLs,
    64-bit integers and microseconds must come back from the tables exactly as given."""
    chain = postgresql
    size, _ = await _size_and_events(chain)
    payload = bytes(range(256)) * 2  # every byte value, NUL and invalid UTF-8 included
    text = 'q" b\\ t\t n\n c\x01 \u00e9 \U0001f600 \u2028'  # quote, backslash, controls, non-ASCII
    accepted_at = datetime(2026, 11, 28, 10, 11, 12, 345_678, tzinfo=UTC)
    event = (
        size,
        f"sha256:{size:064x}",
        "extract",
        text,
        "kid",
        "pt",
        payload,
        text,
        "2026-11-28T10:11:12Z",
        accepted_at,
    )
    batch = (
        "json-batch",
        "lithium",
        text,
        2**62 + 1,
        "held",
        "a",
        None,
        None,
        None,
        "h",
        "e",
        "12.50",
        None,
        0,
    )
    rows = repo.HotRows([event], [batch], [], [("json-batch", size)], [], [("json-batch", text)], size + 1)
    engine = chain.world.services.write_engine
    assert engine is not None
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        assert await repo.write_ahead(conn, rows, size)
        raw = await pg.driver(conn)
        stored = await raw.fetchrow(
            f"SELECT {', '.join(pg.EVENT_COLUMNS)} FROM events WHERE log_index = $1", size
        )
        assert tuple(stored) == event
        stored = await raw.fetchrow(
            f"SELECT {', '.join(pg.BATCH_COLUMNS)} FROM batches WHERE id = 'json-batch'"
        )
        assert tuple(stored) == batch
        holders = await raw.fetch("SELECT participant_id FROM batch_holders WHERE batch_id = 'json-batch'")
        assert [h[0] for h in holders] == [text]


async def test_custody_events_commit_without_a_transaction(postgresql: Chain) -> None:
    chain = postgresql
    submitter = chain.world.services.submitter
    written = submitter.stages.seconds["write"]
    size, _ = await _size_and_events(chain)
    (result,) = await submitter.submit(
        [envelope_for(chain.extract("ahead-1", 5_000), chain.miner.key)], submitter=chain.miner.id
    )
    assert result.status == "accepted" and result.log_index == size
    # answered as the write committed; the commit task clocks it a moment later
    for _ in range(100):
        if submitter._committer is None:
            break
        await asyncio.sleep(0.01)
    assert submitter.stages.seconds["write"] > written  # taken by the one-statement write
    assert await _size_and_events(chain) == (size + 1, size + 1)  # committed: another connection sees it
    assert (await chain.batch("ahead-1"))["mass_g"] == 5_000


async def test_a_write_that_finds_the_size_moved_goes_through_the_lock_with_the_same_outcome(
    postgresql: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process sequences an event between this group's read and its write: nothing of the group is written
    by the guarded statement, the transaction under the lock accepts it after the other event, and commits take the
    lock first for a while."""
    chain = postgresql
    submitter = chain.world.services.submitter
    other = envelope_for(chain.extract("elsewhere", 1_000), chain.miner.key)
    mine = envelope_for(chain.extract("mine", 2_000), chain.miner.key)
    real = repo.write_ahead
    calls = 0

    # another process: its own commit task, through the lock, with the same clock and rules
    another_process = Submitter(
        chain.world.services.engine,
        clock=submitter._clock,
        clock_skew=submitter._clock_skew,
        max_backdate=submitter.max_backdate,
    )

    async def interleaved(conn: Any, rows: repo.HotRows, expect: int) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:  # the other process commits first
            (elsewhere,) = await another_process.submit([other], submitter=chain.miner.id)
            assert elsewhere.status == "accepted" and elsewhere.log_index == expect
        return await real(conn, rows, expect)

    monkeypatch.setattr(repo, "write_ahead", interleaved)
    size, _ = await _size_and_events(chain)
    (result,) = await submitter.submit([mine], submitter=chain.miner.id)
    assert result.status == "accepted" and result.log_index == size + 1  # after the other one
    assert calls == 1
    assert await _size_and_events(chain) == (size + 2, size + 2)
    assert (await chain.batch("mine"))["mass_g"] == 2_000
    assert submitter._ahead_again > 0  # the lock first, for a while


def test_every_pending_change_of_a_working_set_is_classified() -> None:
    """A commit without a transaction writes only the custody rows (HOT); anything else a group changed sends it
    through the transaction. A field added to the working set for a new kind of change must be listed in PENDING,
    or such a group would be acknowledged with that change unwritten."""
    import dataclasses

    from ledger.domain.state import HOT, PENDING, WorkingSet

    changes = {
        f.name
        for f in dataclasses.fields(WorkingSet)
        if f.name.startswith(("new_", "changed_")) or f.name in ("events", "batch_events", "edges", "holders")
    }
    assert changes == set(PENDING)
    assert set(HOT) <= set(PENDING)
    ws = WorkingSet(next_index=0, registrar_exists=True)
    assert ws.pending() == set()
    ws.new_claims.append(object())  # type: ignore[arg-type]
    ws.holders.add(("b", "p"))
    assert ws.pending() == {"new_claims", "holders"}


async def test_the_write_path_plans_key_lookups_and_never_compiles_them(postgresql: Chain) -> None:
    """The write path's engine, and the sequencer's transaction on any engine, plan for key lookups (generic
    plans, sequential scans disfavoured) and never JIT-compile: with scans disfavoured the one statement that must
    scan is costed at 10^10, past the JIT threshold, and compiling it took 40 ms of a commit's 45."""
    wanted = ("force_generic_plan", "off", "off")
    show = (
        "SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan'), current_setting('jit')"
    )
    async with postgresql.world.services.write_engine.connect() as conn:
        assert tuple((await conn.execute(sa.text(show))).one()) == wanted
    async with postgresql.world.services.engine.begin() as conn:
        await conn.execute(sa.text("SET LOCAL jit = on"))  # whatever the engine's sessions say
        await repo.lock_sequencer(conn)
        assert tuple((await conn.execute(sa.text(show))).one()) == wanted


# --- groups checked while the write before them is in flight -----------------------------------------------------


class _Followed:
    """Two single submissions, the second queued while the first one's rows are being read: the commit task then
    checks the second on top of the first's write in flight (``Submitter._follow``)."""

    def __init__(self, chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chain = chain
        self.submitter = chain.world.services.submitter
        self.reading = asyncio.Event()
        self.followed: list[
            bool
        ] = []  # each _follow: whether it checked the groups (False: read again later)
        real_load, real_follow = repo.load, Submitter._follow
        loads = 0

        async def load(ws: Any, conn: Any, refs: Any, event_ids: Any, **kw: Any) -> Any:
            nonlocal loads
            loads += 1
            if loads == 1:  # the first group's read waits until the second group is queued
                self.reading.set()
                for _ in range(500):
                    if self.submitter._pending:
                        break
                    await asyncio.sleep(0.01)
                else:
                    pytest.fail("the second group never queued")
            return await real_load(ws, conn, refs, event_ids, **kw)

        async def follow(submitter: Submitter, *args: Any) -> Any:
            checked = await real_follow(submitter, *args)
            self.followed.append(checked is not None)
            return checked

        monkeypatch.setattr(repo, "load", load)
        monkeypatch.setattr(Submitter, "_follow", follow)

    async def run(self, first: list[Any], second: list[Any], signer: str | None = None) -> tuple[Any, Any]:
        signer = signer or self.chain.miner.id
        one = asyncio.ensure_future(self.submitter.submit(first, submitter=signer))
        await asyncio.wait_for(self.reading.wait(), 10)
        two = await self.submitter.submit(second, submitter=signer)
        return await one, two


def _building_on(chain: Chain, name: str) -> tuple[Any, list[Any]]:
    """An extract of batch ``name``, and a group that builds on it: the batch's transfer (whose parent is the
    extract), the extract again (a duplicate) and an extract of another batch."""
    from ledger.domain import events as ev
    from ledger.domain.dsse import event_id

    extract = envelope_for(chain.extract(name, 4_000), chain.miner.key)
    transfer = ev.Transfer(
        actor=chain.miner.id,
        timestamp=TS,
        batch=name,
        parent=event_id(extract.payload_bytes()),
        to=chain.refiner.id,
        route=[ev.RouteLeg(country="CA", customs_control=False)],
    )
    more = envelope_for(chain.extract(f"{name}-more", 1_000), chain.miner.key)
    return extract, [envelope_for(transfer, chain.miner.key), extract, more]


async def test_a_group_queued_meanwhile_is_checked_on_top_of_the_write_in_flight(
    postgresql: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second group refers to the first one's batch and event before they are in the database: it is checked
    against the working set as the first write leaves it, and written once that write committed, with exactly the
    outcomes of committing the two one after the other."""
    chain = postgresql
    followed = _Followed(chain, monkeypatch)
    extract, second = _building_on(chain, "follow-a")
    locked: list[Any] = []
    real_slowly = Submitter._slowly

    async def slowly(submitter: Submitter, groups: Any) -> None:
        locked.append(groups)
        await real_slowly(submitter, groups)

    monkeypatch.setattr(Submitter, "_slowly", slowly)
    size, _ = await _size_and_events(chain)
    (first,), outcomes = await followed.run([extract], second)
    assert followed.followed == [True]
    assert locked == []  # both written by the guarded statement: the second's has only its own rows
    assert (first.status, first.log_index) == ("accepted", size)
    # the transfer builds on the extract (size), the extract again is a duplicate, the other extract comes last
    assert [(r.status, r.log_index) for r in outcomes] == [
        ("accepted", size + 1),
        ("duplicate", size),
        ("accepted", size + 2),
    ]
    assert await _size_and_events(chain) == (size + 3, size + 3)
    assert (await chain.batch("follow-a"))["status"] == "in_transit"
    assert (await chain.batch("follow-a-more"))["mass_g"] == 1_000


async def test_a_group_that_joins_while_a_write_is_in_flight_is_checked_before_it_ends(
    postgresql: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing waits when the first group's write goes out; the second group joins the queue while that write is
    still in flight: the commit task, waiting for the write or a newcomer, checks the newcomer at once, so its own
    write can follow the first one's without a read and a check in between."""
    chain = postgresql
    submitter = chain.world.services.submitter
    extract, second = _building_on(chain, "mid-write")
    writing, released, checking = asyncio.Event(), asyncio.Event(), asyncio.Event()
    order: list[str] = []
    real_write, real_follow = repo.write_ahead, Submitter._follow

    async def held(conn: Any, rows: repo.HotRows, expect: int) -> bool:
        if not writing.is_set():  # the first write waits for the test's word
            writing.set()
            await asyncio.wait_for(released.wait(), 10)
            order.append("first write ends")
        return await real_write(conn, rows, expect)

    async def follow(self: Submitter, *args: Any) -> Any:
        order.append("second group checked")
        checking.set()
        return await real_follow(self, *args)

    monkeypatch.setattr(repo, "write_ahead", held)
    monkeypatch.setattr(Submitter, "_follow", follow)
    size, _ = await _size_and_events(chain)
    first = asyncio.ensure_future(submitter.submit([extract], submitter=chain.miner.id))
    await asyncio.wait_for(writing.wait(), 10)
    assert not submitter._pending  # nothing queued when the write went out
    later = asyncio.ensure_future(submitter.submit(second, submitter=chain.miner.id))
    await asyncio.wait_for(checking.wait(), 10)  # checked while the first write is held
    released.set()
    ((mine,), outcomes) = await asyncio.gather(first, later)
    assert order == ["second group checked", "first write ends"]
    assert (mine.status, mine.log_index) == ("accepted", size)
    assert [(r.status, r.log_index) for r in outcomes] == [
        ("accepted", size + 1),
        ("duplicate", size),
        ("accepted", size + 2),
    ]
    assert await _size_and_events(chain) == (size + 3, size + 3)


@pytest.mark.parametrize("failure", ["another process wrote first", "the write failed"])
async def test_when_the_write_in_flight_does_not_commit_the_group_checked_on_top_is_read_again(
    postgresql: Chain, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """The first write finds the size moved (another process sequenced an event) or fails outright: the first
    group goes through the lock, and the second, checked against a write that never happened, goes back to the
    head of the queue and is read and checked again, with the outcomes it has after the first group."""
    chain = postgresql
    submitter = chain.world.services.submitter
    followed = _Followed(chain, monkeypatch)
    extract, second = _building_on(chain, f"again-{len(failure)}")
    other = envelope_for(chain.extract(f"other-{len(failure)}", 1_000), chain.miner.key)
    another_process = Submitter(
        chain.world.services.engine,
        clock=submitter._clock,
        clock_skew=submitter._clock_skew,
        max_backdate=submitter.max_backdate,
    )
    real = repo.write_ahead
    calls = 0

    async def interfered(conn: Any, rows: repo.HotRows, expect: int) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            if failure == "the write failed":
                raise sa_exc.OperationalError("WITH ...", {}, ConnectionError("server closed the connection"))
            (elsewhere,) = await another_process.submit([other], submitter=chain.miner.id)
            assert elsewhere.status == "accepted"
        return await real(conn, rows, expect)

    monkeypatch.setattr(repo, "write_ahead", interfered)
    size, _ = await _size_and_events(chain)
    (first,), outcomes = await followed.run([extract], second)
    assert followed.followed == [True]  # checked on top of the first write, which then did not commit
    before = 1 if failure == "another process wrote first" else 0  # the other process's event
    assert (first.status, first.log_index) == ("accepted", size + before)
    assert [(r.status, r.log_index) for r in outcomes] == [
        ("accepted", size + before + 1),
        ("duplicate", size + before),
        ("accepted", size + before + 2),
    ]
    assert await _size_and_events(chain) == (size + before + 3, size + before + 3)
    assert (await chain.batch(f"again-{len(failure)}"))["status"] == "in_transit"


async def test_a_group_that_changes_more_than_custody_rows_is_not_written_on_top_of_a_write_in_flight(
    postgresql: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key added (a registry change) cannot go out in the custody rows' one statement: checked on top of the
    write in flight, it goes back to the queue once that write committed, and through the lock."""
    from ledger.domain import events as ev
    from ledger.domain.keys import SigningKey

    chain = postgresql
    world = chain.world
    followed = _Followed(chain, monkeypatch)
    extract = envelope_for(chain.extract("registry-after", 1_000), chain.miner.key)
    added = ev.KeyAdded(
        actor="registrar",
        timestamp=TS,
        participant=chain.miner.id,
        public_key=SigningKey.generate().public_key_b64,
    )
    size, _ = await _size_and_events(chain)
    first = asyncio.ensure_future(world.services.submitter.submit([extract], submitter=chain.miner.id))
    await asyncio.wait_for(followed.reading.wait(), 10)
    (key,) = await world.services.submitter.submit(
        [envelope_for(added, world.registrar.key)], submitter=world.registrar.id
    )
    ((mine,),) = [await first]
    assert followed.followed == [False]
    assert (mine.status, mine.log_index) == ("accepted", size)
    assert (key.status, key.log_index) == ("accepted", size + 1)
    assert await _size_and_events(chain) == (size + 2, size + 2)


async def test_only_groups_whose_rows_one_statement_reads_are_checked_on_top_of_a_write() -> None:
    """Claims and the newer facts are read from tables a custody write changes (a claimed batch's creating event,
    say): a group referring to them waits for the write before it is read."""
    from ledger.services.submit import _Group, _may_follow

    loop = asyncio.get_running_loop()

    def group(refs: dict[str, set[str]]) -> _Group:
        return _Group([], None, frozenset(), loop.create_future(), refs=refs)

    custody = group({"batches": {"b"}, "events": {"e"}, "participants": {"p"}, "facilities": set()})
    claim = group({"batches": {"b"}, "creations": {"b"}, "claims_of_batches": {"b"}})
    assert _may_follow([custody])
    assert not _may_follow([custody, claim])
    assert _may_follow([custody, group({"creations": set()})])  # named, but nothing to read


async def test_a_group_is_settled_once() -> None:
    """The commit task answers a group once: a group already answered with its outcomes is not marked failed by a
    later error in the same commit (a chunk queued behind it would be refused for nothing)."""
    from ledger.services.submit import _Group

    loop = asyncio.get_running_loop()
    done = _Group([], None, frozenset(), loop.create_future())
    done.settle([])
    done.fail(RuntimeError("later"))
    assert not done.failed and done.done.result() == []
    gone = _Group([], None, frozenset(), loop.create_future())
    gone.done.cancel()  # its caller went away
    gone.fail(RuntimeError("not stored"))
    assert gone.failed  # what comes behind it in its submission is not committed either


async def test_a_write_answers_its_callers_without_waiting_for_the_next_groups_check(
    postgresql: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first group's callers have their outcomes once its write commits, even while the commit task is still
    checking the group that queued behind it."""
    chain = postgresql
    followed = _Followed(chain, monkeypatch)
    extract, second = _building_on(chain, "answered-early")
    checking, release = asyncio.Event(), asyncio.Event()
    real_check = Submitter._check

    async def slow_check(self: Submitter, ws: Any, conn: Any, groups: Any, *args: Any) -> Any:
        if groups[0].prepared[0][1].envelope is second[0]:
            checking.set()
            await asyncio.wait_for(release.wait(), 10)
        return await real_check(self, ws, conn, groups, *args)

    monkeypatch.setattr(Submitter, "_check", slow_check)
    submitter = chain.world.services.submitter
    one = asyncio.ensure_future(submitter.submit([extract], submitter=chain.miner.id))
    await asyncio.wait_for(followed.reading.wait(), 10)
    two = asyncio.ensure_future(submitter.submit(second, submitter=chain.miner.id))
    await asyncio.wait_for(checking.wait(), 10)
    (first,) = await asyncio.wait_for(one, 10)  # answered while the second group's check is held
    assert first.status == "accepted" and not two.done()
    release.set()
    assert [r.status for r in await two] == ["accepted", "duplicate", "accepted"]
    assert followed.followed == [True]


async def test_a_long_chain_starts_afresh(postgresql: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """The working set carried from write to write is bounded (CHAIN_ROWS): past it the groups queued behind a
    write wait for it and are read into a fresh one, with the same outcomes."""
    from ledger.services import submit

    chain = postgresql
    monkeypatch.setattr(submit, "CHAIN_ROWS", 0)
    followed = _Followed(chain, monkeypatch)
    extract, second = _building_on(chain, "fresh")
    size, _ = await _size_and_events(chain)
    (first,), outcomes = await followed.run([extract], second)
    assert followed.followed == []  # not checked on top of the first write
    assert (first.status, first.log_index) == ("accepted", size)
    assert [(r.status, r.log_index) for r in outcomes] == [
        ("accepted", size + 1),
        ("duplicate", size),
        ("accepted", size + 2),
    ]
