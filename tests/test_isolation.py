"""Group commit isolates failures: when the database refuses one submission of a group, only that one fails, and
every other submission gets exactly the outcome it would have had alone (both databases).

The database refusal is injected at the store boundary (``repo.flush``, ``repo.write_ahead`` and
``repo.write_here``) for events naming a "poison" batch: every
check in the domain passes, and the write itself fails, as a value the database cannot hold would make it fail.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.domain.dsse import event_id
from ledger.store import pg, repo
from tests.support import TS, Chain


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    real_flush = repo.flush

    async def flush(ws: Any, conn: Any) -> None:
        if any(b'"poison' in event.payload for event in ws.events):
            raise sa_exc.DataError(
                "INSERT INTO events ...", {}, ValueError("invalid byte sequence for encoding")
            )
        await real_flush(ws, conn)

    async def write_ahead(conn: Any, rows: repo.HotRows, expect: int) -> bool:
        payload = pg.EVENT_COLUMNS.index("payload")
        if any(b'"poison' in event[payload] for event in rows.events):
            raise sa_exc.DataError(
                "INSERT INTO events ...", {}, ValueError("invalid byte sequence for encoding")
            )
        return await real_write_ahead(conn, rows, expect)

    def write_here(connection: Any, dialect: Any, rows: repo.HotRows, *, commit: bool = True) -> None:
        payload = pg.EVENT_COLUMNS.index("payload")
        if any(b'"poison' in event[payload] for event in rows.events):
            raise sa_exc.DataError(
                "INSERT INTO events ...", {}, ValueError("invalid byte sequence for encoding")
            )
        real_write_here(connection, dialect, rows, commit=commit)

    real_write_ahead, real_write_here = repo.write_ahead, repo.write_here
    monkeypatch.setattr(repo, "flush", flush)
    monkeypatch.setattr(repo, "write_ahead", write_ahead)  # PostgreSQL's write without the lock held
    monkeypatch.setattr(repo, "write_here", write_here)  # SQLite's write in the commit's one trip


async def _log_indices(chain: Chain) -> list[int]:
    async with chain.world.services.engine.connect() as conn:
        return [i for (i,) in await conn.execute(sa.select(repo.events_t.c.log_index).order_by("log_index"))]


async def test_one_refused_write_among_concurrent_ones_fails_alone(chain: Chain, poisoned: None) -> None:
    submitter = chain.world.services.submitter
    before = await chain.world.count_events()
    good = [envelope_for(chain.extract(f"ok-{i}", 1_000), chain.miner.key) for i in range(20)]
    bad = envelope_for(chain.extract("poison-1", 1_000), chain.miner.key)
    for _ in range(3):  # several rounds, so that the bad one lands in a shared group at least once
        calls = [submitter.submit([e], submitter=chain.miner.id) for e in [*good[:10], bad, *good[10:]]]
        results = await asyncio.gather(*calls)
        outcomes = [r.status for (r,) in results]
        assert outcomes.count("rejected") == 1, outcomes
        (refused,) = [r for (r,) in results if r.status == "rejected"]
        assert (
            refused.error is not None
            and refused.error.code == "storage-refused"
            and refused.error.status == 422
        )
        assert set(outcomes) <= {"accepted", "duplicate", "rejected"}
    assert await chain.world.count_events() == before + 20  # every good one exactly once, the bad one never
    indices = await _log_indices(chain)
    assert indices == list(range(len(indices)))  # gap-free


async def test_a_refused_envelope_in_a_batch_leaves_the_others_in_order(chain: Chain, poisoned: None) -> None:
    submitter = chain.world.services.submitter
    envelopes = [
        envelope_for(chain.extract("first", 1_000), chain.miner.key),
        envelope_for(chain.extract("poison-2", 1_000), chain.miner.key),
        envelope_for(chain.extract("third", 1_000), chain.miner.key),
    ]
    results = await submitter.submit(envelopes, submitter=chain.miner.id)
    assert [r.status for r in results] == ["accepted", "rejected", "accepted"]
    assert results[1].error is not None and "nothing was stored" in results[1].error.detail
    response = await chain.world.client.get("/v1/batches/poison-2", headers=chain.world.registrar.headers)
    assert response.status_code == 404
    indices = await _log_indices(chain)
    assert indices == list(range(len(indices)))


async def test_a_refused_write_over_http_is_a_problem_not_a_500(chain: Chain, poisoned: None) -> None:
    response = await chain.send(chain.extract("poison-3", 1_000), chain.miner, expect=None)
    assert response.status_code == 422
    assert response.json()["code"] == "storage-refused"
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_real_refusal_by_postgresql_on_the_fast_write_path_fails_alone(chain: Chain) -> None:
    """No monkeypatching: a CHECK constraint makes PostgreSQL itself refuse one batch id inside the group's single
    write statement; the asyncpg error is handled like SQLAlchemy's, and only that envelope is refused."""
    engine = chain.world.services.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("the single-statement write path is PostgreSQL's")
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("ALTER TABLE batches ADD CONSTRAINT no_poison CHECK (id NOT LIKE 'poison%')")
        )
    envelopes = [
        envelope_for(chain.extract("pg-first", 1_000), chain.miner.key),
        envelope_for(chain.extract("poison-pg", 1_000), chain.miner.key),
        envelope_for(chain.extract("pg-third", 1_000), chain.miner.key),
    ]
    results = await chain.world.services.submitter.submit(envelopes, submitter=chain.miner.id)
    assert [r.status for r in results] == ["accepted", "rejected", "accepted"]
    refused = results[1].error
    assert refused is not None and refused.code == "storage-refused" and "no_poison" in refused.detail
    indices = await _log_indices(chain)
    assert indices == list(range(len(indices)))
    for batch, status in (("pg-first", 200), ("poison-pg", 404), ("pg-third", 200)):
        response = await chain.world.client.get(f"/v1/batches/{batch}", headers=chain.world.registrar.headers)
        assert response.status_code == status, batch


