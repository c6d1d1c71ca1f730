"""Witnesses on both databases: the log collects cosignatures; an insider who deletes, rolls back or forks the log and
re-signs it with the log key is refused by the log itself (while its record of the last signed checkpoint survives),
by the witness, and by any verifier that needs a quorum of witnesses."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from nacl.signing import SigningKey
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.log import merkle
from ledger.log.checkpoint import CheckpointError
from ledger.log.cosignature import Witness, WitnessPolicy, verify_cosignatures, witness_signer_key
from ledger.log.offline import leaf_for_event, open_signed_checkpoint
from ledger.log.witness import format_add_checkpoint
from ledger.services.log import LogSigner, checkpoints_t
from ledger.services.log_guard import LogGuard, LogRollback
from ledger.services.witness import WitnessService, create_witness_app
from ledger.services.witnessing import WitnessEndpoint
from tests.support import Chain, World
from tests.test_audit import _drop_triggers, _ledger_with_history


class Witnesses:
    """Two witnesses of the test's log, reached in-process."""

    def __init__(self, world: World, tmp_path: Path) -> None:
        signer = world.services.log.signer
        assert signer is not None
        self.world = world
        self.log_vkey = signer.vkey
        self.services: list[WitnessService] = []
        self.endpoints: list[WitnessEndpoint] = []
        self.clients: list[httpx.AsyncClient] = []
        for number in (1, 2):
            name = f"witness.test/w{number}"
            service = WitnessService(
                witness_signer_key(name, bytes([number]) * 32), [self.log_vkey], tmp_path / f"w{number}"
            )
            self.services.append(service)
            self.endpoints.append(
                WitnessEndpoint(
                    Witness(name, SigningKey(bytes([number]) * 32).verify_key.encode()), f"http://w{number}"
                )
            )
            app: Any = create_witness_app(service)
            self.clients.append(httpx.AsyncClient(transport=httpx.ASGITransport(app=app)))

    @property
    def policy(self) -> WitnessPolicy:
        return WitnessPolicy(tuple(e.witness for e in self.endpoints), 2)

    async def cosign(self) -> list[bool]:
        cosigner = self.world.services.cosigner
        return [
            await cosigner.cosign_latest(endpoint, client)
            for endpoint, client in zip(self.endpoints, self.clients, strict=True)
        ]

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


@pytest.fixture
async def witnessed(chain: Chain, tmp_path: Path) -> Any:
    world = await _ledger_with_history(chain)
    witnesses = Witnesses(world, tmp_path)
    assert await witnesses.cosign() == [True, True]
    yield witnesses
    await witnesses.close()


async def _latest_note(world: World) -> str:
    response = await world.client.get("/v1/log/checkpoint")
    assert response.status_code == 200
    return response.text


async def test_the_log_serves_checkpoints_with_collected_cosignatures(
    witnessed: Witnesses, chain: Chain
) -> None:
    world = witnessed.world
    note = await _latest_note(world)
    checkpoint = open_signed_checkpoint(note, witnessed.log_vkey)
    assert set(witnessed.policy.check(note)) == {"witness.test/w1", "witness.test/w2"}
    listed = (await world.client.get("/v1/log/checkpoints")).json()["items"]
    assert listed[-1]["size"] == checkpoint.size
    assert listed[-1]["cosigned_by"] == ["witness.test/w1", "witness.test/w2"]

    # the log grows; each witness is sent a consistency proof from the size it cosigned and cosigns the new size
    await chain.send(chain.extract("spod-9", 1_000), chain.miner)
    await world.services.log.integrate_all()
    assert await witnessed.cosign() == [True, True]
    newer = await _latest_note(world)
    assert open_signed_checkpoint(newer, witnessed.log_vkey).size == checkpoint.size + 1
    assert len(witnessed.policy.check(newer)) == 2
    assert {o: s for o, (s, _) in witnessed.services[0].state().items()} == {
        checkpoint.origin: checkpoint.size + 1
    }
    # the witness serves what it cosigned on its monitoring prefix, with the log's signature and its own
    from ledger.log.witness import origin_hash

    served = await witnessed.clients[0].get(f"http://w1/{origin_hash(checkpoint.origin)}/checkpoint")
    assert served.status_code == 200
    assert open_signed_checkpoint(served.text, witnessed.log_vkey).size == checkpoint.size + 1
    assert "witness.test/w1" in verify_cosignatures(served.text, [witnessed.endpoints[0].witness])


