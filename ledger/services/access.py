"""Who may read what. Enforced in the services (the core), whatever the web layer does.

- The registrar, auditors and customs read everything.
- Any other participant reads its own events, the batches it holds or held, and the upstream lineage of those
  (it needs them for eligibility), but not a competitor's unrelated batches or downstream flows. A batch it may
  not read answers 404, exactly like a batch that does not exist, so that existence does not leak.
- Declared commercial values (batch values, outputs' values, value added) are visible only to the party that
  declared them, auditors, customs and the registrar; everyone else sees ``{"redacted": true}`` in their place,
  and such events are shown without their envelope (the signed bytes carry the values).
- Proofs and checkpoints are public; mirroring the log's entries is for the privileged roles.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.errors import Forbidden, NotFound
from ledger.services.tokens import Caller
from ledger.services.views import EventView
from ledger.store.repo import IN_CHUNK, batches_t, edges_t, facilities_t, holders_t

PRIVILEGED_ROLES = frozenset({"registrar", "auditor", "customs"})
REDACTED: dict[str, Any] = {"redacted": True}
VALUE_KINDS = frozenset({"extract", "transform", "recycle", "determination"})
"""Event kinds whose payload may carry declared commercial values."""


def privileged(caller: Caller | None) -> bool:
    """None means a trusted local caller (the CLI, the demo in-process): it reads everything."""
    return caller is None or bool(caller.roles & PRIVILEGED_ROLES)


def sees_values_of(caller: Caller | None, actor: str) -> bool:
    return privileged(caller) or (caller is not None and caller.participant == actor)


def redact_payload(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of an event payload with its commercial values replaced by ``{"redacted": true}``."""
    redacted = copy.deepcopy(payload)
    if kind == "extract" and isinstance(redacted.get("batch"), dict) and "value" in redacted["batch"]:
        redacted["batch"]["value"] = REDACTED
    elif kind in ("transform", "recycle"):
        if "value_added" in redacted:
            redacted["value_added"] = REDACTED
        for output in redacted.get("outputs", []):
            if isinstance(output, dict) and "value" in output:
                output["value"] = REDACTED
            for name in ORIGIN_VALUE_FIELDS:  # what trade-agreement origin needs of a good
                if isinstance(output, dict) and name in output:
                    output[name] = REDACTED
        for item in redacted.get("inputs", []):
            if isinstance(item, dict) and "value" in item:
                item["value"] = REDACTED
    elif kind == "determination" and isinstance(redacted.get("determination", {}).get("agreement"), dict):
        _redact_origin_document(redacted["determination"])
    elif kind == "determination":
        document = redacted.get("determination", {})
        for source in document.get("sources", []):
            if isinstance(source, dict) and source.get("value") is not None:
                source["value"] = REDACTED
                source["traced_value"] = None
        if document.get("unit", "g") != "g":  # totals in money are sums of declared values
            document["qualifying_total"] = document["total"] = "redacted"
    return redacted


ORIGIN_VALUE_FIELDS = ("transaction_value", "net_cost", "total_cost")
ORIGIN_AMOUNT_REASONS = frozenset({"rvc-met", "rvc-below", "de-minimis-met", "de-minimis-exceeded"})


def _redact_origin_document(document: dict[str, Any]) -> None:
    """A recorded origin determination without the amounts the producer declared (verdict, criterion, RVC
    ratios and reasons stay; sentences that state amounts are replaced)."""
    for figure in document.get("rvc", []):
        if isinstance(figure, dict):
            figure.update(base=None, vnm=None, formula="redacted")
    for material in document.get("materials", []):
        if isinstance(material, dict) and "value" in material:
            material["value"] = None
    minimis = document.get("de_minimis")
    if isinstance(minimis, dict):
        minimis.update(limit=None, non_shifting_value=None)
    for key in ("reasons", "not_originating"):
        for reason in document.get(key, []):
            if isinstance(reason, dict) and reason.get("code") in ORIGIN_AMOUNT_REASONS:
                reason["message"] = f"{reason['code']}: the figures are withheld (declared by the producer)"


