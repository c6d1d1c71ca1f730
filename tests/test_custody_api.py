"""Custody through the API on both databases: the happy path from mine to cathode plant, lineage, history,
batch submission, and every bad input of the custody issue (each a clear 4xx that changes nothing)."""

from __future__ import annotations

import base64
import json

import pytest

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.domain.dsse import event_id
from tests.support import TS, Chain, Member


def usd(amount: str) -> ev.Money:
    return ev.Money(amount=amount, currency="USD")


async def test_mine_to_cathode_plant_with_lineage_and_history(chain: Chain) -> None:
    world = chain.world
    await chain.send(chain.extract("spod-1", 20_000_000, value=usd("24000.00")), chain.miner)
    await chain.ship("spod-1", chain.miner, chain.refiner, chain.refinery, 19_900_000)
    state = await chain.batch("spod-1")
    assert (state["custodian"], state["mass_g"], state["lost_g"], state["status"]) == (
        "gulf-refining",
        19_900_000,
        100_000,
        "at_facility",
    )
    transform = ev.Transform(
        actor=chain.refiner.id,
        timestamp=TS,
        facility=chain.refinery,
        process="refining",
        inputs=[ev.Input(batch="spod-1", parent=await chain.head("spod-1"), mass_g=19_900_000)],
        outputs=[ev.Output(id="lioh-1", mineral="lithium", form="hydroxide", mass_g=3_000_000)],
        value_added=usd("40000"),
    )
    await chain.send(transform, chain.refiner)
    assert (await chain.batch("spod-1"))["status"] == "consumed"
    split = ev.Split(
        actor=chain.refiner.id,
        timestamp=TS,
        batch="lioh-1",
        parent=await chain.head("lioh-1"),
        outputs=[ev.SplitPart(id="lioh-1a", mass_g=2_000_000), ev.SplitPart(id="lioh-1b", mass_g=1_000_000)],
    )
    await chain.send(split, chain.refiner)
    await chain.ship("lioh-1a", chain.refiner, chain.maker, chain.plant, 2_000_000)
    # merge needs like material at one facility: ship the other half too, then merge
    await chain.ship("lioh-1b", chain.refiner, chain.maker, chain.plant, 1_000_000)
    merge = ev.Merge(
        actor=chain.maker.id,
        timestamp=TS,
        inputs=[
            ev.MergeInput(batch="lioh-1a", parent=await chain.head("lioh-1a")),
            ev.MergeInput(batch="lioh-1b", parent=await chain.head("lioh-1b")),
        ],
        output="lioh-m",
    )
    await chain.send(merge, chain.maker)
    assert (await chain.batch("lioh-m"))["mass_g"] == 3_000_000

    headers = world.registrar.headers
    upstream = (await world.client.get("/v1/batches/lioh-m/lineage", headers=headers)).json()
    assert {b["id"]: b["depth"] for b in upstream["batches"]} == {
        "lioh-m": 0,
        "lioh-1a": 1,
        "lioh-1b": 1,
        "lioh-1": 2,
        "spod-1": 3,
    }
    assert {(e["parent"], e["child"], e["mass_g"]) for e in upstream["edges"]} == {
        ("spod-1", "lioh-1", 19_900_000),
        ("lioh-1", "lioh-1a", 2_000_000),
        ("lioh-1", "lioh-1b", 1_000_000),
        ("lioh-1a", "lioh-m", 2_000_000),
        ("lioh-1b", "lioh-m", 1_000_000),
    }
    downstream = (
        await world.client.get(
            "/v1/batches/spod-1/lineage", params={"direction": "downstream"}, headers=headers
        )
    ).json()
    assert {b["id"] for b in downstream["batches"]} == {"spod-1", "lioh-1", "lioh-1a", "lioh-1b", "lioh-m"}

    dot = await world.client.get("/v1/batches/lioh-m/lineage", params={"format": "dot"}, headers=headers)
    assert dot.headers["content-type"].startswith("text/vnd.graphviz")
    assert dot.text.startswith("digraph") and '"spod-1" -> "lioh-1"' in dot.text
    mermaid = await world.client.get(
        "/v1/batches/lioh-m/lineage", params={"format": "mermaid"}, headers=headers
    )
    assert mermaid.text.startswith("flowchart LR") and mermaid.text.count("-->") == 5

    history = (await world.client.get("/v1/batches/spod-1/history", headers=headers)).json()
    kinds = [e["kind"] for e in history["events"]]
    assert kinds == ["extract", "transfer", "receive", "transform"]
    # the hash chain: each event names the previous one as the batch's parent
    for previous, current in zip(history["events"], history["events"][1:], strict=False):
        payload = current["payload"]
        parents = [payload.get("parent")] + [i["parent"] for i in payload.get("inputs", [])]
        assert previous["event_id"] in parents
    held = (await world.client.get("/v1/participants/gulf-refining/batches", headers=headers)).json()
    assert {b["id"] for b in held["items"]} == {"spod-1", "lioh-1", "lioh-1a", "lioh-1b"}


