"""Who reads what (the matrix), on both databases: privileged roles, holders, upstream lineage, competitors,
commercial values, public proofs."""

from __future__ import annotations

from typing import Any

from ledger.domain import events as ev
from tests.support import TS, Chain, Member

FULL = {"detail": "full"}
"""Every reason and every source (the eligibility endpoint answers a summary by default)."""


async def _scenario(chain: Chain) -> dict[str, Member]:
    """Northstar ships spod-1 (declared value) to Gulf, which refines it into lioh-1 (value added) and ships it to
    Monterrey. A competitor miner has its own batch; customs and an auditor are admitted."""
    world = chain.world
    people = {
        "customs": await world.admit("cbp", ["customs"], "US"),
        "auditor": await world.admit("verity", ["auditor"], "CA"),
        "rival": await world.admit("rival-mining", ["miner"], "AU"),
    }
    await world.facility("rival-mine", people["rival"], "mine", "AU")
    rival_extract = ev.Extract(
        actor="rival-mining",
        timestamp=TS,
        facility="rival-mine",
        batch=ev.NewBatch(
            id="rival-1", mineral="lithium", form="ore", mass_g=10, value=ev.Money(amount="3", currency="USD")
        ),
    )
    await chain.send(rival_extract, people["rival"])
    await chain.send(
        chain.extract("spod-1", 1_000, value=ev.Money(amount="1200.50", currency="USD")), chain.miner
    )
    await chain.ship("spod-1", chain.miner, chain.refiner, chain.refinery, 1_000)
    transform = ev.Transform(
        actor=chain.refiner.id,
        timestamp=TS,
        facility=chain.refinery,
        process="refining",
        inputs=[ev.Input(batch="spod-1", parent=await chain.head("spod-1"), mass_g=1_000)],
        outputs=[
            ev.Output(
                id="lioh-1",
                mineral="lithium",
                form="hydroxide",
                mass_g=500,
                value=ev.Money(amount="9000", currency="USD"),
            )
        ],
        value_added=ev.Money(amount="7000", currency="USD"),
    )
    await chain.send(transform, chain.refiner)
    await chain.ship("lioh-1", chain.refiner, chain.maker, chain.plant, 500)
    return people


async def _status(chain: Chain, member: Member, path: str, **params: Any) -> int:
    response = await chain.world.client.get(path, params=params, headers=member.headers)
    return response.status_code


async def test_read_matrix(chain: Chain) -> None:
    people = await _scenario(chain)
    miner, refiner, maker = chain.miner, chain.refiner, chain.maker
    customs, auditor, rival = people["customs"], people["auditor"], people["rival"]
    registrar = chain.world.registrar
    batch_paths = [
        "/v1/batches/{}",
        "/v1/batches/{}/history",
        "/v1/batches/{}/lineage",
        "/v1/batches/{}/eligibility",
    ]
    expected = {
        # reader: {batch: readable}
        "registrar": {"spod-1": True, "lioh-1": True, "rival-1": True},
        "customs": {"spod-1": True, "lioh-1": True, "rival-1": True},
        "auditor": {"spod-1": True, "lioh-1": True, "rival-1": True},
        "miner": {"spod-1": True, "lioh-1": False, "rival-1": False},  # not its buyer's downstream products
        "refiner": {"spod-1": True, "lioh-1": True, "rival-1": False},
        "maker": {"spod-1": True, "lioh-1": True, "rival-1": False},  # upstream lineage of what it holds
        "rival": {"spod-1": False, "lioh-1": False, "rival-1": True},
    }
    readers = {
        "registrar": registrar,
        "customs": customs,
        "auditor": auditor,
        "miner": miner,
        "refiner": refiner,
        "maker": maker,
        "rival": rival,
    }
    for name, member in readers.items():
        for batch, readable in expected[name].items():
            for path in batch_paths:
                status = await _status(chain, member, path.format(batch))
                assert status == (200 if readable else 404), (name, path.format(batch), status)
    # a competitor's batch answers exactly like a batch that does not exist
    hidden = await chain.world.client.get("/v1/batches/spod-1", headers=rival.headers)
    missing = await chain.world.client.get("/v1/batches/nope", headers=rival.headers)
    assert hidden.json()["detail"].replace("spod-1", "X") == missing.json()["detail"].replace("nope", "X")


async def test_downstream_lineage_shows_only_what_the_reader_may_see(chain: Chain) -> None:
    await _scenario(chain)
    downstream = (
        await chain.world.client.get(
            "/v1/batches/spod-1/lineage", params={"direction": "downstream"}, headers=chain.miner.headers
        )
    ).json()
    assert {b["id"] for b in downstream["batches"]} == {"spod-1"}
    as_refiner = (
        await chain.world.client.get(
            "/v1/batches/spod-1/lineage", params={"direction": "downstream"}, headers=chain.refiner.headers
        )
    ).json()
    assert {b["id"] for b in as_refiner["batches"]} == {"spod-1", "lioh-1"}


