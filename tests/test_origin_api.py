"""Server and offline verifier agree: every hand-worked origin scenario of tests/test_origin.py, signed and
submitted to a real ledger (both databases), determined by the server, bundled, and re-derived by
``verify_bundle`` with the registrar's signed profile from the bundle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from ledger.rules.bundle import verify_bundle
from ledger.rules.engine import determination_document
from ledger.rules.profiles import Profile
from ledger.services.bootstrap import publish_builtin_profiles
from tests import test_origin as cases
from tests.engine_support import PROFILES, History, variant
from tests.support import World


async def replay(world: World, history: History, profiles: list[Profile]) -> None:
    """Sign every event of ``history`` with its actor's key (new keys for new participants) and submit it, after
    publishing ``profiles``; the history's own registrar admission is the ledger's genesis already."""
    services = world.services
    keys = KEYS
    keys.clear()
    keys["registrar"] = world.registrar.key
    registrar = world.registrar.key
    await publish_builtin_profiles(services, registrar)  # as `ledger init` does
    for profile in profiles:
        event = ev.ProfilePublished(actor="registrar", timestamp=cases.TS, profile=profile.document())
        (result,) = await services.submitter.submit([envelope_for(event, registrar)], submitter=None)
        assert result.error is None, result.error
    for logged in history.events:
        event = logged.event
        if isinstance(event, ev.ParticipantAdmitted):
            if event.participant.id == "registrar":
                continue
            keys[event.participant.id] = SigningKey.generate()
            event = msgspec.structs.replace(
                event, keys=[ev.NewKey(public_key=keys[event.participant.id].public_key_b64)]
            )
        signer = registrar if ev.kind_of(event) in ev.REGISTRY_KINDS else keys[event.actor]
        (result,) = await services.submitter.submit([envelope_for(event, signer)], submitter=None)
        assert result.error is None, f"{ev.kind_of(event)} by {event.actor}: {result.error}"
    await services.log.integrate_all()


KEYS: dict[str, SigningKey] = {}
"""The keys the last replay gave each participant (a test signs more events with them)."""


def _mass_balance() -> History:
    return cases.credit_site(300_000)


SCENARIOS: list[tuple[str, Callable[[], History], str, str, Profile]] = [
    (
        "three minerals, assembly in a member",
        cases.three_mineral_cathode,
        "nmc",
        "2026-12-31",
        PROFILES.get("ptz-2026"),
    ),
    (
        "mined in a member, refined outside",
        lambda: _refined_outside(),
        "lioh",
        "2026-12-31",
        PROFILES.get("ptz-2026"),
    ),
    (
        "value added at the share",
        lambda: cases.mined_outside("10000"),
        "us",
        "2026-12-31",
        PROFILES.get("ptz-2026"),
    ),
    (
        "value added just below",
        lambda: cases.mined_outside("9999.99"),
        "us",
        "2026-12-31",
        PROFILES.get("ptz-2026"),
    ),
    (
        "blend at the destination",
        lambda: cases.blended_in_switzerland(False),
        "blend",
        "2026-12-31",
        PROFILES.get("ptz-2026"),
    ),
    (
        "blend in transit",
        lambda: cases.blended_in_switzerland(True),
        "ca",
        "2026-12-31",
        PROFILES.get("ptz-2026"),
    ),
    (
        "two currencies",
        lambda: cases.two_currencies([("EUR", "USD", "1.0834")]),
        "lot",
        "2026-12-31",
        PROFILES.get("ptz-2026"),
    ),
    ("credit method claim", _mass_balance, "lioh", "2026-12-31", PROFILES.get("ptz-2026")),
    (
        "last substantial transformation",
        lambda: _refined_outside(),
        "lioh",
        "2026-12-31",
        variant(origin_rule="last_substantial_transformation"),
    ),
]


def _refined_outside() -> History:
    h = cases.zone()
    h.participant("sg-refiner", ["processor"], "SG")
    h.refinery("sg-refinery", "sg-refiner", "SG")
    h.extract("ca-miner", "ca-mine", "ore", 1_000, cases.TS, value="100 USD")
    h.ship("ca-miner", "ore", "sg-refiner", "sg-refinery", cases.TS, [("CA", False), ("SG", False)])
    h.transform("sg-refiner", "sg-refinery", [("ore", 1_000)], [("lioh", 200)], "900", cases.LATER)
    return h


@pytest.mark.parametrize(
    ("name", "build", "batch", "at", "profile"), SCENARIOS, ids=[s[0] for s in SCENARIOS]
)
async def test_server_and_offline_verifier_agree(
    world: World, name: str, build: Callable[[], History], batch: str, at: str, profile: Profile
) -> None:
    history = build()
    published = [profile] if profile.content_hash != PROFILES.get(profile.id).content_hash else []
    await replay(world, history, published)
    expected = history.determine(batch, at=at, profile=profile)  # the engine alone, over the same events
    served = await world.services.eligibility.determine(batch, profile.id, at)
    assert served.verdict == expected.verdict and served.qualifying_share == expected.qualifying_share, name
    assert served.profile == profile.reference()
    bundle = await world.services.eligibility.bundle(batch, profile.id, at)
    result = verify_bundle(bundle, vkey=world.services.log.signer.vkey, local_profiles=None)  # type: ignore[union-attr]
    assert determination_document(result.determination) == determination_document(served)
    assert not [w for w in result.warnings if "not a signed entry" in w], result.warnings
    kinds = {e.get("log_index") for e in bundle["entries"]}
    assert len(kinds) == len(bundle["entries"])


async def test_a_tampered_profile_in_a_bundle_is_refused(world: World) -> None:
    from ledger.rules.bundle import BundleError

    history = cases.three_mineral_cathode()
    await replay(world, history, [])
    bundle: dict[str, Any] = await world.services.eligibility.bundle("nmc", "ptz-2026", "2026-12-31")
    bundle["profile"]["thresholds"][0]["share"] = "0.10"
    with pytest.raises(BundleError, match="differs from the signed profile entry"):
        verify_bundle(bundle, vkey=world.services.log.signer.vkey)  # type: ignore[union-attr]


async def test_credit_method_claims_use_exactly_the_balance_and_not_one_gram_more(world: World) -> None:
    # credits: 600,000 g of qualifying Canadian ore x 0.5 (refining) = 300,000 g; the replay claims all of them
    history = cases.credit_site(300_000)
    await replay(world, history, [])
    services = world.services
    balance = await services.eligibility.balance("us-refinery", "2026-Q2", "ptz-2026")
    assert (balance.credits_g, balance.claimed_g, balance.balance_g) == ("300000", "300000", "0")
    assert [c.batch for c in balance.claims] == ["lioh"] and {c.batch for c in balance.credits} == {
        "ca",
        "au",
    }
    one_more = ev.Claim(
        actor="refiner",
        timestamp="2026-06-03T10:00:00-05:00",
        facility="us-refinery",
        profile="ptz-2026",
        period="2026-Q2",
        batch="lioh",
        mass_g=1,
    )
    (result,) = await services.submitter.submit([envelope_for(one_more, KEYS["refiner"])], submitter=None)
    assert result.status == "rejected" and result.error is not None
    assert result.error.code == "insufficient-balance" and result.error.status == 409
    assert "0" in result.error.detail
    # the same balance over HTTP, for the registrar (the facility's owner and the privileged roles read it)
    response = await world.client.get(
        "/v1/facilities/us-refinery/balance",
        params={"period": "2026-Q2", "profile": "ptz-2026"},
        headers=world.registrar.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["balance_g"] == "0" and response.json()["model"] == "mass_balance_credit"
    bad = await world.client.get(
        "/v1/facilities/us-refinery/balance", params={"period": "2026-Q5"}, headers=world.registrar.headers
    )
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")


async def test_a_repeated_question_is_answered_from_the_cache_until_the_log_grows(world: World) -> None:
    history = cases.three_mineral_cathode()
    await replay(world, history, [])
    eligibility = world.services.eligibility
    first = await eligibility.determine("nmc", "ptz-2026", "2026-12-31")
    assert await eligibility.determine("nmc", "ptz-2026", "2026-12-31") is first  # same question, same log
    # the Finnish mine's attestation is revoked from before the extraction: a new event, a new answer
    revoke = ev.RevokeAttestation(
        actor="auditor",
        timestamp="2026-07-02T10:00:00Z",
        attestation="irma-fi-mine",
        effective_date="2026-01-01",
        reason="audit finding",
    )
    (result,) = await world.services.submitter.submit([envelope_for(revoke, KEYS["auditor"])], submitter=None)
    assert result.status == "accepted", result.error
    again = await eligibility.determine("nmc", "ptz-2026", "2026-12-31")
    # the cobalt (USD 1,000) no longer qualifies: 6,000 / 10,000 = 0.6
    assert again is not first and (first.qualifying_share, again.qualifying_share) == ("0.7", "0.6")


async def test_the_default_answer_is_a_summary_with_sources_in_groups(world: World) -> None:
    await replay(world, cases.three_mineral_cathode(), [])
    headers = world.registrar.headers
    summary = (
        await world.client.get("/v1/batches/nmc/eligibility", params={"at": "2026-12-31"}, headers=headers)
    ).json()
    assert (summary["verdict"], summary["qualifying_share"], summary["sources"]) == ("eligible", "0.7", 3)
    assert "share-meets-threshold" in [r["code"] for r in summary["deciding_reasons"]]
    groups = {(g["rule"], g["country"], g["mineral"]): g for g in summary["source_totals"]}
    # lithium from Canada 6,000 qualifying; nickel mined and refined in Indonesia 3,000, none qualifying;
    # cobalt from Finland 1,000 qualifying: 6,000 + 1,000 = 7,000 of 10,000, as the share says
    assert (groups[("extracted-in-member", "CA", "lithium")]["qualifying_value"]) == "6000"
    assert (groups[("value-added-test-failed", "ID", "nickel")]["traced_value"]) == "3000"
    assert (groups[("value-added-test-failed", "ID", "nickel")]["qualifying_value"]) == "0"
    assert (groups[("extracted-in-member", "FI", "cobalt")]["qualifying_value"]) == "1000"
    full = (
        await world.client.get(
            "/v1/batches/nmc/eligibility", params={"at": "2026-12-31", "detail": "full"}, headers=headers
        )
    ).json()
    assert len(full["sources"]) == 3 and len(full["reasons"]) == summary["reasons"]
