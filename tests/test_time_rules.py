"""Time rules (both databases): an event is not dated before its parents, nor before the key that signs it was
introduced, nor more than LEDGER_MAX_BACKDATE before its acceptance; each refusal is 422 `backdated` and stores
nothing. The acceptance time is kept beside the signed time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from ledger.domain import events as ev
from tests.support import TS, Chain


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).replace(microsecond=0).isoformat()


async def _refused(chain: Chain, event: ev.Event, needle: str) -> None:
    before = await chain.world.count_events()
    response = await chain.send(event, chain.miner, expect=None)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "backdated" and needle in problem["detail"], problem
    assert await chain.world.count_events() == before


async def test_an_extract_dated_before_its_signer_was_admitted_is_refused(chain: Chain) -> None:
    # the miner was admitted with a timestamp of 2026-03-02 (tests.support.T0); its key is valid from then
    extract = msgspec.structs.replace(chain.extract("old-1", 1_000), timestamp="2023-01-01T00:00:00Z")
    await _refused(chain, extract, "before key")


async def test_a_transfer_dated_before_its_parent_is_refused(chain: Chain) -> None:
    await chain.send(chain.extract("b-1", 1_000), chain.miner)  # dated TS, 2026-09-01T08:00:00-04:00
    transfer = await chain.transfer("b-1", chain.miner, chain.refiner, chain.refinery)
    # 11:59 UTC on 2026-09-01 is 07:59 in the miner's zone: one minute before the extraction
    earlier = msgspec.structs.replace(transfer, timestamp="2026-09-01T11:59:00Z")
    await _refused(chain, earlier, "before that of the event it builds on")
    # the same instant written in another offset is not earlier: accepted
    same = msgspec.structs.replace(transfer, timestamp="2026-09-01T12:00:00Z")
    assert (await chain.send(same, chain.miner)).status_code == 201
    assert TS == "2026-09-01T08:00:00-04:00"


async def test_an_event_older_than_the_maximum_backdate_is_refused(chain: Chain) -> None:
    chain.world.services.submitter.max_backdate = timedelta(days=7)  # the default of LEDGER_MAX_BACKDATE
    now = datetime.now(UTC)
    old = msgspec.structs.replace(chain.extract("b-old", 1_000), timestamp=_stamp(now - timedelta(days=8)))
    await _refused(chain, old, "more than 7 days before the server's time")
    year_one = msgspec.structs.replace(chain.extract("b-year-one", 1_000), timestamp="0001-01-01T00:00:00Z")
    before = await chain.world.count_events()
    response = await chain.send(year_one, chain.miner, expect=None)
    assert response.status_code in (400, 422) and response.json()["code"] in ("backdated", "invalid-input")
    assert await chain.world.count_events() == before
    recent = msgspec.structs.replace(
        chain.extract("b-recent", 1_000), timestamp=_stamp(now - timedelta(days=6))
    )
    response = await chain.send(recent, chain.miner)
    event_id = response.json()["event_id"]
    shown = (
        await chain.world.client.get(f"/v1/events/{event_id}", headers=chain.world.registrar.headers)
    ).json()
    # the signed time and the acceptance time side by side
    assert shown["timestamp"] == recent.timestamp
    accepted = datetime.fromisoformat(shown["accepted_at"].replace("Z", "+00:00"))
    assert abs(accepted - now) < timedelta(minutes=5)