async def test_a_real_refusal_by_sqlite_on_the_one_trip_write_fails_alone(chain: Chain) -> None:
    """No monkeypatching: a trigger makes SQLite itself refuse one batch id inside the group's write (in the trip
    that ends with COMMIT); the transaction is rolled back, the groups go through the transaction path, and only
    that envelope is refused."""
    engine = chain.world.services.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("the one-trip write path is SQLite's")
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(
                "CREATE TRIGGER no_poison BEFORE INSERT ON batches WHEN NEW.id LIKE 'poison%' "
                "BEGIN SELECT RAISE(ABORT, 'no_poison: refused'); END"
            )
        )
    submitter = chain.world.services.submitter
    calls = [
        submitter.submit(
            [envelope_for(chain.extract(batch, 1_000), chain.miner.key)], submitter=chain.miner.id
        )
        for batch in ("lite-first", "poison-lite", "lite-third")
    ]
    results = await asyncio.gather(*calls)  # one group commit
    assert [r.status for (r,) in results] == ["accepted", "rejected", "accepted"]
    refused = results[1][0].error
    assert refused is not None and refused.code == "storage-refused" and "no_poison" in refused.detail
    indices = await _log_indices(chain)
    assert indices == list(range(len(indices)))
    for batch, status in (("lite-first", 200), ("poison-lite", 404), ("lite-third", 200)):
        response = await chain.world.client.get(f"/v1/batches/{batch}", headers=chain.world.registrar.headers)
        assert response.status_code == status, batch


async def test_a_large_submission_is_committed_chunk_by_chunk_in_order(chain: Chain, poisoned: None) -> None:
    """Past PIPELINE_CHUNK envelopes a submission is checked and committed in chunks (the next chunk's signatures
    are checked while the current one is written). Outcomes are those of the whole list in order: an envelope may
    build on one in an earlier chunk, a duplicate of an earlier chunk's envelope is a duplicate, a refused write
    fails alone, and log indices stay gap-free and in submission order."""
    from ledger.services.submit import PIPELINE_CHUNK

    submitter = chain.world.services.submitter
    total = 2 * PIPELINE_CHUNK + 7  # three chunks, the last one short
    first = envelope_for(chain.extract("chunked-0", 1_000), chain.miner.key)
    envelopes = [first] + [
        envelope_for(chain.extract(f"chunked-{i}", 1_000), chain.miner.key) for i in range(1, total - 3)
    ]
    parent = event_id(base64.b64decode(first.payload))
    transfer = ev.Transfer(  # builds on the first chunk's first envelope, from the third chunk
        actor=chain.miner.id,
        timestamp=TS,
        batch="chunked-0",
        parent=parent,
        to=chain.refiner.id,
        route=[ev.RouteLeg(country="CA", customs_control=False)],
    )
    poison = envelope_for(chain.extract("poison-chunk", 1_000), chain.miner.key)
    envelopes += [poison, first, envelope_for(transfer, chain.miner.key)]  # refused, duplicate, accepted
    assert len(envelopes) == total
    before = await _log_indices(chain)
    results = await submitter.submit(envelopes, submitter=chain.miner.id)
    assert len(results) == total
    assert [r.status for r in results[: total - 3]] == ["accepted"] * (total - 3)
    assert [r.status for r in results[total - 3 :]] == ["rejected", "duplicate", "accepted"]
    assert results[total - 3].error is not None and results[total - 3].error.code == "storage-refused"
    assert results[total - 2].log_index == results[0].log_index
    accepted = [r.log_index for r in results if r.status == "accepted"]
    # 2 * PIPELINE_CHUNK + 7 envelopes, of which one refused and one duplicate: 2 * PIPELINE_CHUNK + 5 new indices
    assert accepted == list(range(len(before), len(before) + 2 * PIPELINE_CHUNK + 5))
    assert await _log_indices(chain) == list(range(len(before) + 2 * PIPELINE_CHUNK + 5))
    assert (await chain.batch("chunked-0"))["status"] == "in_transit"


