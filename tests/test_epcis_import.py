"""EPCIS 2.0 import: the mapping back onto ledger events, the round trip (export a chain, import it into an empty
ledger with the same keys: the same events, the same determination), and bad input reported per event with
nothing partial submitted, through `ledger epcis import` against a running server."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.client import LedgerClient, envelope_for
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from ledger.interop import epcis_import
from tests.support import T0, Chain, Member, World, ledger
from tests.test_epcis import build, events_of

ID = "https://mineral-ledger.example/id/"


@pytest.fixture
async def empty(templates: Any, tmp_path: Path) -> AsyncIterator[World]:
    """A second, empty ledger (SQLite) with its own registrar: where the export is imported."""
    from api.app import create_app
    from ledger.services.bootstrap import initialise
    from ledger.services.container import Services
    from ledger.settings import Settings
    from ledger.store.db import create_engine
    from tests.conftest import GENESIS, TEST_MAX_BACKDATE

    path = tmp_path / "empty.db"
    shutil.copy(await templates.sqlite(), path)
    url = f"sqlite+aiosqlite:///{path}"
    settings = Settings(database_url=url, data_dir=tmp_path / "empty", max_backdate_seconds=TEST_MAX_BACKDATE)
    engine = create_engine(url, pool_size=5)
    services = Services(settings, engine=engine)
    result = await initialise(services, timestamp=GENESIS)
    transport = httpx.ASGITransport(app=create_app(services=services))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        registrar = Member(
            result.registrar, SigningKey.load(result.registrar_key_path), result.token, ["registrar"]
        )
        yield World(client=client, services=services, registrar=registrar)
    await engine.dispose()


async def admit_same(world: World, member: Member, country: str) -> Member:
    """Admit ``member`` with its own key (as the first ledger knows it) and give it a token."""
    event = ev.ParticipantAdmitted(
        actor=world.registrar.id,
        timestamp=T0,
        participant=ev.ParticipantInfo(
            id=member.id,
            name=member.id,
            roles=member.roles,
            country=country,
            ownership=ev.Ownership(incorporated_in=country, headquartered_in=country),
        ),
        keys=[ev.NewKey(public_key=member.key.public_key_b64)],
    )
    await world.submit(event, world.registrar)
    issued = await world.services.tokens.issue(member.id, "import")
    return Member(member.id, member.key, issued.token, member.roles)


async def heads_in(world: World, batches: set[str]) -> dict[str, str]:
    heads = {}
    for batch in batches:
        response = await world.client.get(f"/v1/batches/{batch}", headers=world.registrar.headers)
        if response.status_code == 200:
            heads[batch] = response.json()["head"]
    return heads


async def exported(chain: Chain) -> dict[str, Any]:
    response = await chain.world.client.get(
        "/epcis/events?perPage=1000", headers=chain.world.registrar.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_round_trip_into_an_empty_ledger_gives_the_same_events_and_determination(
    chain: Chain, empty: World
) -> None:
    ids = await build(chain)
    document = await exported(chain)
    # the second ledger knows the same participants, keys and facilities, and no custody event
    members = {}
    for member, country in ((chain.miner, "CA"), (chain.refiner, "US"), (chain.maker, "MX")):
        members[member.id] = await admit_same(empty, member, country)
    await empty.facility("mine-qc", members[chain.miner.id], "mine", "CA")
    await empty.facility("refinery-tx", members[chain.refiner.id], "refinery", "US", loss_tolerance="0.01")
    await empty.facility("plant-mx", members[chain.maker.id], "plant", "MX")

    mapping = epcis_import.plan(document, await heads_in(empty, epcis_import.all_batches_named(document)))
    assert mapping.skipped == []
    # the mapping loses nothing: every event has the very payload (so the id) it had in the first ledger
    assert [m.event_id for m in mapping.mapped] == list(ids.values())
    for item in mapping.mapped:
        member = members[item.event.actor]
        response = await empty.batch([envelope_for(item.event, member.key)], member)
        assert response.json()["accepted"] == 1, response.text

    async def determination(world: World) -> dict[str, Any]:
        response = await world.client.get(
            "/v1/batches/lioh-m/eligibility?detail=full&at=2026-09-20", headers=world.registrar.headers
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    first, second = await determination(chain.world), await determination(empty)
    for key in ("verdict", "qualifying_share", "threshold", "share_basis"):
        assert first[key] == second[key]
    assert [(r["code"], r["message"]) for r in first["reasons"]] == [
        (r["code"], r["message"]) for r in second["reasons"]
    ]
    assert first["sources"] == second["sources"]


def _document(events: list[Any]) -> dict[str, Any]:
    return {
        "@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld", {"ml": "https://mineral-ledger.example/ns/epcis/"}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": "2026-09-03T00:00:00Z",
        "epcisBody": {"eventList": events},
    }  # fmt: skip


def _commissioning(batch: str, **over: Any) -> dict[str, Any]:
    """An extract as another system would write it (its own prefix for the ledger's namespace, kilograms)."""
    event = {
        "type": "ObjectEvent",
        "eventTime": "2026-09-01T12:00:00.000Z",
        "eventTimeZoneOffset": "-04:00",
        "action": "ADD",
        "bizStep": "https://ref.gs1.org/cbv/BizStep-commissioning",
        "quantityList": [{"epcClass": f"{ID}batch/{batch}", "quantity": 2500.5, "uom": "KGM"}],
        "bizLocation": {"id": f"{ID}facility/acme-qc"},
        "destinationList": [{"type": "owning_party", "destination": f"{ID}participant/acme-mining"}],
        "ilmd": {"ml:mineral": "lithium", "ml:form": "concentrate"},
    }
    event.update(over)
    return event


def test_mapping_reads_standard_fields_and_any_prefix() -> None:
    document = _document([_commissioning("lot-1")])
    mapping = epcis_import.plan(document, {})
    assert mapping.skipped == []
    (item,) = mapping.mapped
    assert ev.encode_event(item.event) == {
        "kind": "extract",
        "actor": "acme-mining",
        "timestamp": "2026-09-01T08:00:00-04:00",  # 12:00Z in the signer's -04:00
        "facility": "acme-qc",
        "batch": {"id": "lot-1", "mineral": "lithium", "form": "concentrate", "mass_g": 2_500_500},
    }


BAD = [
    (_commissioning("lot-2", type="AggregationEvent"), "a AggregationEvent has no ledger counterpart"),
    (_commissioning("lot-3", type="SensorEvent"), "type 'SensorEvent' is not an EPCIS 2.0 event type"),
    (_commissioning("lot-4", quantityList=[{"epcClass": f"{ID}batch/lot-4"}]), "has no quantity"),
    (_commissioning("lot-5", bizStep="mining"), "bizStep 'mining' has no ledger counterpart for an ObjectEvent"),
    (_commissioning("lot-6", eventTime="yesterday"), "eventTime 'yesterday' is not a date-time"),
    ("not an event", "the event is not a JSON object"),
    (_commissioning("lot-7", ilmd={}), "ilmd does not give ledger:mineral and ledger:form"),
    (_commissioning("Lot 8"), "is not a batch the ledger can name"),
    (_commissioning("lot-9", quantityList=[{"epcClass": f"{ID}batch/lot-9", "quantity": 3, "uom": "EA"}]), "a count is not a mass"),
    (_commissioning("lot-10", ilmd={"ml:mineral": "unobtainium", "ml:form": "ore"}), "the ledger refuses it"),
]  # fmt: skip


def test_each_bad_event_is_reported_with_its_reason() -> None:
    events = [_commissioning("lot-1"), *[event for event, _ in BAD]]
    mapping = epcis_import.plan(_document(events), {})
    assert [m.index for m in mapping.mapped] == [0]
    assert [s.index for s in mapping.skipped] == list(range(1, len(BAD) + 1))
    for skipped, (_, fragment) in zip(mapping.skipped, BAD, strict=True):
        assert fragment in skipped.reason, skipped.reason


def test_events_after_an_unmapped_one_see_the_ledger_without_it() -> None:
    shipped = {
        "type": "ObjectEvent", "eventTime": "2026-09-02T08:00:00-04:00", "eventTimeZoneOffset": "-04:00",
        "action": "OBSERVE", "bizStep": "shipping",
        "quantityList": [{"epcClass": f"{ID}batch/lot-4", "quantity": 1, "uom": "GRM"}],
        "sourceList": [{"type": "owning_party", "source": f"{ID}participant/acme-mining"}],
        "destinationList": [{"type": "owning_party", "destination": f"{ID}participant/gulf"}],
        "ml:route": [{"ml:country": "CA", "ml:customsControl": False}],
    }  # fmt: skip
    mapping = epcis_import.plan(_document([BAD[2][0], shipped]), {})
    assert [s.reason for s in mapping.skipped][1] == (
        "batch 'lot-4' is not in the ledger and no earlier event of the document makes it"
    )


@pytest.mark.parametrize(
    "document",
    [
        {"type": "EPCISDocument", "epcisBody": {"eventList": []}},
        {"@context": ["https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"], "type": "Foo"},
        [],
    ],
)
def test_a_document_that_is_not_epcis_json_ld_is_refused_whole(document: Any) -> None:
    from ledger.errors import InvalidInput

    with pytest.raises(InvalidInput):
        epcis_import.plan(document, {})


def test_cli_reports_per_event_and_submits_only_what_maps(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    keyfile = tmp_path / "acme.key"
    public = json.loads(ledger(env, "keygen", "--json", "--out", str(keyfile)).stdout)["public_key"]
    ledger(env, "participant", "add", "--url", server, "--id", "acme-mining", "--name", "Acme", "--role", "miner",
           "--country", "CA", "--public-key", public)  # fmt: skip
    ledger(env, "facility", "add", "--url", server, "--id", "acme-qc", "--participant", "acme-mining",
           "--kind", "mine", "--country", "CA", "--name", "Quebec mine")  # fmt: skip
    token = json.loads(
        ledger(env, "token", "issue", "--json", "--url", server, "--participant", "acme-mining").stdout
    )["token"]
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)  # after the key was introduced
    good = [
        _commissioning("lot-1", eventTime=soon.isoformat()),
        _commissioning("lot-11", eventTime=(soon + timedelta(seconds=1)).isoformat()),
    ]
    document = _document([good[0], *[copy.deepcopy(event) for event, _ in BAD], good[1]])
    path = tmp_path / "events.jsonld"
    path.write_text(json.dumps(document))
    args = [
        "epcis",
        "import",
        str(path),
        "--url",
        server,
        "--key-file",
        str(keyfile),
        "--token",
        token,
        "--as",
        "acme-mining",
    ]

    dry = ledger(env, *args, "--dry-run", check=False)
    assert dry.returncode == 1, dry.stderr
    assert "would submit 2 of 12 events:" in dry.stdout
    assert "#0 extract lot-1 (2500500 g) at acme-qc by acme-mining" in dry.stdout
    assert "#4: " in dry.stdout and "has no quantity" in dry.stdout
    with LedgerClient(server, token=token) as client:
        assert client.participant_batches("acme-mining").items == []  # a dry run submits nothing

    run = ledger(env, *args, "--json", check=False)
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert [r["index"] for r in report["submitted"]] == [0, 11]
    assert [r["status"] for r in report["submitted"]] == ["accepted", "accepted"], report["submitted"]
    assert [r["index"] for r in report["not_imported"]] == list(range(1, len(BAD) + 1))
    for entry, (_, fragment) in zip(report["not_imported"], BAD, strict=True):
        assert fragment in entry["reason"]
    with LedgerClient(server, token=token) as client:
        assert sorted(b.id for b in client.participant_batches("acme-mining").items) == ["lot-1", "lot-11"]
        assert client.batch("lot-1").mass_g == 2_500_500

    again = ledger(env, *args, check=False)  # the same document again: nothing new, nothing doubled
    assert "imported 0 events (2 were already there), 0 rejected, 10 not imported" in again.stdout
    assert "submitting" in again.stderr  # the progress bar


def test_cli_needs_the_makers_key(server: str, env: dict[str, str], tmp_path: Path) -> None:
    keyfile = tmp_path / "other.key"
    ledger(env, "keygen", "--out", str(keyfile))
    path = tmp_path / "events.jsonld"
    path.write_text(json.dumps(_document([_commissioning("lot-1")])))
    token = (Path(env["LEDGER_DATA_DIR"]) / "registrar.token").read_text().strip()
    result = ledger(env, "epcis", "import", str(path), "--url", server, "--key-file", f"someone={keyfile}",
                    "--token", f"registrar={token}", "--json", check=False)  # fmt: skip
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["submitted"] == []
    assert report["not_imported"] == [
        {
            "index": 0,
            "eventID": None,
            "reason": "made by 'acme-mining', and no --key-file acme-mining=... was given",
        }
    ]
    broken = tmp_path / "broken.jsonld"
    broken.write_text("{not json")
    bare = ledger(
        env, "epcis", "import", str(broken), "--url", server, "--token", token, "--dry-run", check=False
    )
    assert bare.returncode == 1 and "a --token names no participant" in bare.stderr
    assert token not in bare.stderr  # a secret is never echoed
    result = ledger(env, "epcis", "import", str(broken), "--url", server, "--token", token, "--as", "registrar",
                    "--dry-run", check=False)  # fmt: skip
    assert result.returncode == 1 and "is not JSON" in result.stderr


P = "sha256:" + "1" * 64
LOSSLESS = [
    {"kind": "extract", "actor": "acme-mining", "timestamp": "2026-09-01T08:00:00.250000+05:30", "facility": "acme-qc",
     "batch": {"id": "lot-1", "mineral": "cobalt", "form": "ore", "mass_g": 7, "hs6": "260500",
               "value": {"amount": "10.50", "currency": "EUR"}}},
    {"kind": "transfer", "actor": "acme-mining", "timestamp": "2026-09-02T08:00:00Z", "batch": "lot-1", "parent": P,
     "to": "gulf", "route": [{"country": "CA", "customs_control": False},
                             {"country": "SG", "customs_control": True, "operations": ["storage", "unloading"],
                              "released_for_free_circulation": True}]},
    {"kind": "receive", "actor": "gulf", "timestamp": "2026-09-03T08:00:00-05:00", "batch": "lot-1", "parent": P,
     "facility": "ref-tx", "mass_g": 6},
    {"kind": "transform", "actor": "gulf", "timestamp": "2026-09-04T08:00:00-05:00", "facility": "ref-tx",
     "process": "refining", "value_added": {"amount": "3", "currency": "USD"},
     "inputs": [{"batch": "lot-1", "parent": P, "mass_g": 6, "value": {"amount": "1", "currency": "USD"}}],
     "outputs": [{"id": "out-1", "mineral": "cobalt", "form": "sulfate", "mass_g": 2, "hs6": "283329",
                  "transaction_value": {"amount": "9", "currency": "USD"}, "net_cost": {"amount": "8", "currency": "USD"},
                  "total_cost": {"amount": "7", "currency": "USD"}}]},
    {"kind": "recycle", "actor": "gulf", "timestamp": "2026-09-05T08:00:00-05:00", "facility": "ref-tx",
     "feedstock": [{"description": "spent cells", "category": "end_of_life_battery", "mass_g": 50, "origin_country": "US"}],
     "outputs": [{"id": "rec-1", "mineral": "cobalt", "form": "sulfate", "mass_g": 5}],
     "inputs": [{"batch": "out-1", "parent": P, "mass_g": 2}]},
    {"kind": "split", "actor": "gulf", "timestamp": "2026-09-06T08:00:00-05:00", "batch": "rec-1", "parent": P,
     "outputs": [{"id": "rec-1a", "mass_g": 3}, {"id": "rec-1b", "mass_g": 2}]},
    {"kind": "merge", "actor": "gulf", "timestamp": "2026-09-07T08:00:00-05:00", "output": "rec-m",
     "inputs": [{"batch": "rec-1a", "parent": P}, {"batch": "rec-1b", "parent": P}]},
]  # fmt: skip


@pytest.mark.parametrize("payload", LOSSLESS, ids=[p["kind"] for p in LOSSLESS])
def test_every_kind_maps_back_to_the_same_payload(payload: dict[str, Any]) -> None:
    """Export then import, with the ledger's heads where the payload had its parents: the very same payload,
    every optional field included (a fraction of a second, an offset, a route's operations, origin values)."""
    from ledger.interop import epcis

    exported = epcis.to_epcis_event(
        epcis.LedgerEvent(P, 1, payload["kind"], payload), masses={"lot-1": 7, "rec-1a": 3, "rec-1b": 2}
    )
    document = epcis.epcis_document([exported], datetime(2026, 9, 8, tzinfo=UTC))
    heads = dict.fromkeys(epcis_import.all_batches_named(document), P)
    mapping = epcis_import.plan(document, heads)
    assert mapping.skipped == []
    assert ev.encode_event(mapping.mapped[0].event) == ev.encode_event(ev.decode_event(payload))


def test_the_demo_chain_round_trips_through_epcis_and_the_cli(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    """Play the demo on one ledger, export it as EPCIS, and import the document with `ledger epcis import` (every
    participant's own key and token) into a second, empty ledger that knows the same participants, keys,
    facilities and attestations: every event id and both determinations come out the same."""
    from ledger.services import demo
    from tests.standards_support import epcis2js, reference_hashes
    from tests.support import serving

    second_env = {
        **env,
        "LEDGER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'second.db'}",
        "LEDGER_DATA_DIR": str(tmp_path / "second"),
    }
    ledger(second_env, "db", "upgrade")
    ledger(second_env, "init")

    def registrar_of(environment: dict[str, str], url: str) -> LedgerClient:
        data = Path(environment["LEDGER_DATA_DIR"])
        token = (data / "registrar.token").read_text().strip()
        return LedgerClient(url, token=token, actor="registrar", key=SigningKey.load(data / "registrar.key"))

    with serving(second_env, tmp_path / "second.log") as second_url:
        first, second = registrar_of(env, server), registrar_of(second_env, second_url)
        played = demo.play(first, suffix="", say=lambda _: None)
        admitted = (demo._clock["start"] - timedelta(seconds=1)).isoformat()  # before any demo event
        keys, tokens = [], []
        for client in played.participants.values():
            pid = client.actor or ""
            view = first.participant(pid)
            stakes = [ev.GovernmentStake(**s) for s in view.ownership.get("government_stakes", [])]
            second.admit_participant(
                pid, view.name, view.roles, view.country, public_keys=[client.key.public_key_b64],  # type: ignore[union-attr]
                incorporated_in=view.ownership["incorporated_in"], headquartered_in=view.ownership["headquartered_in"],
                government_stakes=stakes, timestamp=admitted,
            )  # fmt: skip
            for f in view.facilities:
                second.register_facility(f.id, pid, f.kind, f.country, f.name, loss_tolerance=f.loss_tolerance, timestamp=admitted)  # fmt: skip
            path = tmp_path / f"{pid}.key"
            client.key.save(path)  # type: ignore[union-attr]
            keys += ["--key-file", f"{pid}={path}"]
            tokens += ["--token", f"{pid}={second.issue_token(pid, 'import').token}"]
        # the auditor's attestations, as it signed them (the same key in both ledgers)
        auditor = played.participants["verity-assurance"]
        for client in played.participants.values():
            for facility in first.participant(client.actor or "").facilities:
                listing = first.http.get(
                    f"/v1/facilities/{facility.id}/attestations", headers=first._auth()
                ).json()
                for item in listing["items"]:
                    envelope = first.event(item["event_id"]).envelope
                    assert envelope is not None
                    assert auditor.acting_as(
                        auditor.actor or "", auditor.key, tokens_of(tokens, auditor.actor)
                    ).http
                    answer = httpx.post(
                        f"{second_url}/v1/events",
                        content=msgspec_json(envelope),
                        headers={"Authorization": f"Bearer {tokens_of(tokens, auditor.actor)}",
                                 "Content-Type": "application/json"},
                    )  # fmt: skip
                    assert answer.status_code == 201, answer.text

        document = first.http.get("/epcis/events", params={"perPage": 1000}, headers=first._auth()).json()
        events = events_of(document)
        assert len(events) == 18  # 3 extractions, 5 shipments and 5 receipts, 4 transformations, 1 split
        assert [e["eventID"] for e in events] == reference_hashes(document)
        assert epcis2js([document]) == [{"success": True, "errors": []}]
        exported = tmp_path / "demo.jsonld"
        exported.write_text(json.dumps(document))
        run = ledger(env, "epcis", "import", str(exported), "--url", second_url, *keys, *tokens, "--json")
        report = json.loads(run.stdout)
        assert report["not_imported"] == []
        assert [r["status"] for r in report["submitted"]] == ["accepted"] * len(events)
        assert [r["event_id"] for r in report["submitted"]] == [e["ledger:eventId"] for e in events]
        for batch in (played.batches["cathode"], played.batches["precursor"]):
            before, after = first.eligibility(batch), second.eligibility(batch)
            assert (before.verdict, before.qualifying_share) == (after.verdict, after.qualifying_share)
            assert [r.message for r in before.reasons] == [r.message for r in after.reasons]
        assert first.eligibility(played.batches["cathode"]).verdict == "eligible"
        assert first.eligibility(played.batches["precursor"]).verdict == "not_eligible"


def tokens_of(tokens: list[str], participant: str | None) -> str:
    """The token given as ``--token participant=...`` among the command's arguments."""
    return next(t.split("=", 1)[1] for t in tokens[1::2] if t.startswith(f"{participant}="))


def msgspec_json(value: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(value)
