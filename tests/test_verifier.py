"""Pre-lock signature checks in worker processes (a server's default) agree with the threads' and with libsodium:
good signatures are reported, a forged one and one by the wrong key are not."""

from __future__ import annotations

import os

from ledger.domain.dsse import PAYLOAD_TYPE, pae
from ledger.domain.keys import SigningKey
from ledger.services.verifier import Verifier, verify_many


def _jobs() -> tuple[list[tuple[str, str, bytes, bytes, bytes]], set[tuple[str, str]]]:
    key, other = SigningKey.generate(), SigningKey.generate()
    jobs = []
    good: set[tuple[str, str]] = set()
    for i in range(40):
        message = pae(PAYLOAD_TYPE, os.urandom(300))
        signature = bytearray(key.sign(message))
        if i % 10 == 3:
            signature[5] ^= 1  # forged
        elif i % 10 == 7:
            signature = bytearray(other.sign(message))  # signed by another key than the one named
        else:
            good.add((f"event-{i}", key.key_id))
        jobs.append((f"event-{i}", key.key_id, key.public_key, message, bytes(signature)))
    return jobs, good


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


async def test_small_submissions_of_one_turn_of_the_event_loop_share_a_worker_process() -> None:
    """Single-event submissions arriving together are checked in one trip to a worker process: each caller gets
    the answer for every job gathered in that turn (so its own among them); fewer than GATHER_MIN jobs, or no
    worker processes, are left to acceptance (an empty answer)."""
    import asyncio

    from ledger.services.verifier import GATHER_MIN

    jobs, good = _jobs()
    verifier = Verifier(1)
    assert await verifier.verify_gathered(jobs[:1]) == frozenset()  # not started: nothing checked here
    await verifier.start()
    try:
        answers = await asyncio.gather(*(verifier.verify_gathered([job]) for job in jobs))
        assert all(answer == good for answer in answers)  # one shared trip: everyone sees all 32 good ones
        few = await asyncio.gather(*(verifier.verify_gathered([job]) for job in jobs[: GATHER_MIN - 1]))
        assert all(answer == frozenset() for answer in few)
        assert await verifier.verify_gathered([]) == frozenset()
        later = await verifier.verify_gathered(jobs[:GATHER_MIN])  # a new turn gathers afresh
        assert later == {(event, kid) for event, kid, *_ in jobs[:GATHER_MIN]} & good
    finally:
        verifier.close()


async def test_a_broken_worker_pool_leaves_the_checks_to_acceptance() -> None:
    """If the worker process cannot answer, the gathered callers get an empty answer, not an error: acceptance
    then verifies every signature itself, so nothing is accepted unchecked and nothing fails for it."""
    import asyncio
    from concurrent.futures import ProcessPoolExecutor

    jobs, good = _jobs()
    verifier = Verifier(1)
    await verifier.start()
    pool = verifier._pool
    assert isinstance(pool, ProcessPoolExecutor)
    pool.shutdown(wait=True)  # submitting to it now raises
    try:
        answers = await asyncio.gather(*(verifier.verify_gathered([job]) for job in jobs[:10]))
        assert answers == [frozenset()] * 10
        assert not verifier.has_processes  # given up for good: later checks go straight to threads
        assert await verifier.verify(jobs) == good  # a large submission: checked on threads instead
    finally:
        verifier.close()


async def test_a_killed_worker_process_sends_the_checks_to_threads() -> None:
    """kill -9 of a worker breaks the pool for good; a large submission's signatures are then checked on threads
    (the right answer, no error), and so are all later ones."""
    import signal

    jobs, good = _jobs()
    verifier = Verifier(1)
    await verifier.start()
    pool = verifier._pool
    assert pool is not None
    try:
        (worker,) = pool._processes.values()
        os.kill(worker.pid, signal.SIGKILL)
        worker.join()
        assert await verifier.verify(jobs) == good
        assert not verifier.has_processes
        assert await verifier.verify(jobs) == good
    finally:
        verifier.close()
