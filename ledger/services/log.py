"""The transparency log: integrating accepted events into the Merkle tree, signing checkpoints, and proofs.

Sequence, then integrate (as Tessera does): acceptance gives an event its log index durably; integration,
separately and in batches, folds new entries into the RFC 9162 tree, stores every newly completed node, and
signs a C2SP checkpoint. A proof is then one query for O(log n) stored nodes.

Hot path of an inclusion proof (the default size, the latest checkpoint): the process keeps the latest
checkpoint's size, its frontier nodes and root (immutable for that size), and answers with one statement on the
driver's own connection (no ORM, no BEGIN/ROLLBACK): the event's log index, the latest checkpoint size (so a
checkpoint signed by another process is noticed), and the candidate sibling nodes ``(l, (index >> l) ^ 1)`` of
every level. Every node a proof needs is such a sibling or a frontier node of the tree size (see
:func:`_proof_candidates`), so nothing else is read. Anything unusual (no cached checkpoint, a newer one, an event
the checkpoint does not cover, another tree size) takes the general path.

Leaf choice: the leaf data of an event is the 32-byte SHA-256 digest that its event id names (the hash of the
signed payload bytes), so its leaf hash is SHA-256(0x00 || digest). The payload is what the signer signed; the
signature itself is checked against the registry's keys, which are events in the same log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.domain.keys import SigningKey, b64encode
from ledger.errors import InvalidInput, NotFound, NotYetIntegrated, Overloaded, ProofUnavailable
from ledger.log import merkle, tiles
from ledger.log.checkpoint import Checkpoint, sign_checkpoint, verifier_key
from ledger.log.cosignature import add_signature_lines
from ledger.log.offline import leaf_for_event
from ledger.services.log_guard import LogGuard, LogRollback, Superseded
from ledger.services.registry import event_view
from ledger.services.views import (
    CheckpointList,
    CheckpointView,
    ConsistencyProofView,
    EntriesView,
    InclusionProofView,
)
from ledger.store import lite, pg
from ledger.store.db import driver as db_driver
from ledger.store.db import driver_transaction, write_transaction
from ledger.store.models import CheckpointRow, CosignatureRow, LogTreeRow, MerkleNodeRow
from ledger.store.repo import events_t, log_state_t

nodes_t: sa.Table = MerkleNodeRow.__table__  # type: ignore[assignment]
tree_t: sa.Table = LogTreeRow.__table__  # type: ignore[assignment]
checkpoints_t: sa.Table = CheckpointRow.__table__  # type: ignore[assignment]
cosignatures_t: sa.Table = CosignatureRow.__table__  # type: ignore[assignment]


_BEGIN = "BEGIN IMMEDIATE"
_MOVE_TREE = f"UPDATE {tree_t.name} SET size = ?, frontier = ? WHERE id = 1 AND size = ?"
_INSERT_NODES = "INSERT INTO merkle_nodes (level, idx, hash) VALUES (?, ?, ?)"
_INSERT_CHECKPOINT = (
    f"INSERT INTO {checkpoints_t.name} (size, root_hash, note, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
_CREATED_AT = checkpoints_t.c.created_at
"""An integration round's writes on SQLite (see ``TransparencyLog._integrate_sqlite``), straight through the driver;
``created_at`` bound as SQLAlchemy binds that column."""


INTEGRATION_BATCH_SIZE = 20_000
"""Most log entries folded into the tree in one integration round (one transaction, one checkpoint)."""

INTEGRATION_INTERVAL_SECONDS = 0.25
"""How long the integrator waits when there is nothing new to integrate."""

INTEGRATION_COALESCE_SECONDS = 0.25
"""After being woken, how long the integrator lets further entries gather before folding them in (each round costs
a write transaction and a signature, so a trickle of single events should not pay one per event)."""

MAX_ENTRIES_PAGE = 1000
"""Most entries returned by one ``GET /v1/log/entries``."""

GUARD_RETRY_SECONDS = 5.0
"""How often an integrator that refused to sign (see :mod:`ledger.services.log_guard`) looks again."""

INTEGRATOR_LOCK_ID = 0x4C45444745520001
"""PostgreSQL advisory lock that elects the single integrator among API processes."""

log = logging.getLogger("ledger.log")


@dataclass(frozen=True)
class LogSigner:
    """The ledger's log key and the name it signs checkpoints with (the log's origin)."""

    origin: str
    key: SigningKey

    @property
    def vkey(self) -> str:
        return verifier_key(self.origin, self.key.public_key)

    def sign(self, size: int, root: bytes) -> str:
        return sign_checkpoint(Checkpoint(self.origin, size, root), self.origin, self.key.seed)


# The inclusion proof's hot path, one statement: the event's log index, the latest checkpoint's size, and the
# stored sibling node of every level below ``levels`` (rows with NULL node columns where it does not exist). The
# sibling of x is x ^ 1, written (x | 1) - (x & 1) because SQLite has no XOR operator.
_PROOF_SQL_POSTGRESQL = """
SELECT e.log_index, (SELECT max(size) FROM checkpoints), m.level, m.idx, m.hash
FROM events AS e
CROSS JOIN generate_series(0, $2::integer - 1) AS lv(l)
LEFT JOIN merkle_nodes AS m
  ON m.level = lv.l AND m.idx = ((e.log_index >> lv.l) | 1) - ((e.log_index >> lv.l) & 1)
