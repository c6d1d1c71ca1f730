"""Reading batches: state, history, lineage (one query per level), and a participant's batches."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.domain.lineage import DOWNSTREAM, UPSTREAM, LineageEdge, LineageNode, to_dot, to_mermaid
from ledger.errors import InvalidInput, NotFound
from ledger.services.registry import event_view
from ledger.services.views import (
    BatchList,
    BatchView,
    HistoryView,
    LineageEdgeView,
    LineageNodeView,
    LineageView,
    MoneyView,
)
from ledger.store.repo import IN_CHUNK, batch_events_t, batches_t, edges_t, events_t, holders_t

MAX_LINEAGE_BATCHES = 200_000
"""A lineage larger than this is refused rather than built in memory."""


def batch_view(row: Any) -> BatchView:
    return BatchView(**_batch_fields(row))


def _batch_fields(row: Any) -> dict[str, Any]:
    value = MoneyView(amount=row.value_amount, currency=row.value_currency) if row.value_amount else None
    return {
        "id": row.id,
        "mineral": row.mineral,
        "form": row.form,
        "mass_g": row.mass_g,
        "status": row.status,
        "custodian": row.custodian,
        "facility": row.facility_id,
        "head": row.head,
        "created_event": row.created_event,
        "lost_g": row.lost_g,
        "receiver": row.receiver,
        "receiver_facility": row.receiver_facility,
        "value": value,
    }


class Custody:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def batch(self, batch_id: str) -> BatchView:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(batches_t).where(batches_t.c.id == batch_id))).first()
        if row is None:
            raise NotFound(f"batch {batch_id!r} does not exist")
        return batch_view(row)

    async def history(self, batch_id: str) -> HistoryView:
        """Every event that touched the batch, in log order (the hash chain from creation to head)."""
        async with self._engine.connect() as conn:
            await self._require(conn, batch_id)
            rows = await conn.execute(
                sa.select(events_t)
                .join(batch_events_t, batch_events_t.c.log_index == events_t.c.log_index)
                .where(batch_events_t.c.batch_id == batch_id)
                .order_by(events_t.c.log_index)
            )
            return HistoryView(batch=batch_id, events=[event_view(row) for row in rows])

    async def _require(self, conn: AsyncConnection, batch_id: str) -> None:
        found = await conn.scalar(sa.select(batches_t.c.id).where(batches_t.c.id == batch_id))
        if found is None:
            raise NotFound(f"batch {batch_id!r} does not exist")

    async def _lineage_rows(
        self, batch_id: str, direction: str, max_depth: int | None
    ) -> tuple[dict[str, Any], dict[str, int], list[LineageEdge]]:
        """Breadth-first over ``batch_edges``: one query per level (chunked for very wide levels)."""
        if direction not in (UPSTREAM, DOWNSTREAM):
            raise InvalidInput(f"direction must be {UPSTREAM!r} or {DOWNSTREAM!r}, not {direction!r}")
        near = edges_t.c.child_batch if direction == UPSTREAM else edges_t.c.parent_batch
        depth_of: dict[str, int] = {batch_id: 0}
        edges: list[LineageEdge] = []
        rows: dict[str, Any] = {}
        async with self._engine.connect() as conn:
            await self._require(conn, batch_id)
            frontier = [batch_id]
            depth = 0
            while frontier and (max_depth is None or depth < max_depth):
                depth += 1
                following: list[str] = []
                for start in range(0, len(frontier), IN_CHUNK):
                    chunk = frontier[start : start + IN_CHUNK]
                    for row in await conn.execute(sa.select(edges_t).where(near.in_(chunk))):
                        edges.append(LineageEdge(row.parent_batch, row.child_batch, row.event_id, row.mass_g))
                        other = row.parent_batch if direction == UPSTREAM else row.child_batch
                        if other not in depth_of:
                            depth_of[other] = depth
                            following.append(other)
                if len(depth_of) > MAX_LINEAGE_BATCHES:
                    raise InvalidInput(
                        f"the {direction} lineage of {batch_id!r} exceeds {MAX_LINEAGE_BATCHES} batches; "
                        "ask for fewer levels with max_depth"
                    )
                frontier = following
            ids = list(depth_of)
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start : start + IN_CHUNK]
                for row in await conn.execute(sa.select(batches_t).where(batches_t.c.id.in_(chunk))):
                    rows[row.id] = row
        edges.sort(key=lambda e: (e.parent, e.child))
        return rows, depth_of, edges

    async def lineage(self, batch_id: str, direction: str, max_depth: int | None = None) -> LineageView:
        rows, depth_of, edges = await self._lineage_rows(batch_id, direction, max_depth)
        order = sorted(rows, key=lambda i: (depth_of[i], i))
        return LineageView(
            root=batch_id,
            direction=direction,
            batches=[LineageNodeView(**_batch_fields(rows[i]), depth=depth_of[i]) for i in order],
            edges=[
                LineageEdgeView(parent=e.parent, child=e.child, event_id=e.event_id, mass_g=e.mass_g)
                for e in edges
            ],
        )

    async def lineage_picture(
        self, batch_id: str, direction: str, fmt: str, max_depth: int | None = None
    ) -> str:
        """The lineage as Graphviz DOT or Mermaid text."""
        if fmt not in ("dot", "mermaid"):
            raise InvalidInput(f"format must be json, dot or mermaid, not {fmt!r}")
        rows, depth_of, edges = await self._lineage_rows(batch_id, direction, max_depth)
        nodes = [
            LineageNode(
                id=row.id,
                mineral=row.mineral,
                form=row.form,
                mass_g=row.mass_g,
                status=row.status,
                custodian=row.custodian,
                facility=row.facility_id,
                depth=depth_of[row.id],
            )
            for row in sorted(rows.values(), key=lambda r: (depth_of[r.id], r.id))
        ]
        render = to_dot if fmt == "dot" else to_mermaid
        return render(batch_id, direction, nodes, edges)

    async def participant_batches(
        self, participant_id: str, *, status: str | None = None, limit: int = 100, after: str | None = None
    ) -> BatchList:
        """Batches the participant holds or held, by id."""
        query = (
            sa.select(batches_t)
            .join(holders_t, holders_t.c.batch_id == batches_t.c.id)
            .where(holders_t.c.participant_id == participant_id)
            .order_by(batches_t.c.id)
            .limit(limit + 1)
        )
        if status is not None:
            query = query.where(batches_t.c.status == status)
        if after is not None:
            query = query.where(batches_t.c.id > after)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        page = rows[:limit]
        return BatchList(
            items=[batch_view(row) for row in page],
            next_cursor=page[-1].id if len(rows) > limit and page else None,
        )