# --- read scoping in SQL ----------------------------------------------------------------------------------------
#
# Whether a participant may read a batch is decided by the database, from indexes, for that one batch: it holds
# or held it (``batch_holders`` primary key), it is in transit to it (``batches`` primary key), or a batch it
# holds or held lies downstream of it (a recursive walk down ``batch_edges`` from the batch, by the edges' primary
# key, stopping at the first held batch). A participant's holdings are never loaded: the cost of a read does not
# grow with how much the reader holds. It grows with what lies downstream of the batch asked for, so the walk is
# bounded: it looks at no more than MAX_SCOPE_WALK batches (breadth first; about 3-7 microseconds each).

MAX_SCOPE_WALK = 10_000
"""Batches below the one asked for that the upstream check looks at, at most. A batch with more below it than
this is readable as upstream lineage only if a held batch is among the first MAX_SCOPE_WALK (nearest first);
otherwise it answers 404, as a competitor's batch does, and it stays visible in the upstream lineage of the
batches the reader holds."""


def _holds(participant: str, batch: Any) -> sa.Exists:
    return sa.exists().where(holders_t.c.batch_id == batch, holders_t.c.participant_id == participant)


def _downstream(seeds: Sequence[str]) -> sa.CTE:
    """``(seed, batch)``: every batch made, directly or not, from one of ``seeds`` (a walk down the lineage)."""
    first = sa.select(edges_t.c.parent_batch.label("seed"), edges_t.c.child_batch.label("batch")).where(
        edges_t.c.parent_batch.in_(seeds) if len(seeds) > 1 else edges_t.c.parent_batch == seeds[0]
    )
    down = first.cte("downstream", recursive=True)
    step = sa.select(down.c.seed, edges_t.c.child_batch).select_from(
        down.join(edges_t, edges_t.c.parent_batch == down.c.batch)
    )
    return down.union(step)  # UNION, not UNION ALL: each batch is visited once per seed


async def _directly_readable(conn: AsyncConnection, participant: str, batch_id: str) -> bool:
    """Held or held before, or in transit to the participant (it must see a batch to receive it)."""
    query = sa.select(
        sa.or_(
            _holds(participant, batch_id),
            sa.exists().where(batches_t.c.id == batch_id, batches_t.c.receiver == participant),
        )
    )
    return bool(await conn.scalar(query))


async def _upstream_of_held(conn: AsyncConnection, participant: str, batch_id: str) -> bool:
    """Whether a batch the participant holds or held was made, directly or not, from ``batch_id``."""
    down = _downstream([batch_id])
    walked = sa.select(down.c.batch).limit(MAX_SCOPE_WALK).subquery("walked")
    query = sa.select(walked.c.batch).where(_holds(participant, walked.c.batch)).limit(1)
    return (await conn.scalar(query)) is not None


async def readable_among(conn: AsyncConnection, participant: str, batch_ids: Iterable[str]) -> set[str]:
    """Those of ``batch_ids`` the (unprivileged) participant may read, by set queries of the same shape."""
    pending = sorted(set(batch_ids))
    readable: set[str] = set()
    for start in range(0, len(pending), IN_CHUNK):
        chunk = pending[start : start + IN_CHUNK]
        held = sa.select(holders_t.c.batch_id).where(
            holders_t.c.participant_id == participant, holders_t.c.batch_id.in_(chunk)
        )
        readable.update(await conn.scalars(held))
        coming = sa.select(batches_t.c.id).where(
            batches_t.c.receiver == participant, batches_t.c.id.in_(chunk)
        )
        readable.update(await conn.scalars(coming))
    rest = [b for b in pending if b not in readable]
    for start in range(0, len(rest), IN_CHUNK):
        down = _downstream(rest[start : start + IN_CHUNK])
        walked = sa.select(down.c.seed, down.c.batch).limit(MAX_SCOPE_WALK).subquery("walked")
        query = sa.select(walked.c.seed).where(_holds(participant, walked.c.batch)).distinct()
        readable.update(await conn.scalars(query))
    return readable


