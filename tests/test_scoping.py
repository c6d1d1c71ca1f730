"""Read scoping evaluated in the database, on both databases: a read costs the same whatever the reader holds (its
holdings are never loaded), history is filtered like lineage, participant batch lists are paginated queries, and
the database bounds (pool wait, statement time) answer 503 ``overloaded`` instead of hanging."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.domain import events as ev
from ledger.errors import NotFound, Overloaded
from ledger.services.tokens import Caller
from ledger.store.db import create_engine
from ledger.store.repo import batches_t, holders_t
from tests.support import TS, Chain, Member

REDACTED = {"redacted": True}


def usd(amount: str) -> ev.Money:
    return ev.Money(amount=amount, currency="USD")


async def _bulk_holdings(
    engine: AsyncEngine, participant: str, count: int, *, prefix: str = "bulk"
) -> list[str]:
    """``count`` batches held by ``participant``, inserted straight into the projections (fast set-up)."""
    ids = [f"{prefix}-{i:06d}" for i in range(count)]
    batch_rows = [
        {
            "id": batch,
            "mineral": "lithium",
            "form": "concentrate",
            "mass_g": 1_000,
            "status": "at_facility",
            "custodian": participant,
            "facility_id": None,
            "head": "sha256:" + "0" * 64,
            "created_event": "sha256:" + "0" * 64,
            "lost_g": 0,
        }
        for batch in ids
    ]
    async with engine.begin() as conn:
        for start in range(0, count, 5_000):
            await conn.execute(batches_t.insert(), batch_rows[start : start + 5_000])
            await conn.execute(
                holders_t.insert(),
                [{"batch_id": b, "participant_id": participant} for b in ids[start : start + 5_000]],
            )
    return ids


@contextmanager
def recorded_sql(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


BOUND_TO_A_BATCH = re.compile(r"batch_holders\.batch_id\s*(=|IN\b)", re.IGNORECASE)


async def _refine(chain: Chain, outputs: list[tuple[str, int]]) -> str:
    """The miner's spod-1 (1,000 g) shipped to the refiner and refined into ``outputs``; the transform's id."""
    await chain.send(chain.extract("spod-1", 1_000, value=usd("1200.50")), chain.miner)
    await chain.ship("spod-1", chain.miner, chain.refiner, chain.refinery, 1_000)
    transform = ev.Transform(
        actor=chain.refiner.id,
        timestamp=TS,
        facility=chain.refinery,
        process="refining",
        inputs=[ev.Input(batch="spod-1", parent=await chain.head("spod-1"), mass_g=1_000)],
        outputs=[
            ev.Output(id=batch, mineral="lithium", form="hydroxide", mass_g=mass, value=usd("9000"))
            for batch, mass in outputs
        ],
        value_added=usd("7000"),
    )
    response = await chain.send(transform, chain.refiner)
    return str(response.json()["event_id"])


async def _get(chain: Chain, member: Member, path: str, **params: Any) -> httpx.Response:
    return await chain.world.client.get(path, params=params, headers=member.headers)


# --- reads do not grow with the reader's holdings ----------------------------------------------------------------


async def test_reads_never_load_the_readers_holdings(chain: Chain) -> None:
    world = chain.world
    await _refine(chain, [("lioh-1", 500)])
    await chain.ship("lioh-1", chain.refiner, chain.maker, chain.plant, 500)
    rival = await world.admit("rival-mining", ["miner"], "AU")
    await world.facility("rival-mine", rival, "mine", "AU")
    rival_extract = ev.Extract(
        actor=rival.id,
        timestamp=TS,
        facility="rival-mine",
        batch=ev.NewBatch(id="rival-1", mineral="lithium", form="ore", mass_g=10),
    )
    await chain.send(rival_extract, rival)
    await _bulk_holdings(world.services.engine, chain.maker.id, 10_000)

    expected = {
        "/v1/batches/lioh-1": 200,  # held
        "/v1/batches/spod-1": 200,  # upstream of a held batch
        "/v1/batches/bulk-004321": 200,  # one of the many held
        "/v1/batches/rival-1": 404,  # a competitor's
        "/v1/batches/nope": 404,  # does not exist
        "/v1/batches/spod-1/history": 200,
        "/v1/batches/spod-1/lineage": 200,
        "/v1/batches/lioh-1/lineage?direction=downstream": 200,
        "/v1/batches/rival-1/history": 404,
    }
    with recorded_sql(world.services.engine) as statements:
        for path, status in expected.items():
            response = await world.client.get(path, headers=chain.maker.headers)
            assert response.status_code == status, (path, response.text)
    scoping = [s for s in statements if "batch_holders" in s]
    assert scoping, "read scoping ran no query on batch_holders"
    unbounded = [s for s in scoping if not BOUND_TO_A_BATCH.search(s)]
    assert not unbounded, f"queries that read a participant's holdings wholesale: {unbounded}"
    # a 404 costs a bounded number of statements, whatever the reader holds
    with recorded_sql(world.services.engine) as statements:
        assert (await world.client.get("/v1/batches/nope", headers=chain.maker.headers)).status_code == 404
    reads = [s for s in statements if s.strip().upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]
    reads = [s for s in reads if "api_tokens" not in s]  # authentication
    assert len(reads) <= 2, reads  # held or in transit; else held below it


async def test_can_read_batch_decides_each_case_in_the_database(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held, held before, in transit to the reader, upstream through several levels, and unrelated."""
    world = chain.world
    access = world.services.access
    await _refine(chain, [("lioh-1", 500)])
    split = ev.Split(
        actor=chain.refiner.id,
        timestamp=TS,
        batch="lioh-1",
        parent=await chain.head("lioh-1"),
        outputs=[ev.SplitPart(id="lioh-1a", mass_g=300), ev.SplitPart(id="lioh-1b", mass_g=200)],
    )
    await chain.send(split, chain.refiner)
    await chain.send(await chain.transfer("lioh-1a", chain.refiner, chain.maker, chain.plant), chain.refiner)

    def caller(member: Member) -> Caller:
        return Caller(participant=member.id, roles=frozenset(member.roles), token_id="t")

    maker, miner = caller(chain.maker), caller(chain.miner)
    # in transit to the maker: readable, and so is its lineage only once it holds it
    assert await access.can_read_batch(maker, "lioh-1a")
    assert not await access.can_read_batch(maker, "lioh-1b")
    assert not await access.can_read_batch(maker, "spod-1")
    await chain.send(await chain.receive("lioh-1a", chain.maker, chain.plant, 300), chain.maker)
    for batch in ("lioh-1a", "lioh-1", "spod-1"):  # held, then two and three levels upstream
        assert await access.can_read_batch(maker, batch), batch
    assert not await access.can_read_batch(maker, "lioh-1b")  # a sibling is not upstream
    # the miner held spod-1 (held before counts), but nothing made from it
    assert await access.can_read_batch(miner, "spod-1")
    for batch in ("lioh-1", "lioh-1a", "lioh-1b", "nope"):
        assert not await access.can_read_batch(miner, batch), batch
    assert await access.readable_among(maker, ["lioh-1a", "lioh-1", "spod-1", "lioh-1b", "nope"]) == {
        "lioh-1a",
        "lioh-1",
        "spod-1",
    }
    # the walk down is bounded: spod-1 -> lioh-1 -> (lioh-1a, lioh-1b); with room for one batch it stops short
    import ledger.services.access as access_module

    monkeypatch.setattr(access_module, "MAX_SCOPE_WALK", 1)
    assert not await access.can_read_batch(maker, "spod-1")  # looked at lioh-1 only
    monkeypatch.setattr(access_module, "MAX_SCOPE_WALK", 2)
    assert await access.can_read_batch(maker, "lioh-1")  # both parts of the split
    monkeypatch.setattr(access_module, "MAX_SCOPE_WALK", 3)
    assert await access.can_read_batch(maker, "spod-1")


