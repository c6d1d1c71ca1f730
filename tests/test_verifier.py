"""Pre-lock signature checks in worker processes (a server's default) agree with the threads' and with libsodium:
good signatures are reported, a forged one and one by the wrong key are not."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from ledger.client import envelope_for, sign_envelope
from ledger.domain.accept import prepare
from ledger.domain.dsse import PAYLOAD_TYPE, Envelope, Signature, pae
from ledger.domain.keys import SigningKey
from ledger.errors import LedgerError
from ledger.services.verifier import SignatureJob, Verified, Verifier, prepare_many, verify_many
from ledger.services.workers import WorkerPool


def _jobs() -> tuple[list[SignatureJob], set[Verified]]:
    key, other = SigningKey.generate(), SigningKey.generate()
    jobs: list[SignatureJob] = []
    good: set[Verified] = set()
    for i in range(40):
        message = pae(PAYLOAD_TYPE, os.urandom(300))
        signature = bytearray(key.sign(message))
        if i % 10 == 3:
            signature[5] ^= 1  # forged
        elif i % 10 == 7:
            signature = bytearray(other.sign(message))  # signed by another key than the one named
        sig = base64.b64encode(bytes(signature)).decode()
        if i % 10 not in (3, 7):
            good.add((f"event-{i}", key.key_id, sig))
        jobs.append((f"event-{i}", key.key_id, sig, key.public_key, message, bytes(signature)))
    return jobs, good


async def _one_worker() -> tuple[Verifier, WorkerPool]:
    """A verifier with one started worker process, and its pool."""
    verifier = Verifier(1)
    await verifier.start()
    assert isinstance(verifier._pool, WorkerPool)
    return verifier, verifier._pool


async def test_worker_processes_and_threads_find_the_same_good_signatures() -> None:
    jobs, good = _jobs()
    assert verify_many(jobs) == good  # 40 signatures, 4 forged and 4 by another key: 32 good
    assert len(good) == 32
    threads = Verifier(0)
    await threads.start()  # no processes asked: stays on threads
    assert await threads.verify(jobs) == good
    processes = Verifier(2)
    await processes.start()
    try:
        assert processes._pool is not None  # the pool is up and warm
        assert await processes.verify(jobs) == good
        assert await processes.verify([]) == frozenset()
    finally:
        processes.close()
    assert processes._pool is None
    assert await processes.verify(jobs) == good  # closed: back on threads


def _extracts(chain: Any, prefix: str, count: int) -> list[Envelope]:
    return [envelope_for(chain.extract(f"{prefix}-{i}", 1_000), chain.miner.key) for i in range(count)]


async def test_small_submissions_of_one_turn_of_the_event_loop_share_a_worker_process(
    chain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Single-event submissions arriving together are prepared in one trip to a worker process, and each caller
    gets what prepare_many gives for its own envelopes; fewer than GATHER_MIN envelopes in all, or no worker
    processes, are left to the callers (None); a caller that goes away leaves the others' answers alone."""
    import asyncio

    from ledger.services.verifier import GATHER_MIN

    keys = {chain.miner.key.key_id: (chain.miner.id, chain.miner.key.public_key)}
    envelopes = _extracts(chain, "gathered", 12)
    submissions = [envelopes[0:1], envelopes[1:2], envelopes[2:5], envelopes[5:6], envelopes[6:12]]
    verifier = Verifier(1)
    assert await verifier.prepare_gathered(envelopes[:1], keys) is None  # not started: the caller prepares
    await verifier.start()
    pool = verifier._pool
    assert pool is not None
    trips: list[int] = []
    submit = pool.submit

    def counted(fn: Any, *args: Any, **options: Any) -> Any:
        trips.append(len(args[0]))  # the submissions in this trip
        return submit(fn, *args, **options)

    monkeypatch.setattr(pool, "submit", counted)
    try:
        answers = await asyncio.gather(*(verifier.prepare_gathered(s, keys) for s in submissions))
        assert answers == [prepare_many(s, keys) for s in submissions]  # each its own ...
        assert trips == [5]  # ... all in one trip
        few = await asyncio.gather(
            *(verifier.prepare_gathered([e], keys) for e in envelopes[: GATHER_MIN - 1])
        )
        assert few == [None] * (GATHER_MIN - 1)
        assert await verifier.prepare_gathered([], keys) is None
        cancelled = asyncio.ensure_future(verifier.prepare_gathered(envelopes[:1], keys))
        rest = asyncio.gather(*(verifier.prepare_gathered([e], keys) for e in envelopes[1:GATHER_MIN]))
        await asyncio.sleep(0)  # every caller has joined this turn's trip
        cancelled.cancel()
        assert await rest == [prepare_many([e], keys) for e in envelopes[1:GATHER_MIN]]
        assert cancelled.cancelled() and trips == [5, GATHER_MIN]
    finally:
        verifier.close()


