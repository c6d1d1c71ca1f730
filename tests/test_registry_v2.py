"""Owners and stakes, exchange rates, published rule profiles, custody models, recycling and mass-balance claims
through the API, on both databases: each rule's good case, and each bad case refused with its status and code
while nothing is stored."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import Any

import httpx
import msgspec
import pytest
import sqlalchemy as sa

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.rules.profiles import Profiles
from ledger.services.audit import audit
from ledger.services.bootstrap import publish_builtin_profiles
from ledger.store import repo
from tests.support import Member, World

DEFAULT_PROFILE = Profiles().default_id
_seconds = itertools.count()


def stamp(day: str = "2026-03-02", offset: str = "-05:00") -> str:
    """A new timestamp on ``day`` for every event, so that no two test events are the same payload (which the
    ledger would take as a duplicate)."""
    n = next(_seconds)
    return f"{day}T10:{n // 60 % 60:02d}:{n % 60:02d}{offset}"  # after the admissions (T0, 09:00)


def made_at() -> str:
    """A time in 2026-Q3 (local date 2026-09-01)."""
    return stamp("2026-09-01", "-04:00")


# --- helpers -------------------------------------------------------------------------------------------------


async def rows(world: World, table: sa.Table) -> int:
    async with world.services.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def refused(
    world: World,
    event: ev.Event,
    member: Member,
    status: int,
    code: str,
    *needles: str,
    table: sa.Table | None = None,
) -> dict[str, Any]:
    """Submit ``event``; assert the problem's status, code and detail, and that neither the log nor ``table``
    changed."""
    before = await world.count_events()
    before_rows = await rows(world, table) if table is not None else None
    response = await world.submit(event, member, expect=None)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["code"] == code, problem
    for needle in needles:
        assert needle in problem["detail"], problem["detail"]
    assert await world.count_events() == before
    if table is not None:
        assert await rows(world, table) == before_rows
    return problem


async def get(world: World, path: str, member: Member | None = None, **params: str) -> httpx.Response:
    return await world.client.get(path, params=params, headers=(member or world.registrar).headers)


def owner(owner_id: str, kind: str = "government", country: str = "CN", actor: str = "registrar") -> ev.Event:
    return ev.OwnerRegistered(
        actor=actor,
        timestamp=stamp(),
        owner=ev.OwnerInfo(id=owner_id, name=owner_id.title(), kind=kind, country=country),
    )


def stake(holder: str, subject: str, day: str = "2026-01-01", **shares: str) -> ev.Event:
    return ev.StakeRecorded(
        actor="registrar", timestamp=stamp(), holder=holder, subject=subject, effective_date=day, **shares
    )


def rates(day: str, *pairs: tuple[str, str, str], actor: str = "registrar") -> ev.Event:
    return ev.ExchangeRatesPublished(
        actor=actor,
        timestamp=stamp(),
        date=day,
        rates=[ev.ExchangeRate(from_=f, to=t, rate=r) for f, t, r in pairs],
        source="test fixing",
    )


def published(document: dict[str, Any], actor: str = "registrar") -> ev.Event:
    return ev.ProfilePublished(actor=actor, timestamp=stamp(), profile=document)


def profile_document(version: int | None = None, **changes: Any) -> dict[str, Any]:
    document = Profiles().builtin[DEFAULT_PROFILE].document()
    if version is not None:
        document["version"] = version
    document.update(changes)
    return document


def model(
    facility: str, kind: str, day: str = "2026-01-01", actor: str = "registrar", period: str = "quarter"
) -> ev.Event:
    return ev.CustodyModelDeclared(
        actor=actor, timestamp=stamp(), facility=facility, model=kind, effective_date=day, period=period
    )


def output(batch_id: str, mass_g: int, mineral: str = "lithium", form: str = "carbonate") -> ev.Output:
    return ev.Output(id=batch_id, mineral=mineral, form=form, mass_g=mass_g)


def recycle(
    actor: Member,
    facility: str,
    outputs: list[ev.Output],
    feedstock_g: int = 1_000_000,
    inputs: list[ev.Input] | None = None,
    timestamp: str | None = None,
) -> ev.Event:
    return ev.Recycle(
        actor=actor.id,
        timestamp=timestamp or made_at(),
        facility=facility,
        feedstock=[
            ev.Feedstock(description="spent cells", category="end_of_life_battery", mass_g=feedstock_g)
        ],
        outputs=outputs,
        inputs=inputs or [],
    )


def claim(
    actor: Member,
    facility: str,
    batch_id: str,
    mass_g: int,
    period: str = "2026-Q3",
    profile: str = DEFAULT_PROFILE,
    timestamp: str | None = None,
) -> ev.Event:
    return ev.Claim(
        actor=actor.id,
        timestamp=timestamp or made_at(),
        facility=facility,
        profile=profile,
        period=period,
        batch=batch_id,
        mass_g=mass_g,
    )


async def head(world: World, batch_id: str) -> str:
    response = await get(world, f"/v1/batches/{batch_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["head"])


def fixed_credits(
    grams: Fraction, calls: list[tuple[str, str, str]] | None = None
) -> Callable[..., Awaitable[Fraction]]:
    async def credits(facility: str, profile: str, period: str) -> Fraction:
        if calls is not None:
            calls.append((facility, profile, period))
        return grams

    return credits


# --- owners --------------------------------------------------------------------------------------------------


async def test_owners_are_registered_listed_and_read(world: World) -> None:
    await world.submit(owner("gov-cn"), world.registrar)
    await world.submit(owner("cn-holdings", "state_enterprise"), world.registrar)
    reader = await world.admit("acme-mining", ["miner"], "CA")
    listed = await get(world, "/v1/owners", reader)
    assert listed.status_code == 200
    assert [o["id"] for o in listed.json()["items"]] == ["cn-holdings", "gov-cn"]
    page = await get(world, "/v1/owners", reader, limit="1")
    assert [o["id"] for o in page.json()["items"]] == ["cn-holdings"] and page.json()[
        "next_cursor"
    ] == "cn-holdings"
    one = (await get(world, "/v1/owners/gov-cn", reader)).json()
    assert (one["kind"], one["country"], one["holds"], one["held_by"]) == ("government", "CN", [], [])
    missing = await get(world, "/v1/owners/gov-xx")
    assert missing.status_code == 404 and "gov-xx" in missing.json()["detail"]
    assert (await world.client.get("/v1/owners")).status_code == 401


async def test_owner_ids_are_unique_among_owners_and_participants(world: World) -> None:
    await world.submit(owner("gov-cn"), world.registrar)
    acme = await world.admit("acme-mining", ["miner"], "CA")
    await refused(
        world, owner("gov-cn"), world.registrar, 409, "conflict", "already exists", table=repo.owners_t
    )
    await refused(
        world, owner("acme-mining"), world.registrar, 409, "conflict", "participant", table=repo.owners_t
    )
    # and a participant may not take an owner's id
    from ledger.domain.keys import SigningKey
    from tests.test_registry_api import admitted

    await refused(
        world,
        admitted("gov-cn", SigningKey.generate()),
        world.registrar,
        409,
        "conflict",
        "registered owner",
        table=repo.participants_t,
    )
    # only the registrar registers owners; the kind is a closed vocabulary
    await refused(world, owner("gov-ru", actor=acme.id), acme, 403, "forbidden", "only the registrar")
    await refused(world, owner("gov-ru", kind="emperor"), world.registrar, 400, "invalid-input", "owner.kind")


# --- stakes --------------------------------------------------------------------------------------------------


async def test_stakes_are_recorded_with_history_and_exact_fractions(world: World) -> None:
    await world.submit(owner("gov-cn"), world.registrar)
    await world.submit(owner("cn-holdings", "state_enterprise"), world.registrar)
    await world.admit("acme-mining", ["miner"], "CA")
    await world.submit(stake("gov-cn", "cn-holdings", equity="0.6", votes="0.6"), world.registrar)
    first = await world.submit(
        stake("cn-holdings", "acme-mining", "2026-01-01", equity="0.2", board_seats="1/3"), world.registrar
    )
    await world.submit(stake("cn-holdings", "acme-mining", "2026-06-01", equity="0.25"), world.registrar)

    held = (await get(world, "/v1/participants/acme-mining/stakes")).json()
    assert held["subject"] == "acme-mining"
    assert [
        (s["holder"], s["effective_date"], s["equity"], s["votes"], s["board_seats"]) for s in held["items"]
    ] == [
        ("cn-holdings", "2026-01-01", "0.2", "0", "1/3"),
        ("cn-holdings", "2026-06-01", "0.25", "0", "0"),
    ]
    assert held["items"][0]["event_id"] == first.json()["event_id"]
    holding = (await get(world, "/v1/owners/cn-holdings")).json()
    assert [(s["subject"], s["board_seats"]) for s in holding["holds"]] == [
        ("acme-mining", "1/3"),
        ("acme-mining", "0"),
    ]
    assert [(s["holder"], s["equity"]) for s in holding["held_by"]] == [("gov-cn", "0.6")]
    assert (await get(world, "/v1/participants/nobody/stakes")).status_code == 404


async def test_stake_parties_must_exist_and_governments_are_not_held(world: World) -> None:
    await world.submit(owner("gov-cn"), world.registrar)
    await world.admit("acme-mining", ["miner"], "CA")
    table = repo.stakes_t
    await refused(
        world,
        stake("ghost", "acme-mining", equity="0.1"),
        world.registrar,
        422,
        "invalid-event",
        "holder 'ghost'",
        table=table,
    )
    await refused(
        world,
        stake("gov-cn", "ghost", equity="0.1"),
        world.registrar,
        422,
        "invalid-event",
        "subject 'ghost'",
        table=table,
    )
    await refused(
        world,
        stake("acme-mining", "gov-cn", equity="0.1"),
        world.registrar,
        422,
        "invalid-event",
        "government",
        table=table,
    )
    await refused(
        world,
        stake("gov-cn", "acme-mining", equity="4/3"),
        world.registrar,
        400,
        "invalid-input",
        "equity",
        table=table,
    )
    await refused(
        world,
        stake("acme-mining", "acme-mining", equity="0.1"),
        world.registrar,
        400,
        "invalid-input",
        "itself",
        table=table,
    )


async def test_a_stake_closing_an_ownership_cycle_is_refused_naming_it(world: World) -> None:
    for name in ("a", "b", "c"):
        await world.submit(owner(name, "company", "US"), world.registrar)
    await world.submit(stake("a", "b", equity="0.5"), world.registrar)
    await world.submit(stake("b", "c", votes="1/3"), world.registrar)
    problem = await refused(
        world,
        stake("c", "a", board_seats="0.1"),
        world.registrar,
        422,
        "ownership-cycle",
        "a -> b -> c -> a",
        table=repo.stakes_t,
    )
    assert problem["cycle"] == ["a", "b", "c", "a"]
    # a holding that was later ended still counts: the graph holds every stake ever recorded with a share
    await world.submit(stake("a", "b", "2026-06-01"), world.registrar)  # all zero: ends a's holding in b
    await refused(
        world,
        stake("c", "a", "2026-07-01", equity="0.1"),
        world.registrar,
        422,
        "ownership-cycle",
        "a -> b -> c -> a",
    )
    # an all-zero record adds no edge, so it closes nothing
    await world.submit(stake("c", "a", "2026-07-01"), world.registrar)
    # in a batch request, a stake accepted earlier in the request counts for the later ones
    await world.submit(owner("d", "company", "US"), world.registrar)
    envelopes = [
        envelope_for(stake("c", "d", equity="0.1"), world.registrar.key),
        envelope_for(stake("d", "a", equity="0.1"), world.registrar.key),
    ]
    results = (await world.batch(envelopes, world.registrar)).json()["results"]
    assert results[0]["status"] == "accepted"
    assert results[1]["problem"]["code"] == "ownership-cycle"
    assert "a -> b -> c -> d -> a" in results[1]["problem"]["detail"]


# --- exchange rates ------------------------------------------------------------------------------------------


async def test_exchange_rates_are_published_once_per_pair_and_date(world: World) -> None:
    await world.submit(
        rates("2026-03-02", ("EUR", "USD", "1.0834"), ("USD", "JPY", "149.5")), world.registrar
    )
    await world.submit(rates("2026-03-03", ("EUR", "USD", "1.0901")), world.registrar)
    reader = await world.admit("acme-mining", ["miner"], "CA")
    got = await get(world, "/v1/exchange-rates", reader, date="2026-03-02")
    assert got.status_code == 200, got.text
    assert got.json()["date"] == "2026-03-02"
    assert [(r["from"], r["to"], r["rate"]) for r in got.json()["items"]] == [
        ("EUR", "USD", "1.0834"),
        ("USD", "JPY", "149.5"),
    ]
    none = await get(world, "/v1/exchange-rates", date="2026-03-04")
    assert none.status_code == 404 and "2026-03-04" in none.json()["detail"]
    assert (await get(world, "/v1/exchange-rates", date="2026-02-30")).status_code == 400
    assert (await get(world, "/v1/exchange-rates")).status_code == 400

    table = repo.rates_t
    # the same pair again, in either direction, for the same date
    await refused(
        world,
        rates("2026-03-02", ("EUR", "USD", "1.09")),
        world.registrar,
        409,
        "conflict",
        "EUR/USD",
        "2026-03-02",
        table=table,
    )
    await refused(
        world,
        rates("2026-03-02", ("GBP", "USD", "1.27"), ("JPY", "USD", "0.0067")),
        world.registrar,
        409,
        "conflict",
        "USD/JPY",
        table=table,
    )
    await refused(
        world,
        rates("2026-03-05", ("EUR", "USD", "1.1"), ("USD", "EUR", "0.9")),
        world.registrar,
        400,
        "invalid-input",
        "second time",
        table=table,
    )
    await refused(
        world,
        rates("2026-03-05", ("EUR", "USD", "0")),
        world.registrar,
        400,
        "invalid-input",
        "rate is 0",
        table=table,
    )
    await refused(
        world,
        rates("2026-03-05", ("EUR", "USD", "1.1"), actor=reader.id),
        reader,
        403,
        "forbidden",
        table=table,
    )


# --- rule profiles -------------------------------------------------------------------------------------------


async def test_profiles_are_published_with_increasing_versions(world: World) -> None:
    base = Profiles().builtin[DEFAULT_PROFILE]
    table = repo.profiles_t
    first = await world.submit(published(profile_document()), world.registrar)
    later = await world.submit(published(profile_document(base.version + 1)), world.registrar)
    async with world.services.engine.connect() as conn:
        stored = (await conn.execute(sa.select(table).order_by(table.c.version))).all()
    assert [(r.id, r.version, r.event_id) for r in stored] == [
        (base.id, base.version, first.json()["event_id"]),
        (base.id, base.version + 1, later.json()["event_id"]),
    ]
    assert stored[0].content_hash == base.content_hash
    # not again, not lower
    problem = await refused(
        world,
        published(profile_document(base.version)),
        world.registrar,
        409,
        "conflict",
        f"version {base.version + 1}",
        table=table,
    )
    assert problem["latest_version"] == base.version + 1
    await refused(
        world,
        published(profile_document(base.version + 1, name="changed")),
        world.registrar,
        409,
        "conflict",
        table=table,
    )
    # a malformed profile is refused naming the field
    await refused(
        world,
        published(profile_document(base.version + 2, share_basis="weight")),
        world.registrar,
        422,
        "bad-profile",
        "share_basis",
        table=table,
    )
    document = profile_document(base.version + 2)
    del document["members"]
    await refused(world, published(document), world.registrar, 422, "bad-profile", "members", table=table)
    acme = await world.admit("acme-mining", ["miner"], "CA")
    await refused(
        world,
        published(profile_document(base.version + 2), actor=acme.id),
        acme,
        403,
        "forbidden",
        table=table,
    )


async def test_builtin_profiles_are_published_once(world: World) -> None:
    builtin = Profiles().builtin
    done = await publish_builtin_profiles(world.services, world.registrar.key)
    assert [(p.id, p.version, p.content_hash) for p in done] == [
        (p.id, p.version, p.content_hash) for p in sorted(builtin.values(), key=lambda p: p.id)
    ]
    assert await publish_builtin_profiles(world.services, world.registrar.key) == []
    assert await rows(world, repo.profiles_t) == len(builtin)


# --- custody models ------------------------------------------------------------------------------------------


async def test_custody_models_keep_their_history(world: World) -> None:
    maker = await world.admit("cycle-co", ["recycler"], "US")
    await world.facility("rec-1", maker, "recycler", "US")
    await world.submit(model("rec-1", "segregated", "2026-01-01", actor=maker.id), maker)
    await world.submit(model("rec-1", "mass_balance_credit", "2026-07-01", period="month"), world.registrar)
    before = (await get(world, "/v1/facilities/rec-1/custody-model", maker, on="2026-06-30")).json()
    assert before["in_force"]["model"] == "segregated" and before["on"] == "2026-06-30"
    after = (await get(world, "/v1/facilities/rec-1/custody-model", maker, on="2026-07-01")).json()
    assert (after["in_force"]["model"], after["in_force"]["period"]) == ("mass_balance_credit", "month")
    assert [d["effective_date"] for d in after["declarations"]] == ["2026-01-01", "2026-07-01"]
    early = (await get(world, "/v1/facilities/rec-1/custody-model", maker, on="2025-12-31")).json()
    assert early["in_force"] is None
    today = (await get(world, "/v1/facilities/rec-1/custody-model", maker)).json()
    assert today["in_force"]["model"] == "mass_balance_credit"
    assert (await get(world, "/v1/facilities/nowhere/custody-model")).status_code == 404

    table = repo.custody_models_t
    other = await world.admit("other-co", ["recycler"], "US")
    await refused(
        world,
        model("rec-1", "segregated", "2026-09-01", actor=other.id),
        other,
        403,
        "forbidden",
        "cycle-co",
        table=table,
    )
    await refused(
        world,
        model("nowhere", "segregated", "2026-09-01"),
        world.registrar,
        422,
        "invalid-event",
        "nowhere",
        table=table,
    )
    await refused(
        world,
        model("rec-1", "segregated", "2026-07-01", actor=maker.id),
        maker,
        409,
        "conflict",
        "2026-07-01",
        table=table,
    )
    await refused(
        world,
        model("rec-1", "magic", "2026-09-01", actor=maker.id),
        maker,
        400,
        "invalid-input",
        "model",
        table=table,
    )


# --- recycling -----------------------------------------------------------------------------------------------


@pytest.fixture
async def recycler(world: World) -> Member:
    member = await world.admit("cycle-co", ["recycler"], "US")
    await world.facility("rec-1", member, "recycler", "US")
    return member


async def test_recycle_creates_batches_and_consumes_inputs_like_a_transform(
    world: World, recycler: Member
) -> None:
    first = await world.submit(
        recycle(recycler, "rec-1", [output("bm-1", 600_000, "mixed", "black_mass")], 1_000_000),
        recycler,
        expect=None,
    )
    assert (
        first.status_code == 400 and "mixed" in first.json()["detail"]
    )  # only a transform's output may be mixed
    made = await world.submit(
        recycle(recycler, "rec-1", [output("bm-1", 600_000, "cobalt", "black_mass")], 1_000_000), recycler
    )
    batch = (await get(world, "/v1/batches/bm-1")).json()
    assert (batch["custodian"], batch["facility"], batch["mass_g"], batch["created_event"]) == (
        "cycle-co",
        "rec-1",
        600_000,
        made.json()["event_id"],
    )
    # a second recycling takes the black mass in, with more feedstock: inputs are consumed, lineage is linked
    parent = await head(world, "bm-1")
    again = recycle(
        recycler,
        "rec-1",
        [output("co-1", 500_000, "cobalt", "sulfate"), output("co-2", 200_000, "cobalt", "hydroxide")],
        feedstock_g=300_000,
        inputs=[ev.Input(batch="bm-1", parent=parent, mass_g=400_000)],
    )
    second = await world.submit(again, recycler)
    left = (await get(world, "/v1/batches/bm-1")).json()
    assert (left["mass_g"], left["head"], left["status"]) == (
        200_000,
        second.json()["event_id"],
        "at_facility",
    )
    lineage = (await get(world, "/v1/batches/co-1/lineage")).json()
    assert {b["id"] for b in lineage["batches"]} == {"co-1", "bm-1"}
    assert [(e["parent"], e["child"], e["mass_g"]) for e in lineage["edges"]] == [("bm-1", "co-1", 400_000)]
    history = (await get(world, "/v1/batches/bm-1/history")).json()
    assert [e["kind"] for e in history["events"]] == ["recycle", "recycle"]
    # declared values are the recycler's: a downstream holder sees the event with them redacted
    buyer = await world.admit("cell-co", ["manufacturer"], "US")
    await world.facility("cells-1", buyer, "plant", "US")
    valued = ev.Output(
        id="co-3",
        mineral="cobalt",
        form="sulfate",
        mass_g=100,
        value=ev.Money(amount="12.50", currency="USD"),
    )
    priced = await world.submit(recycle(recycler, "rec-1", [valued], 100), recycler)
    ship = ev.Transfer(
        actor=recycler.id,
        timestamp=made_at(),
        batch="co-3",
        parent=priced.json()["event_id"],
        to=buyer.id,
        route=[ev.RouteLeg(country="US", customs_control=False)],
        to_facility="cells-1",
    )
    shipped = await world.submit(ship, recycler)
    take = ev.Receive(
        actor=buyer.id,
        timestamp=made_at(),
        batch="co-3",
        parent=shipped.json()["event_id"],
        facility="cells-1",
        mass_g=100,
    )
    await world.submit(take, buyer)
    own = (await get(world, f"/v1/events/{priced.json()['event_id']}", recycler)).json()
    assert own["payload"]["outputs"][0]["value"] == {"amount": "12.50", "currency": "USD"}
    seen = (await get(world, f"/v1/events/{priced.json()['event_id']}", buyer)).json()
    assert seen["payload"]["outputs"][0]["value"] == {"redacted": True}
    assert seen["envelope"] is None and seen["redacted"] is True
    assert (await get(world, "/v1/batches/co-3", buyer)).json()["value_redacted"] is True


async def test_recycle_rules(world: World, recycler: Member) -> None:
    processor = await world.admit("proc-co", ["processor"], "US")
    await world.facility("rec-proc", processor, "recycler", "US")
    await world.facility("plant-1", recycler, "plant", "US")
    other = await world.admit("other-cycle", ["recycler"], "US")
    await world.facility("rec-2", other, "recycler", "US")
    await world.submit(recycle(recycler, "rec-1", [output("bm-1", 600_000)], 1_000_000), recycler)
    table = repo.batches_t
    await refused(
        world,
        recycle(processor, "rec-proc", [output("x-1", 1)]),
        processor,
        403,
        "forbidden",
        "recycler",
        table=table,
    )
    await refused(
        world,
        recycle(recycler, "plant-1", [output("x-1", 1)]),
        recycler,
        422,
        "invalid-event",
        "kind recycler",
        table=table,
    )
    await refused(
        world,
        recycle(recycler, "rec-2", [output("x-1", 1)]),
        recycler,
        403,
        "forbidden",
        "other-cycle",
        table=table,
    )
    await refused(
        world,
        recycle(recycler, "nowhere", [output("x-1", 1)]),
        recycler,
        422,
        "invalid-event",
        "nowhere",
        table=table,
    )
    await refused(
        world,
        recycle(recycler, "rec-1", [output("x-1", 700_001), output("x-2", 300_000)], 1_000_000),
        recycler,
        422,
        "mass-imbalance",
        "1000001 g",
        table=table,
    )
    await refused(
        world,
        recycle(recycler, "rec-1", [output("bm-1", 1)]),
        recycler,
        409,
        "conflict",
        "never reused",
        table=table,
    )
    await refused(
        world,
        recycle(recycler, "rec-1", [output("x-1", 1), output("x-1", 1)]),
        recycler,
        422,
        "invalid-event",
        "twice",
        table=table,
    )
    current = await head(world, "bm-1")
    stale = "sha256:" + "0" * 64
    problem = await refused(
        world,
        recycle(
            recycler, "rec-1", [output("x-1", 1)], inputs=[ev.Input(batch="bm-1", parent=stale, mass_g=1)]
        ),
        recycler,
        409,
        "stale-parent",
        table=table,
    )
    assert problem["current_head"] == current
    await refused(
        world,
        recycle(
            recycler,
            "rec-1",
            [output("x-1", 1)],
            inputs=[ev.Input(batch="bm-1", parent=current, mass_g=600_001)],
        ),
        recycler,
        422,
        "mass-imbalance",
        "holds only",
        table=table,
    )
    # inputs count towards the mass balance: 1 kg feedstock + 600 kg of black mass may give 601 kg, not more
    await refused(
        world,
        recycle(
            recycler,
            "rec-1",
            [output("x-1", 601_001)],
            1_000,
            inputs=[ev.Input(batch="bm-1", parent=current, mass_g=600_000)],
        ),
        recycler,
        422,
        "mass-imbalance",
        table=table,
    )
    await world.submit(
        recycle(
            recycler,
            "rec-1",
            [output("x-1", 601_000)],
            1_000,
            inputs=[ev.Input(batch="bm-1", parent=current, mass_g=600_000)],
        ),
        recycler,
    )
    assert (await get(world, "/v1/batches/bm-1")).json()["status"] == "consumed"


# --- claims --------------------------------------------------------------------------------------------------


@pytest.fixture
async def site(world: World, recycler: Member) -> Member:
    """A recycler under the mass-balance credit method (quarters) with batch li-1 of 1,000 kg made in 2026-Q3,
    the built-in profiles published, and credits of 600 kg per period."""
    await publish_builtin_profiles(world.services, world.registrar.key)
    await world.submit(model("rec-1", "mass_balance_credit", "2026-01-01", actor=recycler.id), recycler)
    await world.submit(recycle(recycler, "rec-1", [output("li-1", 1_000_000)], 2_000_000), recycler)
    world.services.submitter.credits = fixed_credits(Fraction(600_000))
    return recycler


async def test_a_claim_may_use_exactly_the_credits_and_not_a_gram_more(world: World, site: Member) -> None:
    calls: list[tuple[str, str, str]] = []
    world.services.submitter.credits = fixed_credits(Fraction(600_000), calls)
    accepted = await world.submit(claim(site, "rec-1", "li-1", 400_000), site)
    await world.submit(claim(site, "rec-1", "li-1", 200_000), site)
    assert calls == [("rec-1", DEFAULT_PROFILE, "2026-Q3")] * 2
    problem = await refused(
        world,
        claim(site, "rec-1", "li-1", 1),
        site,
        409,
        "insufficient-balance",
        "600000 g of credits",
        "600000 g already claimed",
        "0 g remaining",
        table=repo.claims_t,
    )
    assert (problem["balance_g"], problem["credits_g"], problem["claimed_g"]) == ("0", "600000", "600000")
    # the claim is on the batch's history, and the batch itself did not move
    history = (await get(world, "/v1/batches/li-1/history")).json()
    assert [e["kind"] for e in history["events"]] == ["recycle", "claim", "claim"]
    assert history["events"][1]["event_id"] == accepted.json()["event_id"]
    assert (await get(world, "/v1/batches/li-1")).json()["head"] == history["events"][0]["event_id"]
    async with world.services.engine.connect() as conn:
        stored = (await conn.execute(sa.select(repo.claims_t).order_by(repo.claims_t.c.log_index))).all()
    assert [(c.facility_id, c.profile_id, c.period, c.batch_id, c.mass_g) for c in stored] == [
        ("rec-1", DEFAULT_PROFILE, "2026-Q3", "li-1", 400_000),
        ("rec-1", DEFAULT_PROFILE, "2026-Q3", "li-1", 200_000),
    ]


async def test_fractional_credits_are_exact(world: World, site: Member) -> None:
    world.services.submitter.credits = fixed_credits(Fraction(1000, 3))
    await world.submit(claim(site, "rec-1", "li-1", 333), site)
    problem = await refused(world, claim(site, "rec-1", "li-1", 1), site, 409, "insufficient-balance")
    assert (problem["balance_g"], problem["credits_g"], problem["claimed_g"]) == ("1/3", "1000/3", "333")
    world.services.submitter.credits = fixed_credits(Fraction(6667, 2))
    problem = await refused(world, claim(site, "rec-1", "li-1", 3001), site, 409, "insufficient-balance")
    assert problem["balance_g"] == "3000.5"


async def test_claim_rules(world: World, site: Member) -> None:
    table = repo.claims_t
    # the period is written as the facility's declared period length
    await refused(
        world,
        claim(site, "rec-1", "li-1", 1, period="2026-09"),
        site,
        422,
        "invalid-event",
        "YYYY-Qn",
        table=table,
    )
    await refused(
        world,
        claim(site, "rec-1", "li-1", 1, period="2026"),
        site,
        422,
        "invalid-event",
        "quarter",
        table=table,
    )
    # the batch was made in that period, at that facility, by a transform or recycle
    await refused(
        world,
        claim(site, "rec-1", "li-1", 1, period="2026-Q2"),
        site,
        422,
        "invalid-event",
        "2026-Q3, not in 2026-Q2",
        table=table,
    )
    await refused(world, claim(site, "rec-1", "ghost", 1), site, 422, "invalid-event", "ghost", table=table)
    miner = await world.admit("mine-co", ["miner"], "US")
    await world.facility("mine-1", miner, "mine", "US")
    await world.submit(
        ev.Extract(
            actor=miner.id,
            timestamp=made_at(),
            facility="mine-1",
            batch=ev.NewBatch(id="ore-1", mineral="lithium", form="ore", mass_g=10),
        ),
        miner,
    )
    await refused(
        world,
        claim(site, "rec-1", "ore-1", 1),
        site,
        422,
        "invalid-event",
        "not made by a transform or recycle",
        table=table,
    )
    # a published profile only
    await refused(
        world,
        claim(site, "rec-1", "li-1", 1, profile="made-up"),
        site,
        422,
        "invalid-event",
        "not a published rule profile",
        table=table,
    )
    # only the facility's owner claims
    rival = await world.admit("rival-co", ["recycler"], "US")
    await refused(world, claim(rival, "rec-1", "li-1", 1), rival, 403, "forbidden", "cycle-co", table=table)
    # under one profile a batch is claimed at most for the mass it was made with, whatever the period's credits
    world.services.submitter.credits = fixed_credits(Fraction(10**9))
    await world.submit(claim(site, "rec-1", "li-1", 999_999), site)
    await refused(
        world, claim(site, "rec-1", "li-1", 2), site, 422, "mass-imbalance", "1000000 g", table=table
    )
    other_profile = sorted(set(Profiles().builtin) - {DEFAULT_PROFILE})[0]
    await world.submit(claim(site, "rec-1", "li-1", 1_000_000, profile=other_profile), site)
    # no engine to compute credits: refused
    world.services.submitter.credits = None
    await refused(
        world,
        claim(site, "rec-1", "li-1", 1),
        site,
        422,
        "invalid-event",
        "mass-balance credits cannot be computed here",
        table=table,
    )


async def test_claims_need_the_credit_method_in_force(world: World, site: Member) -> None:
    table = repo.claims_t
    await world.submit(model("rec-1", "segregated", "2026-08-01", actor=site.id), site)
    await refused(
        world, claim(site, "rec-1", "li-1", 1), site, 422, "invalid-event", "segregated", table=table
    )
    # on a date before the change the credit method was in force
    await world.submit(claim(site, "rec-1", "li-1", 1, timestamp="2026-07-31T23:00:00-04:00"), site)
    maker = await world.admit("plant-co", ["processor"], "US")
    await world.facility("plant-9", maker, "plant", "US")
    await refused(
        world,
        claim(maker, "plant-9", "li-1", 1),
        maker,
        422,
        "invalid-event",
        "no custody model",
        table=table,
    )


async def test_credits_errors_refuse_only_the_claims_that_need_them(world: World, site: Member) -> None:
    from ledger.errors import InvalidInput

    async def failing(facility: str, profile: str, period: str) -> Fraction:
        raise InvalidInput(f"no exchange rate for {period}")

    world.services.submitter.credits = failing
    await refused(
        world, claim(site, "rec-1", "li-1", 1), site, 400, "invalid-input", "no exchange rate for 2026-Q3"
    )


async def test_a_batch_request_may_make_and_claim_in_one_go(world: World, site: Member) -> None:
    envelopes = [
        envelope_for(recycle(site, "rec-1", [output("li-2", 500_000)], 600_000), site.key),
        envelope_for(claim(site, "rec-1", "li-2", 500_000), site.key),
        envelope_for(claim(site, "rec-1", "li-1", 100_001), site.key),
    ]
    body = (await world.batch(envelopes, site)).json()
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "rejected"]
    assert body["results"][2]["problem"]["code"] == "insufficient-balance"
    assert body["results"][2]["problem"]["balance_g"] == "100000"


async def test_the_audit_replays_every_new_kind(world: World, site: Member) -> None:
    await world.submit(owner("gov-cn"), world.registrar)
    await world.submit(stake("gov-cn", site.id, equity="1/3"), world.registrar)
    await world.submit(rates("2026-03-02", ("EUR", "USD", "1.0834")), world.registrar)
    await world.submit(claim(site, "rec-1", "li-1", 600_000), site)
    report = await audit(world.services.engine)
    assert report.events == await world.count_events()
    # a tampered projection is named
    async with world.services.engine.begin() as conn:
        await conn.execute(repo.claims_t.update().values(mass_g=1))
    from ledger.services.audit import AuditFailure

    with pytest.raises(AuditFailure, match="claims table"):
        await audit(world.services.engine)


async def test_new_event_kinds_are_readable_as_events(world: World, site: Member) -> None:
    response = await world.submit(stake("registrar", site.id, votes="1/3"), world.registrar)
    event = (await get(world, f"/v1/events/{response.json()['event_id']}", site)).json()
    assert event["kind"] == "stake_recorded" and event["payload"]["votes"] == "1/3"
    decoded = msgspec.json.decode(__import__("base64").b64decode(event["envelope"]["payload"]), type=ev.Event)
    assert isinstance(decoded, ev.StakeRecorded)