@dataclass(frozen=True)
class _Named:
    """The batches a custody event names: those it consumed, those it made, and any other it touched."""

    inputs: tuple[str, ...] = ()
    made: tuple[str, ...] = ()
    other: tuple[str, ...] = ()

    @property
    def all(self) -> set[str]:
        return {*self.inputs, *self.made, *self.other}


def _named(kind: str, payload: dict[str, Any]) -> _Named:
    def ids(items: Any, key: str) -> tuple[str, ...]:
        return tuple(str(i[key]) for i in items or [] if isinstance(i, dict) and isinstance(i.get(key), str))

    match kind:
        case "extract":
            batch = payload.get("batch")
            return _Named(made=(str(batch["id"]),) if isinstance(batch, dict) and "id" in batch else ())
        case "transform" | "recycle":
            return _Named(inputs=ids(payload.get("inputs"), "batch"), made=ids(payload.get("outputs"), "id"))
        case "split":
            return _Named(inputs=(str(payload.get("batch")),), made=ids(payload.get("outputs"), "id"))
        case "merge":
            return _Named(inputs=ids(payload.get("inputs"), "batch"), made=(str(payload.get("output")),))
        case "transfer" | "receive" | "claim" | "determination":
            return _Named(other=(str(payload.get("batch")),))
    return _Named()


def _hide_batches(kind: str, payload: dict[str, Any], hidden: set[str]) -> dict[str, Any]:
    """A copy of the payload with each entry that names a hidden batch replaced by ``{"redacted": true}``."""
    shown = copy.deepcopy(payload)
    for key, field in (("inputs", "batch"), ("outputs", "id")):
        if kind in ("transform", "recycle", "split", "merge") and isinstance(shown.get(key), list):
            shown[key] = [
                REDACTED if isinstance(item, dict) and item.get(field) in hidden else item
                for item in shown[key]
            ]
    if kind == "merge" and shown.get("output") in hidden:
        shown["output"] = REDACTED
    return shown


