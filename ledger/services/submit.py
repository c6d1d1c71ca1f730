"""Submitting envelopes: prepare (pure CPU), then accept a whole group in one transaction (group commit)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import functools
import itertools
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any, Literal

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger import metrics
from ledger.domain import events as ev
from ledger.domain.accept import (
    REFERENCE_TABLES,
    Prepared,
    accept,
    add_references,
    check_duplicate,
    merge_references,
    prepare,
)
from ledger.domain.dsse import MAX_SIGNATURES, Envelope
from ledger.domain.keys import key_id
from ledger.domain.state import HOT, WorkingSet
from ledger.errors import Forbidden, LedgerError, NotStored, Overloaded, StorageRefused
from ledger.services.verifier import Verified, Verifier, signature_job
from ledger.store import lite, repo
from ledger.store.db import driver, driver_transaction, write_transaction


def utcnow() -> datetime:
    return datetime.now(UTC)


STAGES = (
    "prepare",
    "preverify",
    "wait",
    "read",
    "check",
    "write",
    "lock",
    "load",
    "accept",
    "flush",
    "commit",
)
"""Where a submission spends its time, in order: decoding and schema checks, signature checks in worker processes,
waiting for the commit task (one per process) to take the group. Then, on PostgreSQL, reading the referenced rows
and running the acceptance rules without the sequencer's lock (``read``, ``check``), and the one statement that
takes the lock, finds the size unchanged, writes and commits (``write``; see :meth:`Submitter._ahead`). Otherwise,
and whenever that cannot be used, one transaction that holds the lock throughout: taking the sequencer row,
loading, the acceptance rules, writing, committing. The serial critical section, the time the lock is held, is
``write`` and ``lock`` to ``commit``."""


@dataclass
class StageClock:
    """Cumulative seconds per stage (see :data:`STAGES`) and events submitted, for benchmarks and metrics."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    events: int = 0
    groups: int = 0
    commits: int = 0

    def add(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - started
        _STAGE_COUNTERS[stage].inc(now - started)
        return now

    def critical_us_per_event(self) -> float:
        """Microseconds per event spent holding the write lock."""
        serial = sum(self.seconds[s] for s in ("write", "lock", "load", "accept", "flush", "commit"))
        return serial * 1e6 / self.events if self.events else 0.0


_STAGE_COUNTERS = {stage: metrics.STAGE_SECONDS.labels(stage) for stage in STAGES}


@functools.lru_cache(maxsize=1024)
def _outcomes(status: str, reason: str) -> Any:
    """The counter of submitted envelopes with this outcome (kept: a label lookup takes a lock and checks)."""
    return metrics.EVENTS.labels(status, reason)


@dataclass(frozen=True)
class SubmitResult:
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = None
    log_index: int | None = None
    error: LedgerError | None = None


class Submitter:
    """Accepts envelopes into the log. One instance per process; writes are serialised in the process by its one
    commit task (:meth:`_commit_pending`) and across processes by the sequencer row (PostgreSQL) or the database
    write lock (SQLite)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock_skew: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = utcnow,
        max_backdate: timedelta | None = timedelta(days=7),
        ahead_engine: AsyncEngine | None = None,
    ) -> None:
        self._engine = engine
        self._ahead_engine = ahead_engine
        """Where groups are read and written without a transaction (PostgreSQL; see :meth:`_ahead`): None keeps
        every commit in a transaction holding the sequencer's lock."""
        self._ahead_again = 0.0
        """After a conflict with another process, the ``time.monotonic()`` until which commits take the lock
        first."""
        self._clock_skew = clock_skew
        self.max_backdate = max_backdate
        self._clock = clock
        self._pending: list[_Group] = []
        self._committer: asyncio.Future[None] | None = None
        self._arrival: asyncio.Future[None] | None = None
        """While the commit task waits for a write with nothing queued: resolved when a group joins the queue (or
        the write ends), so that the group is checked while the write is still in flight (see :meth:`_ahead`)."""
        """The task committing the pending groups, while there are any (see :meth:`_commit_pending`)."""
        self._registrar_known = False
        self.verifier = Verifier()
        """Where pre-lock signature checks run: threads, or worker processes once the serving app started them."""
        self._known_keys: dict[str, tuple[str, bytes]] = {}
        """Registered keys seen so far (see :meth:`_public_keys`)."""
        self.log_key: bytes | None = None
        """The ledger's public log key: the only key that signs determinations."""
        self.on_commit: Callable[[], None] | None = None
        """Called after a group with accepted events commits (the log's integrator listens)."""
        self.stages = StageClock()
        self.read_only = False
        """A mirror's submitter refuses every submission."""
        """Cumulative time per stage of every submission this process handled."""
        self.credits: Callable[[str, str, str], Awaitable[Fraction]] | None = None
        """(facility, profile, period) -> the facility's mass-balance credits in grams, exact (the eligibility
        service provides it). Claims are refused while it is None."""

    async def submit(self, envelopes: Sequence[Envelope], submitter: str | None) -> list[SubmitResult]:
        """Accept what can be accepted, in order; later envelopes may build on earlier ones in the same call.

        Concurrent calls are committed together (group commit): the commit task takes every group waiting when it
        starts a transaction into that transaction, so a burst of single-event POSTs costs one commit.
        """
        if self.read_only:
            raise Forbidden(
                "this ledger is a read-only mirror (LEDGER_READ_ONLY): submit events to the ledger it mirrors"
            )
        self.stages.events += len(envelopes)
        if len(envelopes) <= PIPELINE_CHUNK:
            results = await self._commit(await self._stage(envelopes, 0), submitter)
        else:
            results = await self._pipelined(envelopes, submitter)
        if len(results) == 1:  # a single POST: nothing to sort or tally
            ((_, only),) = results
            _outcomes(only.status, only.error.code if only.error is not None else "").inc()
            return [only]
        done = [r for _, r in sorted(results, key=lambda pair: pair[0])]
        outcomes = Counter((r.status, r.error.code if r.error is not None else "") for r in done)
        for (status, reason), count in outcomes.items():
            _outcomes(status, reason).inc(count)
        return done

    async def _pipelined(
        self, envelopes: Sequence[Envelope], submitter: str | None
    ) -> list[tuple[int, SubmitResult]]:
        """A large submission in chunks of :data:`PIPELINE_CHUNK`, committed in order while the chunks after them
        are decoded and their signatures checked (in worker processes): the cores verify while the database writes.
        Each chunk is its own group, joining the commit queue as soon as it is staged (the commit task may then
        check it while the chunk before it is being written, see :meth:`_ahead`), so the outcomes are those of
        submitting the chunks one after another, which is what the caller asked for (envelopes are accepted in
        order, and later ones may build on earlier ones). Staging runs ahead of committing and never waits for it.

        If the database fails once some chunks are stored, the caller still gets their outcomes, and every envelope
        from the failed chunk on is refused as :class:`NotStored` (a retry is safe): the commit task refuses a
        queued chunk whose predecessor failed (:attr:`_Group.after`). If it fails on the first chunk, nothing is
        stored and the error propagates, as for a small submission."""
        loop = asyncio.get_running_loop()
        chunks = [
            (start, envelopes[start : start + PIPELINE_CHUNK])
            for start in range(0, len(envelopes), PIPELINE_CHUNK)
        ]
        # each chunk once in the commit queue: the envelopes refused before it, and its group (None: nothing left)
        joined: list[asyncio.Future[tuple[list[tuple[int, SubmitResult]], _Group | None]]] = [
            loop.create_future() for _ in chunks
        ]

        async def stage_all() -> None:
            # STAGED_AHEAD chunks at once: chunk k + 1's halves wait in the pool when chunk k's are being prepared
            tasks: collections.deque[asyncio.Future[_Staged]] = collections.deque()
            waiting = iter(chunks)
            last: _Group | None = None
            try:
                for ready in joined:
                    for start, chunk in itertools.islice(waiting, STAGED_AHEAD - len(tasks)):
                        staging = asyncio.ensure_future(self._stage(chunk, start))
                        # one cancelled below may still fail on its way out: nobody is left to hear of it
                        staging.add_done_callback(_retrieved)
                        tasks.append(staging)
                    try:
                        staged = await tasks[0]
                        if last is not None and _claims(staged):
                            # a claim's credits are read once the chunks before it are in the log
                            await asyncio.wait([last.done])
                        group = await self._join(staged, submitter, after=last)
                    except Exception as exc:  # the committing side raises it
                        if not ready.done():  # (done: the submission was cancelled meanwhile)
                            ready.set_exception(exc)
                        return
                    if group is not None:
                        last = group
                        # answered even when nobody waits for it any more (a chunk before it failed)
                        group.done.add_done_callback(_retrieved)
                    if ready.done():
                        return
                    ready.set_result((staged.refused, group))
                    tasks.popleft()
            finally:  # a chunk failed, or the submission ended: the chunks after it are not wanted
                for task in tasks:
                    task.cancel()
                for ready in joined:  # (only if the staging itself was interrupted: nobody waits in vain)
                    if not ready.done():
                        ready.cancel()

        stager = asyncio.ensure_future(stage_all())
        results: list[tuple[int, SubmitResult]] = []
        try:
            for number, ready in enumerate(joined):
                try:
                    before, group = await ready
                    results += before + (await group.done if group is not None else [])
                except Exception as exc:
                    if number == 0:
                        raise  # nothing stored: the request fails as a whole
                    # earlier chunks are in the log: answer them, and say which envelopes were not stored
                    refused = NotStored(
                        f"not stored: the database failed after the first {chunks[number][0]} envelopes of this "
                        f"submission were processed ({_first_line(exc)}); resubmit this envelope (resubmitting the "
                        "whole submission is safe: envelopes already in the log come back as duplicates)"
                    )
                    results += [
                        (position, SubmitResult("rejected", error=refused))
                        for start, chunk in chunks[number:]
                        for position in range(start, start + len(chunk))
                    ]
                    break
        finally:
            stager.cancel()
            for ready in joined:  # nothing left unretrieved when a commit failed part-way
                if ready.done() and not ready.cancelled():
                    ready.exception()
        return results

    async def _stage(self, envelopes: Sequence[Envelope], offset: int) -> _Staged:
        """What needs no lock: decoding and schema checks, then signatures checked off the event loop (all of it in
        the worker processes when there are any and the chunk is worth the trip, see :meth:`_stage_in_workers`)."""
        if self.verifier.has_processes and not PREVERIFY_MIN <= len(envelopes) < STAGE_IN_WORKERS_MIN:
            # a large chunk in halves, or a small submission with the others of this turn of the event loop
            staged = await self._stage_in_workers(envelopes, offset, gathered=len(envelopes) < PREVERIFY_MIN)
            if staged is not None:
                return staged
        clock = self.stages
        started = time.perf_counter()
        staged = _Staged()
        for position, envelope in enumerate(envelopes, offset):
            staged.prepare(position, envelope)
        staged.refs = _references(staged.prepared)
        started = clock.add("prepare", started)
        if staged.prepared:
            staged.verified = await self._preverify([item for _, item in staged.prepared])
            clock.add("preverify", started)
        return staged

    async def _stage_in_workers(
        self, envelopes: Sequence[Envelope], offset: int, *, gathered: bool = False
    ) -> _Staged | None:
        """:meth:`_stage` with the decoding and checks of :func:`prepare` done in the verifier's worker processes
        beside the signature checks: the event loop only looks up the keys and reassembles the answers, so that it
        is free for commits and requests meanwhile. An envelope that does not prepare is prepared again here, to
        refuse it with the very error the in-process path gives. With ``gathered``, a small submission shares its
        trip with the others of this turn of the event loop (:meth:`Verifier.prepare_gathered`). None if the
        worker processes are gone, or did not take a small submission: the caller then does the work."""
        clock = self.stages
        started = time.perf_counter()
        signed = {s.keyid for e in envelopes if len(e.signatures) <= MAX_SIGNATURES for s in e.signatures}
        keys = await self._public_keys(signed)
        if gathered:
            chunk = await self.verifier.prepare_gathered(list(envelopes), keys)
        else:
            chunk = await self.verifier.prepare(list(envelopes), keys)
        if chunk is None:
            return None
        parts, refs = chunk
        started = clock.add("preverify", started)
        staged = _Staged(refs=refs)
        verified: set[Verified] = set()
        for (position, envelope), part in zip(enumerate(envelopes, offset), parts, strict=True):
            if part is None:
                # refused in the worker: here it says why (and should it prepare after all, it is referred to)
                if staged.prepare(position, envelope):
                    add_references(refs, staged.prepared[-1][1])
                continue
            payload, event, event_id, kind, good = part
            staged.prepared.append((position, Prepared(envelope, payload, event, event_id, kind)))
            if good is not None:
                verified.add(good)
        staged.verified = frozenset(verified)
        clock.add("prepare", started)
        return staged

    async def _commit(self, staged: _Staged, submitter: str | None) -> list[tuple[int, SubmitResult]]:
        """Join the next group commit with what :meth:`_stage` prepared; the outcome of every envelope."""
        group = await self._join(staged, submitter)
        if group is None:
            return staged.refused
        # A caller that goes away cancels only its own future: its group stays in line, to be committed (or not)
        # with the others, and the commit task answers only futures still waiting. (Not asyncio.shield, whose
        # second future costs a callback and a turn of the event loop more for every single POST.)
        return staged.refused + await group.done

    async def _join(
        self, staged: _Staged, submitter: str | None, *, after: _Group | None = None
    ) -> _Group | None:
        """Put what :meth:`_stage` prepared in the commit queue as one group (None: nothing to commit), after
        reading the credits its claims draw on; ``after`` is the group of the same submission it follows."""
        if not staged.prepared:
            return None
        clock = self.stages
        started = time.perf_counter()
        prepared = staged.prepared
        limits, errors = await self._credits_for([item for _, item in prepared])
        group = _Group(
            prepared,
            submitter,
            staged.verified,
            asyncio.get_running_loop().create_future(),
            limits,
            errors,
            staged.refs,
            after=after,
        )
        self._pending.append(group)
        if self._arrival is not None:
            _resolve(self._arrival, group)
        clock.add("preverify", started)
        group.queued = time.perf_counter()
        if self._committer is None:
            # in a context of its own: the commit is every waiting caller's, not that of the first to arrive
            self._committer = asyncio.get_running_loop().create_task(
                self._commit_pending(), name="group-commit", context=contextvars.Context()
            )
        return group

    async def _commit_pending(self) -> None:
        """Commit whatever groups are waiting, all in one transaction, again and again until none are left.

        One task does every commit of the process, so a burst of single-event POSTs waits on their own groups'
        futures, all answered at once when their commit ends, instead of handing a lock on from one caller to the
        next after it."""
        try:
            while self._pending:
                if self._engine.dialect.name == "sqlite":
                    await _caught_up()
                taken = self._take()
                if not taken:
                    continue
                try:
                    await self._commit_groups(taken)
                except Exception:
                    continue  # every group of the transaction has the error as its outcome
        finally:
            self._committer = None
            if self._pending:  # cancelled (the server is stopping): nobody will commit these
                stopping = NotStored(
                    "not stored: the server stopped before the event was committed; resubmit it"
                )
                for group in self._pending:
                    group.fail(stopping)
                self._pending = []

    def _take(self) -> list[_Group]:
        """Every group waiting in the queue, for one commit; a group whose submission's group before it failed is
        refused here instead (the caller answers its envelopes as not stored)."""
        taken, self._pending = self._pending, []
        kept: list[_Group] = []
        for group in taken:
            if group.after is not None and group.after.failed:
                group.fail(
                    NotStored("not stored: an earlier part of the same submission could not be stored")
                )
            else:
                kept.append(group)
        if kept:
            clock = self.stages
            clock.add("wait", kept[0].queued)  # how long the oldest group waited for this commit
            clock.groups += len(kept)
            clock.commits += 1
            metrics.GROUP_COMMIT.observe(sum(len(g.prepared) for g in kept))
        return kept

    async def _preverify(self, prepared: list[Prepared]) -> frozenset[Verified]:
        """Check signatures before the commit, in the verifier's worker processes (threads without them). A small
        submission's are left to acceptance: one a worker process did not prepare with others of its turn of the
        event loop (:meth:`_stage_in_workers`) is not worth a trip of its own.

        Returns the signatures (event id, key id, signature) that verified with a key registered to the event's actor.
        Acceptance, under the lock, still checks that the key is valid then, and verifies itself whatever is not in
        this set (a key introduced in the same request, say), so this is purely an optimisation.
        """
        if len(prepared) < PREVERIFY_MIN:
            return frozenset()  # a round trip each would cost the event loop more than it saves
        keys = await self._public_keys({s.keyid for item in prepared for s in item.envelope.signatures})
        jobs = [job for item in prepared if (job := signature_job(item, keys)) is not None]
        return await self.verifier.verify(jobs)

    async def _public_keys(self, key_ids: set[str]) -> dict[str, tuple[str, bytes]]:
        """Key id -> (participant, raw public key) for the registered keys among ``key_ids``, from a cache where
        it can: a key id is the SHA-256 of its public key and a registered key never changes hands, so a positive
        entry stays true (whether the key is still valid is checked under the lock, on every event)."""
        missing = key_ids - self._known_keys.keys()
        if missing:
            async with self._engine.connect() as conn:
                found = await repo.public_keys(conn, missing)
            if len(self._known_keys) + len(found) > KEY_CACHE_ENTRIES:
                self._known_keys.clear()
            self._known_keys.update(found)
        return {kid: known for kid in key_ids if (known := self._known_keys.get(kid)) is not None}

    async def _credits_for(
        self, prepared: list[Prepared]
    ) -> tuple[dict[CreditKey, Fraction], dict[CreditKey, LedgerError]]:
        """The credits of every (facility, profile, period) the claims among ``prepared`` draw on, computed before
        the write lock is taken (the eligibility engine reads the database); an error stays with its key and
        refuses the claims that need it."""
        limits: dict[CreditKey, Fraction] = {}
        errors: dict[CreditKey, LedgerError] = {}
        if self.credits is None:
            return limits, errors
        keys = sorted(
            {
                (item.event.facility, item.event.profile, item.event.period)
                for item in prepared
                if isinstance(item.event, ev.Claim)
            }
        )
        for key in keys:
            try:
                limits[key] = await self.credits(*key)
            except LedgerError as error:
                errors[key] = error
        return limits, errors

    async def _commit_groups(self, groups: list[_Group]) -> None:
        """Commit the groups, and answer each: without a transaction where :meth:`_ahead` can, else through
        :meth:`_slowly`."""
        try:
            if await self._ahead(groups):
                return
        except BaseException as exc:  # cancelled: the server is stopping
            for group in groups:
                group.fail(exc)
            raise
        await self._slowly(groups)

    async def _slowly(self, groups: list[_Group]) -> None:
        """Commit the groups in a transaction holding the lock throughout: in one trip to SQLite's thread
        (:meth:`_one_trip`) or through :meth:`_isolated`; answer each group, or fail them all with the error."""
        try:
            outcomes = await self._one_trip(groups)
            if outcomes is None:
                outcomes = await self._isolated(groups)
        except BaseException as exc:
            for group in groups:
                group.fail(exc)
            raise
        _settle(groups, outcomes)

    async def _ahead(self, groups: list[_Group]) -> bool:
        """Commit the groups in two database round trips instead of five, on PostgreSQL: read the referenced rows
        and the sequencer's size (one statement, one snapshot), run the acceptance rules without any lock, then
        write the custody rows in one statement that takes the sequencer's row lock (waiting for any transaction
        that holds it), writes only if the size is still the one read, and commits by itself. True once every group
        is answered (those this could not commit went through :meth:`_slowly`); False, with nothing written and
        nobody answered, if the groups must go through :meth:`_slowly` from the start.

        While a write is in flight, the groups waiting in the queue when it went out, or else those that join it
        before the write ends (:meth:`_first_of`), are read and checked on top of it (:meth:`_follow`): on a second connection, the rows the working set does not hold yet, then the acceptance
        rules against the working set as the write leaves it. Once the write committed, theirs goes out, guarded by
        the size that write left. So the database writes one group while the event loop reads and checks the next.

        If the size moved (another process sequenced events meanwhile), nothing was written: the groups go through
        a transaction holding the lock throughout (:meth:`_slowly`), as they do when they change more than custody
        rows (the registry, facts, claims: rare), and when anything here fails; groups checked on top of them go
        back to the head of the queue, to be read again. Every row read was as of the size the write finds, so the
        outcomes are exactly those of accepting under the lock. After a conflict, commits take the lock first for
        a second (two processes would keep invalidating each other's reads)."""
        engine = self._ahead_engine
        if engine is None or time.monotonic() < self._ahead_again:
            return False
        clock = self.stages
        started = time.perf_counter()
        async with contextlib.AsyncExitStack() as connections:
            try:
                conn = await _autocommit(connections, engine)
                ws = WorkingSet(next_index=0, registrar_exists=self._registrar_known, log_key=self.log_key)
                refs, event_ids = _wanted(groups)
                size = await repo.load(ws, conn, refs, event_ids, with_size=True)
                assert size is not None
                ws.next_index = size
                if not self._registrar_known:
                    ws.registrar_exists = await repo.registrar_exists(conn)
                outcomes = await self._check(ws, conn, groups, event_ids, started)
            except Exception:
                # the transaction meets the problem again, and reports it (or gets past it alone)
                return False
            if outcomes is None:
                return False
            spare: AsyncConnection | None = None
            following: list[_Group] = []
            writing: asyncio.Future[bool] | None = None
            try:
                while True:
                    if not ws.events:
                        # nothing to write: duplicates and refusals, as of the rows read
                        _settle(groups, outcomes)
                        return True
                    started = time.perf_counter()
                    rows = repo.hot_rows(ws)
                    expect, size = size, ws.next_index
                    _written(ws)
                    writing = asyncio.ensure_future(repo.write_ahead(conn, rows, expect))
                    # the callers are answered as soon as the write commits, not after the next groups' check
                    writing.add_done_callback(functools.partial(_answer_when_written, groups, outcomes))
                    checked: list[list[tuple[int, SubmitResult]]] | None = None
                    followed = 0.0
                    if (
                        len(ws.known_event_ids) + len(ws.batches) <= CHAIN_ROWS
                    ):  # else a fresh working set next
                        if not self._pending:
                            await self._first_of(
                                writing
                            )  # the write ends, or a group joins the queue meanwhile
                        if (
                            self._pending
                            and time.monotonic() >= self._ahead_again
                            and _may_follow(self._pending)
                        ):
                            following = self._take()
                            followed = time.perf_counter()
                            try:
                                if spare is None:
                                    spare = await _autocommit(connections, engine)
                                checked = await self._follow(ws, spare, following, (expect, size))
                            except Exception:
                                checked = None  # read again from the start, after this write
                            followed = time.perf_counter() - followed
                    try:
                        written = await writing
                    except Exception:
                        written = None
                    clock.add("write", started + followed)  # (the follow's read and check are clocked apart)
                    if not written:
                        if written is False:  # another process wrote first
                            self._ahead_again = time.monotonic() + AHEAD_PAUSE_SECONDS
                        self._requeue(following)
                        following = []
                        await self._slowly(groups)
                        return True
                    self._registrar_known = ws.registrar_exists
                    if self.on_commit is not None:
                        self.on_commit()
                    if not following:
                        return True
                    if checked is None:
                        self._requeue(following)
                        return True
                    assert spare is not None  # the following groups were read on it
                    groups, outcomes, following = following, checked, []
                    conn, spare = spare, conn
            except BaseException as exc:
                # cancelled (the server is stopping), or the transaction failed the groups (:meth:`_slowly`)
                if writing is not None and not writing.done():
                    writing.cancel()
                    # a statement may still be running on a connection: neither goes back to the pool
                    for used in (conn, spare):
                        if used is not None:
                            with contextlib.suppress(Exception):
                                await asyncio.shield(used.invalidate())
                for group in groups:
                    group.fail(exc)
                # if stopping, the commit task refuses them as not stored on its way out
                self._requeue(following)
                raise

    async def _first_of(self, writing: asyncio.Future[bool]) -> None:
        """Wait until ``writing`` is done or a group joins the queue, whichever comes first."""
        arrival = self._arrival = asyncio.get_running_loop().create_future()
        writing.add_done_callback(functools.partial(_resolve, arrival))
        try:
            await arrival
        finally:
            self._arrival = None

    async def _check(
        self,
        ws: WorkingSet,
        conn: AsyncConnection,
        groups: list[_Group],
        event_ids: set[str],
        started: float,
    ) -> list[list[tuple[int, SubmitResult]]] | None:
        """The acceptance rules over the groups, against ``ws`` once their rows are in it; None if they changed
        more than custody rows (they go through the lock)."""
        clock = self.stages
        for group in groups:
            ws.credit_limits.update(group.credit_limits)
            ws.credit_errors.update(group.credit_errors)
        public_keys = await self._duplicate_keys(ws, conn, event_ids)
        started = clock.add("read", started)
        outcomes = self._accept_all(ws, groups, public_keys)
        clock.add("check", started)
        if ws.pending() - set(HOT):
            return None
        return outcomes

    async def _follow(
        self, ws: WorkingSet, conn: AsyncConnection, groups: list[_Group], sizes: tuple[int, int]
    ) -> list[list[tuple[int, SubmitResult]]] | None:
        """:meth:`_ahead` for the groups that queued while a write is in flight, on another connection: read the
        rows ``ws`` does not hold yet, then check the groups against ``ws``, which the write in flight leaves as
        it is (it writes only rows ``ws`` holds, so the database has every other row as read, written or not).
        ``sizes`` are the sizes before and after that write: a read that finds another size saw another process's
        events, and would not be written (None, as when the groups change more than custody rows)."""
        started = time.perf_counter()
        refs, event_ids = _wanted(groups)
        size = await repo.load(ws, conn, refs, event_ids, with_size=True)
        if size not in sizes:
            return None
        return await self._check(ws, conn, groups, event_ids, started)

    def _requeue(self, groups: list[_Group]) -> None:
        """Put groups taken from the queue back at its head, in order (they commit before any that came later)."""
        if groups:
            self._pending[:0] = groups

    async def _one_trip(self, groups: list[_Group]) -> list[list[tuple[int, SubmitResult]]] | None:
        """Commit the groups in one trip to aiosqlite's thread, on SQLite: there, on SQLite's own connection,
        ``BEGIN IMMEDIATE``, the one statement that reads the referenced rows and the sequencer's size, the
        acceptance rules, the custody rows and ``COMMIT`` (see :func:`ledger.store.db.driver_transaction`).
        Through SQLAlchemy that was five trips, each a wake-up of the event loop which under load waited behind a
        turn's worth of other requests: a commit's trips, not SQLite's work, set how long it took, and how long the
        single POSTs waiting for it waited. The acceptance rules hold the interpreter's lock wherever they run.

        The same transaction as :meth:`_accept_groups` (the write lock from ``BEGIN`` to ``COMMIT``), for what it
        can do on the driver alone: groups that refer only to rows :func:`ledger.store.repo.load_here` reads, once
        the registrar is known, none already in the log (a duplicate's signer needs one more read), and that change
        only custody rows. Anything else, and any failure, gives None with nothing written (the pool rolls the
        transaction back), and the groups go through :meth:`_isolated`, which meets the problem again and reports
        it (or gets past it alone); but a database still locked past the timeouts (:class:`Overloaded`, SQLite's
        busy timeout) fails the groups as :meth:`_isolated` would, rather than being waited for twice."""
        if self._engine.dialect.name != "sqlite" or not self._registrar_known:
            return None
        refs, event_ids = _wanted(groups)
        if any(ids for name, ids in refs.items() if name not in repo.ROW_REFERENCES):
            return None
        clock = self.stages
        started = time.perf_counter()
        ws = WorkingSet(next_index=0, registrar_exists=True, log_key=self.log_key)
        for group in groups:
            ws.credit_limits.update(group.credit_limits)
            ws.credit_errors.update(group.credit_errors)
        public_keys = {key_id(self.log_key): self.log_key} if self.log_key is not None else {}
        # seconds per stage, added to the clock back on the event loop's thread
        took: dict[str, float] = {}
        abandoned = threading.Event()
        """Set when the commit task is cancelled (the server stops) while the trip waits or runs: a trip that has
        not started writing then writes nothing (its callers were told the commit was cancelled)."""

        def commit(connection: sqlite3.Connection) -> list[list[tuple[int, SubmitResult]]] | None:
            if abandoned.is_set():
                return None  # not even BEGIN
            began = time.perf_counter()
            ws.next_index = repo.load_here(ws, connection, dialect, refs, event_ids, begin="BEGIN IMMEDIATE")
            if ws.known_signers:
                return None  # a duplicate: acknowledged only to its signer, whose key this did not read
            loaded = time.perf_counter()
            outcomes = self._accept_all(ws, groups, public_keys)
            accepted = time.perf_counter()
            if ws.pending() - set(HOT) or abandoned.is_set():
                return None
            if ws.events:
                repo.write_here(connection, dialect, repo.hot_rows(ws), commit=True)
            else:
                connection.execute("ROLLBACK")  # nothing to write: duplicates and refusals
            took.update(load=loaded - began, accept=accepted - loaded, flush=time.perf_counter() - accepted)
            return outcomes

        try:
            async with driver_transaction(self._engine) as (conn, answered):
                dialect = conn.dialect
                raw = await driver(conn)
                started = clock.add("lock", started)
                try:
                    outcomes = await lite.on_driver_thread(raw, commit)
                except Exception:
                    answered()
                    raise
                except BaseException:
                    abandoned.set()  # and the pool rolls back behind the unanswered trip
                    raise
                answered()
        except Overloaded:
            raise  # waited its turn in line for as long as a writer may: the same transaction would wait again
        except sa_exc.OperationalError as error:
            if _busy(error):
                raise  # SQLite's busy timeout ran out: the same transaction again would wait as long again
            return None
        except Exception:
            return None
        if outcomes is None:
            return None
        for stage, seconds in took.items():
            clock.add(stage, time.perf_counter() - seconds)
        if ws.events and self.on_commit is not None:
            self.on_commit()
        return outcomes

    async def _isolated(self, groups: list[_Group]) -> list[list[tuple[int, SubmitResult]]]:
        """Commit the groups together; if the database refuses the transaction, nothing of it was written, so
        retry each group alone, and a group that still fails one envelope at a time (in order, so later envelopes
        may still build on earlier ones): only the offender is refused, and every other submission gets exactly
        the outcome it would have had alone."""
        try:
            return await self._accept_groups(groups)
        except sa_exc.DBAPIError as error:
            if len(groups) > 1:
                outcomes: list[list[tuple[int, SubmitResult]]] = []
                for group in groups:
                    (each,) = await self._isolated([group])
                    group.settle(each)  # stored: answered even if a later group fails
                    outcomes.append(each)
                return outcomes
            (group,) = groups
            if len(group.prepared) == 1:
                if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
                    raise  # the database itself is in trouble, not this envelope
                position, item = group.prepared[0]
                refused = StorageRefused(
                    f"the database refused event {item.event_id}: {_first_line(error)}; nothing was stored"
                )
                return [[(position, SubmitResult("rejected", item.event_id, error=refused))]]
            outcome: list[tuple[int, SubmitResult]] = []
            for one in group.prepared:
                alone = dataclasses.replace(
                    group,
                    prepared=[one],
                    done=asyncio.get_running_loop().create_future(),
                    refs=_references([one]),
                )
                outcome += (await self._isolated([alone]))[0]
            return [outcome]

    async def _accept_groups(self, groups: list[_Group]) -> list[list[tuple[int, SubmitResult]]]:
        """Accept and write the groups in one transaction that holds the sequencer's lock throughout."""
        clock = self.stages
        started = time.perf_counter()
        refs, event_ids = _wanted(groups)
        async with write_transaction(self._engine) as conn:
            # SQLite holds its write lock from BEGIN: the size is read with the rows, in the same statement
            sized_by_load = conn.dialect.name == "sqlite"
            size = 0 if sized_by_load else await repo.lock_sequencer(conn)
            if not self._registrar_known:
                self._registrar_known = await repo.registrar_exists(conn)
            ws = WorkingSet(next_index=size, registrar_exists=self._registrar_known, log_key=self.log_key)
            for group in groups:
                ws.credit_limits.update(group.credit_limits)
                ws.credit_errors.update(group.credit_errors)
            started = clock.add("lock", started)
            loaded_size = await repo.load(ws, conn, refs, event_ids, with_size=sized_by_load)
            if loaded_size is not None:
                ws.next_index = loaded_size
            public_keys = await self._duplicate_keys(ws, conn, event_ids)
            started = clock.add("load", started)
            outcomes = self._accept_all(ws, groups, public_keys)
            started = clock.add("accept", started)
            await repo.flush(ws, conn)
            started = clock.add("flush", started)
        clock.add("commit", started)
        self._registrar_known = ws.registrar_exists
        if ws.events and self.on_commit is not None:
            self.on_commit()
        return outcomes

    async def _duplicate_keys(
        self, ws: WorkingSet, conn: AsyncConnection, event_ids: set[str]
    ) -> dict[str, bytes]:
        """The public keys that signed those of the groups' events already in the log (a duplicate is
        acknowledged only to its own signer), and the ledger's log key."""
        duplicates = {ws.known_signers[i][1] for i in event_ids if i in ws.known_signers}
        public_keys = {kid: raw for kid, (_, raw) in (await repo.public_keys(conn, duplicates)).items()}
        if self.log_key is not None:
            public_keys[key_id(self.log_key)] = self.log_key
        return public_keys

    def _accept_all(
        self, ws: WorkingSet, groups: list[_Group], public_keys: dict[str, bytes]
    ) -> list[list[tuple[int, SubmitResult]]]:
        """Every envelope of the groups, in order, through the acceptance rules against ``ws``: each outcome."""
        now = self._clock()
        outcomes: list[list[tuple[int, SubmitResult]]] = []
        for group in groups:
            out: list[tuple[int, SubmitResult]] = []
            for position, item in group.prepared:
                existing = ws.known_event_ids.get(item.event_id)
                if existing is not None:
                    try:
                        check_duplicate(ws, item, group.submitter, public_keys)
                    except LedgerError as error:
                        out.append((position, SubmitResult("rejected", item.event_id, error=error)))
                    else:
                        out.append((position, SubmitResult("duplicate", item.event_id, existing)))
                    continue
                try:
                    accepted = accept(
                        ws,
                        item,
                        submitter=group.submitter,
                        now=now,
                        clock_skew=self._clock_skew,
                        verified=group.verified,
                        max_backdate=self.max_backdate,
                    )
                except LedgerError as error:
                    out.append((position, SubmitResult("rejected", item.event_id, error=error)))
                else:
                    out.append((position, SubmitResult("accepted", item.event_id, accepted.log_index)))
            outcomes.append(out)
        return outcomes


def _resolve(future: asyncio.Future[None], _: object) -> None:
    if not future.done():
        future.set_result(None)


def _answer_when_written(
    groups: list[_Group], outcomes: list[list[tuple[int, SubmitResult]]], writing: asyncio.Future[bool]
) -> None:
    """A guarded write's done callback: once it wrote (True), its groups have their outcomes."""
    if not writing.cancelled() and writing.exception() is None and writing.result():
        _settle(groups, outcomes)


def _settle(groups: list[_Group], outcomes: list[list[tuple[int, SubmitResult]]]) -> None:
    for group, outcome in zip(groups, outcomes, strict=True):
        group.settle(outcome)


def _written(ws: WorkingSet) -> None:
    """Forget the custody rows ``ws`` holds as pending (:data:`HOT`): they are on their way to the database, and
    what the working set holds of them is as they will be stored."""
    for name in HOT:  # new containers: the rows taken for the write in flight keep theirs
        setattr(ws, name, type(getattr(ws, name))())


def _may_follow(groups: list[_Group]) -> bool:
    """Whether the groups refer only to rows one statement reads (:data:`ledger.store.repo.ROW_REFERENCES`), the
    rows a write in flight leaves as the working set holds them: the others (claims' creations, origin facts)
    are read from tables a custody write changes."""
    return all(name in repo.ROW_REFERENCES or not ids for group in groups for name, ids in group.refs.items())


def _claims(staged: _Staged) -> bool:
    return any(isinstance(item.event, ev.Claim) for _, item in staged.prepared)


async def _autocommit(connections: contextlib.AsyncExitStack, engine: AsyncEngine) -> AsyncConnection:
    """A connection of ``engine`` outside any transaction (each statement commits by itself), returned to the pool
    when ``connections`` closes."""
    conn = await connections.enter_async_context(engine.connect())
    return await conn.execution_options(isolation_level="AUTOCOMMIT")


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark a future's outcome as seen: its failure is answered (or no longer wanted) elsewhere (a staging task, a
    queued chunk nobody waits for any more, a write whose groups fail with the error that ended the commit)."""
    if not task.cancelled():
        task.exception()


def _busy(error: sa_exc.OperationalError) -> bool:
    """Whether SQLite refused for its lock (``database is locked``/``busy``), not for the statement."""
    message = str(getattr(error, "orig", None) or error).lower()
    return "locked" in message or "busy" in message


def _first_line(error: BaseException) -> str:
    """The driver's own message, first line only (no SQL, no parameters)."""
    original = getattr(error, "orig", None) or error
    return (str(original).strip().splitlines() or [type(original).__name__])[0][:300]


