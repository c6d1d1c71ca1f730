"""EPCIS 2.0 export and queries: the mapping of every custody kind (worked out by hand), event hashes checked
against GS1's reference implementation, documents validated with epcis2.js, the REST query parameters, paging,
and read scoping (a competitor's batch is not found)."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

import msgspec
import pytest

from ledger.domain import events as ev
from ledger.interop import epcis
from ledger.interop.event_hash import event_hash, normalise_number, normalise_time, pre_hash_string
from tests.standards_support import epcis2js, reference_hashes
from tests.support import Chain

NS = "{https://mineral-ledger.example/ns/epcis/}"
ID = "https://mineral-ledger.example/id/"
CBV = "https://ref.gs1.org/cbv/"


def usd(amount: str) -> ev.Money:
    return ev.Money(amount=amount, currency="USD")


def at(event: Any, timestamp: str) -> Any:
    return msgspec.structs.replace(event, timestamp=timestamp)


# --- the pure mapping ---------------------------------------------------------------------------------------


def test_event_hash_of_a_small_event_worked_by_hand() -> None:
    """CBV 2.0 section 8.9: fields in canonical order, time in UTC to the millisecond, bare CBV words as Web
    URIs, the number without trailing zeros, sources as type then id, extensions as {namespace}name=value."""
    event = {
        "type": "ObjectEvent",
        "eventTime": "2026-09-02T07:30:00-04:00",
        "eventTimeZoneOffset": "-04:00",
        "action": "OBSERVE",
        "bizStep": "shipping",
        "disposition": "in_transit",
        "quantityList": [{"epcClass": "https://x.example/b/1", "quantity": 5.0, "uom": "GRM"}],
        "sourceList": [{"type": "owning_party", "source": "https://x.example/p/a"}],
        "ledger:logIndex": 7,
    }
    expected = (
        "eventType=ObjectEvent"
        "eventTime=2026-09-02T11:30:00.000ZeventTimeZoneOffset=-04:00"
        "quantityListquantityElementepcClass=https://x.example/b/1quantity=5uom=GRM"
        "action=OBSERVE"
        f"bizStep={CBV}BizStep-shipping"
        f"disposition={CBV}Disp-in_transit"
        f"sourceListtype={CBV}SDT-owning_partysource=https://x.example/p/a"
        f"{NS}logIndex=7"
    )
    assert pre_hash_string(event, epcis.NAMESPACES) == expected
    digest = hashlib.sha256(expected.encode()).hexdigest()
    assert event_hash(event, epcis.NAMESPACES) == f"ni:///sha-256;{digest}?ver=CBV2.0"
    document = epcis.epcis_document([event], epcis.datetime(2026, 9, 3))
    assert reference_hashes(document) == [f"ni:///sha-256;{digest}?ver=CBV2.0"]


def test_normalisation_rules() -> None:
    assert normalise_time("2026-09-02T07:30:00.1234-04:00") == "2026-09-02T11:30:00.123Z"
    assert normalise_time("2026-12-31T23:59:59.9999Z") == "2027-01-01T00:00:00.000Z"
    assert [normalise_number(n) for n in ("1.0", "24000.50", "0030", "lithium", "NaN")] == [
        "1",
        "24000.5",
        "30",
        "lithium",
        "NaN",
    ]


def _record(kind: str, payload: dict[str, Any], index: int = 3) -> epcis.LedgerEvent:
    return epcis.LedgerEvent("sha256:" + f"{index:064x}", index, kind, payload)


def test_extract_is_a_commissioning_object_event_with_its_mass_in_grams() -> None:
    payload = {
        "kind": "extract",
        "actor": "northstar",
        "timestamp": "2026-09-01T08:00:00-04:00",
        "facility": "mine-qc",
        "batch": {"id": "spod-1", "mineral": "lithium", "form": "concentrate", "mass_g": 20_000_000,
                  "value": {"amount": "24000.00", "currency": "USD"}},
    }  # fmt: skip
    out = epcis.to_epcis_event(_record("extract", payload), proof_url="/proof")
    assert out["type"] == "ObjectEvent"
    assert (out["action"], out["bizStep"], out["disposition"]) == ("ADD", "commissioning", "active")
    assert out["eventTimeZoneOffset"] == "-04:00"
    assert out["quantityList"] == [{"epcClass": f"{ID}batch/spod-1", "quantity": 20_000_000, "uom": "GRM"}]
    assert out["bizLocation"] == {"id": f"{ID}facility/mine-qc"}
    assert out["ilmd"] == {
        "ledger:mineral": "lithium",
        "ledger:form": "concentrate",
        "ledger:value": {"ledger:amount": "24000.00", "ledger:currency": "USD"},
    }
    assert out["ledger:eventId"] == "sha256:" + f"{3:064x}"
    assert (out["ledger:logIndex"], out["ledger:inclusionProof"]) == (3, "/proof")
    assert out["eventID"] == event_hash({k: v for k, v in out.items() if k != "eventID"}, epcis.NAMESPACES)


def test_transfer_names_parties_route_and_the_mass_shipped() -> None:
    payload = {
        "kind": "transfer", "actor": "northstar", "timestamp": "2026-09-02T08:00:00-04:00", "batch": "spod-1",
        "parent": "sha256:" + "1" * 64, "to": "gulf", "to_facility": "refinery-tx",
        "route": [{"country": "CA", "customs_control": False},
                  {"country": "SG", "customs_control": True, "operations": ["storage"]}],
    }  # fmt: skip
    out = epcis.to_epcis_event(_record("transfer", payload), masses={"spod-1": 20_000_000})
    assert (out["action"], out["bizStep"], out["disposition"]) == ("OBSERVE", "shipping", "in_transit")
    assert out["quantityList"][0]["quantity"] == 20_000_000
    assert out["sourceList"] == [
        {"type": "owning_party", "source": f"{ID}participant/northstar"},
        {"type": "possessing_party", "source": f"{ID}participant/northstar"},
    ]
    assert out["destinationList"] == [
        {"type": "owning_party", "destination": f"{ID}participant/gulf"},
        {"type": "possessing_party", "destination": f"{ID}participant/gulf"},
        {"type": "location", "destination": f"{ID}facility/refinery-tx"},
    ]
    assert out["ledger:route"] == [
        {"ledger:country": "CA", "ledger:customsControl": False},
        {"ledger:country": "SG", "ledger:customsControl": True, "ledger:operation": ["storage"]},
    ]


def test_a_redacted_output_is_left_out_and_values_not_shown() -> None:
    payload = {
        "kind": "transform", "actor": "gulf", "timestamp": "2026-09-10T09:00:00-05:00", "facility": "refinery-tx",
        "process": "refining", "value_added": {"redacted": True},
        "inputs": [{"batch": "spod-1", "parent": "sha256:" + "1" * 64, "mass_g": 19_900_000}],
        "outputs": [{"redacted": True},
                    {"id": "lioh-1", "mineral": "lithium", "form": "hydroxide", "mass_g": 3_000_000,
                     "value": {"redacted": True}}],
    }  # fmt: skip
    out = epcis.to_epcis_event(_record("transform", payload))
    assert out["type"] == "TransformationEvent" and "action" not in out
    assert out["inputQuantityList"] == [
        {"epcClass": f"{ID}batch/spod-1", "quantity": 19_900_000, "uom": "GRM"}
    ]
    assert out["outputQuantityList"] == [
        {"epcClass": f"{ID}batch/lioh-1", "quantity": 3_000_000, "uom": "GRM"}
    ]
    assert out["ilmd"] == {
        "ledger:output": [
            {"ledger:batch": f"{ID}batch/lioh-1", "ledger:mineral": "lithium", "ledger:form": "hydroxide"}
        ]
    }
    assert out["ledger:process"] == "refining" and "ledger:valueAdded" not in out


# --- through the API, both databases --------------------------------------------------------------------------


async def build(chain: Chain) -> dict[str, str]:
    """Mine to merge: every exported kind but recycle, on dates a few days apart. Returns kind -> event id."""
    world, ids = chain.world, {}

    async def send(name: str, event: Any, member: Any) -> None:
        ids[name] = (await chain.send(event, member)).json()["event_id"]

    await send("extract", chain.extract("spod-1", 20_000_000, value=usd("24000.00")), chain.miner)
    transfer = await chain.transfer("spod-1", chain.miner, chain.refiner, chain.refinery)
    await send("transfer", at(transfer, "2026-09-02T08:00:00-04:00"), chain.miner)
    receive = await chain.receive("spod-1", chain.refiner, chain.refinery, 19_900_000)
    await send("receive", at(receive, "2026-09-05T10:00:00-05:00"), chain.refiner)
    transform = ev.Transform(
        actor=chain.refiner.id,
        timestamp="2026-09-10T09:00:00-05:00",
        facility=chain.refinery,
        process="refining",
        inputs=[ev.Input(batch="spod-1", parent=await chain.head("spod-1"), mass_g=19_900_000)],
        outputs=[ev.Output(id="lioh-1", mineral="lithium", form="hydroxide", mass_g=3_000_000, value=usd("45000"))],
        value_added=usd("40000.00"),
    )  # fmt: skip
    await send("transform", transform, chain.refiner)
    split = ev.Split(
        actor=chain.refiner.id,
        timestamp="2026-09-11T09:00:00-05:00",
        batch="lioh-1",
        parent=await chain.head("lioh-1"),
        outputs=[ev.SplitPart(id="lioh-1a", mass_g=2_000_000), ev.SplitPart(id="lioh-1b", mass_g=1_000_000)],
    )
    await send("split", split, chain.refiner)
    for part, mass in (("lioh-1a", 2_000_000), ("lioh-1b", 1_000_000)):
        shipped = await chain.transfer(part, chain.refiner, chain.maker, chain.plant)
        await send(f"transfer {part}", at(shipped, "2026-09-12T08:00:00-05:00"), chain.refiner)
        received = await chain.receive(part, chain.maker, chain.plant, mass)
        await send(f"receive {part}", at(received, "2026-09-14T08:00:00-06:00"), chain.maker)
    merge = ev.Merge(
        actor=chain.maker.id,
        timestamp="2026-09-15T08:00:00-06:00",
        inputs=[
            ev.MergeInput(batch="lioh-1a", parent=await chain.head("lioh-1a")),
            ev.MergeInput(batch="lioh-1b", parent=await chain.head("lioh-1b")),
        ],
        output="lioh-m",
    )
    await send("merge", merge, chain.maker)
    assert world is chain.world
    return ids


async def query(chain: Chain, member: Any = None, **params: Any) -> Any:
    member = member or chain.world.registrar
    return await chain.world.client.get("/epcis/events", params=params, headers=member.headers)


def events_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    assert document["type"] == "EPCISQueryDocument" and document["schemaVersion"] == "2.0"
    return list(document["epcisBody"]["queryResults"]["resultsBody"]["eventList"])


async def test_every_custody_event_exports_and_checks_out_independently(chain: Chain) -> None:
    ids = await build(chain)
    response = await query(chain, perPage=100)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/ld+json")
    assert response.headers["GS1-EPCIS-Version"] == "2.0.0" and "link" not in response.headers
    document = response.json()
    events = events_of(document)
    assert [e["ledger:eventId"] for e in events] == list(ids.values())
    by_id = {e["ledger:eventId"]: e for e in events}
    assert [(e["type"], e["bizStep"]) for e in events] == [
        ("ObjectEvent", "commissioning"),
        ("ObjectEvent", "shipping"),
        ("ObjectEvent", "receiving"),
        ("TransformationEvent", "commissioning"),
        ("TransformationEvent", "repackaging"),
        ("ObjectEvent", "shipping"),
        ("ObjectEvent", "receiving"),
        ("ObjectEvent", "shipping"),
        ("ObjectEvent", "receiving"),
        ("TransformationEvent", "repackaging"),
    ]
    grams = lambda entries: [(e["epcClass"].rsplit("/", 1)[1], e["quantity"]) for e in entries]  # noqa: E731
    # a transfer ships what the event before left: 20 t extracted; 2 t of the split
    assert grams(by_id[ids["transfer"]]["quantityList"]) == [("spod-1", 20_000_000)]
    assert grams(by_id[ids["transfer lioh-1a"]]["quantityList"]) == [("lioh-1a", 2_000_000)]
    assert grams(by_id[ids["receive"]]["quantityList"]) == [("spod-1", 19_900_000)]
    assert grams(by_id[ids["split"]]["inputQuantityList"]) == [("lioh-1", 3_000_000)]
    assert grams(by_id[ids["merge"]]["inputQuantityList"]) == [("lioh-1a", 2_000_000), ("lioh-1b", 1_000_000)]
    assert grams(by_id[ids["merge"]]["outputQuantityList"]) == [("lioh-m", 3_000_000)]
    assert by_id[ids["transform"]]["ledger:valueAdded"] == {
        "ledger:amount": "40000.00",
        "ledger:currency": "USD",
    }
    for event in events:
        proof = event["ledger:inclusionProof"]
        assert proof == f"/v1/log/proofs/inclusion?event_id={event['ledger:eventId']}"
    # GS1's reference implementation computes the same eventID for every event
    assert [e["eventID"] for e in events] == reference_hashes(document)
    # and the EPCIS 2.0 JSON schema (epcis2.js) accepts every document the ledger answers: the whole list, a
    # batch's events, one event, and a participant's view with the values it may not see left out
    headers = chain.world.registrar.headers
    batch = (await chain.world.client.get("/epcis/batches/lioh-m/events", headers=headers)).json()
    one = (await chain.world.client.get(f"/epcis/events/{ids['merge']}", headers=headers)).json()
    theirs = (await query(chain, chain.maker, perPage=100)).json()
    assert len(events_of(theirs)) == len(events)
    documents = [document, batch, one, theirs]
    assert epcis2js(documents) == [{"success": True, "errors": []}] * len(documents)
    for answered in documents[1:]:
        assert [e["eventID"] for e in events_of(answered)] == reference_hashes(answered)


async def test_a_broken_document_fails_the_validator(chain: Chain) -> None:
    """The validator is not a rubber stamp: an unknown bizStep or a missing action is refused."""
    await build(chain)
    document = (await query(chain)).json()
    wrong_step = msgspec.json.decode(msgspec.json.encode(document))
    events_of(wrong_step)[0]["bizStep"] = "mining"
    no_action = msgspec.json.decode(msgspec.json.encode(document))
    del events_of(no_action)[0]["action"]
    results = epcis2js([wrong_step, no_action])
    assert [r["success"] for r in results] == [False, False]


async def test_query_parameters_and_paging(chain: Chain) -> None:
    ids = await build(chain)
    names = {v: k for k, v in ids.items()}

    async def kinds(**params: Any) -> list[str]:
        response = await query(chain, **params)
        assert response.status_code == 200, response.text
        return [names[e["ledger:eventId"]] for e in events_of(response.json())]

    assert await kinds(eventType="TransformationEvent") == ["transform", "split", "merge"]
    assert await kinds(eventType="AggregationEvent") == []
    assert await kinds(EQ_bizStep="shipping") == ["transfer", "transfer lioh-1a", "transfer lioh-1b"]
    assert await kinds(EQ_bizStep=f"{CBV}BizStep-receiving", eventType="ObjectEvent") == [
        "receive", "receive lioh-1a", "receive lioh-1b"
    ]  # fmt: skip
    assert await kinds(EQ_bizLocation=f"{ID}facility/refinery-tx") == ["receive", "transform"]
    assert await kinds(MATCH_anyEPC=f"{ID}batch/lioh-1a") == [
        "split", "transfer lioh-1a", "receive lioh-1a", "merge"
    ]  # fmt: skip
    # 2026-09-05T10:00-05:00 is 15:00Z; the transform at 2026-09-10T09:00-05:00 is 14:00Z on the 10th
    assert await kinds(GE_eventTime="2026-09-05T15:00:00Z", LT_eventTime="2026-09-10T14:00:00Z") == [
        "receive"
    ]
    assert await kinds(GE_eventTime="2026-09-14T14:00:00Z") == ["receive lioh-1a", "receive lioh-1b", "merge"]

    # three a page, following the Link header, until there is none
    seen: list[str] = []
    url: str | None = "/epcis/events?perPage=3"
    pages = 0
    while url is not None:
        response = await chain.world.client.get(url, headers=chain.world.registrar.headers)
        assert response.status_code == 200, response.text
        seen += [e["ledger:eventId"] for e in events_of(response.json())]
        pages += 1
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else None
    assert seen == list(ids.values()) and pages == 4


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"eventType": "ShippingEvent"}, "eventType 'ShippingEvent' is not an EPCIS 2.0 event type"),
        ({"GE_eventTime": "yesterday"}, "GE_eventTime 'yesterday' is not a date-time"),
        ({"LT_eventTime": "2026-09-01T00:00:00"}, "has no UTC offset"),
        ({"nextPageToken": "bm9wZQ"}, "is not one this ledger handed out"),
        ({"perPage": "0"}, "per_page: Expected `int` >= 1"),
    ],
)
async def test_bad_query_parameters_are_problems(chain: Chain, params: dict[str, str], fragment: str) -> None:
    response = await query(chain, **params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert fragment in response.text


async def test_one_event_by_its_eventid_or_ledger_id(chain: Chain) -> None:
    ids = await build(chain)
    listed = events_of((await query(chain, EQ_bizStep="repackaging")).json())
    headers = chain.world.registrar.headers
    for event in listed:
        for ref in (event["eventID"], event["ledger:eventId"]):
            response = await chain.world.client.get(f"/epcis/events/{quote(ref, safe='')}", headers=headers)
            assert response.status_code == 200, response.text
            assert events_of(response.json()) == [event]
    # a fresh process has no hashes in memory: it finds the event by looking
    chain.world.services.epcis._hashes.clear()
    target = listed[-1]["eventID"]
    response = await chain.world.client.get(f"/epcis/events/{quote(target, safe='')}", headers=headers)
    assert events_of(response.json())[0]["ledger:eventId"] == ids["merge"]
    unknown = "ni:///sha-256;" + "0" * 64 + "?ver=CBV2.0"
    response = await chain.world.client.get(f"/epcis/events/{quote(unknown, safe='')}", headers=headers)
    assert response.status_code == 404
    response = await chain.world.client.get("/epcis/events/not-an-id", headers=headers)
    assert response.status_code == 400 and "neither an EPCIS event hash" in response.text


async def test_read_scoping_is_the_apis(chain: Chain) -> None:
    ids = await build(chain)
    world = chain.world
    rival = await world.admit("rival-lithium", ["miner"], "AU")
    await world.facility("rival-mine", rival, "mine", "AU")
    rival_extract = ev.Extract(
        actor=rival.id,
        timestamp="2026-09-03T08:00:00+08:00",
        facility="rival-mine",
        batch=ev.NewBatch(id="rival-1", mineral="lithium", form="concentrate", mass_g=5_000_000),
    )
    await world.submit(rival_extract, rival)

    # the rival sees its own event only; the chain's batches are not found
    seen = events_of((await query(chain, rival, perPage=100)).json())
    assert [e["quantityList"][0]["epcClass"] for e in seen] == [f"{ID}batch/rival-1"]
    response = await world.client.get("/epcis/batches/spod-1/events", headers=rival.headers)
    assert response.status_code == 404 and "spod-1" in response.text
    for ref in (ids["extract"],):
        response = await world.client.get(f"/epcis/events/{quote(ref, safe='')}", headers=rival.headers)
        assert response.status_code == 404

    # the cathode maker sees upstream lineage, without the miner's declared value (so with another hash)
    maker = events_of(
        (await world.client.get("/epcis/batches/spod-1/events", headers=chain.maker.headers)).json()
    )
    registrar = events_of((await world.client.get("/epcis/batches/spod-1/events", headers=world.registrar.headers)).json())  # fmt: skip
    assert [e["ledger:eventId"] for e in maker] == [e["ledger:eventId"] for e in registrar]
    assert [ids["extract"], ids["transfer"], ids["receive"], ids["transform"]] == [e["ledger:eventId"] for e in registrar]  # fmt: skip
    assert "ledger:value" in registrar[0]["ilmd"] and "ledger:value" not in maker[0]["ilmd"]
    assert maker[0]["eventID"] != registrar[0]["eventID"]
    assert maker[1]["eventID"] == registrar[1]["eventID"]  # a transfer declares no value
    assert (
        events_of((await query(chain, chain.maker, perPage=100)).json())[0]["eventID"] == maker[0]["eventID"]
    )