async def test_commercial_values_are_shown_only_to_their_party_and_the_privileged(chain: Chain) -> None:
    people = await _scenario(chain)
    client = chain.world.client
    # the maker may read spod-1 (upstream of what it holds) but not the miner's declared value
    batch = (await client.get("/v1/batches/spod-1", headers=chain.maker.headers)).json()
    assert batch["value"] is None and batch["value_redacted"] is True
    history = (await client.get("/v1/batches/spod-1/history", headers=chain.maker.headers)).json()
    extract = history["events"][0]
    assert extract["payload"]["batch"]["value"] == {"redacted": True}
    assert extract["envelope"] is None and extract["redacted"] is True
    transform = history["events"][-1]
    assert transform["payload"]["value_added"] == {"redacted": True}
    # the declaring party and the privileged roles see the values and the signed envelope
    for member in (chain.miner, people["customs"], people["auditor"], chain.world.registrar):
        batch = (await client.get("/v1/batches/spod-1", headers=member.headers)).json()
        assert batch["value"] == {"amount": "1200.50", "currency": "USD"}
        event = (await client.get("/v1/batches/spod-1/history", headers=member.headers)).json()["events"][0]
        assert event["envelope"] is not None and event["payload"]["batch"]["value"]["amount"] == "1200.50"
    # eligibility: source values redacted for the maker, shown to customs
    as_maker = (
        await client.get("/v1/batches/lioh-1/eligibility", params=FULL, headers=chain.maker.headers)
    ).json()
    assert as_maker["sources"][0]["value"] == {"redacted": True}
    as_customs = (
        await client.get("/v1/batches/lioh-1/eligibility", params=FULL, headers=people["customs"].headers)
    ).json()
    assert as_customs["sources"][0]["value"] == {"amount": "1200.50", "currency": "USD"}
    assert as_maker["verdict"] == as_customs["verdict"]
    # nor can the value be recovered from what is derived from it: the traced value and the sums in money
    assert as_maker["sources"][0]["traced_value"] is None
    assert (as_maker["qualifying_total"], as_maker["total"]) == ("redacted", "redacted")
    assert as_customs["sources"][0]["traced_value"] is not None and as_customs["total"] != "redacted"
    assert not any("1200.50" in r["message"] or "7000" in r["message"] for r in as_maker["reasons"])


async def test_bundles_with_values_go_to_customs_and_still_verify(chain: Chain) -> None:
    from ledger.rules.bundle import verify_bundle

    people = await _scenario(chain)
    await chain.world.services.log.integrate_all()
    client = chain.world.client
    refused = await client.get("/v1/batches/lioh-1/bundle", headers=chain.maker.headers)
    assert refused.status_code == 403 and "northstar" in refused.json()["detail"]
    bundle = (await client.get("/v1/batches/lioh-1/bundle", headers=people["customs"].headers)).json()
    result = verify_bundle(bundle, vkey=(await client.get("/v1/log/key")).text)
    assert result.determination.sources[0].value == {"amount": "1200.50", "currency": "USD"}


async def test_events_entries_participant_batches_and_public_proofs(chain: Chain) -> None:
    people = await _scenario(chain)
    client = chain.world.client
    history = (await client.get("/v1/batches/spod-1/history", headers=chain.miner.headers)).json()
    extract_id = history["events"][0]["event_id"]
    assert (await client.get(f"/v1/events/{extract_id}", headers=people["rival"].headers)).status_code == 404
    assert (await client.get(f"/v1/events/{extract_id}", headers=chain.maker.headers)).status_code == 200
    # registry events are shared reference data
    admitted = (await client.get("/v1/participants/rival-mining", headers=chain.miner.headers)).json()[
        "admitted_event"
    ]
    assert (await client.get(f"/v1/events/{admitted}", headers=chain.miner.headers)).status_code == 200
    assert (
        await client.get("/v1/participants/northstar/batches", headers=people["rival"].headers)
    ).status_code == 403
    assert (
        await client.get("/v1/participants/northstar/batches", headers=chain.miner.headers)
    ).status_code == 200
    assert (
        await client.get("/v1/log/entries", params={"start": 0}, headers=chain.miner.headers)
    ).status_code == 403
    assert (
        await client.get("/v1/log/entries", params={"start": 0}, headers=people["auditor"].headers)
    ).status_code == 200
    await chain.world.services.log.integrate_all()
    assert (await client.get("/v1/log/checkpoint")).status_code == 200
    assert (await client.get("/v1/log/proofs/inclusion", params={"event_id": extract_id})).status_code == 200