async def _caught_up() -> None:
    """Yield to the event loop until one of its turns is quick (:data:`QUIET_TURN_SECONDS`), at most
    :data:`CATCH_UP_TURNS` turns: before a SQLite commit's trip to aiosqlite's thread.

    That thread lets go of the GIL for each statement it runs (``BEGIN``, the load, the writes, ``COMMIT``) and must
    take it back from the event loop's thread after each. An event loop working through a burst of requests keeps
    the GIL until the interpreter's switch interval (5 ms) makes it let go, so a trip started amid a burst waited
    about a millisecond per statement: a group's commit took 8 ms, of it 3 ms of work, and single POSTs waited on
    it. Started once the loop has worked through what was ready, the trip runs while the loop waits for the next
    requests with the GIL let go: the commit 3 ms, POSTs/s at concurrency 64 up 10-15 %. At concurrency 1 the
    first turn is quick (tens of microseconds). Not on PostgreSQL, whose commits run on the event loop itself."""
    for _ in range(CATCH_UP_TURNS):
        started = time.perf_counter()
        await asyncio.sleep(0)
        if time.perf_counter() - started < QUIET_TURN_SECONDS:
            return


CATCH_UP_TURNS = 8
"""Most turns of the event loop a SQLite commit lets go by before its trip (see :func:`_caught_up`)."""