async def test_timestamp_offset_is_kept(chain: Chain) -> None:
    response = await chain.send(chain.extract("spod-1"), chain.miner)
    event = (
        await chain.world.client.get(f"/v1/events/{response.json()['event_id']}", headers=chain.miner.headers)
    ).json()
    assert event["timestamp"] == TS and event["payload"]["timestamp"] == TS


async def test_batch_endpoint_builds_on_earlier_envelopes_and_keeps_going_after_a_rejection(
    chain: Chain,
) -> None:
    world = chain.world
    e1 = envelope_for(chain.extract("b-1"), chain.miner.key)
    bad = envelope_for(chain.extract("b-2", mass_g=5, mineral="unobtainium"), chain.miner.key)
    e1_id = event_id(base64.b64decode(e1.payload))
    transfer = ev.Transfer(
        actor=chain.miner.id,
        timestamp=TS,
        batch="b-1",
        parent=e1_id,
        to=chain.refiner.id,
        route=[ev.RouteLeg(country="CA", customs_control=False)],
    )
    e3 = envelope_for(transfer, chain.miner.key)
    stale = envelope_for(
        await_free_transfer(chain, "b-1", e1_id, "2026-09-02T08:00:00-04:00"), chain.miner.key
    )
    response = await world.batch([e1, bad, e3, e1, stale], chain.miner)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["status"] for r in body["results"]] == [
        "accepted",
        "rejected",
        "accepted",
        "duplicate",
        "rejected",
    ]
    assert (body["accepted"], body["duplicate"], body["rejected"]) == (2, 1, 2)
    assert "unobtainium" in body["results"][1]["problem"]["detail"]
    assert body["results"][4]["problem"]["status"] == 409
    assert body["results"][3]["log_index"] == body["results"][0]["log_index"]
    assert body["results"][2]["log_index"] == body["results"][0]["log_index"] + 1  # gap-free
    assert (await chain.batch("b-1"))["status"] == "in_transit"


def await_free_transfer(chain: Chain, batch: str, parent: str, timestamp: str) -> ev.Transfer:
    return ev.Transfer(
        actor=chain.miner.id,
        timestamp=timestamp,
        batch=batch,
        parent=parent,
        to=chain.maker.id,
        route=[ev.RouteLeg(country="CA", customs_control=False)],
    )


async def test_batch_endpoint_limit(chain: Chain) -> None:
    limit = chain.world.services.settings.max_batch_envelopes
    envelope = envelope_for(chain.extract("b-1"), chain.miner.key)
    response = await chain.world.batch([envelope] * (limit + 1), chain.miner)
    assert response.status_code == 400
    assert f"at most {limit}" in response.json()["detail"]
    assert await chain.world.count_events() == 7  # genesis + 3 participants + 3 facilities: nothing added


async def test_log_indices_are_gap_free_across_rejections(chain: Chain) -> None:
    first = await chain.send(chain.extract("b-1"), chain.miner)
    await chain.send(chain.extract("b-1"), chain.miner, expect=None)  # duplicate envelope: 200, no new index
    await chain.send(chain.extract("b-1", mass_g=7), chain.miner, expect=409)
    second = await chain.send(chain.extract("b-2"), chain.miner)
    assert second.json()["log_index"] == first.json()["log_index"] + 1


async def _expect(chain: Chain, event: ev.Event, member: Member, status: int, needle: str) -> None:
    before = await chain.world.count_events()
    response = await chain.send(event, member, expect=None)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert needle in response.json()["detail"], response.json()["detail"]
    assert await chain.world.count_events() == before


