"""Key lifecycle on both databases: rotation, revocation, replay after revocation, compromise reports that make
events suspect (audit lists them, eligibility fails) until they are reaffirmed."""

from __future__ import annotations

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from ledger.log.checkpoint import parse_verifier_key
from ledger.services.audit import audit
from tests.support import TS, Chain, Member

USD_10 = ev.Money(amount="10", currency="USD")

FULL = {"detail": "full"}
"""Every reason and every source (the eligibility endpoint answers a summary by default)."""


async def _attested(chain: Chain) -> None:
    auditor = await chain.world.admit("verity", ["auditor"], "CA")
    info = ev.AttestationInfo(
        id="irma-qc",
        subject=ev.AttestationSubject(facility=chain.mine),
        standard="irma",
        level="irma_75",
        valid_from="2026-01-01",
        valid_to="2026-12-31",
        report_sha256="ee" * 32,
    )
    await chain.send(ev.Attest(actor=auditor.id, timestamp=TS, attestation=info), auditor)


async def test_rotation_then_revocation_and_replay(chain: Chain) -> None:
    world = chain.world
    new_key = SigningKey.generate()
    await world.submit(
        ev.KeyAdded(
            actor="registrar", timestamp=TS, participant=chain.miner.id, public_key=new_key.public_key_b64
        ),
        world.registrar,
    )
    # both keys sign during the rotation
    await chain.send(chain.extract("b-old", 10), chain.miner)
    rotated = Member(chain.miner.id, new_key, chain.miner.token)
    await chain.send(chain.extract("b-new", 10), rotated)
    # an envelope signed with the old key before its revocation, submitted after it, is refused
    prepared = envelope_for(chain.extract("b-late", 10), chain.miner.key)
    revoke = ev.KeyRevoked(
        actor="registrar",
        timestamp=TS,
        participant=chain.miner.id,
        key_id=chain.miner.key.key_id,
        reason="rotated",
    )
    await world.submit(revoke, world.registrar)
    replay = await world.post(prepared, chain.miner)
    assert replay.status_code == 422 and "revoked" in replay.json()["detail"]
    # earlier events stay valid: the audit replays them under the key valid when they were accepted
    signer = world.services.log.signer
    assert signer is not None
    report = await audit(world.services.engine, log_key=parse_verifier_key(signer.vkey))
    assert report.suspect == []
    # a revocation with an effective time in the future keeps the key usable until then
    later = SigningKey.generate()
    await world.submit(
        ev.KeyAdded(
            actor="registrar", timestamp=TS, participant=chain.miner.id, public_key=later.public_key_b64
        ),
        world.registrar,
    )
    scheduled = ev.KeyRevoked(
        actor="registrar",
        timestamp=TS,
        participant=chain.miner.id,
        key_id=later.key_id,
        reason="planned",
        effective_at="2099-01-01T00:00:00Z",
    )
    await world.submit(scheduled, world.registrar)
    await chain.send(chain.extract("b-later", 10), Member(chain.miner.id, later, chain.miner.token))


async def test_compromise_report_makes_later_events_suspect_until_reaffirmed(chain: Chain) -> None:
    world = chain.world
    await _attested(chain)
    accepted = await chain.send(chain.extract("spod-1", 1_000, value=USD_10), chain.miner)  # 2026-09-01
    suspect_id = accepted.json()["event_id"]
    eligible = (
        await world.client.get("/v1/batches/spod-1/eligibility", params=FULL, headers=chain.miner.headers)
    ).json()
    assert eligible["verdict"] == "eligible"
    # the miner's key was stolen on 2026-08-01: a compromise report revokes it now, effective in the past
    fresh = SigningKey.generate()
    await world.submit(
        ev.KeyAdded(
            actor="registrar", timestamp=TS, participant=chain.miner.id, public_key=fresh.public_key_b64
        ),
        world.registrar,
    )
    report_event = ev.KeyRevoked(
        actor="registrar",
        timestamp="2026-09-10T00:00:00Z",
        participant=chain.miner.id,
        key_id=chain.miner.key.key_id,
        reason="key stolen",
        effective_at="2026-08-01T00:00:00Z",
    )
    await world.submit(report_event, world.registrar)
    key = (await world.client.get(f"/v1/participants/{chain.miner.id}", headers=chain.miner.headers)).json()[
        "keys"
    ][0]
    assert key["compromised_since"].startswith("2026-08-01")

    signer = world.services.log.signer
    assert signer is not None
    audited = await audit(world.services.engine, log_key=parse_verifier_key(signer.vkey))
    assert audited.suspect == [suspect_id]

    failed = (
        await world.client.get("/v1/batches/spod-1/eligibility", params=FULL, headers=chain.miner.headers)
    ).json()
    assert failed["verdict"] == "not_eligible"
    suspect = [r for r in failed["reasons"] if r["code"] == "suspect-event"]
    assert suspect and suspect[0]["event_id"] == suspect_id and "reaffirms" in suspect[0]["message"]

    # a competitor may not vouch for the miner's events; the miner, with its new key, may
    rival = await world.admit("rival", ["miner"], "AU")
    forged = ev.Reaffirm(actor=rival.id, timestamp=TS, events=[suspect_id], statement="looks fine to us")
    assert (await world.submit(forged, rival, expect=None)).status_code == 403
    unknown = ev.Reaffirm(actor=chain.miner.id, timestamp=TS, events=["sha256:" + "0" * 64], statement="x")
    assert (
        await world.submit(unknown, Member(chain.miner.id, fresh, chain.miner.token), expect=None)
    ).status_code == 422
    vouch = ev.Reaffirm(
        actor=chain.miner.id, timestamp=TS, events=[suspect_id], statement="we made this extraction"
    )
    await world.submit(vouch, Member(chain.miner.id, fresh, chain.miner.token))
    again = (
        await world.client.get("/v1/batches/spod-1/eligibility", params=FULL, headers=chain.miner.headers)
    ).json()
    assert again["verdict"] == "eligible"
    assert "suspect-event-reaffirmed" in [r["code"] for r in again["reasons"]]
    # the whole story still audits (the reaffirmation replays too)
    audited = await audit(world.services.engine, log_key=parse_verifier_key(signer.vkey))
    assert audited.events == await world.count_events()


async def test_a_revoked_key_stays_refused_in_batches_after_its_signatures_were_checked_before(
    chain: Chain,
) -> None:
    """Batches have their signatures checked before the write lock, with registered keys remembered per process;
    a revocation must still refuse every later envelope the key signs (validity is checked under the lock)."""
    world = chain.world
    before = [envelope_for(chain.extract(f"pre-{i}", 10), chain.miner.key) for i in range(10)]
    first = await world.batch(before, chain.miner)  # 10 envelopes: checked off the lock, the key remembered
    assert [r["status"] for r in first.json()["results"]] == ["accepted"] * 10
    revoke = ev.KeyRevoked(
        actor="registrar",
        timestamp=TS,
        participant=chain.miner.id,
        key_id=chain.miner.key.key_id,
        reason="lost",
    )
    await world.submit(revoke, world.registrar)
    after = [envelope_for(chain.extract(f"post-{i}", 10), chain.miner.key) for i in range(10)]
    second = await world.batch(after, chain.miner)
    results = second.json()["results"]
    assert [r["status"] for r in results] == ["rejected"] * 10
    assert all("revoked" in r["problem"]["detail"] for r in results)