QUIET_TURN_SECONDS = 0.0001
"""A turn of the event loop this short had next to nothing to do: the loop has caught up (see :func:`_caught_up`)."""

PREVERIFY_MIN = 8
"""Below this many envelopes a submission is small: with worker processes it is prepared in one of them together
with the other small submissions of its turn of the event loop (see :meth:`Submitter._stage_in_workers`), else its
signatures are left to acceptance (a thread's round trip each would cost the event loop more than it saves)."""

KEY_CACHE_ENTRIES = 100_000
"""Most registered keys a submitter remembers; beyond, it forgets them all and reads again."""

CHAIN_ROWS = 50_000
"""Most event ids and batches a working set carried from write to write may hold (:meth:`Submitter._ahead`): under
steady load the commit task could otherwise go on checking groups on top of writes, and the working set grow,
for as long as the load lasts. Past it, the next groups start afresh."""

AHEAD_PAUSE_SECONDS = 1.0
"""After another process sequenced events between a group's read and its write, how long commits take the
sequencer's lock first (see :meth:`Submitter._ahead`)."""

STAGED_AHEAD = 4
"""Chunks of a large submission staged at once (:meth:`Submitter._pipelined`; 4 is a whole default batch).
Staged one after another, a worker process that answered its half of a chunk waited for the other half before it
got its next call (5-8 ms of each chunk's 17 under load), and the commits waited for the staging; with the next
chunks' halves waiting in the pool (:meth:`ledger.services.workers.WorkerPool.submit`) the workers stay busy."""

