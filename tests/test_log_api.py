"""The transparency log through the API on both databases: integration, checkpoints, proofs, entries."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pytest
from pymerkle import InmemoryTree

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.log import merkle
from ledger.log.checkpoint import parse_verifier_key
from ledger.log.offline import VerificationError, open_signed_checkpoint, verify_consistency, verify_inclusion
from tests.support import T0, World

if TYPE_CHECKING:
    from ledger.services.log import TransparencyLog


async def _extracts(world: World, count: int, prefix: str = "b") -> list[str]:
    miner = await world.admit(f"miner-{prefix}", ["miner"], "CA")
    await world.facility(f"mine-{prefix}", miner, "mine", "CA")
    envelopes = [
        envelope_for(
            ev.Extract(
                actor=miner.id,
                timestamp=T0,
                facility=f"mine-{prefix}",
                batch=ev.NewBatch(id=f"{prefix}-{i}", mineral="nickel", form="ore", mass_g=1000 + i),
            ),
            miner.key,
        )
        for i in range(count)
    ]
    response = await world.batch(envelopes, miner)
    assert response.json()["accepted"] == count
    return [r["event_id"] for r in response.json()["results"]]


async def _vkey(world: World) -> str:
    response = await world.client.get("/v1/log/key")
    assert response.status_code == 200
    return response.text.strip()


async def test_checkpoint_and_inclusion_proofs_verify_offline(world: World) -> None:
    event_ids = await _extracts(world, 25)
    pending = await world.client.get("/v1/log/proofs/inclusion", params={"event_id": event_ids[-1]})
    assert pending.status_code == 409 and pending.headers["retry-after"] == "1"
    assert "covers only 0 entries" in pending.json()["detail"]
    assert (await world.client.get("/v1/log/checkpoint")).status_code == 404

    integrated = await world.services.log.integrate_all()
    size = await world.count_events()
    assert integrated == size == 25 + 3  # genesis, the miner, its mine, and 25 extracts

    note = (await world.client.get("/v1/log/checkpoint")).text  # public: no token
    vkey = await _vkey(world)
    checkpoint = open_signed_checkpoint(note, vkey)
    assert checkpoint.size == size and checkpoint.origin == world.services.settings.log_origin

    # an independent RFC 9162 implementation agrees on the root over the same leaves (the event digests)
    entries = (
        await world.client.get("/v1/log/entries", params={"start": 0}, headers=world.registrar.headers)
    ).json()
    assert [e["log_index"] for e in entries["entries"]] == list(range(size))
    reference = InmemoryTree(algorithm="sha256")
    for entry in entries["entries"]:
        reference.append_entry(bytes.fromhex(entry["event_id"].removeprefix("sha256:")))
    assert reference.get_root() == checkpoint.root_hash

    for event_id in [entries["entries"][0]["event_id"], *event_ids]:
        proof = (await world.client.get("/v1/log/proofs/inclusion", params={"event_id": event_id})).json()
        assert proof["tree_size"] == size and base64.b64decode(proof["root_hash"]) == checkpoint.root_hash
        verify_inclusion(checkpoint, proof)
        tampered = dict(proof, log_index=(proof["log_index"] + 1) % size)
        with pytest.raises(VerificationError):
            verify_inclusion(checkpoint, tampered)


async def test_consistency_between_checkpoints_and_history_of_checkpoints(world: World) -> None:
    await _extracts(world, 5, "a")
    await world.services.log.integrate_all()
    old_note = (await world.client.get("/v1/log/checkpoint")).text
    vkey = await _vkey(world)
    old = open_signed_checkpoint(old_note, vkey)
    await _extracts(world, 7, "b")
    await world.services.log.integrate_all()
    new = open_signed_checkpoint((await world.client.get("/v1/log/checkpoint")).text, vkey)
    assert new.size == old.size + 9

    proof = (
        await world.client.get("/v1/log/proofs/consistency", params={"first": old.size, "second": new.size})
    ).json()
    verify_consistency(old, new, proof)
    # the earlier checkpoint stays available, byte for byte
    assert (await world.client.get(f"/v1/log/checkpoints/{old.size}")).text == old_note
    listed = (await world.client.get("/v1/log/checkpoints")).json()
    assert [c["size"] for c in listed["items"]] == [old.size, new.size]
    # a proof for other sizes does not pass for these checkpoints
    other = (
        await world.client.get("/v1/log/proofs/consistency", params={"first": 1, "second": new.size})
    ).json()
    with pytest.raises(VerificationError, match="sizes"):
        verify_consistency(old, new, other)
    # asking beyond the tree is a clear 400
    beyond = await world.client.get("/v1/log/proofs/consistency", params={"first": 1, "second": new.size + 1})
    assert beyond.status_code == 400 and "beyond the integrated tree" in beyond.json()["detail"]
    backwards = await world.client.get("/v1/log/proofs/consistency", params={"first": 5, "second": 3})
    assert backwards.status_code == 400


async def test_proof_reads_are_one_round_trip_of_log_n_nodes(world: World) -> None:
    await _extracts(world, 40)
    await world.services.log.integrate_all()
    size = await world.count_events()
    wanted = merkle.inclusion_proof_nodes(17, size) + merkle.frontier_nodes(size)
    assert len(set(wanted)) <= 2 * size.bit_length()


async def test_unknown_event_and_bad_parameters(world: World) -> None:
    missing = await world.client.get("/v1/log/proofs/inclusion", params={"event_id": "sha256:" + "ab" * 32})
    assert missing.status_code == 404
    malformed = await world.client.get("/v1/log/proofs/inclusion", params={"event_id": "nope"})
    assert malformed.status_code == 400
    entries = await world.client.get("/v1/log/entries", params={"start": 0})
    assert entries.status_code == 401  # entries carry payloads: a token is needed
    bad_range = await world.client.get(
        "/v1/log/entries", params={"start": 5, "end": 2}, headers=world.registrar.headers
    )
    assert bad_range.status_code == 400


def test_vkey_round_trip() -> None:
    from ledger.domain.keys import SigningKey
    from ledger.services.log import LogSigner

    signer = LogSigner("example.org/log", SigningKey.generate())
    assert parse_verifier_key(signer.vkey) == ("example.org/log", signer.key.public_key)


def _stored_nodes(size: int) -> int:
    """Complete subtrees of a tree of ``size`` leaves, the rows ``merkle_nodes`` holds: ``size >> level`` at each
    level (for 13 leaves: 13 + 6 + 3 + 1 = 23)."""
    return sum(size >> level for level in range(size.bit_length()))


async def _node_rows(world: World) -> tuple[int, int]:
    from sqlalchemy import text

    async with world.services.engine.connect() as conn:
        rows, distinct = (
            await conn.execute(text("SELECT count(*), count(DISTINCT level || '/' || idx) FROM merkle_nodes"))
        ).one()
    return int(rows), int(distinct)


async def _round_with(log: TransparencyLog, meanwhile: Callable[[], Awaitable[None]]) -> int:
    """One integration round of ``log`` that runs ``meanwhile`` once, after the round has read and hashed its tree
    and just before its guard checks the checkpoint it is about to sign."""
    check = log.guard.check
    ran = False

    async def check_after_meanwhile(*args: object) -> None:
        nonlocal ran
        if not ran:
            ran = True
            await meanwhile()
        await check(*args)  # type: ignore[arg-type]

    log.guard.check = check_after_meanwhile  # type: ignore[method-assign,assignment]
    try:
        return await log.integrate_once()
    finally:
        log.guard.check = check  # type: ignore[method-assign]


async def test_a_commit_goes_through_while_an_integration_round_is_under_way(world: World) -> None:
    """An integration round does its reading, hashing, checking and signing outside any write transaction, so a
    commit made meanwhile is not held up (on SQLite a write transaction locks the whole database: while the round
    held one, the commit below waited out the busy timeout and failed). The round stores what it read; the next
    round takes the event committed meanwhile."""
    await _extracts(world, 10, "a")
    log = world.services.log
    admitted: list[str] = []

    async def commit_meanwhile() -> None:
        admitted.append((await world.admit("miner-other", ["miner"], "CA")).id)  # through the write path

    first = await _round_with(log, commit_meanwhile)
    assert admitted == ["miner-other"]
    assert first == 13  # genesis, miner-a, mine-a and 10 extracts: what the round read
    assert await log.integrate_all() == 1  # miner-other, admitted during the round
    assert await world.count_events() == 14
    assert await _node_rows(world) == (_stored_nodes(14), _stored_nodes(14))  # 14 + 7 + 3 + 1 = 25
    vkey = await _vkey(world)
    checkpoint = open_signed_checkpoint((await world.client.get("/v1/log/checkpoint")).text, vkey)
    assert checkpoint.size == 14
    listed = (await world.client.get("/v1/log/checkpoints")).json()
    assert [c["size"] for c in listed["items"]] == [13, 14]


async def test_two_integrators_at_once_store_one_tree(world: World, tmp_path: Path) -> None:
    """Another integrator (``ledger log integrate`` beside the server, with the same record of the last signed
    checkpoint) finishing a larger round while this one is half-way: one of them stores its round, the other stores
    nothing and refuses nothing (on SQLite this round finds, at its guard's check, a larger checkpoint recorded than
    the tree it read, and the tree moved since; on PostgreSQL the other cannot take the integrator's lock), and the
    tree, its nodes and the checkpoints are those of one integration: every node once, every checkpoint consistent
    with the last."""
    from ledger.services.log import TransparencyLog
    from ledger.services.log_guard import LogGuard

    event_ids = await _extracts(world, 10, "a")
    log = world.services.log
    log.guard = LogGuard(tmp_path / "last-checkpoint")
    other = TransparencyLog(world.services.engine, log.signer, guard=LogGuard(tmp_path / "last-checkpoint"))
    others: list[int] = []

    async def race() -> None:
        await world.admit("miner-other", ["miner"], "CA")  # the other round reads one entry more
        others.append(await other.integrate_once())

    mine = await _round_with(log, race)
    assert await world.count_events() == 14  # genesis, the miner, its mine, 10 extracts and miner-other
    if world.services.engine.dialect.name == "sqlite":
        assert (mine, others) == (0, [14])  # the other stored its round; this one, of 13, was superseded
        assert await log.integrate_all() == 0
        sizes = [14]
    else:
        assert (mine, others) == (13, [0])  # the other could not take the integrator's lock
        assert await log.integrate_all() == 1  # miner-other
        sizes = [13, 14]
    assert (log.guard.refusal, other.guard.refusal) == (None, None)
    assert await _node_rows(world) == (_stored_nodes(14), _stored_nodes(14))  # 14 + 7 + 3 + 1 = 25
    vkey = await _vkey(world)
    checkpoint = open_signed_checkpoint((await world.client.get("/v1/log/checkpoint")).text, vkey)
    assert checkpoint.size == 14
    listed = (await world.client.get("/v1/log/checkpoints")).json()
    assert [c["size"] for c in listed["items"]] == sizes
    proof = (await world.client.get("/v1/log/proofs/inclusion", params={"event_id": event_ids[-1]})).json()
    verify_inclusion(checkpoint, proof)


async def test_two_rounds_in_one_process_take_turns(world: World, tmp_path: Path) -> None:
    """The server's integrator and a bundle's wait for a checkpoint (both :meth:`integrate_once` in one process)
    take turns. Interleaved, the later-starting round could sign and record a larger checkpoint while the earlier
    one, still holding the smaller tree it read, had yet to check it against the guard: the guard then saw a smaller
    tree than it had just signed and stopped the log as rolled back."""
    from ledger.services.log_guard import LogGuard

    await _extracts(world, 10, "a")
    log = world.services.log
    log.guard = LogGuard(tmp_path / "last-checkpoint")

    class Watched(asyncio.Lock):
        """The rounds' lock, telling when a round waits for it."""

        def __init__(self) -> None:
            super().__init__()
            self.contended = asyncio.Event()

        async def acquire(self) -> Literal[True]:
            if self.locked():
                self.contended.set()
            return await super().acquire()

    turns = log._integrating = Watched()
    other: list[asyncio.Task[int]] = []

    async def second_round_meanwhile() -> None:
        await world.admit("miner-other", ["miner"], "CA")  # so that the second round reads a larger tree
        other.append(asyncio.create_task(log.integrate_once()))
        # the second round runs to its end, unless it waits for its turn
        waiting = asyncio.create_task(turns.contended.wait())
        await asyncio.wait([other[0], waiting], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()

    first = await _round_with(log, second_round_meanwhile)
    second = await other[0]
    assert (first, second) == (13, 1)  # genesis, miner-a, mine-a and 10 extracts; then miner-other
    assert log.guard.refusal is None
    last = log.guard.last()
    assert last is not None and last.size == 14
    listed = (await world.client.get("/v1/log/checkpoints")).json()
    assert [c["size"] for c in listed["items"]] == [13, 14]


async def test_an_integrator_that_recorded_but_has_not_committed_supersedes_quietly(
    world: World, tmp_path: Path
) -> None:
    """SQLite: another integrator records its larger checkpoint in the guard's file while it holds the write lock,
    before it commits. A round that checks its smaller tree in that moment finds the record larger than the tree
    as committed so far; it waits for the other's transaction to end before it decides, then stands down (the
    other's tree is now committed) instead of reporting a rollback."""
    from ledger.services.log import TransparencyLog
    from ledger.services.log_guard import LogGuard

    if world.services.engine.dialect.name != "sqlite":
        pytest.skip("on PostgreSQL one integrator at a time holds the lock for its whole round")
    await _extracts(world, 10, "a")
    log = world.services.log
    log.guard = LogGuard(tmp_path / "last-checkpoint")
    other = TransparencyLog(world.services.engine, log.signer, guard=LogGuard(tmp_path / "last-checkpoint"))
    recorded = asyncio.Event()
    record = other.guard.record
    loop = asyncio.get_running_loop()

    def record_then_linger(note: str) -> None:  # on aiosqlite's thread, inside the other's write transaction
        record(note)
        loop.call_soon_threadsafe(recorded.set)
        time.sleep(0.5)  # still in its write transaction: the tree it stores is not committed yet

    other.guard.record = record_then_linger  # type: ignore[method-assign]
    others: list[asyncio.Task[int]] = []

    async def race() -> None:
        await world.admit("miner-other", ["miner"], "CA")  # the other round reads one entry more
        others.append(asyncio.create_task(other.integrate_once()))
        await recorded.wait()

    mine = await _round_with(log, race)
    assert (mine, await others[0]) == (0, 14)  # genesis, miner-a, mine-a, 10 extracts and miner-other
    assert (log.guard.refusal, other.guard.refusal) == (None, None)
    assert await log.integrate_all() == 0
    listed = (await world.client.get("/v1/log/checkpoints")).json()
    assert [c["size"] for c in listed["items"]] == [14]