async def test_a_second_process_catches_up_from_the_witness_conflict(
    witnessed: Witnesses, chain: Chain
) -> None:
    """A cosigner that does not know where the witness stands sends old 0, learns its size from the 409 and
    succeeds on the next request."""
    world = witnessed.world
    await chain.send(chain.extract("spod-8", 1_000), chain.miner)
    await world.services.log.integrate_all()
    endpoint = witnessed.endpoints[0]
    endpoint.size = 0  # pretend this process never talked to it
    assert await world.services.cosigner.cosign_latest(endpoint, witnessed.clients[0]) is True
    assert "witness.test/w1" in verify_cosignatures(await _latest_note(world), [endpoint.witness])


# --- the insider's attacks ------------------------------------------------------------------------------------


async def rebuild_tree_and_resign(conn: AsyncConnection, signer: LogSigner) -> str:
    """What an insider with the database and the log key does after editing the events: rebuild the Merkle tree
    from the events table, make the sequencer agree, sign a checkpoint of the result. Returns the signed note."""
    rows = (await conn.execute(sa.text("SELECT log_index, event_id FROM events ORDER BY log_index"))).all()
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    frontier, nodes = merkle.append(merkle.Frontier.empty(), [leaf_for_event(r[1]) for r in rows])
    await conn.execute(sa.text("DELETE FROM merkle_nodes"))
    await conn.execute(sa.text("DELETE FROM checkpoints"))
    await conn.execute(sa.text("DELETE FROM cosignatures"))
    await conn.execute(
        sa.text("INSERT INTO merkle_nodes (level, idx, hash) VALUES (:l, :i, :h)"),
        [{"l": lv, "i": ix, "h": h} for lv, ix, h in nodes],
    )
    await conn.execute(
        sa.text("UPDATE log_tree SET size = :s, frontier = :f"),
        {"s": frontier.size, "f": frontier.to_bytes()},
    )
    await conn.execute(sa.text("UPDATE log_state SET size = :s"), {"s": frontier.size})
    note = signer.sign(frontier.size, frontier.root())
    await conn.execute(
        checkpoints_t.insert().values(
            size=frontier.size, root_hash=frontier.root(), note=note, created_at=datetime.now(UTC)
        )
    )
    return note


def _signer(world: World) -> LogSigner:
    assert world.services.log.signer is not None
    return world.services.log.signer


async def _delete_event(conn: AsyncConnection, index: int) -> None:
    await conn.execute(sa.text("DELETE FROM events WHERE log_index = :i"), {"i": index})
    # renumber in two steps so that no intermediate state collides with the unique index
    await conn.execute(sa.text("UPDATE events SET log_index = -log_index WHERE log_index > :i"), {"i": index})
    await conn.execute(sa.text("UPDATE events SET log_index = -log_index - 1 WHERE log_index < 0"))


async def roll_back(conn: AsyncConnection, entries: int) -> None:
    size = int(await conn.scalar(sa.text("SELECT count(*) FROM events")) or 0)
    await conn.execute(sa.text("DELETE FROM events WHERE log_index >= :s"), {"s": size - entries})


async def _attack(world: World, kind: str) -> str:
    async with world.services.engine.begin() as conn:
        await _drop_triggers(conn)
        if kind == "delete":
            await _delete_event(conn, 3)
        else:
            await roll_back(conn, 10)
        return await rebuild_tree_and_resign(conn, _signer(world))


@pytest.mark.parametrize("kind", ["delete", "rollback"])
async def test_the_log_refuses_to_sign_a_shrunk_or_rewritten_tree(witnessed: Witnesses, kind: str) -> None:
    world = witnessed.world
    before = open_signed_checkpoint(await _latest_note(world), witnessed.log_vkey)
    await _attack(world, kind)
    # the server's own integrator, asked to sign the tree it finds, refuses: its record outside the database
    # says it signed a larger tree before
    async with world.services.engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM checkpoints"))
    with pytest.raises(LogRollback, match=f"fewer than the {before.size}"):
        await world.services.log.integrate_all()
    assert world.services.log.guard.refusal is not None
    ready = await world.client.get("/readyz")
    assert ready.status_code == 503
    assert "refuses to sign" in ready.json()["detail"]


