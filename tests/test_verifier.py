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