class Access:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def facility_owner(self, facility_id: str) -> str | None:
        async with self._engine.connect() as conn:
            owner = await conn.scalar(
                sa.select(facilities_t.c.participant_id).where(facilities_t.c.id == facility_id)
            )
        return str(owner) if owner is not None else None

    async def can_read_batch(self, caller: Caller | None, batch_id: str) -> bool:
        """True for the privileged, for batches the caller holds or held (or that are in transit to it), and for
        their upstream lineage. Decided in the database for this batch alone (see above)."""
        if privileged(caller):
            return True
        async with self._engine.connect() as conn:
            return await self.can_read_on(conn, caller, batch_id)

    async def can_read_on(self, conn: AsyncConnection, caller: Caller | None, batch_id: str) -> bool:
        """:meth:`can_read_batch` on a connection the caller already has."""
        if privileged(caller):
            return True
        assert caller is not None
        if await _directly_readable(conn, caller.participant, batch_id):
            return True
        # batch_id is upstream of a held batch exactly when a held batch lies downstream of it
        return await _upstream_of_held(conn, caller.participant, batch_id)

    async def require_batch(self, caller: Caller | None, batch_id: str) -> None:
        """404 for a batch the caller may not read: the same answer as for a batch that does not exist."""
        if not await self.can_read_batch(caller, batch_id):
            raise NotFound(f"batch {batch_id!r} does not exist")

    async def readable_among(self, caller: Caller | None, batch_ids: Iterable[str]) -> set[str]:
        """Those of ``batch_ids`` the caller may read."""
        if privileged(caller):
            return set(batch_ids)
        assert caller is not None
        async with self._engine.connect() as conn:
            return await readable_among(conn, caller.participant, batch_ids)

    async def visible_among(
        self, caller: Caller | None, batches: set[str], edges: list[tuple[str, str]]
    ) -> set[str]:
        """Of ``batches`` (a downstream subgraph with ``edges`` parent->child), those the caller may read: held
        ones and those with a held batch below them. Asks which of these batches the caller holds (by the
        subgraph's ids), never for everything it holds."""
        if privileged(caller):
            return set(batches)
        assert caller is not None
        held: set[str] = set()
        ids = sorted(batches)
        async with self._engine.connect() as conn:
            for start in range(0, len(ids), IN_CHUNK):
                query = sa.select(holders_t.c.batch_id).where(
                    holders_t.c.participant_id == caller.participant,
                    holders_t.c.batch_id.in_(ids[start : start + IN_CHUNK]),
                )
                held.update(await conn.scalars(query))
        parents: dict[str, list[str]] = {}
        for parent, child in edges:
            parents.setdefault(child, []).append(parent)
        visible, stack = set(held), list(held)
        while stack:
            for parent in parents.get(stack.pop(), []):
                if parent not in visible:
                    visible.add(parent)
                    stack.append(parent)
        return visible

    async def screen_events(
        self, caller: Caller | None, views: Sequence[EventView], known: Iterable[str] = ()
    ) -> list[EventView]:
        """Custody events as the caller may see them, filtered like lineage: an event that made only batches the
        caller may not read (a buyer's transform of the caller's batch, say) is left out, and in the others every
        batch the caller may not read (a sibling output, a co-input) is replaced by ``{"redacted": true}`` (and the
        envelope, which names it, is withheld). The inputs of an event that made a readable batch are its
        upstream lineage, and shown. The privileged and the event's own signer see every event whole. ``known``:
        batches already known to be readable by the caller."""
        if privileged(caller):
            return list(views)
        assert caller is not None
        named = {view.event_id: _named(view.kind, view.payload) for view in views}
        readable = set(known)
        wanted = {
            batch for view in views if view.actor != caller.participant for batch in named[view.event_id].all
        } - readable
        if wanted:
            readable |= await self.readable_among(caller, wanted)
        shown: list[EventView] = []
        for view in views:
            names = named[view.event_id]
            if view.actor == caller.participant or not names.all:
                shown.append(view)
                continue
            made_readable = readable.intersection(names.made)
            if not readable.intersection(names.all) or (names.made and not made_readable):
                continue  # it led only to batches the caller may not read (as in lineage), or names none it may
            visible = readable | (set(names.inputs) if made_readable else set())
            hidden = names.all - visible
            if not hidden:
                shown.append(view)
                continue
            payload = _hide_batches(view.kind, view.payload, hidden)
            shown.append(msgspec.structs.replace(view, payload=payload, envelope=None, redacted=True))
        return shown

    async def screen_event(self, caller: Caller | None, view: EventView) -> EventView:
        """One event as :meth:`screen_events` would show it, or 404 (as if it were not in the log)."""
        screened = await self.screen_events(caller, [view])
        if not screened:
            raise NotFound(f"event {view.event_id!r} is not in the log")
        return screened[0]

    def require_privileged(self, caller: Caller | None, what: str) -> None:
        if not privileged(caller):
            assert caller is not None
            raise Forbidden(
                f"{what} is for the registrar, auditors and customs; {caller.participant!r} is none of these"
            )

    def require_self_or_privileged(self, caller: Caller | None, participant: str, what: str) -> None:
        if not privileged(caller) and (caller is None or caller.participant != participant):
            raise Forbidden(
                f"only {participant!r} itself, the registrar, auditors and customs may read {what}"
            )


def declares_values(event: Any) -> bool:
    """Whether a typed event carries a declared commercial value."""
    from ledger.domain import events as ev

    match event:
        case ev.Extract(batch=batch):
            return batch.value is not None
        case ev.Transform():
            return True  # value_added is always declared
        case ev.Recycle(outputs=outputs):
            return any(output.value is not None for output in outputs)
        case ev.DeterminationRecorded(determination=document):
            if isinstance(document.get("agreement"), dict):  # an origin determination states declared amounts
                return bool(document.get("materials") or document.get("rvc"))
            return any(s.get("value") for s in document.get("sources", []) if isinstance(s, dict))
    return False
