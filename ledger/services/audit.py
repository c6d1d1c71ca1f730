"""``ledger audit``: re-derive everything from the log and compare it with what the database says.

The audit replays every envelope, in log-index order, through the same acceptance rules the server applied
(signature by a key valid when it was accepted, parent links, custody rules, mass balance), recomputes every
event id from its payload, rebuilds the Merkle tree and compares its root with every stored checkpoint (whose
signatures it checks) and its nodes with the stored ones, and finally compares the replayed state with the
projection tables. It stops at the first inconsistency and names the event, what was expected and what was found.

It is a pipeline over two cores or more: the log is read in chunks, and what needs no ledger state (each payload's
hash against its event id, its leaf hash, its signature) is checked piece by piece in worker processes
(:mod:`ledger.services.audit_rows`) while this process decodes and replays the pieces before, folds their leaves
into the tree and compares the stored nodes. A signature the workers found good is not checked again; any other
the replay checks itself, as acceptance does.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.domain import events as ev
from ledger.domain.accept import Prepared, accept, prepare
from ledger.domain.dsse import MAX_SIGNATURES, PAYLOAD_TYPE, Envelope, Signature
from ledger.domain.keys import b64encode, key_id
from ledger.domain.state import ClaimRecord, Stake, WorkingSet
from ledger.errors import LedgerError
from ledger.log import merkle
from ledger.log.checkpoint import CheckpointError, open_checkpoint
from ledger.services.audit_rows import Checked, RowChecker, RowIn, check_in_worker, start_worker
from ledger.services.log import checkpoints_t, tree_t
from ledger.store import repo
from ledger.store.db import driver as db_driver

AUDIT_CHUNK = 5000
"""Events read per query while auditing."""

AUDIT_PIECE = 1000
"""Events per piece handed to a worker process for the checks of :mod:`ledger.services.audit_rows`."""

PIECES_AHEAD = 2
"""The next chunk is read once no more than this many pieces wait to be replayed, so that the workers always
have pieces to check while the replay waits for the database."""

RESET_EVERY = 64
"""The replay forgets what the store would write (the working set's lists of new and changed rows) every this
many events rather than after each: acceptance reads none of it but to tell new rows from changed ones, and a
group of events on the server accumulates it the same way."""

PARALLEL_FROM = 2 * AUDIT_PIECE
"""Logs of fewer entries are checked in this process: starting the workers would take longer than the checks."""

AUDIT_WORKERS = min(os.cpu_count() or 1, 8)
"""Worker processes for the row checks. Processes, not threads: libsodium releases the GIL while it verifies,
but a verifier thread needs it back after every signature and waits for it while the replay holds it (up to the
interpreter's switch interval each time), which left two verifier threads idle most of the time."""

_EVENT_COLUMNS = "log_index, event_id, kind, key_id, payload_type, payload, signatures, accepted_at"
"""The events columns the audit reads, in the order :data:`Row` names them."""

Row = tuple[int, str, str, str, str, bytes, str, Any]
"""An events row as the audit reads it: log index, event id, kind, key id, payload type, payload, signatures
(JSON), accepted at."""

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


def _clearers(ws: WorkingSet) -> list[Callable[[], None]]:
    """The ``clear`` methods of what the working set gathers per accepted event for the store (acceptance
    appends to these collections and never rebinds them)."""
    collections: list[Any] = [
        ws.new_owners,
        ws.new_stakes,
        ws.new_rates,
        ws.new_profiles,
        ws.new_custody_models,
        ws.new_claims,
        ws.new_agreements,
        ws.new_certificates,
        ws.events,
        ws.new_participants,
        ws.changed_participants,
        ws.new_facilities,
        ws.new_keys,
        ws.changed_keys,
        ws.new_batches,
        ws.changed_batches,
        ws.new_attestations,
        ws.changed_attestations,
        ws.batch_events,
        ws.edges,
        ws.holders,
        ws.known_event_ids,
    ]
    return [collection.clear for collection in collections]


def _reset(
    ws: WorkingSet, kept: _Kept | None = None, clearers: list[Callable[[], None]] | None = None
) -> None:
    """Forget what the last events changed; the replayed state itself stays."""
    if kept is not None:
        if ws.new_stakes:
            kept.stakes.update((s.event_id, s) for s in ws.new_stakes)
        if ws.new_claims:
            kept.claims.update((c.event_id, c) for c in ws.new_claims)
    for clear in clearers if clearers is not None else _clearers(ws):
        clear()


def _prepare(envelope: Envelope, payload: bytes, event_id: str) -> Prepared:
    """:func:`ledger.domain.accept.prepare` of a stored envelope whose payload bytes and event id the audit
    already has: the same checks and the same decoding, without base64-decoding the payload again or hashing it
    again. Whatever those checks refuse goes through ``prepare`` itself, for its own error."""
    signatures = envelope.signatures
    if envelope.payloadType != PAYLOAD_TYPE or not signatures or len(signatures) > MAX_SIGNATURES:
        return prepare(envelope)
    event = ev.decode_payload(payload)
    return Prepared(
        envelope=envelope, payload=payload, event=event, event_id=event_id, kind=ev.kind_of(event)
    )


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
        fetch = await _fetcher(conn)
        clearers = _clearers(ws)
        checks = _RowChecks(public_keys, parallel=total >= PARALLEL_FROM)
        try:
            # pipeline: pieces of the log are checked (hashes, leaf hashes, signatures) in worker processes while
            # this process replays the pieces before them; the next chunk is read before the workers run dry
            pending: deque[tuple[list[Row], asyncio.Future[Checked]]] = deque()
            start: int | None = 0
            leaves: list[bytes] = []
            piece_sizes = _piece_sizes()
            while True:
                if start is not None and len(pending) <= PIECES_AHEAD:
                    rows = await fetch(start)
                    start = rows[-1][0] + 1 if len(rows) == AUDIT_CHUNK else None
                    first = 0
                    while first < len(rows):
                        piece = rows[first : first + next(piece_sizes)]
                        pending.append((piece, checks.submit(piece)))
                        first += len(piece)
                if not pending:
                    break
                piece, checking = pending.popleft()
                checked = await checking
                await _load_reaffirmed_actors(conn, ws, piece)
                piece_start = next_index
                mismatched = checked.mismatched
                verified = frozenset(
                    (row[1], *good)
                    for position, (row, good) in enumerate(zip(piece, checked.verified, strict=True))
                    if good is not None and position not in mismatched
                )
                for position, row in enumerate(piece):
                    _replay(ws, row, mismatched.get(position), next_index, clock_skew, verified)
                    next_index += 1
                    if next_index % RESET_EVERY == 0:
                        _reset(ws, kept, clearers)
                _reset(ws, kept, clearers)
                integrated = max(0, min(len(piece), tree_size - piece_start))
                leaves += (checked.leaf(position) for position in range(integrated))
                if len(leaves) >= AUDIT_CHUNK or not pending:
                    frontier = await _check_tree(conn, frontier, leaves, checkpoints, log_key, report)
                    leaves = []
                report.events = next_index
                if progress is not None and time.perf_counter() - last_progress >= 1.0:
                    progress(next_index, total, time.perf_counter() - started)
                    last_progress = time.perf_counter()
        finally:
            checks.close()
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


async def _load_reaffirmed_actors(conn: AsyncConnection, ws: WorkingSet, rows: Sequence[Row]) -> None:
    """Reaffirmations refer to earlier events by id: load their actors, as acceptance did."""
    wanted: set[str] = set()
    for row in rows:
        if row[2] == "reaffirm":
            try:
                wanted.update(json.loads(bytes(row[5])).get("events", []))
            except ValueError:
                continue  # the replay names the broken payload
    if wanted:
        await repo.load(ws, conn, {"events": wanted}, set())


Fetch = Callable[[int], Awaitable[list[Row]]]


async def _fetcher(conn: AsyncConnection) -> Fetch:
    """A function reading the next :data:`AUDIT_CHUNK` events from a log index on, in log order, straight from the
    database driver (see :func:`_driver_rows`)."""
    query = (
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE log_index >= $1 ORDER BY log_index LIMIT {AUDIT_CHUNK}"
    )
    await conn.execute(sa.select(1))  # begin the transaction, as every other statement here runs in it
    if conn.dialect.name == "postgresql":

        async def fetch_postgresql(start: int) -> list[Row]:
            return cast(list[Row], await _driver_rows(conn, query, start))

        return fetch_postgresql

    async def fetch_sqlite(start: int) -> list[Row]:
        # SQLite keeps accepted_at as naive UTC text; the column type (ledger.store.models.UTCDateTime) reads it
        # back as an aware UTC datetime, and so does this
        return [
            (*row[:7], datetime.fromisoformat(row[7]).replace(tzinfo=UTC))
            for row in await _driver_rows(conn, query, start)
        ]

    return fetch_sqlite


async def _driver_rows(conn: AsyncConnection, query: str, *parameters: Any) -> Sequence[Any]:
    """The rows of ``query`` (parameters written ``$1``...) from the driver itself, asyncpg or aiosqlite, in the
    connection's transaction: SQLAlchemy's result rows cost more than everything else the audit does per event
    but the signature check."""
    driver = await db_driver(conn)
    if conn.dialect.name == "postgresql":
        return cast(Sequence[Any], await driver.fetch(query, *parameters))
    async with driver.execute(re.sub(r"\$\d+", "?", query), parameters) as cursor:
        return cast(Sequence[Any], await cursor.fetchall())


def _piece_sizes() -> Iterator[int]:
    """Sizes of the pieces handed to the workers: small at first, so that the replay starts soon, then
    :data:`AUDIT_PIECE`."""
    size = max(1, AUDIT_PIECE // 8)
    while size < AUDIT_PIECE:
        yield size
        size *= 2
    while True:
        yield AUDIT_PIECE


class _RowChecks:
    """Runs the row checks of :mod:`ledger.services.audit_rows` on pieces of the log: in worker processes for a
    large log, in this process for a small one."""

    def __init__(self, public_keys: dict[str, bytes], *, parallel: bool) -> None:
        self._checker = RowChecker(public_keys)
        self._pool: ProcessPoolExecutor | None = None
        if parallel and AUDIT_WORKERS > 1:
            self._pool = ProcessPoolExecutor(
                AUDIT_WORKERS,
                mp_context=_process_context(),
                initializer=start_worker,
                initargs=(public_keys,),
            )
            self._pool.submit(int)  # start the workers now, while the first chunk is read

    def submit(self, rows: Sequence[Row]) -> asyncio.Future[Checked]:
        pieces: list[RowIn] = [(row[1], row[4], bytes(row[5]), row[6]) for row in rows]
        if self._pool is None:
            done: asyncio.Future[Checked] = asyncio.get_running_loop().create_future()
            done.set_result(self._checker.check(pieces))
            return done
        return asyncio.wrap_future(self._pool.submit(check_in_worker, pieces))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _process_context() -> multiprocessing.context.BaseContext:
    """Fork where the platform has it: the workers start in milliseconds with every module loaded, and they run
    only the row checks (no database, no event loop). Elsewhere, spawn."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _replay(
    ws: WorkingSet,
    row: Row,
    computed: str | None,
    expected_index: int,
    clock_skew: timedelta,
    verified: frozenset[tuple[str, str, str]],
) -> None:
    """Replay one row through acceptance. ``computed`` is the event id its payload hashes to when that differs
    from the recorded one (the row checks found it), ``verified`` the signatures the row checks found good."""
    log_index, event_id, _, key_id, payload_type, payload, signatures_json, accepted_at = row
    if log_index != expected_index:
        raise _fail(
            f"log index {expected_index} is missing: the next entry in the table has index {log_index}",
            log_index=expected_index,
            expected=expected_index,
            found=log_index,
        )
    if computed is not None:
        raise _fail(
            "the payload does not hash to the recorded event id",
            log_index=log_index,
            event_id=event_id,
            expected=event_id,
            found=computed,
        )
    try:
        payload = bytes(payload)
        envelope = Envelope(
            payloadType=payload_type,
            payload=b64encode(payload),
            signatures=_signatures.decode(signatures_json),
        )
        prepared = _prepare(envelope, payload, event_id)
        ws.next_index = log_index
        accepted = accept(
            ws, prepared, submitter=None, now=accepted_at, clock_skew=clock_skew, verified=verified
        )
    except (LedgerError, msgspec.DecodeError) as exc:
        detail = exc.detail if isinstance(exc, LedgerError) else str(exc)
        raise _fail(f"replaying the event fails: {detail}", log_index=log_index, event_id=event_id) from None
    if accepted.key_id != key_id:
        raise _fail(
            "the event was accepted under another key than the one that verifies it",
            log_index=log_index,
            event_id=event_id,
            expected=accepted.key_id,
            found=key_id,
        )


async def _check_tree(
    conn: AsyncConnection,
    frontier: merkle.Frontier,
    leaves: list[bytes],
    checkpoints: dict[int, Any],
    log_key: tuple[str, bytes] | None,
    report: AuditReport,
) -> merkle.Frontier:
    """Fold a chunk's leaves into the tree (a level at a time), check the root at every checkpoint inside the
    chunk, and compare every node the chunk completes with the stored one."""
    if not leaves:
        return frontier
    levels = merkle.append_levels(frontier, leaves)
    for size in sorted(size for size in checkpoints if levels.start < size <= levels.end):
        _check_checkpoint(checkpoints[size], levels.root_at(size), log_key)
        report.checkpoints += 1
    ranges = [
        f"(level = {level} AND idx >= {first} AND idx < {first + len(row)})"
        for level, (first, row) in enumerate(zip(levels.firsts, levels.rows, strict=True))
    ]
    query = f"SELECT level, idx, hash FROM merkle_nodes WHERE {' OR '.join(ranges)} ORDER BY level, idx"
    stored_rows = await _driver_rows(conn, query)
    stored: list[list[bytes]] = [[] for _ in levels.rows]
    for level, _, digest in stored_rows:
        stored[level].append(bytes(digest))
    # (level, idx) is the key, so a level holding as many rows as its range is wide holds every node of it
    if stored != levels.rows:
        _name_differing_node(levels, stored_rows)
    return levels.after()


def _name_differing_node(levels: merkle.Levels, stored_rows: Sequence[Any]) -> None:
    """Raise for the first recomputed node (in the order the leaves complete them) that the stored one differs
    from or that is missing."""
    stored = {(int(level), int(idx)): bytes(digest) for level, idx, digest in stored_rows}
    differing = [
        (((index + 1) << level) - 1, level, index, digest, stored.get((level, index)))
        for level, (first, row) in enumerate(zip(levels.firsts, levels.rows, strict=True))
        for index, digest in enumerate(row, start=first)
        if stored.get((level, index)) != digest
    ]
    if not differing:
        raise _fail("the stored Merkle nodes differ from the recomputed ones")
    _, level, idx, digest, found = min(differing)
    first_leaf = idx << level
    raise _fail(
        f"stored Merkle node (level {level}, index {idx}) covering entries from {first_leaf} differs from the recomputed one",
        log_index=first_leaf,
        expected=digest.hex(),
        found=found.hex() if found else "no node",
    )


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
        (
            "published_agreements",
            repo.agreements_t,
            repo.profile_from_row,
            lambda r: (r.id, r.version),
            {(p.id, p.version): p for versions in ws.agreement_versions.values() for p in versions.values()},
        ),
        (
            "certificates",
            repo.certificates_t,
            repo.certificate_from_row,
            lambda r: r.id,
            {i: c for i, c in ws.certificates.items() if c is not None},
        ),
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