@pytest.mark.parametrize("kind", ["delete", "rollback"])
async def test_witnesses_and_quorum_verifiers_refuse_a_re_signed_smaller_log(
    witnessed: Witnesses, kind: str
) -> None:
    world = witnessed.world
    before = open_signed_checkpoint(await _latest_note(world), witnessed.log_vkey)
    forged = await _attack(world, kind)
    forged_checkpoint = open_signed_checkpoint(
        forged, witnessed.log_vkey
    )  # the log key signed it: it "verifies"
    assert forged_checkpoint.size < before.size
    # the witness refuses from wherever the insider claims it stood
    for client in witnessed.clients:
        answer = await client.post(
            "http://w/add-checkpoint", content=format_add_checkpoint(before.size, [], forged)
        )
        assert answer.status_code == 400  # old size above the checkpoint's
        answer = await client.post(
            "http://w/add-checkpoint", content=format_add_checkpoint(forged_checkpoint.size, [], forged)
        )
        assert answer.status_code == 409
        assert answer.headers["content-type"].startswith("text/x.tlog.size")
        assert answer.text == f"{before.size}\n"
    # and the log's own cosigner gets nothing either
    assert await witnessed.cosign() == [False, False]
    served = await _latest_note(world)
    with pytest.raises(CheckpointError, match="fewer than the quorum of 2"):
        witnessed.policy.check(served)
    # a stale old size is no proof of anything (a restarted client sends one too): nothing kept as evidence
    assert witnessed.services[0].evidence() == []


async def test_a_fork_of_the_same_size_is_refused_by_witnesses(witnessed: Witnesses, chain: Chain) -> None:
    """Roll back ten entries and append ten others: the same size, another root. A client shown this tree cannot
    get it cosigned, so it cannot be shown to a verifier that needs a quorum."""
    world = witnessed.world
    honest = open_signed_checkpoint(await _latest_note(world), witnessed.log_vkey)
    # the insider also has the host: removes the record of the last signed checkpoint and restarts the server
    world.services.log.guard.path.unlink()  # type: ignore[union-attr]
    world.services.log.guard = LogGuard(world.services.log.guard.path)
    async with world.services.engine.begin() as conn:
        await _drop_triggers(conn)
        await roll_back(conn, 10)
        await rebuild_tree_and_resign(conn, _signer(world))
    for n in range(10):
        await chain.send(chain.extract(f"fork-{n}", 1_000 + n), chain.miner, expect=None)
    await world.services.log.integrate_all()
    note = await _latest_note(world)
    fork = open_signed_checkpoint(note, witnessed.log_vkey)
    if fork.size != honest.size:
        pytest.skip(f"the sequencer did not reuse the rolled-back indices ({fork.size} vs {honest.size})")
    assert fork.root_hash != honest.root_hash
    for client in witnessed.clients:
        answer = await client.post(
            "http://w/add-checkpoint", content=format_add_checkpoint(honest.size, [], note)
        )
        assert answer.status_code == 422
        assert "fork" in answer.text
    # each witness keeps the log-signed fork as evidence of the log's misbehaviour
    for service in witnessed.services:
        assert [(status, "fork" in reason) for _, status, reason in service.evidence()] == [(422, True)]
    with pytest.raises(CheckpointError, match="quorum"):
        witnessed.policy.check(note)
    assert base64.b64encode(fork.root_hash) != base64.b64encode(honest.root_hash)


