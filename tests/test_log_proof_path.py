"""The inclusion proof's hot path (cached latest checkpoint, one statement) answers exactly as the general path.

It reads only the sibling nodes of the leaf's path and takes the right edge from the cached frontier; it notices a
checkpoint signed by another process (another :class:`TransparencyLog` on the same database) in the same
statement; and it hands everything unusual to the general path, so that a not-yet-integrated event still answers
409 with ``Retry-After``.
"""

from __future__ import annotations

import base64

import msgspec
import pytest

from ledger.errors import NotFound, NotYetIntegrated
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint
from ledger.log.offline import open_signed_checkpoint, verify_inclusion
from ledger.services.log import TransparencyLog, _proof_candidates
from tests.support import World
from tests.test_log_api import _extracts


def test_every_needed_node_is_a_sibling_or_a_frontier_node() -> None:
    for size in range(1, 520):
        for index in range(size):
            needed = set(merkle.inclusion_proof_nodes(index, size))
            assert needed <= _proof_candidates(index, size), (index, size)
    for size in (2**20 - 1, 2**20, 1_000_000, 1_000_003, 2**40 + 12345):
        for index in (0, 1, size // 3, size - 2, size - 1):
            assert set(merkle.inclusion_proof_nodes(index, size)) <= _proof_candidates(index, size)


async def _checkpoint(world: World) -> Checkpoint:
    note = (await world.client.get("/v1/log/checkpoint")).text
    vkey = (await world.client.get("/v1/log/key")).text.strip()
    return open_signed_checkpoint(note, vkey)


async def test_hot_path_proofs_verify_and_follow_new_checkpoints(world: World) -> None:
    log = world.services.log
    first = await _extracts(world, 13, "a")
    await log.integrate_all()
    checkpoint = await _checkpoint(world)

    # the first proof takes the general path and caches the checkpoint; the rest take the hot path
    general = (await world.client.get("/v1/log/proofs/inclusion", params={"event_id": first[0]})).json()
    assert log._latest is not None and log._latest.size == checkpoint.size
    verify_inclusion(checkpoint, general)
    for event_id in first:
        hot = await log._inclusion_proof_hot(event_id, log._latest)
        assert hot is not None
        assert hot == await log._inclusion_proof_general(event_id)
        proof = (await world.client.get("/v1/log/proofs/inclusion", params={"event_id": event_id})).json()
        assert proof["tree_size"] == checkpoint.size
        assert base64.b64decode(proof["root_hash"]) == checkpoint.root_hash
        verify_inclusion(checkpoint, proof)

    # with the cache warm, an unknown event is 404 and a sequenced but not integrated one 409 with Retry-After
    missing = await world.client.get("/v1/log/proofs/inclusion", params={"event_id": "sha256:" + "ab" * 32})
    assert missing.status_code == 404
    pending_ids = await _extracts(world, 5, "b")
    pending = await world.client.get("/v1/log/proofs/inclusion", params={"event_id": pending_ids[-1]})
    assert pending.status_code == 409 and pending.headers["retry-after"] == "1"
    assert log._latest is not None and log._latest.size == checkpoint.size

    # a new checkpoint: the default proof is against it, for old and new events alike
    await log.integrate_all()
    newer = await _checkpoint(world)
    assert newer.size > checkpoint.size
    for event_id in [first[3], *pending_ids]:
        proof = (await world.client.get("/v1/log/proofs/inclusion", params={"event_id": event_id})).json()
        assert proof["tree_size"] == newer.size
        verify_inclusion(newer, proof)
    # an explicit older size still answers against that size
    older = (
        await world.client.get(
            "/v1/log/proofs/inclusion", params={"event_id": first[3], "tree_size": checkpoint.size}
        )
    ).json()
    assert older["tree_size"] == checkpoint.size
    verify_inclusion(checkpoint, older)


async def test_a_checkpoint_signed_by_another_process_is_noticed(world: World) -> None:
    first = await _extracts(world, 6, "a")
    await world.services.log.integrate_all()
    # a second process: its own log service on the same database, without a key (it only reads)
    reader = TransparencyLog(world.services.log._engine, None)
    before = await reader.inclusion_proof(first[2])
    assert reader._latest is not None and reader._latest.size == before.tree_size
    assert await reader.inclusion_proof(first[2]) == before  # the hot path

    later = await _extracts(world, 4, "b")
    with pytest.raises(NotYetIntegrated):
        await reader.inclusion_proof(later[0])
    await world.services.log.integrate_all()  # the integrating process signs; the reader is not told
    checkpoint = await _checkpoint(world)
    for event_id in (first[2], later[0], later[-1]):
        proof = await reader.inclusion_proof(event_id)
        assert proof.tree_size == checkpoint.size
        verify_inclusion(checkpoint, msgspec.to_builtins(proof))
    assert reader._latest is not None and reader._latest.size == checkpoint.size
    with pytest.raises(NotFound):
        await reader.inclusion_proof("sha256:" + "cd" * 32)
