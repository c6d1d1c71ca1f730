"""EPCIS 2.0 over the ledger: custody events as EPCIS events, the standard's query parameters, under the same
read scoping as every other read (``ledger.services.access``): a caller sees the events it may see, with the
values it may see, and a batch it may not read is not found.

An event's ``eventID`` is the GS1 event hash of the event as the caller sees it (a redacted value changes the
content, so it changes the hash); its ledger event id is in ``ledger:eventId``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.errors import InvalidInput, NotFound
from ledger.interop import epcis
from ledger.interop.event_hash import NI_PREFIX
from ledger.services.access import Access
from ledger.services.custody import Custody
from ledger.services.registry import event_view
from ledger.services.tokens import Caller
from ledger.services.views import EventView
from ledger.store.repo import IN_CHUNK, batch_events_t, edges_t, events_t

DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 1000
SCAN_CHUNK = 500
"""Events read from the log per round while filling a page."""
MAX_SCAN = 20_000
"""Events looked at for one page at most: a query that matches little answers with fewer events (perhaps none)
and a ``nextPageToken`` to carry on from, rather than walking the whole log in one request."""
MAX_HASH_LOOKUP_PAGES = 5
"""Pages of the caller's events an unknown GS1 event hash is looked for in, before 404 (the ledger id is indexed)."""
HASH_CACHE = 100_000
"""GS1 event hashes remembered (hash -> ledger event id) so that ``GET /epcis/events/{eventID}`` finds an event
it has exported without a scan."""

EVENT_TYPES = {
    "ObjectEvent": frozenset({"extract", "transfer", "receive"}),
    "TransformationEvent": frozenset({"transform", "recycle", "split", "merge"}),
    "AggregationEvent": frozenset(),
    "TransactionEvent": frozenset(),
    "AssociationEvent": frozenset(),
}
"""EPCIS event types and the ledger kinds that export as each (the ledger writes no aggregation, transaction or
association events)."""
FACILITY_KINDS = frozenset({"extract", "receive", "transform", "recycle"})


@dataclass
class EventQuery:
    """The EPCIS 2.0 REST binding's common query parameters (EPCIS 2.0 section 8.2.7.1, SimpleEventQuery)."""

    event_types: list[str] = field(default_factory=list)
    ge_event_time: datetime | None = None
    lt_event_time: datetime | None = None
    biz_steps: list[str] = field(default_factory=list)
    biz_locations: list[str] = field(default_factory=list)
    any_epc: list[str] = field(default_factory=list)
    per_page: int = DEFAULT_PER_PAGE
    page_token: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        event_type: str | None = None,
        ge_event_time: str | None = None,
        lt_event_time: str | None = None,
        eq_biz_step: str | None = None,
        eq_biz_location: str | None = None,
        match_any_epc: str | None = None,
        per_page: int = DEFAULT_PER_PAGE,
        next_page_token: str | None = None,
    ) -> EventQuery:
        """From the query string's values (lists are comma-separated, as the REST binding writes them)."""
        query = cls(per_page=per_page, page_token=next_page_token)
        query.event_types = _split(event_type)
        for name in query.event_types:
            if name not in EVENT_TYPES:
                raise InvalidInput(
                    f"eventType {name!r} is not an EPCIS 2.0 event type; use one of {', '.join(EVENT_TYPES)}"
                )
        query.ge_event_time = _time("GE_eventTime", ge_event_time)
        query.lt_event_time = _time("LT_eventTime", lt_event_time)
        query.biz_steps = [_bare_step(step) for step in _split(eq_biz_step)]
        query.biz_locations = _split(eq_biz_location)
        query.any_epc = _split(match_any_epc)
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidInput(f"perPage is {per_page}; ask for 1 to {MAX_PER_PAGE} events a page")
        return query

    def kinds(self) -> frozenset[str]:
        """The ledger kinds that can match eventType and EQ_bizStep."""
        kinds = set(epcis.EXPORTED_KINDS)
        if self.event_types:
            kinds &= set().union(*(EVENT_TYPES[name] for name in self.event_types))
        if self.biz_steps:
            kinds &= {kind for kind, step in epcis.BIZ_STEPS.items() if step in self.biz_steps}
        return frozenset(kinds)

    def batches(self) -> list[str]:
        """MATCH_anyEPC as ledger batch ids (a URI the ledger did not mint matches nothing)."""
        ids = [epcis.id_from_uri(uri, "batch") for uri in self.any_epc]
        return [i for i in ids if i is not None]

    def start_after(self) -> int:
        """The log index a page starts after (-1: from the beginning)."""
        if self.page_token is None:
            return -1
        try:
            decoded = base64.urlsafe_b64decode(self.page_token + "=" * (-len(self.page_token) % 4)).decode()
            kind, _, index = decoded.partition(":")
            if kind != "after" or not index.isdigit() or len(index) > 18:
                raise ValueError(decoded)
            return int(index)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise InvalidInput(
                f"nextPageToken {self.page_token!r} is not one this ledger handed out; start again without it"
            ) from None


