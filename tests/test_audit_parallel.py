"""The audit with its row checks in worker processes (:mod:`ledger.services.audit_rows`), which it uses for large
logs only: forced here onto a small ledger, read in several chunks and checked in several pieces, it passes a
clean ledger and names the same tampered event as the in-process path. Also: the row checks themselves, row by
row, against the plain functions they stand in for."""

from __future__ import annotations

import hashlib

import msgspec
import pytest
import sqlalchemy as sa

from ledger.domain import events as ev
from ledger.domain.dsse import PAYLOAD_TYPE, sign_envelope
from ledger.domain.keys import SigningKey, b64encode
from ledger.log import merkle
from ledger.services import audit as audit_module
from ledger.services.audit import AuditFailure, audit
from ledger.services.audit_rows import RowChecker
from tests.support import Chain
from tests.test_audit import (
    Tamper,
    _change_payload_byte,
    _change_projection,
    _delete_event,
    _drop_triggers,
    _ledger_with_history,
    _rewrite_checkpoint_root,
    _rewrite_event_id,
    _rewrite_merkle_node,
    _vkey,
)


@pytest.fixture
def in_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker processes whatever the log's size, chunks of 5 rows, pieces of 2."""
    monkeypatch.setattr(audit_module, "PARALLEL_FROM", 0)
    monkeypatch.setattr(audit_module, "AUDIT_WORKERS", 2)
    monkeypatch.setattr(audit_module, "AUDIT_CHUNK", 5)
    monkeypatch.setattr(audit_module, "AUDIT_PIECE", 2)


@pytest.mark.usefixtures("in_workers")
async def test_clean_ledger_passes_in_workers(chain: Chain) -> None:
    world = await _ledger_with_history(chain)
    report = await audit(world.services.engine, log_key=_vkey(world))
    assert report.events == await world.count_events() == report.tree_size
    assert report.checkpoints >= 1


@pytest.mark.usefixtures("in_workers")
@pytest.mark.parametrize(
    "tamper",
    [
        _change_payload_byte,
        _delete_event,
        _rewrite_event_id,
        _rewrite_merkle_node,
        _rewrite_checkpoint_root,
        _change_projection,
    ],
)
async def test_tampering_is_caught_in_workers(chain: Chain, tamper: Tamper) -> None:
    world = await _ledger_with_history(chain)
    async with world.services.engine.begin() as conn:
        await _drop_triggers(conn)
        needle = await tamper(conn)
    with pytest.raises(AuditFailure) as caught:
        await audit(world.services.engine, log_key=_vkey(world))
    assert needle in caught.value.detail


@pytest.mark.usefixtures("in_workers")
async def test_forged_signature_is_caught_in_workers(chain: Chain) -> None:
    world = await _ledger_with_history(chain)
    forged = b64encode(bytes(64))
    async with world.services.engine.begin() as conn:
        await _drop_triggers(conn)
        keyid = (await conn.execute(sa.text("SELECT key_id FROM events WHERE log_index = 9"))).scalar_one()
        signatures = f'[{{"keyid":"{keyid}","sig":"{forged}"}}]'
        await conn.execute(
            sa.text("UPDATE events SET signatures = :s WHERE log_index = 9"), {"s": signatures}
        )
    with pytest.raises(AuditFailure, match=r"log index 9 .*signature does not verify"):
        await audit(world.services.engine, log_key=_vkey(world))


_PAYLOAD = ev.Extract(
    actor="m",
    timestamp="2026-03-02T09:00:00Z",
    facility="f",
    batch=ev.NewBatch(id="b-1", mineral="lithium", form="concentrate", mass_g=5),
)


def _row(payload: bytes, key: SigningKey, **changes: str) -> tuple[str, str, bytes, str]:
    envelope = sign_envelope(payload, key)
    row = {
        "event_id": "sha256:" + hashlib.sha256(payload).hexdigest(),
        "payload_type": PAYLOAD_TYPE,
        "payload": payload,
        "signatures": msgspec.json.encode(envelope.signatures).decode(),
    }
    row.update(changes)
    return (str(row["event_id"]), str(row["payload_type"]), bytes(row["payload"]), str(row["signatures"]))


def test_row_checks_match_the_plain_functions() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    good = msgspec.json.encode(_PAYLOAD, order="sorted")
    not_canonical = good.replace(b'"actor":"m"', b'"actor": "m"')
    rows = [
        _row(good, key),
        _row(good, key, event_id="sha256:" + "0" * 64),
        _row(not_canonical, key),
        _row(good, other),  # a key the table does not hold
        _row(good, key, payload_type="application/json"),  # signed as another type: does not verify
        _row(good, key, signatures="[{"),
        _row(good, key, signatures=f'[{{"keyid":"{key.key_id}","sig":"{b64encode(bytes(63))}"}}]'),
    ]
    checker = RowChecker({key.key_id: key.public_key, "f" * 64: other.public_key})
    checked = checker.check(rows)
    digest = hashlib.sha256(good).digest()
    assert checked.leaf(0) == checked.leaf(1) == merkle.leaf_hash(digest)
    assert checked.leaf(2) == merkle.leaf_hash(hashlib.sha256(not_canonical).digest())
    assert len(checked.leaves) == 32 * len(rows)
    assert checked.mismatched == {1: "sha256:" + digest.hex()}
    # signed by the key the table holds for its id, over the payload type recorded, 64 bytes: these three only
    # (the replay then refuses row 1 for its id and row 2 for its form)
    sigs = [msgspec.json.decode(row[3])[0]["sig"] for row in rows[:3]]
    assert checked.verified == [(key.key_id, sig) for sig in sigs] + [None, None, None, None]


def test_a_key_filed_under_another_id_verifies_nothing() -> None:
    key = SigningKey.generate()
    payload = msgspec.json.encode(_PAYLOAD, order="sorted")
    row = _row(payload, key)
    sig = msgspec.json.decode(row[3])[0]["sig"]
    assert RowChecker({key.key_id: key.public_key}).check([row]).verified == [(key.key_id, sig)]
    # the keys table files another key under this key's id: the row checks trust neither
    assert RowChecker({key.key_id: SigningKey.generate().public_key}).check([row]).verified == [None]