async def test_participant_batches_are_paginated_from_the_index(chain: Chain) -> None:
    world = chain.world
    ids = await _bulk_holdings(world.services.engine, chain.maker.id, 1_203, prefix="page")
    seen: list[str] = []
    after: str | None = None
    pages = 0
    with recorded_sql(world.services.engine) as statements:
        while True:
            params: dict[str, Any] = {"limit": 500} | ({"after": after} if after else {})
            response = await _get(chain, chain.maker, f"/v1/participants/{chain.maker.id}/batches", **params)
            assert response.status_code == 200, response.text
            body = response.json()
            seen.extend(item["id"] for item in body["items"])
            pages += 1
            after = body["next_cursor"]
            if after is None:
                break
    assert pages == 3 and seen == sorted(ids)
    listing = [s for s in statements if "batch_holders" in s]
    assert listing and all("LIMIT" in s.upper() for s in listing), listing
    # the service bounds a page whatever it is asked
    page = await world.services.custody.participant_batches(chain.maker.id, limit=10_000)
    assert len(page.items) == 500 and page.next_cursor == ids[499]


# --- history is filtered like lineage ---------------------------------------------------------------------------


async def test_history_hides_what_lineage_hides(chain: Chain) -> None:
    """The refiner makes lioh-1 (shipped to the maker) and lioh-2 (kept) from the miner's spod-1."""
    world = chain.world
    transform_id = await _refine(chain, [("lioh-1", 500), ("lioh-2", 400)])
    await chain.ship("lioh-1", chain.refiner, chain.maker, chain.plant, 500)
    customs = await world.admit("cbp", ["customs"], "US")

    def mentions(body: Any, *batches: str) -> bool:
        text = str(body)
        return any(batch in text for batch in batches)

    # the miner held spod-1 but may read nothing made from it: neither history nor lineage shows the transform
    history = (await _get(chain, chain.miner, "/v1/batches/spod-1/history")).json()
    assert [e["kind"] for e in history["events"]] == ["extract", "transfer", "receive"]
    assert not mentions(history, "lioh-1", "lioh-2", transform_id)
    down = (await _get(chain, chain.miner, "/v1/batches/spod-1/lineage", direction="downstream")).json()
    assert {b["id"] for b in down["batches"]} == {"spod-1"} and down["edges"] == []

    # the maker reads spod-1 as the upstream of lioh-1: the transform shows lioh-1, not its sibling lioh-2
    for batch in ("spod-1", "lioh-1"):
        history = (await _get(chain, chain.maker, f"/v1/batches/{batch}/history")).json()
        transform = next(e for e in history["events"] if e["kind"] == "transform")
        assert transform["event_id"] == transform_id
        assert [o if o == REDACTED else o["id"] for o in transform["payload"]["outputs"]] == [
            "lioh-1",
            REDACTED,
        ]
        assert [i["batch"] for i in transform["payload"]["inputs"]] == ["spod-1"]
        assert transform["envelope"] is None and transform["redacted"] is True
        assert not mentions(history, "lioh-2")
    down = (await _get(chain, chain.maker, "/v1/batches/spod-1/lineage", direction="downstream")).json()
    assert {b["id"] for b in down["batches"]} == {"spod-1", "lioh-1"}
    assert (await _get(chain, chain.maker, "/v1/batches/lioh-2/history")).status_code == 404

    # the transform's signer and the privileged roles see it whole, with its envelope
    for member in (chain.refiner, customs, world.registrar):
        history = (await _get(chain, member, "/v1/batches/spod-1/history")).json()
        transform = next(e for e in history["events"] if e["kind"] == "transform")
        assert [o["id"] for o in transform["payload"]["outputs"]] == ["lioh-1", "lioh-2"]
        assert transform["envelope"] is not None

    # the same screen for one event (what GET /v1/events/{id} should show)
    access, registry = world.services.access, world.services.registry
    whole = await registry.event(transform_id)

    def caller(member: Member) -> Caller:
        return Caller(participant=member.id, roles=frozenset(member.roles), token_id="t")

    with pytest.raises(NotFound, match="is not in the log"):
        await access.screen_event(caller(chain.miner), whole)
    as_maker = await access.screen_event(caller(chain.maker), whole)
    assert as_maker.payload["outputs"][1] == REDACTED and as_maker.envelope is None
    assert await access.screen_event(caller(chain.refiner), whole) == whole


