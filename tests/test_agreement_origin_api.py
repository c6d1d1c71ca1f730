"""Server and offline verifier agree on trade-agreement origin: every hand-worked scenario of
tests/test_agreement_origin.py, signed and submitted to a real ledger (both databases), determined by the server,
bundled and re-derived by the offline verifier; certificates of origin checked element by element on submission,
read back, bundled for customs and verified offline (``ledger verify bundle`` too); ``ledger audit`` passes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.log.checkpoint import parse_verifier_key
from ledger.rules.agreement import Agreement
from ledger.rules.bundle import BundleError
from ledger.rules.origin import origin_document
from ledger.rules.origin_bundle import verify_certificate_bundle, verify_origin_bundle
from ledger.services.audit import audit
from ledger.services.bootstrap import publish_builtin_agreements
from tests import test_agreement_origin as cases
from tests.origin_support import USMCA, Trade, with_rule
from tests.support import TS, World, ledger
from tests.test_origin_api import KEYS, replay

CERTIFIED = "2026-09-01T08:00:00-04:00"


async def publish(world: World, agreements: list[Agreement]) -> None:
    services = world.services
    await publish_builtin_agreements(services, world.registrar.key)
    for agreement in agreements:
        event = ev.AgreementPublished(actor="registrar", timestamp=TS, agreement=agreement.document())
        (result,) = await services.submitter.submit(
            [envelope_for(event, world.registrar.key)], submitter=None
        )
        assert result.error is None, result.error
    await services.log.integrate_all()


D_RULE = with_rule("8507", [{"shift": "heading"}])


def _criterion_d() -> Trade:
    t = cases.parties()
    t.mined("mx-miner", "mx-mine", "mx-ore", 1_000, "253090")
    t.ship("mx-miner", "mx-ore", "us-maker", "us-plant", cases.LATER, [("MX", False), ("US", False)])
    cases.imported(t, "kr-cells", "850760", 1_000, form="cell")
    t.produce(
        "us-maker",
        "us-plant",
        [cases.Material("mx-ore", 1_000, "100 USD"), cases.Material("kr-cells", 1_000, "300 USD")],
        "cells",
        1_500,
        "850760",
        tv="1000 USD",
    )
    return t


SCENARIOS: list[tuple[str, Callable[[], Trade], str, str, Agreement]] = [
    ("RVC fails under TV", lambda: cases.cells("450"), "cells", "transaction_value", USMCA),
    ("RVC passes under NC", lambda: cases.cells("450"), "cells", "net_cost", USMCA),
    ("de minimis exactly 10 %", lambda: cases.nickel("1000"), "ni-metal", "transaction_value", USMCA),
    ("de minimis just above", lambda: cases.nickel("1000.01"), "ni-metal", "transaction_value", USMCA),
    (
        "shifts and does not shift",
        lambda: cases.cells_from_cathode("50"),
        "cells",
        "transaction_value",
        USMCA,
    ),
    ("every failing reason", lambda: cases.cells_from_cathode("1500"), "cells", "transaction_value", USMCA),
    ("accumulation across two parties", cases.accumulated, "cam", "transaction_value", USMCA),
    ("transit under customs control", lambda: cases.through_panama(True), "lioh", "transaction_value", USMCA),
    (
        "transit without customs control",
        lambda: cases.through_panama(False),
        "lioh",
        "transaction_value",
        USMCA,
    ),
    ("criterion D", _criterion_d, "cells", "transaction_value", D_RULE),
]


@pytest.mark.parametrize(
    ("name", "build", "batch", "method", "agreement"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
)
async def test_server_and_offline_verifier_agree(
    world: World, name: str, build: Callable[[], Trade], batch: str, method: str, agreement: Agreement
) -> None:
    history = build()
    await replay(world, history, [])
    await publish(world, [agreement] if agreement is not USMCA else [])
    expected = history.origin(batch, method=method, agreement=agreement)  # the engine alone, same events
    short = {"transaction_value": "tv", "net_cost": "nc"}[method]
    served = await world.services.origin.determine(batch, agreement.id, short, "2030-12-31")
    # the same answer as the engine over the whole history (the server reads only the batch's lineage)
    assert origin_document(served) == origin_document(expected), name
    bundle = await world.services.origin.bundle(batch, agreement.id, short, "2030-12-31")
    vkey = world.services.log.signer.vkey  # type: ignore[union-attr]
    result = verify_origin_bundle(bundle, vkey=vkey, local_agreements={USMCA.id: USMCA})
    assert origin_document(result.determination) == origin_document(served)
    assert not [w for w in result.warnings if "not a signed entry" in w], result.warnings
    # a bundle whose stated verdict was changed does not verify
    bundle["determination"]["verdict"] = (
        "originating" if bundle["determination"]["verdict"] == "not_originating" else "not_originating"
    )
    with pytest.raises(BundleError, match="differs from the one the evidence gives"):
        verify_origin_bundle(bundle, vkey=vkey)


async def test_origin_over_http_and_bad_questions(world: World) -> None:
    await replay(world, cases.cells("450"), [])
    await publish(world, [])
    headers = world.registrar.headers
    by_nc = await world.client.get(
        "/v1/batches/cells/origin", params={"method": "nc", "at": "2030-12-31"}, headers=headers
    )
    assert by_nc.status_code == 200, by_nc.text
    body = by_nc.json()
    # NC (900 - 450) / 900 = 0.5 >= 0.50: B; TV (1,000 - 450) / 1,000 = 0.55 shown beside it
    assert (body["verdict"], body["criterion"], body["rvc_method"]) == ("originating", "B", "net_cost")
    assert {r["method"]: r["rvc"] for r in body["rvc"]} == {"transaction_value": "0.55", "net_cost": "0.5"}
    by_tv = (await world.client.get("/v1/batches/cells/origin", headers=headers)).json()
    assert by_tv["verdict"] == "not_originating" and "rvc-below" in [
        r["code"] for r in by_tv["not_originating"]
    ]
    for params, status, words in (
        ({"method": "xx"}, 400, "use tv (transaction value) or nc (net cost)"),
        ({"agreement": "nafta"}, 404, "no agreement profile 'nafta'"),
        ({"at": "2026-13-01"}, 400, "not a valid calendar date"),
    ):
        bad = await world.client.get("/v1/batches/cells/origin", params=params, headers=headers)
        assert bad.status_code == status and bad.headers["content-type"].startswith(
            "application/problem+json"
        )
        assert words in bad.json()["detail"], bad.json()
    missing = await world.client.get("/v1/batches/nope/origin", headers=headers)
    assert missing.status_code == 404
    listed = (await world.client.get("/v1/agreements", headers=headers)).json()
    assert [(a["id"], a["published"], a["content_hash"]) for a in listed["items"]] == [
        ("usmca", True, USMCA.content_hash)
    ]


async def test_a_participant_sees_the_verdict_but_not_the_values_others_declared(world: World) -> None:
    await replay(world, cases.cells("450"), [])
    await publish(world, [])
    miner = await world.services.tokens.issue("mx-miner", "test")
    response = await world.client.get(
        "/v1/batches/mx-ore/origin", headers={"Authorization": f"Bearer {miner.token}"}
    )
    assert response.status_code == 200 and response.json()["criterion"] == "A"
    maker = await world.services.tokens.issue("us-maker", "test")
    own = await world.client.get(
        "/v1/batches/cells/origin",
        params={"method": "nc"},
        headers={"Authorization": f"Bearer {maker.token}"},
    )
    assert own.status_code == 200 and own.json()["rvc"][0]["base"] == "1000"  # it declared them


def certificate(**changes: Any) -> dict[str, Any]:
    """A complete certification of origin for the cells, signed by their producer (us-maker)."""
    document: dict[str, Any] = {
        "id": "cert-2026-0001",
        "agreement": "usmca",
        "certifier_role": "producer",
        "certifier": {
            "name": "Ada Lovelace",
            "title": "Trade compliance manager",
            "address": "1 Battery Way, Reno NV 89501, US",
            "phone": "+1 775 555 0100",
            "email": "ada@us-maker.example",
        },
        "exporter": {
            "name": "US Maker Export LLC",
            "address": "2 Port Road, Laredo TX 78040, US",
            "phone": "+1 956 555 0101",
            "email": "export@us-maker.example",
        },
        "producer": "Available upon request by the importing authorities",
        "importer": {
            "name": "Importadora del Norte SA de CV",
            "address": "Av. Constitucion 100, Monterrey NL 64000, MX",
            "phone": "+52 81 5555 0102",
            "email": "aduanas@importadora.example",
        },
        "goods": [],
        "blanket_period": {"from": "2026-01-01", "to": "2026-12-31"},
        "signature": {
            "date": "2026-09-01",
            "statement": "I certify that the goods described in this document qualify as originating and the "
            "information contained in this document is true and accurate.",
        },
    }
    document.update(changes)
    return document


def _issue(document: dict[str, Any]) -> ev.Event:
    """The event as a careless signer would make it: typed, but not checked (the server checks it)."""
    raw = {"kind": "certificate", "actor": "us-maker", "timestamp": CERTIFIED, "certificate": document}
    event: ev.Event = msgspec.convert(raw, type=ev.Event)
    return event


def _bad_certificates(good: dict[str, Any]) -> list[tuple[str, dict[str, Any], int, str]]:
    """(what, certificate, element, words in the error): every element missing or malformed."""
    base = certificate(goods=[good])
    contact = base["certifier"]

    def without(key: str, name: str) -> dict[str, Any]:
        return {k: v for k, v in base[key].items() if k != name}

    return [
        ("certifier role missing", certificate(goods=[good], certifier_role=None), 1, "role is missing"),
        ("certifier role wrong", certificate(goods=[good], certifier_role="broker"), 1, "'broker'"),
        ("certifier missing", certificate(goods=[good], certifier=None), 2, "certifier is missing"),
        (
            "certifier name",
            certificate(goods=[good], certifier=without("certifier", "name")),
            2,
            "name is missing",
        ),
        ("certifier title", certificate(goods=[good], certifier=without("certifier", "title")), 2, "title"),
        (
            "certifier address",
            certificate(goods=[good], certifier=without("certifier", "address")),
            2,
            "address",
        ),
        (
            "certifier phone",
            certificate(goods=[good], certifier={**contact, "phone": "call me"}),
            2,
            "telephone",
        ),
        (
            "certifier email",
            certificate(goods=[good], certifier={**contact, "email": "ada.example"}),
            2,
            "email",
        ),
        (
            "exporter missing for an importer",
            certificate(goods=[good], certifier_role="importer", exporter=None),
            3,
            "exporter is missing",
        ),
        (
            "exporter email",
            certificate(goods=[good], exporter={**base["exporter"], "email": None}),
            3,
            "email",
        ),
        (
            "producer missing",
            certificate(goods=[good], certifier_role="exporter", producer=None),
            4,
            "producer",
        ),
        ("producer phrase", certificate(goods=[good], producer="Someone"), 4, "'Various'"),
        (
            "importer phone",
            certificate(goods=[good], importer={**base["importer"], "phone": "x"}),
            5,
            "telephone",
        ),
        ("no goods", certificate(goods=[]), 6, "no good is described"),
        ("description", certificate(goods=[{**good, "description": " "}]), 6, "description is missing"),
        ("hs6 malformed", certificate(goods=[{**good, "hs6": "8507.60"}]), 6, "6-digit HS subheading"),
        ("criterion", certificate(goods=[{**good, "origin_criterion": "E"}]), 7, "origin_criterion 'E'"),
        (
            "criterion unsupported",
            certificate(goods=[{**good, "origin_criterion": "C"}]),
            7,
            "found criterion 'B'",
        ),
        (
            "determination",
            certificate(goods=[{**good, "determination": None}]),
            7,
            "recorded origin determination",
        ),
        (
            "13-month blanket period",
            certificate(goods=[good], blanket_period={"from": "2026-01-01", "to": "2027-01-31"}),
            8,
            "longer than 12 months",
        ),
        (
            "blanket period reversed",
            certificate(goods=[good], blanket_period={"from": "2026-06-01", "to": "2026-05-31"}),
            8,
            "before",
        ),
        ("signature missing", certificate(goods=[good], signature=None), 9, "missing"),
        (
            "signature date after signing",
            certificate(goods=[good], signature={**base["signature"], "date": "2026-09-02"}),
            9,
            "after the event's own date",
        ),
        (
            "statement",
            certificate(goods=[good], signature={**base["signature"], "statement": "All good."}),
            9,
            "must begin",
        ),
    ]


async def test_certificates_of_origin_end_to_end(world: World, tmp_path: Path, env: dict[str, str]) -> None:
    await replay(world, cases.cells("450"), [])
    await publish(world, [])
    services = world.services
    maker = await services.tokens.issue("us-maker", "test")
    maker_headers = {"Authorization": f"Bearer {maker.token}"}
    # the producer records the determination that supports its certificate: net cost, criterion B
    recorded = await world.client.post(
        "/v1/batches/cells/origin/determinations",
        json={"method": "nc", "at": "2030-12-31"},
        headers=maker_headers,
    )
    assert recorded.status_code == 201, recorded.text
    supporting = recorded.json()["event_id"]
    failed = await world.client.post(
        "/v1/batches/cells/origin/determinations",
        json={"method": "tv", "at": "2030-12-31"},
        headers=maker_headers,
    )
    # the recorded determination as an event: the producer's amounts are not shown to others (here the ledger
    # signed it, so even the producer reads it redacted from the event log; the origin endpoint shows it all)
    seen = (await world.client.get(f"/v1/events/{supporting}", headers=maker_headers)).json()
    document = seen["payload"]["determination"]
    assert document["criterion"] == "B" and document["rvc"][1]["rvc"] == "0.5"
    assert document["rvc"][1]["base"] is None and document["materials"][1]["value"] is None
    full = (await world.client.get(f"/v1/events/{supporting}", headers=world.registrar.headers)).json()
    assert full["payload"]["determination"]["rvc"][1]["base"] == "900"
    transform = (
        await world.client.get(f"/v1/events/{document['produced_by']}", headers=maker_headers)
    ).json()
    assert transform["payload"]["outputs"][0]["transaction_value"] == {"amount": "1000", "currency": "USD"}
    good = {
        "batch": "cells",
        "description": "Lithium-ion cells, 3.6 V, 50 Ah",
        "hs6": "850760",
        "origin_criterion": "B",
        "determination": supporting,
    }

    async def submit(document: dict[str, Any]) -> Any:
        event = _issue(document)
        envelope = envelope_for(event, KEYS["us-maker"])
        return await world.client.post(
            "/v1/events",
            content=envelope.to_json(),
            headers={**maker_headers, "Content-Type": "application/json"},
        )

    before = await world.count_events()
    for what, document, element, words in _bad_certificates(good):
        response = await submit(document)
        assert response.status_code == 422, (what, response.text)
        problem = response.json()
        assert problem["code"] == "invalid-certificate" and problem["element"] == element, (what, problem)
        assert f"certificate element {element}" in problem["detail"] and words in problem["detail"], (
            what,
            problem,
        )
    # citing the determination that found the good not originating
    response = await submit(certificate(goods=[{**good, "determination": failed.json()["event_id"]}]))
    assert response.status_code == 422 and "not originating" in response.json()["detail"]
    assert await world.count_events() == before  # nothing refused was stored

    # one certificate for two goods: the cells (B) and the Mexican ore (wholly obtained, A), each with its own
    # recorded determination (their lineages differ: each is re-derived from its own evidence)
    ore = await world.client.post(
        "/v1/batches/mx-ore/origin/determinations", json={"at": "2030-12-31"}, headers=maker_headers
    )
    assert ore.status_code == 201, ore.text
    ore_good = {
        "batch": "mx-ore",
        "description": "Spodumene ore",
        "hs6": "253090",
        "origin_criterion": "A",
        "determination": ore.json()["event_id"],
    }
    response = await submit(certificate(goods=[good, ore_good]))
    assert response.status_code == 201, response.text
    again = await submit(
        certificate(goods=[good], signature={**certificate()["signature"], "date": "2026-08-31"})
    )
    assert again.status_code == 409 and "already exists" in again.json()["detail"]

    shown = await world.client.get("/v1/certificates/cert-2026-0001", headers=maker_headers)
    assert shown.status_code == 200, shown.text
    view = shown.json()
    assert (view["certifier"], view["batches"]) == ("us-maker", ["cells", "mx-ore"])
    assert view["determinations"] == [supporting, ore.json()["event_id"]]
    assert view["certificate"]["producer"] == "Available upon request by the importing authorities"
    listed = (
        await world.client.get("/v1/batches/cells/certificates", headers=world.registrar.headers)
    ).json()
    assert [c["id"] for c in listed["items"]] == ["cert-2026-0001"]
    miner = await services.tokens.issue("mx-miner", "test")
    hidden = await world.client.get(
        "/v1/certificates/cert-2026-0001", headers={"Authorization": f"Bearer {miner.token}"}
    )
    assert hidden.status_code == 404  # it held the ore, but may not learn of the cells made from it
    listed = await world.client.get(
        "/v1/batches/mx-ore/certificates", headers={"Authorization": f"Bearer {miner.token}"}
    )
    assert listed.status_code == 200 and listed.json()["items"] == []
    assert (
        await world.client.get("/v1/certificates/cert-none", headers=world.registrar.headers)
    ).status_code == 404

    # customs gets the bundle and verifies it offline, in process and with the CLI
    customs = await world.admit("cbp", ["customs"], "US")
    fetched = await world.client.get("/v1/certificates/cert-2026-0001/bundle", headers=customs.headers)
    assert fetched.status_code == 200, fetched.text
    bundle = fetched.json()
    vkey = services.log.signer.vkey  # type: ignore[union-attr]
    result = verify_certificate_bundle(bundle, vkey=vkey)
    assert result.certifier == "us-maker" and [d.criterion for d in result.determinations] == ["B", "A"]
    path = tmp_path / "certificate.json"
    path.write_text(json.dumps(bundle))
    out = ledger(env, "verify", "bundle", str(path), "--log-key", vkey)
    assert "certificate cert-2026-0001" in out.stdout and "criterion B" in out.stdout, out.stdout
    tampered = json.loads(json.dumps(bundle))
    tampered["entries"] = [e for e in tampered["entries"] if "determination" not in _kind(e)]
    with pytest.raises(BundleError):
        verify_certificate_bundle(tampered, vkey=vkey)
    origin_bundle = await services.origin.bundle("cells", "usmca", "nc", "2030-12-31")
    path.write_text(json.dumps(origin_bundle))
    out = ledger(env, "verify", "bundle", str(path), "--log-key", vkey)
    assert "originating under usmca" in out.stdout and "criterion B" in out.stdout, out.stdout

    # the whole ledger still audits: the new kinds replay to the same tables
    report = await audit(services.engine, log_key=parse_verifier_key(vkey))
    assert report.events == await world.count_events()


def _kind(entry: dict[str, Any]) -> str:
    import base64

    payload = msgspec.json.decode(base64.b64decode(entry["envelope"]["payload"]))
    return str(payload.get("kind"))


async def test_agreement_versions_only_go_up(world: World) -> None:
    await publish(world, [])
    event = ev.AgreementPublished(actor="registrar", timestamp=TS, agreement=USMCA.document())
    response = await world.submit(event, world.registrar, expect=409)
    assert "published up to version 1" in response.json()["detail"]
    broken = {**USMCA.document(), "version": 5, "parties": ["US", "ZZ"]}
    event = ev.AgreementPublished(actor="registrar", timestamp=TS, agreement=broken)
    response = await world.submit(event, world.registrar, expect=422)
    assert "parties" in response.json()["detail"]