async def test_a_burst_of_small_submissions_leaves_in_trips_of_gather_ship_envelopes(
    chain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn of the event loop that gathers more than GATHER_SHIP envelopes sends a trip each time GATHER_SHIP are
    in, before the turn ends, and the rest at its end; every caller still gets its own answer."""
    import asyncio

    from ledger.services import verifier as verifier_module

    monkeypatch.setattr(verifier_module, "GATHER_SHIP", 5)
    keys = {chain.miner.key.key_id: (chain.miner.id, chain.miner.key.public_key)}
    envelopes = _extracts(chain, "burst", 14)
    # 1 + 1 + 3 = 5 envelopes: the first trip leaves with the third caller; 1 + 4 = 5: the second with the fifth;
    # the last 2 + 2 = 4 (GATHER_MIN) leave when the turn ends
    submissions = [envelopes[0:1], envelopes[1:2], envelopes[2:5], envelopes[5:6], envelopes[6:10]]
    submissions += [envelopes[10:12], envelopes[12:14]]
    verifier, pool = await _one_worker()
    trips: list[tuple[int, int]] = []  # (submissions, envelopes) per trip
    submit = pool.submit

    def counted(fn: Any, *args: Any, **options: Any) -> Any:
        trips.append((len(args[0]), sum(len(s) for s in args[0])))
        return submit(fn, *args, **options)

    monkeypatch.setattr(pool, "submit", counted)
    try:
        answers = await asyncio.gather(*(verifier.prepare_gathered(s, keys) for s in submissions))
        assert answers == [prepare_many(s, keys) for s in submissions]
        assert trips == [(3, 5), (2, 5), (2, 4)]
        assert verifier._gathering is None  # the turn's end found the early trips gone, and sent the last
    finally:
        verifier.close()


async def test_a_broken_worker_pool_leaves_the_work_to_the_callers(chain: Any) -> None:
    """If the worker process cannot answer, the gathered callers get None, not an error: they prepare their
    envelopes themselves and acceptance verifies every signature, so nothing is accepted unchecked and nothing
    fails for it."""
    import asyncio

    keys = {chain.miner.key.key_id: (chain.miner.id, chain.miner.key.public_key)}
    envelopes = _extracts(chain, "broken", 10)
    jobs, good = _jobs()
    verifier, pool = await _one_worker()
    pool.shutdown()  # submitting to it now raises
    try:
        answers = await asyncio.gather(*(verifier.prepare_gathered([e], keys) for e in envelopes))
        assert answers == [None] * 10
        assert not verifier.has_processes  # given up for good: later checks go straight to threads
        assert await verifier.verify(jobs) == good  # a large submission: checked on threads instead
    finally:
        verifier.close()


async def test_gathered_callers_are_answered_even_if_giving_up_the_pool_fails(
    chain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callers are answered before the verifier gives the pool up, so that nothing going wrong there (a
    shutdown that raises) leaves one of them waiting for ever."""
    import asyncio

    keys = {chain.miner.key.key_id: (chain.miner.id, chain.miner.key.public_key)}
    envelopes = _extracts(chain, "lost", 6)
    verifier, pool = await _one_worker()
    pool.shutdown()

    def lost(_pool: Any) -> None:
        raise RuntimeError("could not shut the pool down")

    monkeypatch.setattr(verifier, "_lost", lost)
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)  # the error above, logged
    try:
        answers = await asyncio.wait_for(
            asyncio.gather(*(verifier.prepare_gathered([e], keys) for e in envelopes)), 10
        )
        assert answers == [None] * 6
    finally:
        verifier._pool = None
        asyncio.get_running_loop().set_exception_handler(None)


