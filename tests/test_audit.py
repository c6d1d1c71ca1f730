"""``ledger audit`` on both databases: a clean ledger passes; edits behind the service's back are caught and
the audit names the event. Also: a rewritten history cannot produce a consistency proof for an old checkpoint."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.log.checkpoint import parse_verifier_key
from ledger.log.offline import VerificationError, open_signed_checkpoint, verify_consistency
from ledger.services.audit import AuditFailure, audit
from ledger.services.log_guard import LogGuard, LogRollback
from tests.support import Chain, World


async def _drop_triggers(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        for table in ("events", "merkle_nodes", "checkpoints"):
            await conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
    else:
        for table in ("events", "merkle_nodes", "checkpoints"):
            for action in ("update", "delete"):
                await conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {table}_no_{action}"))


async def _ledger_with_history(chain: Chain) -> World:
    await chain.send(chain.extract("spod-1", 1_000_000), chain.miner)
    await chain.ship("spod-1", chain.miner, chain.refiner, chain.refinery, 995_000)
    await chain.send(chain.extract("spod-2", 500_000), chain.miner)
    await chain.world.services.log.integrate_all()
    return chain.world


def _vkey(world: World) -> tuple[str, bytes]:
    signer = world.services.log.signer
    assert signer is not None
    return parse_verifier_key(signer.vkey)


async def test_clean_ledger_passes(chain: Chain) -> None:
    world = await _ledger_with_history(chain)
    report = await audit(world.services.engine, log_key=_vkey(world))
    events = await world.count_events()
    assert report.events == events == report.tree_size
    assert report.checkpoints >= 1
    assert report.suspect == []


async def _event_at(conn: AsyncConnection, log_index: int) -> tuple[str, bytes]:
    row = (
        await conn.execute(sa.text(f"SELECT event_id, payload FROM events WHERE log_index = {log_index}"))
    ).one()
    return row[0], bytes(row[1])


Tamper = Callable[[AsyncConnection], Awaitable[str]]


async def _change_payload_byte(conn: AsyncConnection) -> str:
    event_id, payload = await _event_at(conn, 9)
    changed = payload.replace(b"995000", b"995001")
    assert changed != payload
    await conn.execute(sa.text("UPDATE events SET payload = :p WHERE log_index = 9"), {"p": changed})
    return f"log index 9 (event {event_id})"


async def _delete_event(conn: AsyncConnection) -> str:
    await conn.execute(sa.text("DELETE FROM events WHERE log_index = 8"))
    return "log index 8 is missing"


async def _rewrite_event_id(conn: AsyncConnection) -> str:
    _, payload = await _event_at(conn, 10)
    forged = payload.replace(b"500000", b"600000")
    forged_id = "sha256:" + hashlib.sha256(forged).hexdigest()
    await conn.execute(
        sa.text("UPDATE events SET payload = :p, event_id = :e WHERE log_index = 10"),
        {"p": forged, "e": forged_id},
    )
    # the payload and its id agree now, but the signature does not
    return f"log index 10 (event {forged_id}): replaying the event fails: signature does not verify"


async def _rewrite_merkle_node(conn: AsyncConnection) -> str:
    await conn.execute(
        sa.text("UPDATE merkle_nodes SET hash = :h WHERE level = 1 AND idx = 2"), {"h": b"\x00" * 32}
    )
    return "stored Merkle node (level 1, index 2)"


async def _rewrite_checkpoint_root(conn: AsyncConnection) -> str:
    await conn.execute(sa.text("UPDATE checkpoints SET root_hash = :h"), {"h": b"\x01" * 32})
    return "records another root"


async def _change_projection(conn: AsyncConnection) -> str:
    await conn.execute(sa.text("UPDATE batches SET mass_g = 2000000 WHERE id = 'spod-1'"))
    return "the batch table's row 'spod-1' is not what the log replays to"


async def _forge_head(conn: AsyncConnection) -> str:
    await conn.execute(
        sa.text("UPDATE batches SET head = 'sha256:' || REPLACE(head, 'sha256:', '') WHERE id = 'spod-2'")
    )
    await conn.execute(sa.text("UPDATE batches SET custodian = 'gulf-refining' WHERE id = 'spod-2'"))
    return "row 'spod-2'"


@pytest.mark.parametrize(
    "tamper",
    [
        _change_payload_byte,
        _delete_event,
        _rewrite_event_id,
        _rewrite_merkle_node,
        _rewrite_checkpoint_root,
        _change_projection,
        _forge_head,
    ],
)
async def test_tampering_behind_the_service_is_caught(chain: Chain, tamper: Tamper) -> None:
    world = await _ledger_with_history(chain)
    async with world.services.engine.begin() as conn:
        await _drop_triggers(conn)
        needle = await tamper(conn)
    with pytest.raises(AuditFailure) as caught:
        await audit(world.services.engine, log_key=_vkey(world))
    assert needle in caught.value.detail


async def test_rewritten_history_cannot_prove_consistency_with_an_old_checkpoint(chain: Chain) -> None:
    world = await _ledger_with_history(chain)
    signer = world.services.log.signer
    assert signer is not None
    old = open_signed_checkpoint((await world.client.get("/v1/log/checkpoint")).text, signer.vkey)
    # the operator rewrites an old entry and rebuilds the whole tree from scratch, signing a new checkpoint
    async with world.services.engine.begin() as conn:
        await _drop_triggers(conn)
        _, payload = await _event_at(conn, 7)
        forged = payload.replace(b"1000000", b"1000001")
        forged_id = "sha256:" + hashlib.sha256(forged).hexdigest()
        await conn.execute(
            sa.text("UPDATE events SET payload = :p, event_id = :e WHERE log_index = 7"),
            {"p": forged, "e": forged_id},
        )
        await conn.execute(sa.text("DELETE FROM merkle_nodes"))
        await conn.execute(sa.text("DELETE FROM checkpoints"))
        await conn.execute(sa.text("UPDATE log_tree SET size = 0, frontier = :f"), {"f": bytes(8)})
    await chain.send(chain.extract("spod-3", 10), chain.miner)
    # the server remembers, outside the database, the checkpoint it signed, and will not sign the rewritten tree
    with pytest.raises(LogRollback, match="does not extend"):
        await world.services.log.integrate_all()
    # an insider who also has the host removes that record; then only an old checkpoint (or a witness) tells
    assert world.services.log.guard.path is not None
    world.services.log.guard.path.unlink()
    world.services.log.guard = LogGuard(world.services.log.guard.path)  # and restarts the server
    await world.services.log.integrate_all()
    new = open_signed_checkpoint((await world.client.get("/v1/log/checkpoint")).text, signer.vkey)
    assert new.size > old.size
    proof = (
        await world.client.get("/v1/log/proofs/consistency", params={"first": old.size, "second": new.size})
    ).json()
    with pytest.raises(VerificationError, match="consistency proof"):
        verify_consistency(old, new, proof)