async def test_bundles_carry_the_cosigned_checkpoint(chain: Chain, tmp_path: Path) -> None:
    """A bundle's checkpoint is the log's latest covering its events, with the cosignatures collected; a verifier
    that needs both witnesses accepts it, one that needs an unknown witness refuses it."""
    from ledger.rules.bundle import BundleError, verify_bundle
    from ledger.rules.profiles import Profiles
    from tests.test_eligibility_api import _qualifying_chain

    world = chain.world
    await _qualifying_chain(chain)
    await world.services.log.integrate_all()
    witnessed = Witnesses(world, tmp_path)
    assert await witnessed.cosign() == [True, True]
    response = await world.client.get(
        "/v1/batches/lioh-1/bundle", params={"at": "2026-10-01"}, headers=world.registrar.headers
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert len(witnessed.policy.check(bundle["log"]["checkpoint"])) == 2
    verify_bundle(
        bundle, vkey=witnessed.log_vkey, local_profiles=Profiles().by_id, witnesses=witnessed.policy
    )
    stranger = Witness("witness.test/w9", SigningKey(bytes([9]) * 32).verify_key.encode())
    with pytest.raises(BundleError, match=r"not witnessed as required.*missing: witness.test/w9"):
        verify_bundle(
            bundle,
            vkey=witnessed.log_vkey,
            local_profiles=Profiles().by_id,
            witnesses=WitnessPolicy((witnessed.endpoints[0].witness, stranger), 2),
        )


async def test_a_witness_republishes_only_what_it_verified(witnessed: Witnesses) -> None:
    """A client that resubmits the latest checkpoint with a forged line in another witness's name gets a
    cosignature, but the witness's monitoring view carries only the log's signature and its own."""
    from ledger.log.cosignature import add_signature_lines
    from ledger.log.witness import origin_hash

    world = witnessed.world
    note = await _latest_note(world)
    checkpoint = open_signed_checkpoint(note, witnessed.log_vkey)
    other = witnessed.endpoints[1].witness
    forged = f"\u2014 {other.name} " + base64.b64encode(other.key_id + bytes(72)).decode() + "\n"
    answer = await witnessed.clients[0].post(
        "http://w1/add-checkpoint",
        content=format_add_checkpoint(checkpoint.size, [], add_signature_lines(note, [forged])),
    )
    assert answer.status_code == 200
    served = (await witnessed.clients[0].get(f"http://w1/{origin_hash(checkpoint.origin)}/checkpoint")).text
    assert forged not in served
    assert set(verify_cosignatures(served, [e.witness for e in witnessed.endpoints])) == {"witness.test/w1"}


async def test_bundles_take_the_newest_witnessed_checkpoint(witnessed: Witnesses, chain: Chain) -> None:
    """Under ingest the newest checkpoint is often not cosigned yet: a bundle takes the newest one that has its
    quorum (if it covers the bundle's events) rather than waiting for the newest."""
    world = witnessed.world
    cosigned = open_signed_checkpoint(await _latest_note(world), witnessed.log_vkey)
    await chain.send(chain.extract("spod-7", 1_000), chain.miner)
    await world.services.log.integrate_all()  # a newer checkpoint nobody has cosigned
    world.services.log.witness_quorum = 2
    view = await world.services.log.checkpoint_covering(cosigned.size, wait_seconds=30)
    assert view.size == cosigned.size
    assert view.cosigned_by == ["witness.test/w1", "witness.test/w2"]


def test_one_key_cannot_count_as_two_witnesses() -> None:
    public_key = SigningKey(bytes([5]) * 32).verify_key.encode()
    with pytest.raises(CheckpointError, match="share a public key"):
        WitnessPolicy((Witness("w.test/a", public_key), Witness("w.test/b", public_key)), 2)


async def test_a_bundle_while_the_log_refuses_to_sign_is_a_503(witnessed: Witnesses) -> None:
    """The host's record says the log signed a larger tree than the database holds; a bundle that needs a new
    checkpoint gets the refusal as a 503 problem (log-refuses-to-sign), not a 500."""
    from ledger.errors import LogRefusesToSign

    world = witnessed.world
    before = open_signed_checkpoint(await _latest_note(world), witnessed.log_vkey)
    world.services.log.guard.record(_signer(world).sign(before.size + 100, bytes(32)))
    async with world.services.engine.begin() as conn:
        await _drop_triggers(conn)
        await conn.execute(sa.text("DELETE FROM checkpoints"))
    with pytest.raises(LogRefusesToSign, match=f"fewer than the {before.size + 100}") as caught:
        await world.services.log.checkpoint_covering(before.size, wait_seconds=1)
    assert (caught.value.status, caught.value.code) == (503, "log-refuses-to-sign")
