"""Reading batches: state, history, lineage (one query per level), and a participant's batches."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.domain.lineage import DOWNSTREAM, UPSTREAM, LineageEdge, LineageNode, to_dot, to_mermaid
from ledger.errors import InvalidInput, NotFound
from ledger.services.access import Access, sees_values_of
from ledger.services.registry import event_view
from ledger.services.tokens import Caller
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

MAX_PAGE = 500
"""Most batches in one page of a participant's batches."""


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
    def __init__(self, engine: AsyncEngine, access: Access) -> None:
        self._engine = engine
        self._access = access

    async def _creators(self, conn: AsyncConnection, event_ids: set[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        ids = sorted(event_ids)
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start : start + IN_CHUNK]
            query = sa.select(events_t.c.event_id, events_t.c.actor).where(events_t.c.event_id.in_(chunk))
            found.update({event_id: actor for event_id, actor in await conn.execute(query)})
        return found

    def _fields_for(self, row: Any, caller: Caller | None, creators: dict[str, str]) -> dict[str, Any]:
        fields = _batch_fields(row)
        if fields["value"] is not None and not sees_values_of(caller, creators.get(row.created_event, "")):
            fields["value"] = None
            fields["value_redacted"] = True
        return fields

    async def batch(self, batch_id: str, caller: Caller | None = None) -> BatchView:
        async with (
            self._engine.connect() as conn
        ):  # one connection: the row, then whether the caller may see it
            row = (await conn.execute(sa.select(batches_t).where(batches_t.c.id == batch_id))).first()
            if row is None or not await self._access.can_read_on(conn, caller, batch_id):
                raise NotFound(f"batch {batch_id!r} does not exist")  # the same answer either way
            creators = await self._creators(conn, {row.created_event}) if row.value_amount else {}
        return BatchView(**self._fields_for(row, caller, creators))

    async def history(self, batch_id: str, caller: Caller | None = None) -> HistoryView:
        """Every event that touched the batch, in log order (the hash chain from creation to head)."""
        await self._access.require_batch(caller, batch_id)
        async with self._engine.connect() as conn:
            await self._require(conn, batch_id)
            rows = await conn.execute(
                sa.select(events_t)
                .join(batch_events_t, batch_events_t.c.log_index == events_t.c.log_index)
                .where(batch_events_t.c.batch_id == batch_id)
                .order_by(events_t.c.log_index)
            )
            views = [event_view(row, caller) for row in rows]
        # filtered like lineage: no event or output leading to batches the caller may not read
        return HistoryView(batch=batch_id, events=await self._access.screen_events(caller, views, {batch_id}))

    async def _require(self, conn: AsyncConnection, batch_id: str) -> None:
        found = await conn.scalar(sa.select(batches_t.c.id).where(batches_t.c.id == batch_id))
        if found is None:
            raise NotFound(f"batch {batch_id!r} does not exist")

    async def upstream_ids(self, batch_id: str) -> set[str]:
        """The batch and every batch upstream of it."""
        async with self._engine.connect() as conn:
            depth_of, _ = await self._walk(conn, batch_id, UPSTREAM, None)
        return set(depth_of)

    async def _walk(
        self, conn: AsyncConnection, batch_id: str, direction: str, max_depth: int | None
    ) -> tuple[dict[str, int], list[LineageEdge]]:
        """Breadth-first over ``batch_edges``: one query per level (chunked for very wide levels); returns each
        batch's depth and the edges crossed."""
        if direction not in (UPSTREAM, DOWNSTREAM):
            raise InvalidInput(f"direction must be {UPSTREAM!r} or {DOWNSTREAM!r}, not {direction!r}")
        await self._require(conn, batch_id)
        near = edges_t.c.child_batch if direction == UPSTREAM else edges_t.c.parent_batch
        depth_of: dict[str, int] = {batch_id: 0}
        edges: list[LineageEdge] = []
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
        return depth_of, edges

    async def _lineage_rows(
        self, batch_id: str, direction: str, max_depth: int | None
    ) -> tuple[dict[str, Any], dict[str, int], list[LineageEdge]]:
        """The walk, plus the row of every batch met."""
        rows: dict[str, Any] = {}
        async with self._engine.connect() as conn:
            depth_of, edges = await self._walk(conn, batch_id, direction, max_depth)
            ids = list(depth_of)
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start : start + IN_CHUNK]
                for row in await conn.execute(sa.select(batches_t).where(batches_t.c.id.in_(chunk))):
                    rows[row.id] = row
        edges.sort(key=lambda e: (e.parent, e.child))
        return rows, depth_of, edges

    async def _visible_lineage(
        self, batch_id: str, direction: str, max_depth: int | None, caller: Caller | None
    ) -> tuple[dict[str, Any], dict[str, int], list[LineageEdge]]:
        """The lineage as the caller may see it: upstream of a readable batch is readable; downstream, only what
        the caller holds or held and what lies upstream of that (not a competitor's downstream flows)."""
        await self._access.require_batch(caller, batch_id)
        rows, depth_of, edges = await self._lineage_rows(batch_id, direction, max_depth)
        if direction == DOWNSTREAM:
            visible = await self._access.visible_among(
                caller, set(rows), [(e.parent, e.child) for e in edges]
            )
            visible.add(batch_id)
            rows = {i: r for i, r in rows.items() if i in visible}
            edges = [e for e in edges if e.parent in visible and e.child in visible]
        return rows, depth_of, edges

    async def _used_up(self, conn: AsyncConnection, rows: dict[str, Any]) -> dict[str, int]:
        """For batches that hold nothing any more (consumed, split, merged): the grams they held when used up,
        i.e. every gram taken from them by the events that consumed them (whoever may see those events)."""
        empty = [i for i, r in rows.items() if r.mass_g == 0]
        used: dict[str, int] = {}
        for start in range(0, len(empty), IN_CHUNK):
            chunk = empty[start : start + IN_CHUNK]
            query = (
                sa.select(edges_t.c.parent_batch, sa.func.sum(edges_t.c.mass_g))
                .where(edges_t.c.parent_batch.in_(chunk))
                .group_by(edges_t.c.parent_batch)
            )
            for parent, grams in await conn.execute(query):
                used[parent] = int(grams)
        return used

    async def lineage(
        self, batch_id: str, direction: str, max_depth: int | None = None, caller: Caller | None = None
    ) -> LineageView:
        rows, depth_of, edges = await self._visible_lineage(batch_id, direction, max_depth, caller)
        order = sorted(rows, key=lambda i: (depth_of[i], i))
        async with self._engine.connect() as conn:
            creators = await self._creators(conn, {r.created_event for r in rows.values() if r.value_amount})
            used = await self._used_up(conn, rows)
        return LineageView(
            root=batch_id,
            direction=direction,
            batches=[
                LineageNodeView(
                    **self._fields_for(rows[i], caller, creators), depth=depth_of[i], used_up_g=used.get(i)
                )
                for i in order
            ],
            edges=[
                LineageEdgeView(parent=e.parent, child=e.child, event_id=e.event_id, mass_g=e.mass_g)
                for e in edges
            ],
        )

    async def hidden_children(
        self, batch_id: str, caller: Caller | None = None, max_depth: int | None = None
    ) -> dict[str, int]:
        """Downstream of ``batch_id``: for each batch the caller may read, how many of its children it may not
        (a competitor's flows). Only the counts: the explorer draws them as hidden nodes, with no id or mass."""
        await self._access.require_batch(caller, batch_id)
        rows, _, edges = await self._lineage_rows(batch_id, DOWNSTREAM, max_depth)
        visible = await self._access.visible_among(caller, set(rows), [(e.parent, e.child) for e in edges])
        visible.add(batch_id)
        counts: dict[str, int] = {}
        for edge in edges:
            if edge.parent in visible and edge.child not in visible:
                counts[edge.parent] = counts.get(edge.parent, 0) + 1
        return counts

    async def lineage_picture(
        self,
        batch_id: str,
        direction: str,
        fmt: str,
        max_depth: int | None = None,
        caller: Caller | None = None,
    ) -> str:
        """The lineage as Graphviz DOT or Mermaid text."""
        if fmt not in ("dot", "mermaid"):
            raise InvalidInput(f"format must be json, dot or mermaid, not {fmt!r}")
        rows, depth_of, edges = await self._visible_lineage(batch_id, direction, max_depth, caller)
        async with self._engine.connect() as conn:
            used = await self._used_up(conn, rows)
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
                used_up_g=used.get(row.id),
            )
            for row in sorted(rows.values(), key=lambda r: (depth_of[r.id], r.id))
        ]
        render = to_dot if fmt == "dot" else to_mermaid
        return render(batch_id, direction, nodes, edges)

    async def participant_batches(
        self,
        participant_id: str,
        *,
        status: str | None = None,
        limit: int = 100,
        after: str | None = None,
        caller: Caller | None = None,
    ) -> BatchList:
        """Batches the participant holds or held, by id, a page at a time (``after`` the last id of the previous
        page): walks the ``(participant_id, batch_id)`` index from the cursor, never the whole holding."""
        self._access.require_self_or_privileged(caller, participant_id, "the batches a participant holds")
        limit = max(1, min(limit, MAX_PAGE))
        query = (
            sa.select(batches_t)
            .join(holders_t, holders_t.c.batch_id == batches_t.c.id)
            .where(holders_t.c.participant_id == participant_id)
            .order_by(holders_t.c.batch_id)
            .limit(limit + 1)
        )
        if status is not None:
            query = query.where(batches_t.c.status == status)
        if after is not None:
            query = query.where(holders_t.c.batch_id > after)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            page = rows[:limit]
            creators = await self._creators(conn, {r.created_event for r in page if r.value_amount})
        return BatchList(
            items=[BatchView(**self._fields_for(row, caller, creators)) for row in page],
            next_cursor=page[-1].id if len(rows) > limit and page else None,
        )