PIPELINE_CHUNK = 250
"""Envelopes per chunk of a large submission (see :meth:`Submitter._pipelined`): small enough that checking one
chunk's signatures overlaps a good part of the submission, large enough that a commit's fixed cost (a WAL flush)
stays small per event."""

STAGE_IN_WORKERS_MIN = 32
"""Fewest envelopes prepared in the worker processes rather than on the event loop (see
:meth:`Submitter._stage_in_workers`): below it the trip costs about what it saves."""


@dataclass
class _Staged:
    """A chunk after the work that needs no lock: its prepared envelopes with their positions in the submission,
    the ones refused already, and the signatures already checked."""

    prepared: list[tuple[int, Prepared]] = field(default_factory=list)
    refused: list[tuple[int, SubmitResult]] = field(default_factory=list)
    verified: frozenset[Verified] = frozenset()
    refs: dict[str, set[str]] = field(default_factory=dict)
    """The ids the prepared envelopes refer to, by table (worked out here, not on the way to the commit)."""

    def prepare(self, position: int, envelope: Envelope) -> bool:
        """:func:`prepare` the envelope at ``position`` of the submission: prepared (True), or refused saying
        why."""
        try:
            self.prepared.append((position, prepare(envelope)))
        except LedgerError as error:
            self.refused.append((position, SubmitResult("rejected", error=error)))
            return False
        return True


