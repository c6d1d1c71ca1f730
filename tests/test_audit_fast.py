"""The audit's fast paths give what the plain ones give: the level-at-a-time Merkle rebuild
(:func:`ledger.log.merkle.append_levels`) the same nodes, frontier and roots as :func:`ledger.log.merkle.append`,
and the audit's own ``_prepare`` the same result (or the same error) as ``ledger.domain.accept.prepare``. Also:
a tampered node deep in a larger log, a missing node, and a signature column that does not decode are named."""

from __future__ import annotations

import hashlib
import random

import pytest
import sqlalchemy as sa

from ledger.domain.accept import prepare
from ledger.domain.dsse import PAYLOAD_TYPE, Envelope, Signature, event_id
from ledger.domain.keys import SigningKey, b64encode
from ledger.errors import LedgerError
from ledger.log import merkle
from ledger.services.audit import AuditFailure, _prepare, audit
from tests.support import Chain
from tests.test_audit import _drop_triggers, _ledger_with_history, _vkey


def _leaves(count: int) -> list[bytes]:
    return [hashlib.sha256(b"leaf %d" % i).digest() for i in range(count)]


@pytest.mark.parametrize("seed", range(20))
def test_append_levels_matches_append(seed: int) -> None:
    rng = random.Random(seed)
    before, added = rng.randrange(0, 600), rng.randrange(0, 600)
    leaves = _leaves(before + added)
    old, _ = merkle.append(merkle.Frontier.empty(), leaves[:before])
    new, completed = merkle.append(old, leaves[before:])
    levels = merkle.append_levels(old, leaves[before:])
    got = {
        (level, first + offset): digest
        for level, (first, row) in enumerate(zip(levels.firsts, levels.rows, strict=True))
        for offset, digest in enumerate(row)
    }
    assert got == {(level, index): digest for level, index, digest in completed}
    assert levels.after() == new
    for size in range(before, before + added + 1):
        assert levels.root_at(size) == merkle.root_hash(leaves[:size])


def test_append_levels_refuses_what_append_refuses() -> None:
    with pytest.raises(ValueError, match="leaf hash 0"):
        merkle.append_levels(merkle.Frontier.empty(), [b"short"])
    levels = merkle.append_levels(merkle.Frontier.empty(), _leaves(5))
    with pytest.raises(ValueError):
        levels.root_at(6)


def _envelope(payload: bytes, key: SigningKey, **changes: object) -> Envelope:
    fields: dict[str, object] = {
        "payloadType": PAYLOAD_TYPE,
        "payload": b64encode(payload),
        "signatures": [Signature(keyid=key.key_id, sig=b64encode(key.sign(payload)))],
    }
    fields.update(changes)
    return Envelope(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"payloadType": "application/json"},
        {"signatures": []},
        {"signatures": [Signature(keyid="k", sig="")] * 5},
    ],
)
@pytest.mark.parametrize(
    "payload",
    [
        b'{"actor":"m","batch":{"form":"ore","id":"b-1","mass_g":5,"mineral":"lithium"},"facility":"f",'
        b'"kind":"extract","timestamp":"2026-03-02T09:00:00Z"}',
        b'{"kind":"extract", "actor":"m"}',
        b"not json",
    ],
)
def test_prepare_shortcut_matches_prepare(changes: dict[str, object], payload: bytes) -> None:
    envelope = _envelope(payload, SigningKey.generate(), **changes)
    try:
        expected = prepare(envelope)
    except LedgerError as error:
        with pytest.raises(type(error)) as caught:
            _prepare(envelope, payload, event_id(payload))
        assert caught.value.detail == error.detail
    else:
        assert _prepare(envelope, payload, event_id(payload)) == expected


async def test_tampered_signatures_column_is_named(chain: Chain) -> None:
    world = await _ledger_with_history(chain)
    async with world.services.engine.begin() as conn:
        await _drop_triggers(conn)
        await conn.execute(sa.text("UPDATE events SET signatures = '[{' WHERE log_index = 6"))
    with pytest.raises(AuditFailure, match=r"log index 6 .*replaying the event fails"):
        await audit(world.services.engine, log_key=_vkey(world))


async def test_missing_merkle_node_is_named(chain: Chain) -> None:
    world = await _ledger_with_history(chain)
    async with world.services.engine.begin() as conn:
        await _drop_triggers(conn)
        await conn.execute(sa.text("DELETE FROM merkle_nodes WHERE level = 2 AND idx = 1"))
    with pytest.raises(AuditFailure, match=r"stored Merkle node \(level 2, index 1\).*no node"):
        await audit(world.services.engine, log_key=_vkey(world))


async def test_first_of_several_tampered_nodes_is_named(chain: Chain) -> None:
    world = await _ledger_with_history(chain)
    async with world.services.engine.begin() as conn:
        await _drop_triggers(conn)
        for level, idx in [(0, 9), (2, 1), (1, 5)]:
            await conn.execute(
                sa.text("UPDATE merkle_nodes SET hash = :h WHERE level = :l AND idx = :i"),
                {"h": b"\x07" * 32, "l": level, "i": idx},
            )
    # in the order the leaves complete them: (2, 1) with leaf 7, then (0, 9), then (1, 5) with leaf 11
    with pytest.raises(AuditFailure, match=r"stored Merkle node \(level 2, index 1\)"):
        await audit(world.services.engine, log_key=_vkey(world))
