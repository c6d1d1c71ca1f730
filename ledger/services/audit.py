"""``ledger audit``: re-derive everything from the log and compare it with what the database says.

The audit replays every envelope, in log-index order, through the same acceptance rules the server applied
(signature by a key valid when it was accepted, parent links, custody rules, mass balance), recomputes every
event id from its payload, rebuilds the Merkle tree and compares its root with every stored checkpoint (whose
signatures it checks) and its nodes with the stored ones, and finally compares the replayed state with the
projection tables. It stops at the first inconsistency and names the event, what was expected and what was found.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.domain.accept import accept
from ledger.domain.dsse import Envelope, Signature, pae
from ledger.domain.keys import b64encode, key_id
from ledger.domain.state import ClaimRecord, Stake, WorkingSet
from ledger.errors import LedgerError
from ledger.log import merkle
from ledger.log.checkpoint import CheckpointError, open_checkpoint
from ledger.log.offline import leaf_for_event
from ledger.services.log import checkpoints_t, nodes_t, tree_t
from ledger.services.submit import SignatureJob, prepare, verify_on_two_threads
from ledger.store import repo

AUDIT_CHUNK = 5000
"""Events read per query while auditing."""

_signatures = msgspec.json.Decoder(list[Signature])


class AuditFailure(LedgerError):
    """The database is inconsistent with its own log."""

    status = 500
    code = "audit-failure"
    title = "Audit failed"


@dataclass
class AuditReport:
    events: int = 0
    tree_size: int = 0
    checkpoints: int = 0
    seconds: float = 0.0
    suspect: list[str] = field(default_factory=list)


Progress = Callable[[int, int, float], None]


def _fail(
    what: str,
    *,
    log_index: int | None = None,
    event_id: str | None = None,
    expected: Any = None,
    found: Any = None,
) -> AuditFailure:
    where = ""
    if log_index is not None:
        where = f"log index {log_index}" + (f" (event {event_id})" if event_id else "") + ": "
    detail = f"{where}{what}"
    if expected is not None or found is not None:
        detail += f"; expected {expected}, found {found}"
    return AuditFailure(
        detail, log_index=log_index, event_id=event_id, expected=str(expected), found=str(found)
    )


@dataclass
class _Kept:
    """Replayed records that the working set itself keeps only in summary (the ownership graph's edges, the sums
    claimed), gathered for the comparison with their tables."""

    stakes: dict[str, Stake] = field(default_factory=dict)
    claims: dict[str, ClaimRecord] = field(default_factory=dict)


def _reset(ws: WorkingSet, kept: _Kept | None = None) -> None:
    """Forget what the last event changed; the replayed state itself stays."""
    if kept is not None:
        kept.stakes.update((s.event_id, s) for s in ws.new_stakes)
        kept.claims.update((c.event_id, c) for c in ws.new_claims)
    ws.new_owners.clear()
    ws.new_stakes.clear()
    ws.new_rates.clear()
    ws.new_profiles.clear()
    ws.new_custody_models.clear()
    ws.new_claims.clear()
    ws.events.clear()
    ws.new_participants.clear()
    ws.changed_participants.clear()
    ws.new_facilities.clear()
    ws.new_keys.clear()
    ws.changed_keys.clear()
    ws.new_batches.clear()
    ws.changed_batches.clear()
    ws.new_attestations.clear()
    ws.changed_attestations.clear()
    ws.batch_events.clear()
    ws.edges.clear()
    ws.holders.clear()
    ws.known_event_ids.clear()


async def audit(
    engine: AsyncEngine,
    *,
    log_key: tuple[str, bytes] | None = None,
    clock_skew: timedelta = timedelta(minutes=5),
    progress: Progress | None = None,
) -> AuditReport:
    """Audit the whole ledger; raise :class:`AuditFailure` at the first inconsistency."""
    started = time.perf_counter()
    report = AuditReport()
    async with engine.connect() as conn:
        total = int(
            await conn.scalar(sa.select(repo.log_state_t.c.size).where(repo.log_state_t.c.id == 1)) or 0
        )
        tree = (await conn.execute(sa.select(tree_t).where(tree_t.c.id == 1))).one()
        tree_size = int(tree.size)
        checkpoints = {row.size: row for row in await conn.execute(sa.select(checkpoints_t))}
        ws = WorkingSet(next_index=0, registrar_exists=False, log_key=log_key[1] if log_key else None)
        # Claims are replayed against everything but the credit balance: credits are the eligibility engine's
        # view of the ledger when the claim was accepted, which replaying the log cannot reproduce.
        ws.check_balance = False
        kept = _Kept()
        frontier = merkle.Frontier.empty()
        next_index = 0
        last_progress = time.perf_counter()
        # Key ids name their public keys (a key id is the key's hash), so the whole keys table can check
        # signatures ahead of the replay; the replay still decides whether each key was valid for its event.
        public_keys = {
            kid: bytes(pub)
            for kid, pub in await conn.execute(sa.select(repo.keys_t.c.key_id, repo.keys_t.c.public_key))
        }
        if log_key is not None:
            public_keys[key_id(log_key[1])] = log_key[1]
        rows = await _fetch_chunk(conn, 0)
        verifying = _verify_chunk(rows, public_keys)
        while rows:
            # pipeline: the next chunk is read and its signatures verified on worker threads while this one replays
            following = await _fetch_chunk(conn, rows[-1].log_index + 1)
            verified = await verifying
            verifying = _verify_chunk(following, public_keys)
            chunk_start = next_index
            await _load_reaffirmed_actors(conn, ws, rows)
            leaves: list[bytes] = []
            for row in rows:
                _replay(ws, row, next_index, clock_skew, verified, kept)
                leaves.append(leaf_for_event(row.event_id))
                next_index += 1
            integrated = leaves[: max(0, min(len(leaves), tree_size - chunk_start))]
            frontier = await _check_tree(conn, frontier, integrated, checkpoints, log_key, report)
            report.events = next_index
            if progress is not None and time.perf_counter() - last_progress >= 1.0:
                progress(next_index, total, time.perf_counter() - started)
                last_progress = time.perf_counter()
            rows = following
        await verifying
        if next_index != total:
            raise _fail(
                "the sequencer counts more entries than the events table holds",
                log_index=next_index,
                expected=f"{total} entries",
                found=f"{next_index}",
            )
        if frontier.size != tree_size:
            raise _fail(
                "the Merkle tree claims to cover entries that are not in the log",
                expected=tree_size,
                found=frontier.size,
            )
        if frontier.size and frontier.to_bytes() != bytes(tree.frontier):
            raise _fail(
                "the stored right edge of the tree differs from the recomputed one",
                expected=frontier.root().hex(),
                found="another",
            )
        stray = [size for size in checkpoints if size > frontier.size]
        if stray:
            raise _fail(f"checkpoints exist for sizes beyond the tree: {sorted(stray)[:5]}")
        await _check_projections(conn, ws)
        await _check_facts(conn, ws, kept)
        report.suspect = await _suspect_events(conn, ws)
    report.tree_size = frontier.size
    report.seconds = time.perf_counter() - started
    if progress is not None:
        progress(report.events, total, report.seconds)
    return report


async def _load_reaffirmed_actors(conn: AsyncConnection, ws: WorkingSet, rows: Sequence[Any]) -> None:
    """Reaffirmations refer to earlier events by id: load their actors, as acceptance did."""
    wanted: set[str] = set()
    for row in rows:
        if row.kind == "reaffirm":
            try:
                wanted.update(json.loads(bytes(row.payload)).get("events", []))
            except ValueError:
                continue  # the replay names the broken payload
    if wanted:
        await repo.load(ws, conn, {"events": wanted}, set())


async def _fetch_chunk(conn: AsyncConnection, start: int) -> Sequence[Any]:
    return (
        await conn.execute(
            sa.select(repo.events_t)
            .where(repo.events_t.c.log_index >= start)
            .order_by(repo.events_t.c.log_index)
            .limit(AUDIT_CHUNK)
        )
    ).all()


def _verify_chunk(
    rows: Sequence[Any], public_keys: dict[str, bytes]
) -> asyncio.Future[frozenset[tuple[str, str]]]:
    """Start checking the chunk's signatures on two worker threads; the result is the (event id, key id) pairs
    that verified, which the replay then need not verify again."""
    jobs: list[SignatureJob] = []
    for row in rows:
        payload = bytes(row.payload)
        event_id = "sha256:" + hashlib.sha256(payload).hexdigest()
        try:
            signatures = _signatures.decode(row.signatures)
        except msgspec.DecodeError:
            continue
        for signature in signatures:
            public = public_keys.get(signature.keyid)
            if public is not None:
                try:
                    raw = base64.b64decode(signature.sig, validate=True)
                except ValueError:
                    break
                jobs.append((event_id, signature.keyid, public, pae(row.payload_type, payload), raw))
                break
    return asyncio.ensure_future(verify_on_two_threads(jobs))


def _replay(
    ws: WorkingSet,
    row: Any,
    expected_index: int,
    clock_skew: timedelta,
    verified: frozenset[tuple[str, str]],
    kept: _Kept | None = None,
) -> None:
    log_index, event_id = row.log_index, row.event_id
    if log_index != expected_index:
        raise _fail(
            f"log index {expected_index} is missing: the next entry in the table has index {log_index}",
            log_index=expected_index,
            expected=expected_index,
            found=log_index,
        )
    payload = bytes(row.payload)
    computed = "sha256:" + hashlib.sha256(payload).hexdigest()
    if computed != event_id:
        raise _fail(
            "the payload does not hash to the recorded event id",
            log_index=log_index,
            event_id=event_id,
            expected=event_id,
            found=computed,
        )
    try:
        envelope = Envelope(
            payloadType=row.payload_type,
            payload=b64encode(payload),
            signatures=_signatures.decode(row.signatures),
        )
        prepared = prepare(envelope)
        ws.next_index = log_index
        accepted = accept(
            ws, prepared, submitter=None, now=row.accepted_at, clock_skew=clock_skew, verified=verified
        )
    except (LedgerError, msgspec.DecodeError) as exc:
        detail = exc.detail if isinstance(exc, LedgerError) else str(exc)
        raise _fail(f"replaying the event fails: {detail}", log_index=log_index, event_id=event_id) from None
    if accepted.key_id != row.key_id:
        raise _fail(
            "the event was accepted under another key than the one that verifies it",
            log_index=log_index,
            event_id=event_id,
            expected=accepted.key_id,
            found=row.key_id,
        )
    _reset(ws, kept)


async def _check_tree(
    conn: AsyncConnection,
    frontier: merkle.Frontier,
    leaves: list[bytes],
    checkpoints: dict[int, Any],
    log_key: tuple[str, bytes] | None,
    report: AuditReport,
) -> merkle.Frontier:
    if not leaves:
        return frontier
    start = frontier.size
    end = start + len(leaves)
    # roots at every checkpoint size inside this chunk
    sizes = sorted(size for size in checkpoints if start < size <= end)
    position = start
    current = frontier
    computed: dict[tuple[int, int], bytes] = {}
    for size in [*sizes, end]:
        if size <= position:
            continue
        current, nodes = merkle.append(current, leaves[position - start : size - start])
        computed.update({(level, idx): digest for level, idx, digest in nodes})
        position = size
        if size in checkpoints:
            _check_checkpoint(checkpoints[size], current.root(), log_key)
            report.checkpoints += 1
    # compare the stored nodes completed by these leaves with the recomputed ones
    clauses = []
    for level in range(0, end.bit_length() + 1):
        low, high = start >> level, end >> level
        if high > low:
            clauses.append(sa.and_(nodes_t.c.level == level, nodes_t.c.idx >= low, nodes_t.c.idx < high))
    stored = {
        (lv, ix): bytes(h)
        for lv, ix, h in await conn.execute(
            sa.select(nodes_t.c.level, nodes_t.c.idx, nodes_t.c.hash).where(sa.or_(*clauses))
        )
    }
    for node, digest in computed.items():
        found = stored.get(node)
        if found != digest:
            level, idx = node
            first_leaf = idx << level
            raise _fail(
                f"stored Merkle node (level {level}, index {idx}) covering entries from {first_leaf} differs from the recomputed one",
                log_index=first_leaf,
                expected=digest.hex(),
                found=found.hex() if found else "no node",
            )
    return current


def _check_checkpoint(row: Any, root: bytes, log_key: tuple[str, bytes] | None) -> None:
    if bytes(row.root_hash) != root:
        raise _fail(
            f"the checkpoint of tree size {row.size} records another root than the log's first {row.size} entries give",
            log_index=row.size - 1,
            expected=root.hex(),
            found=bytes(row.root_hash).hex(),
        )
    if log_key is not None:
        name, public_key = log_key
        try:
            checkpoint = open_checkpoint(row.note, name, public_key)
        except CheckpointError as exc:
            raise _fail(
                f"the checkpoint of tree size {row.size} is not validly signed by the log key: {exc}"
            ) from None
        if checkpoint.size != row.size or checkpoint.root_hash != root:
            raise _fail(
                f"the signed note of checkpoint {row.size} does not match the tree",
                expected=root.hex(),
                found=checkpoint.root_hash.hex(),
            )


async def _check_projections(conn: AsyncConnection, ws: WorkingSet) -> None:
    """Every projection row must equal the state the log replays to, and no row may lack an explanation."""
    checks: list[tuple[str, sa.Table, str, dict[str, Any], Callable[[Any], Any]]] = [
        ("participant", repo.participants_t, "id", ws.participants, repo.participant_from_row),
        ("facility", repo.facilities_t, "id", ws.facilities, repo.facility_from_row),
        ("key", repo.keys_t, "key_id", ws.keys, repo.key_from_row),
        ("batch", repo.batches_t, "id", ws.batches, repo.batch_from_row),
        ("attestation", repo.attestations_t, "id", ws.attestations, repo.attestation_from_row),
        ("owner", repo.owners_t, "id", ws.owners, repo.owner_from_row),
    ]
    for name, table, key, replayed, convert in checks:
        seen: set[str] = set()
        for row in await conn.execute(sa.select(table)):
            identifier = getattr(row, key)
            seen.add(identifier)
            stored = convert(row)
            expected = replayed.get(identifier)
            if expected != stored:
                raise _fail(
                    f"the {name} table's row {identifier!r} is not what the log replays to",
                    expected=expected,
                    found=stored,
                )
        missing = sorted(i for i, v in replayed.items() if v is not None and i not in seen)
        if missing:
            raise _fail(f"the {name} table lacks rows the log creates: {missing[:5]}")


async def _check_facts(conn: AsyncConnection, ws: WorkingSet, kept: _Kept) -> None:
    """The history tables (stakes, rates, published profiles, custody models, claims) hold exactly the records
    the log replays to."""
    checks: list[tuple[str, sa.Table, Callable[[Any], Any], Callable[[Any], Any], dict[Any, Any]]] = [
        ("stakes", repo.stakes_t, repo.stake_from_row, lambda r: r.event_id, kept.stakes),
        (
            "exchange_rates",
            repo.rates_t,
            repo.rate_from_row,
            lambda r: (r.day, r.from_, r.to),
            {(r.day, r.from_, r.to): r for table in ws.rates.values() for r in table.values()},
        ),
        (
            "published_profiles",
            repo.profiles_t,
            repo.profile_from_row,
            lambda r: (r.id, r.version),
            {(p.id, p.version): p for versions in ws.profile_versions.values() for p in versions.values()},
        ),
        (
            "custody_models",
            repo.custody_models_t,
            repo.custody_model_from_row,
            lambda r: r.event_id,
            {m.event_id: m for history in ws.custody_models.values() for m in history},
        ),
        ("claims", repo.claims_t, repo.claim_from_row, lambda r: r.event_id, kept.claims),
    ]
    for name, table, convert, key_of, replayed in checks:
        seen: set[Any] = set()
        for row in await conn.execute(sa.select(table)):
            stored = convert(row)
            key = key_of(stored)
            seen.add(key)
            expected = replayed.get(key)
            if expected != stored:
                raise _fail(
                    f"the {name} table's row {key!r} is not what the log replays to",
                    expected=expected,
                    found=stored,
                )
        missing = sorted(str(k) for k in replayed if k not in seen)
        if missing:
            raise _fail(f"the {name} table lacks rows the log creates: {missing[:5]}")


async def _suspect_events(conn: AsyncConnection, ws: WorkingSet) -> list[str]:
    """Events signed with a key after the time its compromise was reported to start."""
    suspect: list[str] = []
    for key in ws.keys.values():
        if key is None or key.compromised_since is None:
            continue
        rows = await conn.execute(
            sa.select(repo.events_t.c.event_id)
            .where(repo.events_t.c.key_id == key.key_id, repo.events_t.c.accepted_at >= key.compromised_since)
            .order_by(repo.events_t.c.log_index)
        )
        suspect.extend(event_id for (event_id,) in rows)
    return suspect