@dataclass
class _Group:
    """One caller's envelopes waiting for the next commit."""

    prepared: list[tuple[int, Prepared]]
    submitter: str | None
    verified: frozenset[Verified]
    done: asyncio.Future[list[tuple[int, SubmitResult]]]
    credit_limits: dict[CreditKey, Fraction] = field(default_factory=dict)
    credit_errors: dict[CreditKey, LedgerError] = field(default_factory=dict)
    refs: dict[str, set[str]] = field(default_factory=dict)
    """The ids the group's events refer to, by table (worked out before the write lock is taken)."""
    queued: float = 0.0
    """When the group joined the queue (``time.perf_counter()``)."""
    after: _Group | None = field(default=None, repr=False, compare=False)
    """The group of the same submission just before this one (a large submission's previous chunk): if it failed,
    this one is not committed (see :meth:`Submitter._take`). Let go once this one is settled."""
    settled: bool = False
    """Whether the commit task is done with the group (its caller may have stopped waiting before)."""
    failed: bool = False
    """Whether the group was settled with an error: not stored."""

    def settle(self, outcome: list[tuple[int, SubmitResult]]) -> None:
        if self.settled:
            return
        self.settled, self.after = True, None
        if not self.done.done():  # its caller went away (cancelled)
            self.done.set_result(outcome)

    def fail(self, error: BaseException) -> None:
        if self.settled:
            return
        self.settled, self.failed, self.after = True, True, None
        if not self.done.done():
            self.done.set_exception(error)


def _wanted(groups: list[_Group]) -> tuple[dict[str, set[str]], set[str]]:
    """The ids the groups' events refer to, by table, and the groups' own event ids (already in the log?)."""
    refs: dict[str, set[str]] = {table: set() for table in REFERENCE_TABLES}
    event_ids: set[str] = set()
    for group in groups:
        merge_references(refs, group.refs)
        event_ids.update(item.event_id for _, item in group.prepared)
    return refs, event_ids


def _references(prepared: list[tuple[int, Prepared]]) -> dict[str, set[str]]:
    refs: dict[str, set[str]] = {}
    for _, item in prepared:
        add_references(refs, item)
    return refs


CreditKey = tuple[str, str, str]
"""(facility, profile, period)."""