def page_token(after: int) -> str:
    return base64.urlsafe_b64encode(f"after:{after}".encode()).decode().rstrip("=")


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"{name} {value!r} is not a date-time (e.g. 2026-09-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{name} {value!r} has no UTC offset; add Z or +hh:mm")
    return moment


def _bare_step(step: str) -> str:
    """A CBV bizStep as its bare word, however written (``shipping``, the Web URI, the old URN)."""
    for prefix in ("https://ref.gs1.org/cbv/BizStep-", "urn:epcglobal:cbv:bizstep:", "cbv:BizStep-"):
        if step.startswith(prefix):
            return step[len(prefix) :]
    return step


def _mass_after(kind: str, payload: dict[str, Any], batch: str) -> int | None:
    """The mass of ``batch`` right after an event that stated it (None: the event did not)."""
    match kind:
        case "extract":
            return int(payload["batch"]["mass_g"])
        case "receive":
            return int(payload["mass_g"])
        case "transform" | "recycle" | "split":
            for output in payload.get("outputs", []):
                if output.get("id") == batch:
                    return int(output["mass_g"])
    return None


@dataclass(frozen=True)
class EventPage:
    document: dict[str, Any]
    next_page_token: str | None


class Epcis:
    def __init__(self, engine: AsyncEngine, access: Access, custody: Custody) -> None:
        self._engine = engine
        self._access = access
        self._custody = custody
        self._hashes: OrderedDict[str, str] = OrderedDict()

    async def events(self, query: EventQuery, caller: Caller | None = None) -> EventPage:
        """One page of the caller's readable custody events that match ``query``, in log order, as an
        ``EPCISQueryDocument``; ``next_page_token`` when there may be more."""
        kinds = query.kinds()
        after = query.start_after()
        found: list[dict[str, Any]] = []
        scanned = 0
        exhausted = not kinds
        while not exhausted and len(found) < query.per_page and scanned < MAX_SCAN:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(self._select(query, kinds, after))).all()
            if not rows:
                exhausted = True
                break
            scanned += len(rows)
            views = await self._access.screen_events(caller, [event_view(row, caller) for row in rows])
            shown = {view.event_id: view for view in views}
            matched: list[EventView] = []
            for row in rows:
                after = row.log_index
                view = shown.get(row.event_id)
                if view is not None and self._matches(query, view):
                    matched.append(view)
                    if len(found) + len(matched) == query.per_page:
                        break
            found.extend(await self._export(matched))
            exhausted = len(rows) < SCAN_CHUNK and after == rows[-1].log_index
        created = datetime.now(UTC).replace(microsecond=0)
        return EventPage(epcis.query_document(found, created), None if exhausted else page_token(after))

    def _select(self, query: EventQuery, kinds: frozenset[str], after: int) -> sa.Select[Any]:
        select = (
            sa.select(events_t)
            .where(events_t.c.log_index > after, events_t.c.kind.in_(sorted(kinds)))
            .order_by(events_t.c.log_index)
            .limit(SCAN_CHUNK)
        )
        batches = query.batches()
        if query.any_epc:
            touching = sa.select(batch_events_t.c.log_index).where(
                batch_events_t.c.batch_id.in_(batches or [""])
            )
            select = select.where(events_t.c.log_index.in_(touching))
        return select

    def _matches(self, query: EventQuery, view: EventView) -> bool:
        moment = datetime.fromisoformat(view.timestamp.replace("Z", "+00:00"))
        if query.ge_event_time is not None and moment < query.ge_event_time:
            return False
        if query.lt_event_time is not None and moment >= query.lt_event_time:
            return False
        if query.biz_locations:
            facility = view.payload.get("facility") if view.kind in FACILITY_KINDS else None
            if facility is None or epcis.facility_uri(str(facility)) not in query.biz_locations:
                return False
        return True

    async def _export(self, views: Sequence[EventView]) -> list[dict[str, Any]]:
        """The views as EPCIS events (looking up, for transfers and merges, the masses their payloads omit)."""
        async with self._engine.connect() as conn:
            masses = await self._masses_before(conn, views)
        exported = []
        for view in views:
            document = epcis.to_epcis_event(
                epcis.LedgerEvent(view.event_id, view.log_index, view.kind, view.payload),
                proof_url=f"/v1/log/proofs/inclusion?event_id={view.event_id}",
                masses=masses.get(view.event_id, {}),
            )
            self._remember(str(document["eventID"]), view.event_id)
            exported.append(document)
        return exported

    async def _masses_before(
        self, conn: AsyncConnection, views: Iterable[EventView]
    ) -> dict[str, dict[str, int]]:
        """For each transfer and merge: the mass of each batch it moves, as the event before it left it."""
        wanted: dict[str, list[tuple[str, str]]] = {}  # event id -> [(batch, parent event id)]
        for view in views:
            if view.kind == "transfer":
                wanted[view.event_id] = [(str(view.payload["batch"]), str(view.payload["parent"]))]
            elif view.kind == "merge":
                wanted[view.event_id] = [
                    (str(i["batch"]), str(i["parent"]))
                    for i in view.payload.get("inputs", [])
                    if isinstance(i, dict) and "parent" in i
                ]
        parents = sorted({parent for pairs in wanted.values() for _, parent in pairs})
        payloads: dict[str, tuple[str, dict[str, Any]]] = {}
        for start in range(0, len(parents), IN_CHUNK):
            chunk = parents[start : start + IN_CHUNK]
            query = sa.select(events_t.c.event_id, events_t.c.kind, events_t.c.payload).where(
                events_t.c.event_id.in_(chunk)
            )
            for event_id, kind, payload in await conn.execute(query):
                payloads[event_id] = (kind, json.loads(bytes(payload)))
        masses: dict[str, dict[str, int]] = {}
        for event_id, pairs in wanted.items():
            for batch, parent in pairs:
                kind, payload = payloads.get(parent, ("", {}))
                mass = _mass_after(kind, payload, batch)
                if mass is None and kind == "merge":  # a merged batch weighs what went into it
                    mass = await conn.scalar(
                        sa.select(sa.func.sum(edges_t.c.mass_g)).where(
                            edges_t.c.child_batch == batch, edges_t.c.event_id == parent
                        )
                    )
                if mass is not None:
                    masses.setdefault(event_id, {})[batch] = int(mass)
        return masses

    def _remember(self, gs1_hash: str, event_id: str) -> None:
        self._hashes[gs1_hash] = event_id
        self._hashes.move_to_end(gs1_hash)
        while len(self._hashes) > HASH_CACHE:
            self._hashes.popitem(last=False)

    async def event(self, event_ref: str, caller: Caller | None = None) -> dict[str, Any]:
        """One event as an ``EPCISQueryDocument``, by its EPCIS ``eventID`` (the GS1 event hash) or its ledger
        event id. 404 for an event the caller may not read, as for one that does not exist."""
        event_ref = event_ref.lstrip("/")
        if event_ref.startswith("ni:"):  # a path may reach us with the URI's "///" folded into one "/"
            event_ref = "ni:///" + event_ref[3:].lstrip("/")
        missing = NotFound(f"event {event_ref!r} is not in the ledger's EPCIS events")
        if event_ref.startswith("sha256:"):
            exported = await self._by_ledger_id(event_ref, caller)
            if exported is None:
                raise missing
            return epcis.query_document([exported], datetime.now(UTC).replace(microsecond=0))
        if not event_ref.startswith(NI_PREFIX):
            raise InvalidInput(
                f"{event_ref!r} is neither an EPCIS event hash (ni:///sha-256;<hex>?ver=CBV2.0) nor a ledger "
                "event id (sha256:<hex>)"
            )
        known = self._hashes.get(event_ref)
        if known is not None:
            exported = await self._by_ledger_id(known, caller)
            if exported is not None and exported["eventID"] == event_ref:
                return epcis.query_document([exported], datetime.now(UTC).replace(microsecond=0))
        # not exported by this process yet (or exported as another caller saw it): look through the caller's
        # events, a page at a time, remembering every hash met; a bounded look, so that an unknown hash cannot make
        # one request hash the whole log
        token: str | None = None
        for _ in range(MAX_HASH_LOOKUP_PAGES):
            page = await self.events(EventQuery(per_page=MAX_PER_PAGE, page_token=token), caller)
            for exported in page.document["epcisBody"]["queryResults"]["resultsBody"]["eventList"]:
                if exported["eventID"] == event_ref:
                    return epcis.query_document([exported], datetime.now(UTC).replace(microsecond=0))
            if page.next_page_token is None:
                raise missing
            token = page.next_page_token
        raise NotFound(
            f"event {event_ref!r} is not among the first {MAX_HASH_LOOKUP_PAGES * MAX_PER_PAGE:,} events you may "
            "read; ask for it by its ledger id (the ledger:eventId of the exported event, sha256:...), which is "
            "looked up directly"
        )

    async def _by_ledger_id(self, event_id: str, caller: Caller | None) -> dict[str, Any] | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(events_t).where(events_t.c.event_id == event_id))).first()
        if row is None or row.kind not in epcis.EXPORTED_KINDS:
            return None
        views = await self._access.screen_events(caller, [event_view(row, caller)])
        if not views:
            return None
        return (await self._export(views))[0]

    async def batch_events(self, batch_id: str, caller: Caller | None = None) -> dict[str, Any]:
        """Every custody event on a batch (its hash chain), as an ``EPCISQueryDocument``; 404 for a batch the
        caller may not read."""
        history = await self._custody.history(batch_id, caller)
        views = [view for view in history.events if view.kind in epcis.EXPORTED_KINDS]
        return epcis.query_document(await self._export(views), datetime.now(UTC).replace(microsecond=0))