WHERE e.event_id = $1
"""
_PROOF_SQL_SQLITE = """
WITH RECURSIVE lv(l) AS (SELECT 0 UNION ALL SELECT l + 1 FROM lv WHERE l + 1 < ?)
SELECT e.log_index, (SELECT max(size) FROM checkpoints), m.level, m.idx, m.hash
FROM events AS e
CROSS JOIN lv
LEFT JOIN merkle_nodes AS m
  ON m.level = lv.l AND m.idx = ((e.log_index >> lv.l) | 1) - ((e.log_index >> lv.l) & 1)
WHERE e.event_id = ?
"""


def _proof_candidates(index: int, size: int) -> set[merkle.NodeId]:
    """The nodes the hot path reads for leaf ``index`` (the siblings on its path) plus the cached frontier.

    Each element of PATH(index, D[size]) is either a complete sibling subtree, node ``(l, (index >> l) ^ 1)`` for
    some level ``l``, or a range on the tree's right edge, which is a union of the frontier's subtrees. Hence
    ``inclusion_proof_nodes(index, size)`` is a subset of this set (``tests/test_log_proof_path.py`` checks it
    exhaustively for small trees).
    """
    return {(level, (index >> level) ^ 1) for level in range(size.bit_length())} | set(
        merkle.frontier_nodes(size)
    )


@dataclass(frozen=True)
class _LatestCheckpoint:
    """What the hot path needs of the latest checkpoint; all of it is immutable for this size."""

    size: int
    frontier: dict[merkle.NodeId, bytes]
    root_hash: str


def _cancelled(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == "57014"


def _checkpoint_view(row: Any, cosignatures: Sequence[Any] = ()) -> CheckpointView:
    note = add_signature_lines(row.note, [c.line for c in cosignatures]) if cosignatures else row.note
    return CheckpointView(
        size=row.size,
        root_hash=b64encode(bytes(row.root_hash)),
        note=note,
        created_at=row.created_at,
        cosigned_by=[c.witness for c in cosignatures],
    )


async def _cosigned(conn: AsyncConnection, rows: Sequence[Any]) -> list[CheckpointView]:
    """Checkpoint views whose notes carry the witness cosignatures collected for them (by witness name)."""
    by_size: dict[int, list[Any]] = {}
    if rows:
        found = await conn.execute(
            sa.select(cosignatures_t)
            .where(cosignatures_t.c.size.in_([int(row.size) for row in rows]))
            .order_by(cosignatures_t.c.size, cosignatures_t.c.witness)
        )
        for cosignature in found:
            by_size.setdefault(int(cosignature.size), []).append(cosignature)
    return [_checkpoint_view(row, by_size.get(int(row.size), ())) for row in rows]


async def _leaves(conn: AsyncConnection, start: int, end: int) -> list[bytes]:
    """The leaf hashes of the entries ``start .. end - 1``, refusing a gap in the log's indices."""
    leaves: list[bytes] = []
    for expected, (log_index, event_id) in enumerate(await _event_ids(conn, start, end), start):
        if log_index != expected:
            raise RuntimeError(f"log index {expected} is missing from the events table")
        leaves.append(leaf_for_event(event_id))
    if len(leaves) != end - start:
        raise RuntimeError(f"expected {end - start} entries from index {start}, found {len(leaves)}")
    return leaves


