"""Eligibility through the API on both databases: attestations, profiles, determinations, proof bundles and
their offline verification, and the bad inputs."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from ledger.domain import events as ev
from ledger.rules.bundle import BundleError, verify_bundle
from ledger.rules.profiles import Profiles
from ledger.services.bootstrap import publish_builtin_profiles
from tests.support import TS, Chain, Member

REPORT = "cd" * 32


async def _attest(
    chain: Chain, auditor: Member, aid: str, facility: str, standard: str, level: str, **kw: Any
) -> Any:
    info = ev.AttestationInfo(
        id=aid,
        subject=ev.AttestationSubject(facility=facility),
        standard=standard,
        level=level,
        valid_from=kw.pop("valid_from", "2026-01-01"),
        valid_to=kw.pop("valid_to", "2026-12-31"),
        report_sha256=REPORT,
    )
    return await chain.send(ev.Attest(actor=auditor.id, timestamp=TS, attestation=info), auditor, **kw)


async def _qualifying_chain(chain: Chain) -> Member:
    await publish_builtin_profiles(chain.world.services, chain.world.registrar.key)  # as `ledger init` does
    auditor = await chain.world.admit("verity", ["auditor"], "CA")
    await _attest(chain, auditor, "irma-qc", chain.mine, "irma", "irma_75")
    await _attest(chain, auditor, "rmap-tx", chain.refinery, "rmap", "conformant")
    await chain.send(
        chain.extract("spod-1", 1_000_000, value=ev.Money(amount="9000", currency="USD")), chain.miner
    )
    await chain.ship("spod-1", chain.miner, chain.refiner, chain.refinery, 1_000_000)
    transform = ev.Transform(
        actor=chain.refiner.id,
        timestamp="2026-09-05T10:00:00-05:00",
        facility=chain.refinery,
        process="refining",
        inputs=[ev.Input(batch="spod-1", parent=await chain.head("spod-1"), mass_g=1_000_000)],
        outputs=[ev.Output(id="lioh-1", mineral="lithium", form="hydroxide", mass_g=150_000)],
        value_added=ev.Money(amount="30000", currency="USD"),
    )
    await chain.send(transform, chain.refiner)
    return auditor


async def test_eligibility_record_and_bundle_verify_offline(chain: Chain) -> None:
    world = chain.world
    await _qualifying_chain(chain)
    headers = chain.refiner.headers
    determination = (
        await world.client.get(
            "/v1/batches/lioh-1/eligibility", params={"at": "2026-10-01", "detail": "full"}, headers=headers
        )
    ).json()
    assert determination["verdict"] == "eligible" and determination["qualifying_share"] == "1"
    assert determination["profile"]["id"] == "ptz-2026"
    assert (
        determination["threshold"]["share"] == "0.60"
        and determination["threshold"]["determining_date"] == "2026-09-05"
    )

    other = (
        await world.client.get(
            "/v1/batches/lioh-1/eligibility",
            params={"profile": "us-cv-2023", "at": "2026-10-01"},
            headers=headers,
        )
    ).json()
    assert other["profile"]["id"] == "us-cv-2023" and other["threshold"]["share"] == "0.70"

    recorded = await world.client.post(
        "/v1/batches/lioh-1/determinations", json={"at": "2026-10-01"}, headers=headers
    )
    assert recorded.status_code == 201, recorded.text
    event = (await world.client.get(f"/v1/events/{recorded.json()['event_id']}", headers=headers)).json()
    assert event["kind"] == "determination" and event["actor"] == "ledger"
    assert event["payload"]["determination"] == determination
    assert event["payload"]["requested_by"] == chain.refiner.id
    history = (await world.client.get("/v1/batches/lioh-1/history", headers=headers)).json()
    assert history["events"][-1]["event_id"] == recorded.json()["event_id"]

    await world.services.log.integrate_all()
    bundle = (
        # customs-like: the registrar may see the miner's declared value, which the bundle's envelopes carry
        await world.client.get(
            "/v1/batches/lioh-1/bundle", params={"at": "2026-10-01"}, headers=world.registrar.headers
        )
    ).json()
    vkey = (await world.client.get("/v1/log/key")).text.strip()
    result = verify_bundle(bundle, vkey=vkey, local_profiles=Profiles().by_id)
    assert result.determination.verdict == "eligible" and not result.warnings
    kinds = {json.loads(base64.b64decode(e["envelope"]["payload"]))["kind"] for e in bundle["entries"]}
    assert {
        "participant_admitted",
        "facility_registered",
        "attest",
        "extract",
        "transfer",
        "receive",
        "transform",
    } <= kinds

    # the audit replays the determination too (it needs the log key for that)
    from ledger.log.checkpoint import parse_verifier_key
    from ledger.services.audit import audit

    report = await audit(world.services.engine, log_key=parse_verifier_key(vkey))
    assert report.events == await world.count_events()


def _entry_of_kind(bundle: dict[str, Any], kind: str) -> int:
    for position, entry in enumerate(bundle["entries"]):
        if json.loads(base64.b64decode(entry["envelope"]["payload"]))["kind"] == kind:
            return position
    raise AssertionError(kind)


async def test_tampered_bundles_fail_with_the_exact_reason(chain: Chain) -> None:
    world = chain.world
    await _qualifying_chain(chain)
    await world.services.log.integrate_all()
    bundle = (
        await world.client.get(
            "/v1/batches/lioh-1/bundle", params={"at": "2026-10-01"}, headers=chain.world.registrar.headers
        )
    ).json()
    vkey = (await world.client.get("/v1/log/key")).text.strip()
    verify_bundle(bundle, vkey=vkey)

    def broken(change: Any) -> dict[str, Any]:
        copied = copy.deepcopy(bundle)
        change(copied)
        return copied

    def changed_byte(b: dict[str, Any]) -> None:
        entry = b["entries"][_entry_of_kind(b, "extract")]
        payload = base64.b64decode(entry["envelope"]["payload"]).replace(b"1000000", b"9000000")
        entry["envelope"]["payload"] = base64.b64encode(payload).decode()

    def missing_event(b: dict[str, Any]) -> None:
        del b["entries"][_entry_of_kind(b, "transfer")]

    def bad_proof(b: dict[str, Any]) -> None:
        proof = b["entries"][0]["proof"]
        proof[0] = base64.b64encode(bytes(32)).decode()

    def different_verdict(b: dict[str, Any]) -> None:
        b["determination"]["verdict"] = "not_eligible"

    def other_share(b: dict[str, Any]) -> None:
        b["determination"]["qualifying_share"] = "0.99"

    def changed_profile(b: dict[str, Any]) -> None:
        b["profile"]["thresholds"][0]["share"] = "0.10"

    def resigned_checkpoint(b: dict[str, Any]) -> None:
        b["log"]["checkpoint"] = b["log"]["checkpoint"].replace("\n", "\n\n", 1)

    cases = [
        (changed_byte, "is not in the log the checkpoint commits to"),
        (missing_event, "missing from the bundle"),
        (bad_proof, "is not in the log the checkpoint commits to"),
        (different_verdict, "verdict: stated 'not_eligible', recomputed 'eligible'"),
        (other_share, "qualifying_share: stated '0.99', recomputed '1'"),
        # the signed profile_published entry in the bundle is the reference: a changed copy beside it is caught
        (changed_profile, "differs from the signed profile entry it carries"),
        (resigned_checkpoint, "checkpoint does not verify"),
    ]
    for change, needle in cases:
        with pytest.raises(BundleError) as caught:
            verify_bundle(broken(change), vkey=vkey)
        assert needle in str(caught.value), (change.__name__, str(caught.value))
    # a bundle from another ledger: the pinned key differs from the one the officer trusts
    from ledger.domain.keys import SigningKey
    from ledger.log.checkpoint import verifier_key

    stranger = verifier_key("mineral-ledger.example/log", SigningKey.generate().public_key)
    with pytest.raises(BundleError, match="not the key you gave"):
        verify_bundle(bundle, vkey=stranger)


async def test_facility_attestation_history_and_validity_on_a_date(chain: Chain) -> None:
    auditor = await chain.world.admit("verity", ["auditor"], "CA")
    await _attest(
        chain,
        auditor,
        "irma-qc",
        chain.mine,
        "irma",
        "irma_50",
        valid_from="2026-01-01",
        valid_to="2026-06-30",
    )
    revoke = ev.RevokeAttestation(
        actor=auditor.id,
        timestamp=TS,
        attestation="irma-qc",
        effective_date="2026-04-01",
        reason="tailings finding",
    )
    await chain.send(revoke, auditor)
    headers = chain.miner.headers
    listing = (
        await chain.world.client.get(
            f"/v1/facilities/{chain.mine}/attestations", params={"on": "2026-03-31"}, headers=headers
        )
    ).json()
    (item,) = listing["items"]
    assert item["valid_on"] is True and item["revoked_on"] == "2026-04-01"
    assert item["changes"][0]["reason"] == "tailings finding"
    after = (
        await chain.world.client.get(
            f"/v1/facilities/{chain.mine}/attestations", params={"on": "2026-04-01"}, headers=headers
        )
    ).json()
    assert after["items"][0]["valid_on"] is False
    # revoking twice is a conflict; another auditor may not revoke it
    again = await chain.send(revoke, auditor, expect=None)
    assert again.status_code in (200, 409)  # the same envelope is a duplicate (200)
    second = ev.RevokeAttestation(
        actor=auditor.id, timestamp=TS, attestation="irma-qc", effective_date="2026-05-01", reason="x"
    )
    assert (await chain.send(second, auditor, expect=None)).status_code == 409
    rival = await chain.world.admit("rival-audit", ["auditor"], "US")
    suspend = ev.SuspendAttestation(
        actor=rival.id, timestamp=TS, attestation="irma-qc", effective_date="2026-05-01", reason="x"
    )
    assert (await chain.send(suspend, rival, expect=None)).status_code == 403


async def test_eligibility_bad_inputs(chain: Chain) -> None:
    world = chain.world
    await chain.send(chain.extract("spod-1", 1_000, value=ev.Money(amount="9", currency="USD")), chain.miner)
    headers = chain.miner.headers
    r = await world.client.get(
        "/v1/batches/spod-1/eligibility", params={"profile": "mars-2030"}, headers=headers
    )
    assert r.status_code == 404 and "no rule profile 'mars-2030'" in r.json()["detail"]
    r = await world.client.get("/v1/batches/spod-1/eligibility", params={"at": "31/12/2026"}, headers=headers)
    assert r.status_code == 400 and "YYYY-MM-DD" in r.json()["detail"]
    r = await world.client.get("/v1/batches/nope/eligibility", headers=headers)
    assert r.status_code == 404 and "'nope' does not exist" in r.json()["detail"]
    r = await world.client.get("/v1/profiles/mars-2030", headers=headers)
    assert r.status_code == 404
    profiles = (await world.client.get("/v1/profiles", headers=headers)).json()
    assert {p["id"] for p in profiles["items"]} == {"ptz-2026", "us-cv-2023"}
    ptz = (await world.client.get("/v1/profiles/ptz-2026", headers=headers)).json()
    assert ptz["default"] is True and ptz["content_hash"].startswith("sha256:")
    assert len(ptz["document"]["members"]) == 4 + 27
    # an attestation by a participant without the auditor role
    before = await world.count_events()
    r = await _attest(chain, chain.miner, "self-audit", chain.mine, "irma", "irma_100", expect=None)
    assert r.status_code == 403 and "roles auditor" in r.json()["detail"]
    # an attestation whose validity ends before it begins
    auditor = await world.admit("verity", ["auditor"], "CA")
    before = await world.count_events()
    r = await _attest(
        chain,
        auditor,
        "backwards",
        chain.mine,
        "irma",
        "irma_50",
        valid_from="2026-06-01",
        valid_to="2026-05-31",
        expect=None,
    )
    assert (
        r.status_code == 400 and "valid_to 2026-05-31 is before valid_from 2026-06-01" in r.json()["detail"]
    )
    # a level that the standard does not have
    r = await _attest(chain, auditor, "odd", chain.mine, "rmap", "irma_50", expect=None)
    assert r.status_code == 400 and "not a rmap level" in r.json()["detail"]
    assert await world.count_events() == before