async def test_history_redacts_sibling_outputs_and_co_inputs(chain: Chain) -> None:
    """A split's other part, and the other inputs of a transform the reader may read only partly."""
    await _refine(chain, [("lioh-1", 500)])
    split = ev.Split(
        actor=chain.refiner.id,
        timestamp=TS,
        batch="lioh-1",
        parent=await chain.head("lioh-1"),
        outputs=[ev.SplitPart(id="lioh-1a", mass_g=300), ev.SplitPart(id="lioh-1b", mass_g=200)],
    )
    await chain.send(split, chain.refiner)
    await chain.ship("lioh-1a", chain.refiner, chain.maker, chain.plant, 300)
    history = (await _get(chain, chain.maker, "/v1/batches/lioh-1a/history")).json()
    made = next(e for e in history["events"] if e["kind"] == "split")
    assert made["payload"]["batch"] == "lioh-1"  # its parent: upstream lineage
    assert made["payload"]["outputs"] == [{"id": "lioh-1a", "mass_g": 300}, REDACTED]
    assert "lioh-1b" not in str(history)
    # lioh-1's own history, as the maker may read it (upstream of lioh-1a): the split, less lioh-1b
    history = (await _get(chain, chain.maker, "/v1/batches/lioh-1/history")).json()
    assert "lioh-1b" not in str(history) and any(e["kind"] == "split" for e in history["events"])

    # a transform by the maker of lioh-1a and its own batch: the refiner (upstream) may not read the product,
    # so the refiner's history of lioh-1a leaves the transform out
    await chain.send(
        ev.Extract(
            actor=chain.miner.id,
            timestamp=TS,
            facility=chain.mine,
            batch=ev.NewBatch(id="ore-2", mineral="lithium", form="concentrate", mass_g=100),
        ),
        chain.miner,
    )
    await chain.ship("ore-2", chain.miner, chain.maker, chain.plant, 100)
    cathode = ev.Transform(
        actor=chain.maker.id,
        timestamp=TS,
        facility=chain.plant,
        process="cathode",
        inputs=[
            ev.Input(batch="lioh-1a", parent=await chain.head("lioh-1a"), mass_g=300),
            ev.Input(batch="ore-2", parent=await chain.head("ore-2"), mass_g=100),
        ],
        outputs=[ev.Output(id="cam-1", mineral="lithium", form="cathode_material", mass_g=350)],
        value_added=usd("100"),
    )
    await chain.send(cathode, chain.maker)
    history = (await _get(chain, chain.refiner, "/v1/batches/lioh-1a/history")).json()
    assert "cam-1" not in str(history) and "ore-2" not in str(history)
    assert [e["kind"] for e in history["events"]] == ["split", "transfer", "receive"]
    # the miner held ore-2: it sees neither cam-1 nor lioh-1a through ore-2's history
    history = (await _get(chain, chain.miner, "/v1/batches/ore-2/history")).json()
    assert "cam-1" not in str(history) and "lioh-1a" not in str(history)