async def test_custody_bad_inputs(chain: Chain) -> None:
    world = chain.world
    await chain.send(chain.extract("spod-1", 1_000_000), chain.miner)
    head = await chain.head("spod-1")

    # transfer by a non-custodian
    theft = await chain.transfer("spod-1", chain.refiner, chain.maker)
    await _expect(chain, theft, chain.refiner, 403, "only its custodian")
    # transforming a batch that is not at the processor's facility (held by the miner, at the mine)
    grab = ev.Transform(
        actor=chain.refiner.id,
        timestamp=TS,
        facility=chain.refinery,
        process="refining",
        inputs=[ev.Input(batch="spod-1", parent=head, mass_g=10)],
        outputs=[ev.Output(id="x", mineral="lithium", form="hydroxide", mass_g=1)],
        value_added=usd("1"),
    )
    await _expect(chain, grab, chain.refiner, 403, "only its custodian")
    # ship it; then: receive by someone not named, transform in transit, receive twice
    await chain.send(await chain.transfer("spod-1", chain.miner, chain.refiner, chain.refinery), chain.miner)
    await _expect(
        chain,
        await chain.receive("spod-1", chain.maker, chain.plant, 1_000_000),
        chain.maker,
        403,
        "was shipped to",
    )
    # a miner may not transform at all (role), and nobody may transform a batch while it is in transit
    not_a_processor = ev.Transform(
        actor=chain.miner.id,
        timestamp=TS,
        facility=chain.mine,
        process="beneficiation",
        inputs=[ev.Input(batch="spod-1", parent=await chain.head("spod-1"), mass_g=10)],
        outputs=[ev.Output(id="x", mineral="lithium", form="concentrate", mass_g=1)],
        value_added=usd("1"),
    )
    await _expect(chain, not_a_processor, chain.miner, 403, "needs one of the roles")
    more = await chain.receive("spod-1", chain.refiner, chain.refinery, 1_000_001)
    await _expect(chain, more, chain.refiner, 422, "exceeds")
    too_lossy = await chain.receive("spod-1", chain.refiner, chain.refinery, 989_999)  # tolerance is 1 %
    await _expect(chain, too_lossy, chain.refiner, 422, "tolerates")
    ok = await chain.receive("spod-1", chain.refiner, chain.refinery, 990_000)  # exactly 1 % lost: allowed
    await chain.send(ok, chain.refiner)
    twice = ev.Receive(
        actor=chain.refiner.id,
        timestamp="2026-09-03T08:00:00-04:00",
        batch="spod-1",
        parent=await chain.head("spod-1"),
        facility=chain.refinery,
        mass_g=990_000,
    )
    await _expect(chain, twice, chain.refiner, 422, "not in transit")

    head = await chain.head("spod-1")

    def transform(
        inputs: list[ev.Input], outputs: list[ev.Output], facility: str = chain.refinery
    ) -> ev.Transform:
        return ev.Transform(
            actor=chain.refiner.id,
            timestamp=TS,
            facility=facility,
            process="refining",
            inputs=inputs,
            outputs=outputs,
            value_added=usd("10.50"),
        )

    out = ev.Output(id="lioh-1", mineral="lithium", form="hydroxide", mass_g=500_000)
    # outputs heavier than inputs
    heavy = transform([ev.Input(batch="spod-1", parent=head, mass_g=400_000)], [out])
    await _expect(chain, heavy, chain.refiner, 422, "nothing is made from nothing")
    # consuming more than the batch holds
    greedy = transform([ev.Input(batch="spod-1", parent=head, mass_g=990_001)], [out])
    await _expect(chain, greedy, chain.refiner, 422, "holds only")
    # an unknown batch, an unknown facility, a facility of another participant
    ghost = transform([ev.Input(batch="ghost", parent=head, mass_g=1)], [out])
    await _expect(chain, ghost, chain.refiner, 422, "'ghost' does not exist")
    nowhere = transform([ev.Input(batch="spod-1", parent=head, mass_g=990_000)], [out], facility="nowhere")
    await _expect(chain, nowhere, chain.refiner, 422, "not a registered facility")
    foreign = transform([ev.Input(batch="spod-1", parent=head, mass_g=990_000)], [out], facility=chain.plant)
    await _expect(chain, foreign, chain.refiner, 403, "belongs to 'monterrey-cam'")
    # a stale parent: 409 naming the current head
    stale = transform([ev.Input(batch="spod-1", parent="sha256:" + "0" * 64, mass_g=990_000)], [out])
    response = await chain.send(stale, chain.refiner, expect=409)
    assert response.json()["current_head"] == head and response.json()["batch"] == "spod-1"
    # a batch id that already exists
    dup = transform(
        [ev.Input(batch="spod-1", parent=head, mass_g=990_000)],
        [ev.Output(id="spod-1", mineral="lithium", form="hydroxide", mass_g=1)],
    )
    await _expect(chain, dup, chain.refiner, 409, "already exists")
    await _expect(chain, chain.extract("spod-1", 5), chain.miner, 409, "already exists")
    # the extractor must be at its own mine
    refinery_extract = ev.Extract(
        actor=chain.refiner.id,
        timestamp=TS,
        facility=chain.refinery,
        batch=ev.NewBatch(id="z", mineral="lithium", form="ore", mass_g=1),
    )
    await _expect(chain, refinery_extract, chain.refiner, 403, "roles miner")
    assert (await chain.batch("spod-1"))["mass_g"] == 990_000
    del world


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["batch"].update(mass_g=0), "mass_g"),
        (lambda d: d["batch"].update(mass_g=-5), "mass_g"),
        (lambda d: d["batch"].update(mass_g=1.5), "floating-point"),
        (lambda d: d["batch"].update(mass_g="100"), "Expected `int`, got `str`"),
        (lambda d: d["batch"].update(mineral="gold"), "batch.mineral 'gold'"),
        (lambda d: d["batch"].update(form="nugget"), "batch.form 'nugget'"),
        (lambda d: d.update(timestamp="2026-09-01T08:00:00"), "timestamp"),
        (lambda d: d.update(timestamp="2026-13-01T08:00:00Z"), "timestamp"),
        (lambda d: d["batch"].update(value={"amount": "1.5", "currency": "XYZ"}), "ISO 4217"),
        (lambda d: d["batch"].update(value={"amount": "1,5", "currency": "USD"}), "amount"),
        (lambda d: d["batch"].update(id="Spod 1"), "batch.id"),
        (lambda d: d.update(timestamp="2099-01-01T00:00:00Z"), "in the future"),
    ],
)
async def test_malformed_custody_payloads(chain: Chain, mutate: object, needle: str) -> None:
    from ledger.domain.dsse import sign_envelope

    document = ev.encode_event(chain.extract("spod-9"))
    mutate(document)  # type: ignore[operator]
    payload = json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    before = await chain.world.count_events()
    response = await chain.world.post(sign_envelope(payload, chain.miner.key), chain.miner)
    assert 400 <= response.status_code < 500, response.text
    assert needle in response.json()["detail"], response.json()["detail"]
    assert await chain.world.count_events() == before