async def test_a_killed_worker_process_sends_the_checks_to_threads() -> None:
    """kill -9 of a worker breaks the pool for good; a large submission's signatures are then checked on threads
    (the right answer, no error), and so are all later ones."""
    import signal

    jobs, good = _jobs()
    verifier, pool = await _one_worker()
    try:
        (worker,) = pool.processes
        os.kill(worker.pid, signal.SIGKILL)
        worker.join()
        assert await verifier.verify(jobs) == good
        assert not verifier.has_processes
        assert await verifier.verify(jobs) == good
    finally:
        verifier.close()


def _mixed_envelopes(chain: Any) -> tuple[list[Envelope], list[str | None]]:
    """40 envelopes by the miner and the outcome each must have, in order: mostly good, with one of each fault
    that preparing or pre-checking knows (None: accepted)."""
    key = chain.miner.key
    envelopes: list[Envelope] = []
    expected: list[str | None] = []
    for i in range(40):
        good = envelope_for(chain.extract(f"staged-{i}", 1_000), key)
        match i:
            case 5:  # another payload type
                envelopes.append(msgspec.structs.replace(good, payloadType="text/plain"))
                expected.append("invalid-input")
            case 11:  # no signature
                envelopes.append(msgspec.structs.replace(good, signatures=[]))
                expected.append("invalid-input")
            case 17:  # a payload that is not canonical JSON (a space after the first brace)
                payload = b"{ " + base64.b64decode(good.payload)[1:]
                envelopes.append(sign_envelope(payload, key))
                expected.append("non-canonical-payload")
            case 23:  # forged: one bit of the signature flipped
                raw = bytearray(base64.b64decode(good.signatures[0].sig))
                raw[7] ^= 1
                forged = Signature(keyid=good.signatures[0].keyid, sig=base64.b64encode(bytes(raw)).decode())
                envelopes.append(msgspec.structs.replace(good, signatures=[forged]))
                expected.append("bad-signature")
            case _:
                envelopes.append(good)
                expected.append(None)
    return envelopes, expected


async def test_worker_processes_prepare_exactly_as_the_event_loop_does(chain: Any) -> None:
    """prepare_many, which a worker process runs for a chunk of a large submission, agrees with prepare and the
    signature check done in process: the same parts for every envelope that prepares, None for each that does not
    (the caller prepares it again to name the error), a verified key id exactly where the signature is good, and
    what the prepared envelopes refer to."""
    envelopes, expected = _mixed_envelopes(chain)
    keys = {chain.miner.key.key_id: (chain.miner.id, chain.miner.key.public_key)}
    parts, refs = prepare_many(envelopes, keys)
    # 40 extracts of batches staged-0 .. staged-39 at the miner's mine, signed by the miner's key; the three that
    # do not prepare (5: payload type, 11: no signature, 17: not canonical) refer to nothing, the forged one (23)
    # does: the acceptance rules refuse it later, with the rows loaded
    assert refs == {
        "participants": {chain.miner.id},
        "facilities": {chain.mine},
        "keys": {chain.miner.key.key_id},
        "batches": {f"staged-{i}" for i in range(40) if i not in (5, 11, 17)},
        "attestations": set(),
        "events": set(),
    }
    for envelope, part, outcome in zip(envelopes, parts, expected, strict=True):
        if outcome in ("invalid-input", "non-canonical-payload"):
            assert part is None
            with pytest.raises(LedgerError):
                prepare(envelope)
            continue
        assert part is not None
        item = prepare(envelope)
        assert part[:4] == (item.payload, item.event, item.event_id, item.kind)
        good = (item.event_id, chain.miner.key.key_id, envelope.signatures[0].sig)
        assert part[4] == (None if outcome == "bad-signature" else good)
    assert prepare_many(envelopes, {}) == (
        [None if p is None else (*p[:4], None) for p in parts],
        refs,
    )  # no registered key: nothing verified ahead