# --- database bounds ----------------------------------------------------------------------------------------------


async def test_a_starved_pool_sheds_requests_with_503_and_health_still_answers(
    database_url: str, settings: Any
) -> None:
    from api.app import create_app
    from ledger.services.container import Services

    engine = create_engine(database_url, pool_size=1, pool_timeout=0.2)
    services = Services(settings, engine=engine)
    held: list[AsyncConnection] = []
    try:
        for _ in range(50):  # take every connection the pool will give (SQLite's pool is larger)
            started = time.perf_counter()
            try:
                held.append(await engine.connect())
            except Overloaded as exc:
                assert time.perf_counter() - started < 2.0
                assert exc.retry_after == 1 and "LEDGER_DB_POOL_TIMEOUT" in exc.detail
                break
        else:
            pytest.fail("the pool never ran out")
        app = create_app(services=services)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/healthz")).status_code == 200
            busy = await client.get("/v1/participants", headers={"Authorization": "Bearer tok_abc_def"})
            assert busy.status_code == 503, busy.text
            assert busy.headers["retry-after"] == "1" and busy.json()["code"] == "overloaded"
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["code"] == "overloaded"
            for conn in held:
                await conn.close()
            held.clear()
            assert (await client.get("/readyz")).status_code == 200
            denied = await client.get("/v1/participants", headers={"Authorization": "Bearer tok_abc_def"})
            assert denied.status_code == 401
    finally:
        for conn in held:
            await conn.close()
        await engine.dispose()


async def test_statement_timeout_on_postgresql(database_url: str, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has no server-side statement timeout")
    engine = create_engine(database_url, pool_size=1, statement_timeout_ms=200)
    default = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SHOW statement_timeout")) == "200ms"
            started = time.perf_counter()
            with pytest.raises(Overloaded, match="LEDGER_STATEMENT_TIMEOUT_MS"):
                await conn.execute(sa.text("SELECT pg_sleep(5)"))
            assert time.perf_counter() - started < 3
        async with default.connect() as conn:  # LEDGER_STATEMENT_TIMEOUT_MS unset: 15 s
            assert await conn.scalar(sa.text("SHOW statement_timeout")) == "15s"
    finally:
        await engine.dispose()
        await default.dispose()


def test_settings_read_the_new_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    from ledger.settings import Settings

    monkeypatch.delenv("LEDGER_DB_POOL_TIMEOUT", raising=False)
    monkeypatch.delenv("LEDGER_STATEMENT_TIMEOUT_MS", raising=False)
    defaults = Settings.from_env()
    assert (defaults.pool_timeout, defaults.statement_timeout_ms) == (5.0, 15_000)
    monkeypatch.setenv("LEDGER_DB_POOL_TIMEOUT", "0.5")
    monkeypatch.setenv("LEDGER_STATEMENT_TIMEOUT_MS", "2500")
    configured = Settings.from_env()
    assert (configured.pool_timeout, configured.statement_timeout_ms) == (0.5, 2_500)