async def test_a_large_submission_stages_several_chunks_at_once(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunks of a large submission are staged (decoded, their signatures checked) STAGED_AHEAD at a time, so
    that the worker processes find the next chunk waiting; they are still committed in order. A chunk whose
    staging fails ends the submission there: the chunks before it are answered, the rest are not stored, and the
    chunk staged beyond it is dropped."""
    from ledger.services.submit import PIPELINE_CHUNK, STAGED_AHEAD, Submitter

    submitter = chain.world.services.submitter
    total = 3 * PIPELINE_CHUNK + 10  # four chunks
    real = Submitter._stage
    running, most, failing = 0, 0, None

    async def counted(self: Submitter, envelopes: Any, offset: int) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.05)  # long enough for every chunk that may start to start
            if offset == failing:
                raise sa_exc.OperationalError(
                    "SELECT ...", {}, ConnectionError("server closed the connection")
                )
            return await real(self, envelopes, offset)
        finally:
            running -= 1

    monkeypatch.setattr(Submitter, "_stage", counted)
    envelopes = [envelope_for(chain.extract(f"ahead-{i}", 1_000), chain.miner.key) for i in range(total)]
    before = len(await _log_indices(chain))
    results = await submitter.submit(envelopes, submitter=chain.miner.id)
    assert [r.status for r in results] == ["accepted"] * total
    assert [r.log_index for r in results] == list(range(before, before + total))  # committed in order
    assert most == min(STAGED_AHEAD, 4)

    failing = 2 * PIPELINE_CHUNK  # the third chunk
    more = [envelope_for(chain.extract(f"ahead-more-{i}", 1_000), chain.miner.key) for i in range(total)]
    results = await submitter.submit(more, submitter=chain.miner.id)
    assert [r.status for r in results] == ["accepted"] * (2 * PIPELINE_CHUNK) + ["rejected"] * (
        PIPELINE_CHUNK + 10
    )
    refused = results[-1].error
    assert refused is not None and refused.code == "not-stored"
    assert len(await _log_indices(chain)) == before + total + 2 * PIPELINE_CHUNK


async def test_a_database_failure_part_way_through_a_large_submission_answers_what_was_stored(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of a large submission commit one after another; when the database fails on a later chunk, the
    earlier chunks are in the log. The caller gets their outcomes, and every envelope from the failed chunk on is
    refused as not stored (503 not-stored), so a retry of the whole submission stores the rest and answers the
    stored ones as duplicates. A failure on the first chunk still fails the whole request with nothing stored."""
    from ledger.services.submit import PIPELINE_CHUNK, Submitter

    submitter = chain.world.services.submitter
    total = 2 * PIPELINE_CHUNK + 50  # chunks of PIPELINE_CHUNK, PIPELINE_CHUNK and 50
    envelopes = [envelope_for(chain.extract(f"part-{i}", 1_000), chain.miner.key) for i in range(total)]
    real = Submitter._credits_for
    calls = 0

    async def failing_third(self: Submitter, prepared: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:  # the third chunk, after the first two committed
            raise sa_exc.OperationalError("SELECT ...", {}, ConnectionError("server closed the connection"))
        return await real(self, prepared)

    monkeypatch.setattr(Submitter, "_credits_for", failing_third)
    before = len(await _log_indices(chain))
    results = await submitter.submit(envelopes, submitter=chain.miner.id)
    assert [r.status for r in results] == ["accepted"] * (2 * PIPELINE_CHUNK) + ["rejected"] * 50
    refused = results[-1].error
    assert refused is not None and refused.code == "not-stored" and refused.status == 503
    assert f"after the first {2 * PIPELINE_CHUNK} envelopes" in refused.detail
    assert len(await _log_indices(chain)) == before + 2 * PIPELINE_CHUNK  # exactly the two chunks answered

    monkeypatch.setattr(Submitter, "_credits_for", real)
    again = await submitter.submit(envelopes, submitter=chain.miner.id)
    assert [r.status for r in again] == ["duplicate"] * (2 * PIPELINE_CHUNK) + ["accepted"] * 50
    assert await _log_indices(chain) == list(range(before + total))

    calls = 2  # now the very first chunk fails: nothing stored, the request fails as a whole
    monkeypatch.setattr(Submitter, "_credits_for", failing_third)
    fresh = [envelope_for(chain.extract(f"whole-{i}", 1_000), chain.miner.key) for i in range(total)]
    with pytest.raises(sa_exc.OperationalError):
        await submitter.submit(fresh, submitter=chain.miner.id)
    assert await _log_indices(chain) == list(range(before + total))


async def test_a_chunk_queued_behind_one_that_failed_is_not_stored(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large submission's chunks join the commit queue as soon as they are staged, before the chunks ahead of
    them are committed. When the database fails on a chunk, a later chunk already waiting in the queue is not
    committed: the commit task refuses it (its predecessor failed), and the caller answers every envelope from the
    failed chunk on as not stored."""
    from ledger.errors import NotStored
    from ledger.services.submit import PIPELINE_CHUNK, Submitter

    submitter = chain.world.services.submitter
    monkeypatch.setattr(submitter, "_ahead_engine", None)  # every commit through the transaction
    total = 2 * PIPELINE_CHUNK + 20  # three chunks
    real_stage, real_slowly = Submitter._stage, Submitter._slowly
    behind: list[Any] = []

    async def stage(self: Submitter, envelopes: Any, offset: int) -> Any:
        # each chunk commits alone: the second queues once the first is committed, the third while the second is
        # being committed
        await asyncio.sleep({PIPELINE_CHUNK: 0.2, 2 * PIPELINE_CHUNK: 0.4}.get(offset, 0))
        return await real_stage(self, envelopes, offset)

    async def slowly(self: Submitter, groups: Any) -> None:
        if groups[0].prepared[0][0] != PIPELINE_CHUNK:
            return await real_slowly(self, groups)
        for _ in range(500):  # the second chunk's commit fails once the third waits behind it
            behind[:] = [g for g in self._pending if g.prepared[0][0] == 2 * PIPELINE_CHUNK]
            if behind:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the third chunk never queued")
        error = sa_exc.OperationalError("WITH ...", {}, ConnectionError("server closed the connection"))
        for group in groups:
            group.fail(error)
        raise error

    monkeypatch.setattr(Submitter, "_stage", stage)
    monkeypatch.setattr(Submitter, "_slowly", slowly)
    envelopes = [envelope_for(chain.extract(f"behind-{i}", 1_000), chain.miner.key) for i in range(total)]
    before = len(await _log_indices(chain))
    results = await submitter.submit(envelopes, submitter=chain.miner.id)
    # the first chunk stored; the second failed; the third, queued behind it, refused without being written
    assert [r.status for r in results] == ["accepted"] * PIPELINE_CHUNK + ["rejected"] * (PIPELINE_CHUNK + 20)
    assert {r.error.code for r in results[PIPELINE_CHUNK:] if r.error is not None} == {"not-stored"}
    (third,) = behind
    await asyncio.wait([third.done], timeout=10)  # the commit task takes it after the caller has its answer
    assert third.failed and isinstance(third.done.exception(), NotStored)
    assert len(await _log_indices(chain)) == before + PIPELINE_CHUNK
    for name in ("behind-0", f"behind-{PIPELINE_CHUNK - 1}"):
        assert (await chain.batch(name))["mass_g"] == 1_000
    for name in (f"behind-{PIPELINE_CHUNK}", f"behind-{total - 1}"):
        response = await chain.world.client.get(f"/v1/batches/{name}", headers=chain.world.registrar.headers)
        assert response.status_code == 404, name


async def test_concurrent_single_submissions_share_commits_and_all_get_their_own_outcome(
    chain: Chain,
) -> None:
    """One task commits every waiting group: 40 concurrent single-event submissions take far fewer than 40
    transactions, and each caller gets its own event's outcome, with log indices gap-free."""
    submitter = chain.world.services.submitter
    before = len(await _log_indices(chain))
    commits = submitter.stages.commits
    envelopes = [envelope_for(chain.extract(f"burst-{i}", 1_000), chain.miner.key) for i in range(40)]
    results = await asyncio.gather(*(submitter.submit([e], submitter=chain.miner.id) for e in envelopes))
    for envelope, (result,) in zip(envelopes, results, strict=True):
        assert result.status == "accepted"
        assert result.event_id == event_id(base64.b64decode(envelope.payload))
    assert sorted(r.log_index for (r,) in results) == list(range(before, before + 40))
    # the first caller's group commits alone; the 39 that queued meanwhile share the next transaction(s)
    assert submitter.stages.commits - commits <= 5
    assert await _log_indices(chain) == list(range(before + 40))


async def test_a_caller_that_goes_away_after_queueing_still_has_its_event_committed(chain: Chain) -> None:
    """A group in the queue is the committing task's, not its caller's: a client that disconnects while its event
    waits for the commit does not leave it half-done; it is in the log, and resubmitting it says duplicate."""
    submitter = chain.world.services.submitter
    before = len(await _log_indices(chain))
    gone = envelope_for(chain.extract("gone-1", 1_000), chain.miner.key)
    others = [envelope_for(chain.extract(f"stays-{i}", 1_000), chain.miner.key) for i in range(5)]
    stayers = [asyncio.ensure_future(submitter.submit([e], submitter=chain.miner.id)) for e in others]
    leaving = asyncio.ensure_future(submitter.submit([gone], submitter=chain.miner.id))
    for _ in range(100):  # until its group waits in the queue
        if any(gone is g.prepared[0][1].envelope for g in submitter._pending):
            break
        await asyncio.sleep(0)
    else:
        pytest.fail("the submission never queued")
    leaving.cancel()
    await asyncio.gather(*stayers)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    (again,) = await submitter.submit([gone], submitter=chain.miner.id)
    assert again.status == "duplicate"
    assert await _log_indices(chain) == list(range(before + 6))


async def test_groups_retried_one_by_one_are_answered_as_each_is_stored(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two groups refused together are retried one at a time; if the database then fails on the second, the first
    is stored and its caller has its outcome, and only the second fails (a chunk after a stored one of the same
    submission is then answered as not stored, never the stored one)."""
    from ledger.services.submit import Submitter, _Group

    submitter = chain.world.services.submitter
    loop = asyncio.get_running_loop()
    groups = []
    for name in ("retried-first", "retried-second"):
        staged = await submitter._stage([envelope_for(chain.extract(name, 1_000), chain.miner.key)], 0)
        groups.append(
            _Group(staged.prepared, chain.miner.id, staged.verified, loop.create_future(), refs=staged.refs)
        )
    first, second = groups
    real = Submitter._accept_groups

    async def accept_groups(self: Submitter, taken: Any) -> Any:
        if len(taken) == 2:
            raise sa_exc.DataError("INSERT ...", {}, ValueError("refused together"))
        if taken[0].prepared[0][1].event_id == second.prepared[0][1].event_id:
            raise sa_exc.OperationalError("INSERT ...", {}, ConnectionError("server closed the connection"))
        return await real(self, taken)

    async def no_trip(self: Submitter, taken: Any) -> None:
        return None

    monkeypatch.setattr(Submitter, "_accept_groups", accept_groups)
    monkeypatch.setattr(Submitter, "_one_trip", no_trip)
    before = len(await _log_indices(chain))
    with pytest.raises(sa_exc.OperationalError):
        await submitter._slowly(groups)
    ((_, stored),) = first.done.result()
    assert stored.status == "accepted" and not first.failed
    assert second.failed and isinstance(second.done.exception(), sa_exc.OperationalError)
    assert len(await _log_indices(chain)) == before + 1
    assert (await chain.batch("retried-first"))["mass_g"] == 1_000