async def test_split_must_divide_the_whole_batch_and_merge_only_like_material(chain: Chain) -> None:
    await chain.send(chain.extract("s-1", 900), chain.miner)
    split = ev.Split(
        actor=chain.miner.id,
        timestamp=TS,
        batch="s-1",
        parent=await chain.head("s-1"),
        outputs=[ev.SplitPart(id="s-1a", mass_g=300), ev.SplitPart(id="s-1b", mass_g=599)],
    )
    await _expect(chain, split, chain.miner, 422, "divides the whole batch exactly")
    await chain.send(chain.extract("s-2", 100, form="ore"), chain.miner)
    merge = ev.Merge(
        actor=chain.miner.id,
        timestamp=TS,
        inputs=[
            ev.MergeInput(batch="s-1", parent=await chain.head("s-1")),
            ev.MergeInput(batch="s-2", parent=await chain.head("s-2")),
        ],
        output="m-1",
    )
    await _expect(chain, merge, chain.miner, 422, "only like material is merged")


async def test_unknown_batch_reads_are_404(chain: Chain) -> None:
    headers = chain.world.registrar.headers
    for path in ("/v1/batches/nope", "/v1/batches/nope/history", "/v1/batches/nope/lineage"):
        response = await chain.world.client.get(path, headers=headers)
        assert response.status_code == 404 and "'nope' does not exist" in response.json()["detail"]
    response = await chain.world.client.get(
        "/v1/batches/x/lineage", params={"direction": "sideways"}, headers=headers
    )
    assert response.status_code == 400


async def test_transforming_a_batch_in_transit_is_refused(chain: Chain) -> None:
    # the refinery ships its own batch to the plant; while it travels, the refinery (still its custodian) may
    # not transform it
    out = ev.Output(id="lioh-0", mineral="lithium", form="hydroxide", mass_g=100)
    await chain.send(chain.extract("spod-0", 1_000), chain.miner)
    await chain.ship("spod-0", chain.miner, chain.refiner, chain.refinery, 1_000)
    made = ev.Transform(
        actor=chain.refiner.id,
        timestamp=TS,
        facility=chain.refinery,
        process="refining",
        inputs=[ev.Input(batch="spod-0", parent=await chain.head("spod-0"), mass_g=1_000)],
        outputs=[out],
        value_added=usd("5"),
    )
    await chain.send(made, chain.refiner)
    await chain.send(await chain.transfer("lioh-0", chain.refiner, chain.maker, chain.plant), chain.refiner)
    during = ev.Transform(
        actor=chain.refiner.id,
        timestamp=TS,
        facility=chain.refinery,
        process="conversion",
        inputs=[ev.Input(batch="lioh-0", parent=await chain.head("lioh-0"), mass_g=50)],
        outputs=[ev.Output(id="lioh-x", mineral="lithium", form="carbonate", mass_g=10)],
        value_added=usd("5"),
    )
    await _expect(chain, during, chain.refiner, 422, "is in transit, not at a facility")