async def _event_ids(conn: AsyncConnection, start: int, end: int) -> Sequence[tuple[int, str]]:
    """(log index, event id) of the entries ``start .. end - 1`` in log order (on PostgreSQL straight from asyncpg:
    SQLAlchemy's result rows cost more than folding the leaves into the tree)."""
    if conn.dialect.name == "postgresql":
        raw = await pg.driver(conn)
        return cast(
            Sequence[tuple[int, str]],
            await raw.fetch(
                "SELECT log_index, event_id FROM events WHERE log_index >= $1 AND log_index < $2 "
                "ORDER BY log_index",
                start,
                end,
            ),
        )
    rows = await conn.execute(
        sa.select(events_t.c.log_index, events_t.c.event_id)
        .where(events_t.c.log_index >= start, events_t.c.log_index < end)
        .order_by(events_t.c.log_index)
    )
    return [(int(i), str(e)) for i, e in rows]


class TransparencyLog:
    def __init__(
        self,
        engine: AsyncEngine,
        signer: LogSigner | None,
        reader: AsyncEngine | None = None,
        guard: LogGuard | None = None,
    ) -> None:
        self._engine = engine
        self.guard = guard or LogGuard(None)
        """The last checkpoint this host signed, kept outside the database: nothing smaller or inconsistent is
        signed."""
        self.on_checkpoint: Callable[[int], None] | None = None
        """Called with the size of each checkpoint this process signed, once committed (the witness cosigner)."""
        self._reader = reader or engine
        """Where checkpoints, proofs and entries are read (a replica, with LEDGER_DATABASE_READ_URL); integration
        always reads and writes the primary."""
        self.signer = signer
        self._wake = asyncio.Event()
        self._integrating = asyncio.Lock()
        """Rounds of one process take turns (the integrator loop, and a bundle waiting for its checkpoint): the guard
        must see a round's checkpoint before any later round signs a larger one."""
        self._latest: _LatestCheckpoint | None = None
        """The latest checkpoint as this process last saw it (the hot path checks it in the same statement)."""
        self.witness_quorum = 0
        """How many witness cosignatures a bundle's checkpoint waits for (LEDGER_WITNESS_QUORUM)."""

    # --- integration -----------------------------------------------------------------------------------------

    def notify(self) -> None:
        """Tell a running integrator that new entries were sequenced."""
        self._wake.set()

    async def integrate_once(self, max_leaves: int = INTEGRATION_BATCH_SIZE) -> int:
        """Fold up to ``max_leaves`` sequenced entries into the tree and sign a checkpoint; return how many."""
        if not await self._work_waiting():
            return 0
        signed: list[int] = []
        async with self._integrating:
            done = await self._integrate(max_leaves, signed)
        if signed and self.on_checkpoint is not None:
            self.on_checkpoint(signed[-1])
        return done

    async def _integrate(self, max_leaves: int, signed: list[int]) -> int:
        """Integrate; the size of a checkpoint signed on the way is appended to ``signed``."""
        if self._engine.dialect.name == "sqlite":
            return await self._integrate_sqlite(max_leaves, signed)
        async with write_transaction(self._engine) as conn:
            if conn.dialect.name == "postgresql":
                elected = await conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(INTEGRATOR_LOCK_ID)))
                if not elected:
                    return 0  # another process integrates right now
            tree = (await conn.execute(sa.select(tree_t).where(tree_t.c.id == 1))).one()
            sequenced = int(
                await conn.scalar(sa.select(log_state_t.c.size).where(log_state_t.c.id == 1)) or 0
            )
            start = int(tree.size)
            end = min(sequenced, start + max_leaves)
            if end <= start:
                if self.signer is not None and start > 0:
                    await self._checkpoint_if_missing(
                        conn, start, merkle.Frontier.from_bytes(bytes(tree.frontier)), signed
                    )
                return 0
            leaves = await _leaves(conn, start, end)
            frontier, new_nodes = merkle.append(merkle.Frontier.from_bytes(bytes(tree.frontier)), leaves)
            if conn.dialect.name == "postgresql":
                await pg.copy_rows(conn, "merkle_nodes", ("level", "idx", "hash"), new_nodes)
            else:
                await lite.insert_rows(conn, "merkle_nodes", ("level", "idx", "hash"), new_nodes)
            await conn.execute(
                tree_t.update()
                .where(tree_t.c.id == 1)
                .values(size=frontier.size, frontier=frontier.to_bytes())
            )
            if self.signer is not None:
                await self._insert_checkpoint(conn, frontier.size, frontier.root(), signed)
            return end - start

    async def _integrate_sqlite(self, max_leaves: int, signed: list[int]) -> int:
        """:meth:`_integrate` on SQLite, where a write transaction locks the whole database against the sequencer:
        everything but the writes happens before it (reading the entries, folding them in, the guard's check and
        signing the checkpoint), in one read snapshot, and the write transaction only stores the result, if the
        tree still has the size it was read at (else another integrator was first: nothing is written, and the next
        round starts from its tree). Under a load of single POSTs the integrator held the write lock for 15-40 ms
        per round, each of its ten statements waiting for a turn of the busy event loop, while every commit
        waited."""
        async with self._engine.connect() as conn, conn.begin():
            tree = (await conn.execute(sa.select(tree_t).where(tree_t.c.id == 1))).one()
            sequenced = int(
                await conn.scalar(sa.select(log_state_t.c.size).where(log_state_t.c.id == 1)) or 0
            )
            start = int(tree.size)
            end = min(sequenced, start + max_leaves)
            frontier = merkle.Frontier.from_bytes(bytes(tree.frontier))
            new_nodes: list[merkle.StoredNode] = []
            if end > start:
                frontier, new_nodes = merkle.append(frontier, await _leaves(conn, start, end))
            elif (
                self.signer is None
                or start == 0
                or await conn.scalar(sa.select(checkpoints_t.c.size).where(checkpoints_t.c.size == start))
                is not None
            ):
                return 0
            note: str | None = None
            if self.signer is not None:
                added = {(level, idx): digest for level, idx, digest in new_nodes}

                async def fetch(wanted: list[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
                    stored = await self._fetch_nodes(conn, [node for node in wanted if node not in added])
                    return {**stored, **{node: added[node] for node in wanted if node in added}}

                async def overtaken(signed_size: int) -> bool:
                    # Another process (``ledger log integrate`` beside the server) signed a larger tree after this
                    # round read its own. It records that checkpoint while it holds the write lock, before it
                    # commits: a write transaction here waits for its end, then reads the tree as committed.
                    async with write_transaction(self._engine) as now:
                        size = await now.scalar(sa.select(tree_t.c.size).where(tree_t.c.id == 1))
                    return int(size or 0) >= signed_size

                root = frontier.root()
                try:
                    await self.guard.check(
                        Checkpoint(self.signer.origin, frontier.size, root), fetch, overtaken
                    )
                except Superseded:
                    return 0
                note = self.signer.sign(frontier.size, root)
        if note is not None:
            self._latest = None

        def store(connection: sqlite3.Connection) -> bool | None:
            """The round's writes, on SQLite's own connection in aiosqlite's thread: None if the tree moved
            (nothing written), else whether this round's checkpoint was stored."""
            with lite.translated(_BEGIN):
                connection.execute(_BEGIN)
            with lite.translated(_MOVE_TREE):
                moved = connection.execute(_MOVE_TREE, (frontier.size, frontier.to_bytes(), start)).rowcount
            if moved != 1:
                connection.execute("ROLLBACK")
                return None  # another integrator was first: nothing of this round is written
            with lite.translated(_INSERT_NODES):
                connection.executemany(_INSERT_NODES, new_nodes)
            stored = False
            if note is not None:
                # recorded before the commit, as in _insert_checkpoint: after a crash in between, the next round
                # reads the same tree and sequenced entries and signs the same checkpoint again (or a larger one)
                self.guard.record(note)  # its writes and fsyncs on this thread, off the event loop's
                created_at = datetime.now(UTC)
                at = _CREATED_AT.type._cached_bind_processor(dialect)
                with lite.translated(_INSERT_CHECKPOINT):
                    # Where it was missing, another integrator may have added it meanwhile: a checkpoint of the
                    # same tree (this round found it at the size it read), so the same root.
                    stored = (
                        connection.execute(
                            _INSERT_CHECKPOINT,
                            (frontier.size, root, note, at(created_at) if at is not None else created_at),
                        ).rowcount
                        == 1
                    )
            with lite.translated("COMMIT"):
                connection.execute("COMMIT")
            return stored

        # One trip to aiosqlite's thread for the whole write transaction: through SQLAlchemy it was ten, each
        # waiting for a turn of the busy event loop while every commit of new events waited for the lock (6-15 ms
        # per round under single POSTs at concurrency 64, up to the p99 of their latency).
        async with driver_transaction(self._engine) as (conn, answered):
            dialect = conn.dialect
            raw = await db_driver(conn)
            try:
                outcome = await lite.on_driver_thread(raw, store)
            except Exception:
                answered()  # the pool's reset rolls back a transaction left open
                raise
            answered()
        if outcome is None:
            return 0
        if outcome:
            signed.append(frontier.size)
        return end - start

    async def _work_waiting(self) -> bool:
        """A cheap read, so that an idle integrator never takes the write lock."""
        async with self._engine.connect() as conn:
            tree_size = int(await conn.scalar(sa.select(tree_t.c.size).where(tree_t.c.id == 1)) or 0)
            sequenced = int(
                await conn.scalar(sa.select(log_state_t.c.size).where(log_state_t.c.id == 1)) or 0
            )
            if sequenced > tree_size:
                return True
            if self.signer is None or tree_size == 0:
                return False
            latest = await conn.scalar(sa.select(sa.func.max(checkpoints_t.c.size)))
            return bool(latest != tree_size)

    async def _checkpoint_if_missing(
        self, conn: AsyncConnection, size: int, frontier: merkle.Frontier, signed: list[int]
    ) -> None:
        exists = await conn.scalar(sa.select(checkpoints_t.c.size).where(checkpoints_t.c.size == size))
        if exists is None:
            await self._insert_checkpoint(conn, size, frontier.root(), signed)

    async def _insert_checkpoint(
        self, conn: AsyncConnection, size: int, root: bytes, signed: list[int]
    ) -> None:
        assert self.signer is not None
        checkpoint = Checkpoint(self.signer.origin, size, root)
        await self.guard.check(checkpoint, lambda wanted: self._fetch_nodes(conn, wanted))
        # Forget the cached latest checkpoint. A reader that caches the old one again before this commits is caught
        # by the hot path's own check of the latest size, as are checkpoints signed by other processes.
        self._latest = None
        note = self.signer.sign(size, root)
        await conn.execute(
            checkpoints_t.insert().values(size=size, root_hash=root, note=note, created_at=datetime.now(UTC))
        )
        await self._record(note)
        signed.append(size)

    async def _record(self, note: str) -> None:
        """The guard's record of ``note``, written and fsynced on a thread: on the event loop its two fsyncs held up
        every request of the process for a millisecond or two per round (sampled: about 1 % of the event loop's time
        under single POSTs at concurrency 64)."""
        await asyncio.to_thread(self.guard.record, note)

    async def integrate_all(self) -> int:
        """Integrate until the tree covers everything sequenced so far."""
        total = 0
        while True:
            done = await self.integrate_once()
            total += done
            if done == 0:
                return total

    async def run(self, stop: asyncio.Event) -> None:
        """The integrator loop for an API process: integrate whenever woken or every interval, until ``stop``."""
        while not stop.is_set():
            try:
                done = await self.integrate_once()
            except LogRollback:
                # already logged loudly, once; /readyz and the metrics show it until an operator acts
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), GUARD_RETRY_SECONDS)
                continue
            except Exception:
                log.exception("integration failed; retrying")
                done = 0
            if done >= INTEGRATION_BATCH_SIZE:
                continue  # a backlog: keep folding it in
            # Wait for news, then let more entries gather for the rest of the interval, so that a stream of
            # single events costs one integration and one checkpoint per interval, not one per event.
            self._wake.clear()
            started = asyncio.get_running_loop().time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), INTEGRATION_INTERVAL_SECONDS)
            remaining = INTEGRATION_INTERVAL_SECONDS - (asyncio.get_running_loop().time() - started)
            if remaining > 0 and not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(remaining, INTEGRATION_COALESCE_SECONDS))

    # --- reads -----------------------------------------------------------------------------------------------

    async def checkpoint_covering(self, size: int, wait_seconds: float) -> CheckpointView:
        """The latest checkpoint covering at least ``size`` entries, integrating (and waiting, at most
        ``wait_seconds``) if none does yet: a bundle's entries must all be in the tree its checkpoint signs. With
        witnesses configured it also waits, within the same bound, until a quorum of them has cosigned it, so that
        a verifier with a witness policy accepts the bundle; past the bound it is served with what it has."""
        deadline = time.monotonic() + wait_seconds
        while True:
            async with self._reader.connect() as conn:
                covering = sa.select(checkpoints_t).where(checkpoints_t.c.size >= size)
                row = None
                if self.witness_quorum:
                    # the newest covering checkpoint that already has its quorum: under steady ingest the newest
                    # of all is often not cosigned yet, and chasing it would never end
                    witnessed = (
                        sa.select(cosignatures_t.c.size)
                        .where(cosignatures_t.c.size >= size)
                        .group_by(cosignatures_t.c.size)
                        .having(sa.func.count() >= self.witness_quorum)
                    )
                    row = (
                        await conn.execute(
                            covering.where(checkpoints_t.c.size.in_(witnessed))
                            .order_by(checkpoints_t.c.size.desc())
                            .limit(1)
                        )
                    ).first()
                if row is None:
                    row = (
                        await conn.execute(covering.order_by(checkpoints_t.c.size.desc()).limit(1))
                    ).first()
                view = (await _cosigned(conn, [row]))[0] if row is not None else None
            if view is not None and (
                len(view.cosigned_by) >= self.witness_quorum or time.monotonic() > deadline
            ):
                return view
            if view is None:
                await self.integrate_all()
                if time.monotonic() > deadline:
                    raise Overloaded(
                        "the transparency log has not yet integrated every event this bundle needs; try again "
                        "shortly",
                        retry_after=2,
                    )
            await asyncio.sleep(0.05)

    async def tree_size(self) -> int:
        async with self._reader.connect() as conn:
            return int(await conn.scalar(sa.select(tree_t.c.size).where(tree_t.c.id == 1)) or 0)

    async def latest_checkpoint(self) -> CheckpointView:
        """The latest checkpoint, its note carrying every witness cosignature collected so far."""
        async with self._reader.connect() as conn:
            row = (
                await conn.execute(sa.select(checkpoints_t).order_by(checkpoints_t.c.size.desc()).limit(1))
            ).first()
            if row is None:
                raise NotFound(
                    "the log has no checkpoint yet: nothing has been integrated, or no log key is configured"
                )
            return (await _cosigned(conn, [row]))[0]

    async def checkpoint(self, size: int) -> CheckpointView:
        async with self._reader.connect() as conn:
            row = (await conn.execute(sa.select(checkpoints_t).where(checkpoints_t.c.size == size))).first()
            if row is None:
                raise NotFound(f"there is no checkpoint of tree size {size}")
            return (await _cosigned(conn, [row]))[0]

    async def checkpoints(self, *, after: int | None = None, limit: int = 100) -> CheckpointList:
        query = sa.select(checkpoints_t).order_by(checkpoints_t.c.size).limit(limit)
        if after is not None:
            query = query.where(checkpoints_t.c.size > after)
        async with self._reader.connect() as conn:
            rows = (await conn.execute(query)).all()
            return CheckpointList(items=await _cosigned(conn, rows))

    async def fetch_nodes(self, wanted: list[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        """Stored nodes by (level, index), in chunks (for bundles that need many proofs at once)."""
        found: dict[merkle.NodeId, bytes] = {}
        async with self._reader.connect() as conn:
            for start in range(0, len(wanted), 400):
                found.update(await self._fetch_nodes(conn, wanted[start : start + 400]))
        return found

    async def _fetch_nodes(
        self, conn: AsyncConnection, wanted: list[merkle.NodeId]
    ) -> dict[merkle.NodeId, bytes]:
        if not wanted:
            return {}
        columns = sa.select(nodes_t.c.level, nodes_t.c.idx, nodes_t.c.hash)
        if conn.dialect.name == "postgresql":
            query = columns.where(sa.tuple_(nodes_t.c.level, nodes_t.c.idx).in_(sorted(set(wanted))))
        else:
            # SQLite scans the table for a row-value IN list; one primary-key IN list per level, OR'ed, is planned
            # as index look-ups
            by_level: dict[int, list[int]] = {}
            for level, idx in set(wanted):
                by_level.setdefault(level, []).append(idx)
            query = columns.where(
                sa.or_(
                    *(
                        sa.and_(nodes_t.c.level == level, nodes_t.c.idx.in_(sorted(indices)))
                        for level, indices in sorted(by_level.items())
                    )
                )
            )
        return {(level, idx): bytes(digest) for level, idx, digest in await conn.execute(query)}

    async def _resolve_size(
        self, conn: AsyncConnection, tree_size: int | None
    ) -> tuple[int, int, int | None]:
        """(the tree size asked for or the latest checkpoint's, the integrated size, the latest checkpoint's)."""
        latest = sa.select(sa.func.max(checkpoints_t.c.size)).scalar_subquery()
        row = (await conn.execute(sa.select(tree_t.c.size, latest).where(tree_t.c.id == 1))).one()
        integrated = int(row[0] or 0)
        checkpointed = int(row[1]) if row[1] is not None else None
        if tree_size is None:
            tree_size = checkpointed if checkpointed is not None else integrated
        if tree_size > integrated:
            raise ProofUnavailable(
                f"tree_size {tree_size} is beyond the integrated tree, which has {integrated} entries"
            )
        return tree_size, integrated, checkpointed

    async def inclusion_proof(self, event_id: str, tree_size: int | None = None) -> InclusionProofView:
        latest = self._latest
        if latest is not None and (tree_size is None or tree_size == latest.size):
            fast = await self._inclusion_proof_hot(event_id, latest)
            if fast is not None:
                return fast
        return await self._inclusion_proof_general(event_id, tree_size)

    async def _inclusion_proof_hot(
        self, event_id: str, latest: _LatestCheckpoint
    ) -> InclusionProofView | None:
        """The proof against the cached latest checkpoint in one statement; None if the general path must answer
        (a newer checkpoint exists, or the event is beyond this one). Raises NotFound for an unknown event."""
        size = latest.size
        levels = max(1, size.bit_length())
        async with self._reader.connect() as conn:
            driver = await db_driver(conn)
            try:
                if conn.dialect.name == "postgresql":
                    rows = await driver.fetch(_PROOF_SQL_POSTGRESQL, event_id, levels)
                else:
                    rows = await driver.execute_fetchall(_PROOF_SQL_SQLITE, (levels, event_id))
            except Exception as exc:
                if _cancelled(exc):
                    raise Overloaded(
                        "a database statement ran longer than LEDGER_STATEMENT_TIMEOUT_MS and was cancelled; "
                        "retry later"
                    ) from exc
                if not hasattr(exc, "sqlstate") and conn.dialect.name == "postgresql":
                    await conn.invalidate()  # not an error of the statement: the connection may be broken
                raise
        if not rows:
            raise NotFound(f"event {event_id!r} is not in the log")
        log_index, checkpointed = int(rows[0][0]), rows[0][1]
        if checkpointed != size:
            self._latest = None  # another checkpoint was signed (perhaps by another process): refresh
            return None
        if log_index >= size:
            return None  # integrated since, or not yet: the general path says which
        nodes = dict(latest.frontier)
        for row in rows:
            if row[2] is not None:
                nodes[(row[2], row[3])] = bytes(row[4])
        proof = merkle.inclusion_proof(log_index, size, nodes)
        return InclusionProofView(
            event_id=event_id,
            log_index=log_index,
            tree_size=size,
            leaf_hash=b64encode(leaf_for_event(event_id)),
            hashes=[b64encode(h) for h in proof],
            root_hash=latest.root_hash,
        )

    async def _inclusion_proof_general(
        self, event_id: str, tree_size: int | None = None
    ) -> InclusionProofView:
        async with self._reader.connect() as conn:
            log_index = await conn.scalar(
                sa.select(events_t.c.log_index).where(events_t.c.event_id == event_id)
            )
            if log_index is None:
                raise NotFound(f"event {event_id!r} is not in the log")
            size, integrated, checkpointed = await self._resolve_size(conn, tree_size)
            if log_index >= integrated:
                raise NotYetIntegrated(
                    f"event {event_id} has log index {log_index} but the Merkle tree covers only {integrated} "
                    "entries so far; integration runs every fraction of a second, so ask again shortly",
                    log_index=log_index,
                    tree_size=integrated,
                )
            if log_index >= size:
                raise ProofUnavailable(
                    f"event {event_id} has log index {log_index}, outside a tree of size {size}; ask for a larger tree_size"
                )
            wanted = merkle.inclusion_proof_nodes(log_index, size) + merkle.frontier_nodes(size)
            nodes = await self._fetch_nodes(conn, wanted)
        proof = merkle.inclusion_proof(log_index, size, nodes)
        root_hash = b64encode(merkle.Frontier.from_nodes(size, nodes).root())
        if size == checkpointed and (self._latest is None or self._latest.size < size):
            frontier = {node: nodes[node] for node in merkle.frontier_nodes(size)}
            self._latest = _LatestCheckpoint(size, frontier, root_hash)
        return InclusionProofView(
            event_id=event_id,
            log_index=log_index,
            tree_size=size,
            leaf_hash=b64encode(leaf_for_event(event_id)),
            hashes=[b64encode(h) for h in proof],
            root_hash=root_hash,
        )

    async def consistency_proof(self, first: int, second: int | None = None) -> ConsistencyProofView:
        if first < 0:
            raise InvalidInput("first must be a tree size of 0 or more")
        async with self._reader.connect() as conn:
            second, _, _ = await self._resolve_size(conn, second)
            if first > second:
                raise ProofUnavailable(f"first ({first}) must not exceed second ({second})")
            wanted = (
                merkle.consistency_proof_nodes(first, second)
                + merkle.frontier_nodes(first)
                + merkle.frontier_nodes(second)
            )
            nodes = await self._fetch_nodes(conn, wanted)
        proof = merkle.consistency_proof(first, second, nodes)
        return ConsistencyProofView(
            first=first,
            second=second,
            hashes=[b64encode(h) for h in proof],
            first_root=b64encode(merkle.Frontier.from_nodes(first, nodes).root()),
            second_root=b64encode(merkle.Frontier.from_nodes(second, nodes).root()),
        )

    async def consistency_hashes(self, first: int, second: int) -> list[bytes]:
        """The RFC 9162 consistency proof from ``first`` to ``second`` entries, read from the primary (for witnesses,
        which must be sent proofs of what was just signed, before a replica may have it)."""
        async with self._engine.connect() as conn:
            nodes = await self._fetch_nodes(conn, merkle.consistency_proof_nodes(first, second))
        return merkle.consistency_proof(first, second, nodes)

    async def tile(self, path: str) -> bytes:
        """A C2SP tlog-tiles resource: a Merkle tile's hashes or an entry bundle (see :mod:`ledger.log.tiles`).
        Only what a signed checkpoint covers is served, so a tile never changes once served."""
        try:
            ref = tiles.parse_tile_path(path)
        except tiles.TileError as exc:
            raise NotFound(str(exc)) from None
        async with self._reader.connect() as conn:
            signed = int(await conn.scalar(sa.select(sa.func.max(checkpoints_t.c.size))) or 0)
            if ref.leaves_needed() > signed:
                raise NotFound(
                    f"{ref.path} needs a tree of {ref.leaves_needed()} entries; the latest checkpoint has {signed}"
                )
            first, last = ref.first_node, ref.first_node + ref.width
            if ref.level is None:
                rows = await conn.execute(
                    sa.select(events_t.c.log_index, events_t.c.event_id)
                    .where(events_t.c.log_index >= first, events_t.c.log_index < last)
                    .order_by(events_t.c.log_index)
                )
                found = [bytes.fromhex(str(event_id)[7:]) for _, event_id in rows]
            else:
                rows = await conn.execute(
                    sa.select(nodes_t.c.idx, nodes_t.c.hash)
                    .where(nodes_t.c.level == ref.tree_level, nodes_t.c.idx >= first, nodes_t.c.idx < last)
                    .order_by(nodes_t.c.idx)
                )
                found = [bytes(digest) for _, digest in rows]
        if len(found) != ref.width:
            raise NotFound(f"{ref.path}: the log holds {len(found)} of its {ref.width} entries")
        return tiles.entry_bundle(found) if ref.level is None else b"".join(found)

    async def entries(self, start: int, end: int | None = None) -> EntriesView:
        if start < 0:
            raise InvalidInput("start must be 0 or more")
        end = start + MAX_ENTRIES_PAGE if end is None else end
        if end <= start:
            raise InvalidInput(f"end ({end}) must be greater than start ({start})")
        end = min(end, start + MAX_ENTRIES_PAGE)
        async with self._reader.connect() as conn:
            rows = await conn.execute(
                sa.select(events_t)
                .where(events_t.c.log_index >= start, events_t.c.log_index < end)
                .order_by(events_t.c.log_index)
            )
            items = [event_view(row) for row in rows]
        return EntriesView(start=start, entries=items)
