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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.errors import Forbidden, NotFound
from ledger.services.tokens import Caller
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
    elif kind == "determination":
        for source in redacted.get("determination", {}).get("sources", []):
            if isinstance(source, dict) and source.get("value") is not None:
                source["value"] = REDACTED
    return redacted


class Access:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def facility_owner(self, facility_id: str) -> str | None:
        async with self._engine.connect() as conn:
            owner = await conn.scalar(
                sa.select(facilities_t.c.participant_id).where(facilities_t.c.id == facility_id)
            )
        return str(owner) if owner is not None else None

    async def held(self, conn: AsyncConnection, participant: str) -> set[str]:
        rows = await conn.execute(
            sa.select(holders_t.c.batch_id).where(holders_t.c.participant_id == participant)
        )
        return {batch for (batch,) in rows}

    async def can_read_batch(self, caller: Caller | None, batch_id: str) -> bool:
        """True for the privileged, for batches the caller holds or held, and for their upstream lineage."""
        if privileged(caller):
            return True
        assert caller is not None
        async with self._engine.connect() as conn:
            held = await self.held(conn, caller.participant)
            if batch_id in held:
                return True
            shipped_to_caller = await conn.scalar(
                sa.select(batches_t.c.id).where(
                    batches_t.c.id == batch_id, batches_t.c.receiver == caller.participant
                )
            )
            if shipped_to_caller is not None:
                return True  # in transit to the caller: it must see it to receive it
            # batch_id is upstream of a held batch exactly when a held batch lies downstream of it
            seen, frontier = {batch_id}, [batch_id]
            while frontier:
                following: list[str] = []
                for start in range(0, len(frontier), IN_CHUNK):
                    chunk = frontier[start : start + IN_CHUNK]
                    for (child,) in await conn.execute(
                        sa.select(edges_t.c.child_batch).where(edges_t.c.parent_batch.in_(chunk))
                    ):
                        if child in held:
                            return True
                        if child not in seen:
                            seen.add(child)
                            following.append(child)
                frontier = following
        return False

    async def require_batch(self, caller: Caller | None, batch_id: str) -> None:
        """404 for a batch the caller may not read: the same answer as for a batch that does not exist."""
        if not await self.can_read_batch(caller, batch_id):
            raise NotFound(f"batch {batch_id!r} does not exist")

    async def visible_among(
        self, caller: Caller | None, batches: set[str], edges: list[tuple[str, str]]
    ) -> set[str]:
        """Of ``batches`` (a downstream subgraph with ``edges`` parent->child), those the caller may read: held
        ones and those with a held batch below them."""
        if privileged(caller):
            return set(batches)
        assert caller is not None
        async with self._engine.connect() as conn:
            held = await self.held(conn, caller.participant) & batches
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
            return any(s.get("value") for s in document.get("sources", []) if isinstance(s, dict))
    return False