@contextlib.asynccontextmanager
async def _with_worker_processes(
    chain: Any, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Any, list[Envelope]]]:
    """The test world's submitter with two started worker processes (as a server has), and the list of the envelopes
    it prepares in process from then on."""
    from ledger.services import submit

    in_process: list[Envelope] = []

    def counted(envelope: Envelope) -> Any:
        in_process.append(envelope)
        return prepare(envelope)

    monkeypatch.setattr(submit, "prepare", counted)
    submitter = chain.world.services.submitter
    verifier = Verifier(2)
    await verifier.start()
    threads, submitter.verifier = submitter.verifier, verifier
    try:
        yield submitter, in_process
    finally:
        submitter.verifier = threads
        verifier.close()


async def test_a_submission_prepared_in_worker_processes_has_the_in_process_outcomes(
    chain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With worker processes started (as a server does), a chunk of at least STAGE_IN_WORKERS_MIN envelopes is
    decoded and checked there: the outcomes, errors included, are those of the same envelopes one at a time."""
    from ledger.services.submit import STAGE_IN_WORKERS_MIN

    envelopes, expected = _mixed_envelopes(chain)
    assert len(envelopes) >= STAGE_IN_WORKERS_MIN
    async with _with_worker_processes(chain, monkeypatch) as (submitter, in_process):
        staged = await submitter._stage(envelopes, 0)
        assert len(staged.prepared) == 37 and len(staged.verified) == 36  # 3 refused, 1 forged
        assert in_process == [
            envelopes[5],
            envelopes[11],
            envelopes[17],
        ]  # only the refused, to name the error
        results = await submitter.submit(envelopes, submitter=chain.miner.id)
    outcomes = [None if r.status == "accepted" else r.error.code if r.error else r.status for r in results]
    assert outcomes == expected
    again = await submitter.submit(envelopes[:3], submitter=chain.miner.id)  # in process now: duplicates
    assert [r.status for r in again] == ["duplicate"] * 3


async def test_single_submissions_prepared_together_in_a_worker_process_have_the_in_process_outcomes(
    chain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With worker processes started, concurrent single-envelope submissions are prepared together in one of them
    (the event loop prepares again only the refused, to name the error): each outcome, errors included, is the one
    the envelope has on its own."""
    import asyncio

    envelopes, expected = _mixed_envelopes(chain)
    async with _with_worker_processes(chain, monkeypatch) as (submitter, in_process):
        warm = envelope_for(chain.extract("single-warm-up", 1_000), chain.miner.key)
        assert [r.status for r in await submitter.submit([warm], chain.miner.id)] == ["accepted"]
        in_process.clear()  # the warm-up, alone in its turn, was prepared here
        answers = await asyncio.gather(*(submitter.submit([e], submitter=chain.miner.id) for e in envelopes))
    # only the refused, to name the error (in the order the workers' answers came back: trips of GATHER_SHIP
    # envelopes go to both workers at once)
    assert sorted(envelopes.index(e) for e in in_process) == [5, 11, 17]
    outcomes = [None if r.status == "accepted" else r.error.code if r.error else r.status for (r,) in answers]
    assert outcomes == expected


async def test_small_submissions_that_cannot_be_sent_are_prepared_by_their_callers(
    chain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trip that cannot be sent (anything but a lost pool) answers every gathered caller None, and keeps the
    worker processes for the next turn."""
    import asyncio

    keys = {chain.miner.key.key_id: (chain.miner.id, chain.miner.key.public_key)}
    envelopes = _extracts(chain, "unsent", 6)
    verifier, pool = await _one_worker()

    def refuse(fn: Any, *args: Any) -> Any:
        raise TypeError("cannot pickle this")

    try:
        with monkeypatch.context() as patched:
            patched.setattr(pool, "submit", refuse)
            answers = await asyncio.gather(*(verifier.prepare_gathered([e], keys) for e in envelopes))
        assert answers == [None] * 6
        assert verifier.has_processes
        again = await asyncio.gather(*(verifier.prepare_gathered([e], keys) for e in envelopes))
        assert again == [prepare_many([e], keys) for e in envelopes]
    finally:
        verifier.close()


async def test_a_pool_shut_down_under_queued_work_hands_that_work_back() -> None:
    """Another caller that finds the pool broken shuts it down, cancelling what waits in its queue: the callers
    whose work was cancelled get the answer from threads, not a CancelledError (which, in a large submission's
    staging, would leave the request waiting for ever)."""
    import asyncio

    jobs, good = _jobs()
    verifier, pool = await _one_worker()
    try:
        # one worker: the first half runs, the second waits in the call queue, the other call's halves are pending
        calls = [asyncio.ensure_future(verifier.verify(jobs * 25)) for _ in range(2)]
        await asyncio.sleep(0.05)
        verifier._lost(pool)  # as a caller that met a BrokenProcessPool does
        assert await asyncio.gather(*calls) == [good, good]
        assert not verifier.has_processes
    finally:
        verifier.close()


@pytest.mark.parametrize("path", ["threads", "worker processes", "gathered single POSTs"])
async def test_a_forged_copy_of_an_envelope_is_not_accepted_on_the_strength_of_a_good_one(
    chain: Any, path: str
) -> None:
    """Two envelopes of one payload (one event id) by the same key, the first with a forged signature: checked
    together ahead of acceptance, the good one's check must not let the forged one through. Acceptance refuses the
    forged envelope and accepts the good one."""
    import asyncio

    submitter = chain.world.services.submitter
    good = envelope_for(chain.extract("forged-copy", 1_000), chain.miner.key)
    raw = bytearray(base64.b64decode(good.signatures[0].sig))
    raw[9] ^= 1
    forged = msgspec.structs.replace(
        good,
        signatures=[Signature(keyid=good.signatures[0].keyid, sig=base64.b64encode(bytes(raw)).decode())],
    )
    others = [envelope_for(chain.extract(f"forged-other-{i}", 1_000), chain.miner.key) for i in range(40)]
    warm = envelope_for(chain.extract("forged-warm-up", 1_000), chain.miner.key)
    verifier = Verifier(0 if path == "threads" else 2)
    await verifier.start()
    threads, submitter.verifier = submitter.verifier, verifier
    try:
        # the miner's key is looked up once and kept: concurrent single POSTs then reach the check in one turn
        assert [r.status for r in await submitter.submit([warm], submitter=chain.miner.id)] == ["accepted"]
        if path == "gathered single POSTs":  # their six checks travel to a worker process together
            answers = await asyncio.gather(
                *(submitter.submit([e], submitter=chain.miner.id) for e in [forged, good, *others[:4]])
            )
            results = [r for answer in answers for r in answer]
        else:  # one chunk: 42 envelopes (at least 8 are checked on threads, 32 in the worker processes)
            results = await submitter.submit([forged, good, *others], submitter=chain.miner.id)
    finally:
        submitter.verifier = threads
        verifier.close()
    assert results[0].status == "rejected" and results[0].error.code == "bad-signature"
    assert results[1].status == "accepted"
    assert all(r.status == "accepted" for r in results[2:])
