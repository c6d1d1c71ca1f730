"""The eligibility engine on hand-worked examples. Every expected number is worked out in the test from the
scenario, never copied from the engine's output."""

from __future__ import annotations

from fractions import Fraction

import pytest

from ledger.domain import events as ev
from ledger.errors import NotFound
from ledger.rules.engine import exact_decimal, percent_display
from tests.engine_support import PTZ_MASS, History, base, reasons, variant

CV_MASS = variant("us-cv-2023", share_basis="mass")
MASS = {"ptz-2026": PTZ_MASS, "us-cv-2023": CV_MASS}

TS = "2026-05-10T10:00:00-04:00"
CA_TO_US = [("CA", False), ("US", False)]
AU_TO_US = [("AU", False), ("US", False)]


def merged(ca_g: int, au_g: int, merge_ts: str = "2026-05-20T10:00:00-05:00") -> History:
    """Canadian (member) and Australian (not a member of ptz-2026) concentrate merged at a US refinery: no
    processing, so the qualifying share is exactly the Canadian mass over the total."""
    h = base()
    h.extract("ca-miner", "ca-mine", "ca", ca_g, TS)
    h.extract("au-miner", "au-mine", "au", au_g, "2026-05-10T22:00:00+08:00")
    h.ship("ca-miner", "ca", "refiner", "us-refinery", "2026-05-12T10:00:00-04:00", CA_TO_US)
    h.ship("au-miner", "au", "refiner", "us-refinery", "2026-05-12T10:00:00+08:00", AU_TO_US)
    h.merge("refiner", ["ca", "au"], "lot", merge_ts)
    return h


def test_share_exactly_at_the_threshold_is_eligible() -> None:
    # 600 000 g Canadian + 400 000 g Australian: 600 000 / 1 000 000 = 0.6, and ptz-2026 asks 0.60 in 2026
    d = merged(600_000, 400_000).determine("lot")
    assert d.qualifying_share == "0.6" and d.qualifying_share_fraction == "3/5"
    assert d.threshold is not None and d.threshold.share == "0.60"
    assert d.verdict == "eligible"
    assert "share-meets-threshold" in reasons(d, "pass")


def test_share_that_would_round_up_to_the_threshold_is_not_eligible() -> None:
    # 599 999 / 1 000 000 = 0.599999: rounds to 0.60 at two places, but is below 0.60
    d = merged(599_999, 400_001).determine("lot")
    assert d.qualifying_share == "0.599999"
    assert d.qualifying_share_percent == "59.99"  # display truncates, never rounds up
    assert d.verdict == "not_eligible"
    assert "share-below-threshold" in reasons(d, "fail")
    assert "source-does-not-qualify" in reasons(d, "fail")
    assert "extracted-outside-members" in reasons(d, "info")


def test_non_terminating_share_is_given_as_a_fraction() -> None:
    # 1 g of 3 g: 1/3 has no terminating decimal
    d = merged(1, 2).determine("lot")
    assert d.qualifying_share == "1/3" and d.qualifying_share_percent == "33.33"
    assert exact_decimal(Fraction(1, 8)) == "0.125" and percent_display(Fraction(2, 3)) == "66.66"


@pytest.mark.parametrize(
    ("merge_ts", "local_date", "required", "verdict"),
    [
        # 20:00 in New York on 31 December is already 1 January in UTC: the local date decides (2026: 0.60)
        ("2026-12-31T20:00:00-05:00", "2026-12-31", "0.60", "eligible"),
        # 00:30 in Paris on 1 January is still 31 December in UTC: the local date decides (2027: 0.70)
        ("2027-01-01T00:30:00+01:00", "2027-01-01", "0.70", "not_eligible"),
    ],
)
def test_threshold_follows_the_local_date_of_the_determining_event(
    merge_ts: str, local_date: str, required: str, verdict: str
) -> None:
    # 650 000 / 1 000 000 = 0.65: above 0.60 (2026), below 0.70 (2027)
    d = merged(650_000, 350_000, merge_ts).determine("lot", at="2027-01-31")
    assert d.qualifying_share == "0.65"
    assert d.threshold is not None
    assert (d.threshold.determining_date, d.threshold.share, d.verdict) == (local_date, required, verdict)
    assert merge_ts in d.threshold.why


def test_events_after_the_determination_date_are_ignored() -> None:
    h = merged(650_000, 350_000, "2026-12-31T20:00:00-05:00")
    # on 2026-12-30 the merge had not happened: the lot did not exist yet
    with pytest.raises(NotFound, match="no events on or before 2026-12-30"):
        h.determine("lot", at="2026-12-30")
    # the Canadian concentrate, on its own, was eligible then (determining event: its receipt on 2026-05-12)
    d = h.determine("ca", at="2026-12-30")
    assert (
        d.verdict == "eligible" and d.threshold is not None and d.threshold.determining_date == "2026-05-12"
    )


def mine_with(
    valid_from: str, valid_to: str, revoke: str | None = None, suspend: str | None = None
) -> History:
    h = History()
    h.participant("registrar", ["registrar"], "US")
    h.participant("auditor", ["auditor"], "CA")
    h.participant("ca-miner", ["miner"], "CA")
    h.mine("ca-mine", "ca-miner", "CA", attested=False)
    h.attest("irma-1", "ca-mine", "irma", "irma_50", valid_from, valid_to)
    if revoke:
        h.revoke("irma-1", revoke)
    if suspend:
        h.revoke("irma-1", suspend, suspend=True)
    h.extract("ca-miner", "ca-mine", "ca", 1_000_000, TS)  # local date 2026-05-10
    return h


@pytest.mark.parametrize(
    ("valid_from", "valid_to", "revoke", "suspend", "counts"),
    [
        ("2025-05-10", "2026-05-09", None, None, False),  # expired the day before the extraction
        ("2025-05-10", "2026-05-10", None, None, True),  # expires on the day: both ends are inclusive
        ("2026-05-10", "2026-12-31", None, None, True),  # starts on the day
        ("2026-05-11", "2026-12-31", None, None, False),  # starts the day after
        ("2025-05-10", "2026-06-30", None, None, True),  # expired after the extraction: still counts for it
        ("2025-05-10", "2027-05-10", "2026-05-01", None, False),  # revoked before the extraction
        ("2025-05-10", "2027-05-10", "2026-05-10", None, False),  # revoked on the day: no longer counts
        ("2025-05-10", "2027-05-10", "2026-05-11", None, True),  # revoked after the extraction
        ("2025-05-10", "2027-05-10", None, "2026-05-10", False),  # suspended on the day
    ],
)
def test_attestation_validity_on_the_day_of_the_event(
    valid_from: str, valid_to: str, revoke: str | None, suspend: str | None, counts: bool
) -> None:
    d = mine_with(valid_from, valid_to, revoke, suspend).determine("ca", at="2027-12-31")
    assert d.verdict == ("eligible" if counts else "not_eligible")
    assert d.qualifying_share == ("1" if counts else "0")
    assert ("attestation-valid" if counts else "attestation-missing") in reasons(d)


def test_attestation_below_the_required_level_or_for_another_mineral_does_not_count() -> None:
    h = History()
    h.participant("registrar", ["registrar"], "US")
    h.participant("auditor", ["auditor"], "CA")
    h.participant("ca-miner", ["miner"], "CA")
    h.mine("ca-mine", "ca-miner", "CA", attested=False)
    h.attest("irma-t", "ca-mine", "irma", "transparency")  # below IRMA 50
    h.attest("irma-co", "ca-mine", "irma", "irma_100", minerals=["cobalt"])  # another mineral
    h.extract("ca-miner", "ca-mine", "ca", 1_000, TS)
    assert "attestation-missing" in reasons(h.determine("ca"), "fail")


def refined(
    stakes: list[ev.GovernmentStake] | None, ts: str = "2026-06-01T12:00:00-05:00", profile: str = "ptz-2026"
) -> str:
    h = base(processor_stakes=stakes)
    h.extract("ca-miner", "ca-mine", "ca", 1_000_000, TS)
    h.ship("ca-miner", "ca", "refiner", "us-refinery", TS, CA_TO_US)
    h.transform("refiner", "us-refinery", [("ca", 1_000_000)], [("lioh", 200_000)], "5000", ts)
    d = h.determine("lioh", profile=MASS[profile])
    return d.verdict + ":" + ",".join(sorted(set(reasons(d, "fail"))))


@pytest.mark.parametrize("measure", ["equity", "votes", "board_seats"])
def test_foreign_entity_by_each_measure_on_its_own(measure: str) -> None:
    def stake(value: str) -> list[ev.GovernmentStake]:
        return [ev.GovernmentStake(country="CN", **{measure: value})]

    # just below the 0.25 threshold: not a foreign entity of concern
    assert refined(stake("0.2499")) == "eligible:"
    # at the threshold: a hard fail, whatever the share (the share here is 1)
    assert refined(stake("0.25")) == "not_eligible:foreign-entity-of-concern"
    # a government that is not a covered nation does not count
    assert refined([ev.GovernmentStake(country="NO", **{measure: "0.9"})]) == "eligible:"


def test_foreign_entity_rule_before_its_effective_date() -> None:
    # us-cv-2023's rule applies from 2025-01-01; a 2024 determination (threshold 0.50) ignores the 0.5 stake
    majority = [ev.GovernmentStake(country="CN", equity="0.5")]
    assert refined(majority, "2024-12-31T23:00:00-05:00", "us-cv-2023") == "eligible:"
    assert (
        refined(majority, "2025-01-01T01:00:00-05:00", "us-cv-2023")
        == "not_eligible:foreign-entity-of-concern"
    )


def test_foreign_entity_by_incorporation_headquarters_or_activity_location_and_ownership_history() -> None:
    for kwargs in ({"incorporated_in": "CN"}, {"headquartered_in": "RU"}):
        h = History()
        h.participant("registrar", ["registrar"], "US")
        h.participant("auditor", ["auditor"], "CA")
        h.participant("ca-miner", ["miner"], "CA", **kwargs)
        h.mine("ca-mine", "ca-miner", "CA")
        h.extract("ca-miner", "ca-mine", "ca", 1_000, TS)
        d = h.determine("ca")
        assert d.verdict == "not_eligible" and d.foreign_entity_of_concern
    # a stake that takes effect after the extraction does not taint it; one in effect on the day does
    for effective, tainted in (("2026-05-11", False), ("2026-05-10", True)):
        h = History()
        h.participant("registrar", ["registrar"], "US")
        h.participant("auditor", ["auditor"], "CA")
        h.participant("ca-miner", ["miner"], "CA")
        h.ownership(
            "ca-miner",
            effective,
            ev.Ownership(
                incorporated_in="CA",
                headquartered_in="CA",
                government_stakes=[ev.GovernmentStake(country="KP", votes="0.3")],
            ),
        )
        h.mine("ca-mine", "ca-miner", "CA")
        h.extract("ca-miner", "ca-mine", "ca", 1_000, TS)
        assert h.determine("ca").foreign_entity_of_concern is tainted


def test_merge_of_qualifying_and_non_qualifying_then_split_in_three_keeps_totals_exact() -> None:
    h = merged(300_000, 700_000)  # lot: 1 000 000 g of which 300 000 g Canadian: share 3/10
    parts = [("p1", 333_333), ("p2", 333_333), ("p3", 333_334)]
    h.split("refiner", "lot", parts, "2026-05-21T10:00:00-05:00")
    total_ca_g = Fraction(0)
    for part, mass in parts:
        d = h.determine(part)
        assert d.qualifying_share == "0.3" and d.mass_g == mass
        by_batch = {s.batch: s for s in d.sources}
        # each part carries 3/10 Canadian material: 333 333 * 3/10 = 99 999.9 g, 333 334 * 3/10 = 100 000.2 g
        assert by_batch["ca"].contribution == "0.3" and by_batch["au"].contribution == "0.7"
        assert Fraction(by_batch["ca"].contribution_g) == Fraction(3 * mass, 10)
        assert by_batch["ca"].qualifying_fraction == "1" and by_batch["au"].qualifying_fraction == "0"
        total_ca_g += Fraction(by_batch["ca"].contribution_g)
    assert [h.determine(p).sources[1].contribution_g for p, _ in parts] == ["99999.9", "99999.9", "100000.2"]
    assert total_ca_g == 300_000  # nothing created, nothing lost


def recycled(recycler_country: str, profile: str) -> str:
    h = History()
    h.participant("registrar", ["registrar"], "US")
    h.participant("auditor", ["auditor"], "CA")
    h.participant("cd-miner", ["miner"], "CD")
    h.participant("recycler", ["recycler"], recycler_country)
    h.mine("cd-mine", "cd-miner", "CD")
    h.facility("plant", "recycler", "recycler", recycler_country)
    h.attest("iso-plant", "plant", "iso14001", "certified")  # ptz-2026 gates recycling on an attestation
    h.extract("cd-miner", "cd-mine", "scrap", 10_000, TS)
    h.ship("cd-miner", "scrap", "recycler", "plant", TS, [("CD", False), (recycler_country, False)])
    h.transform(
        "recycler",
        "plant",
        [("scrap", 10_000)],
        [("black-mass", 6_000)],
        "100",
        "2026-06-01T10:00:00+00:00",
        process="recycling",
    )
    d = h.determine("black-mass", profile=MASS[profile])
    return d.verdict + ":" + d.qualifying_share


def test_recycled_material_counts_only_where_the_profile_allows() -> None:
    # scrap of Congolese origin, recycled: origin is where it was recycled
    assert recycled("US", "ptz-2026") == "eligible:1"
    assert recycled("DE", "ptz-2026") == "eligible:1"  # ptz-2026 counts recycling in every member
    assert recycled("JP", "us-cv-2023") == "not_eligible:0"  # us-cv-2023: recycling in North America only
    assert recycled("MX", "us-cv-2023") == "eligible:1"


@pytest.mark.parametrize(
    ("route", "share"),
    [
        ([("CA", False), ("US", False)], "1"),  # members only
        ([("CA", False), ("SG", True), ("US", False)], "1"),  # non-member leg under customs control
        ([("CA", False), ("SG", False), ("US", False)], "0"),  # non-member leg without customs control
    ],
)
def test_non_member_transit(route: list[tuple[str, bool]], share: str) -> None:
    h = base()
    h.extract("ca-miner", "ca-mine", "ca", 1_000, TS)
    h.ship("ca-miner", "ca", "refiner", "us-refinery", TS, route)
    d = h.determine("ca")
    assert d.qualifying_share == share
    if share == "0":
        assert "transit-origin-lost" in reasons(d, "fail")


def processed_abroad(us_value_added: str, miner: str = "au") -> History:
    """Australian (or Canadian) concentrate refined in Singapore (not a member), then converted in the US."""
    h = base()
    h.participant("sg-refiner", ["processor"], "SG")
    h.refinery("sg-refinery", "sg-refiner", "SG")
    h.extract(f"{miner}-miner", f"{miner}-mine", "ore", 1_000_000, TS)
    h.ship(f"{miner}-miner", "ore", "sg-refiner", "sg-refinery", TS, [(miner.upper(), False), ("SG", True)])
    h.transform(
        "sg-refiner",
        "sg-refinery",
        [("ore", 1_000_000)],
        [("sg-out", 300_000)],
        "10000",
        "2026-06-01T10:00:00+08:00",
    )
    h.ship(
        "sg-refiner",
        "sg-out",
        "refiner",
        "us-refinery",
        "2026-06-02T10:00:00+08:00",
        [("SG", True), ("US", False)],
    )
    h.transform(
        "refiner",
        "us-refinery",
        [("sg-out", 300_000)],
        [("us-out", 250_000)],
        us_value_added,
        "2026-07-01T10:00:00-05:00",
    )
    return h


def test_refining_outside_the_members_keeps_a_member_extraction_but_not_the_last_transformation() -> None:
    # extracted_or_processed: Canadian ore stays qualifying whatever happens to it later outside the members
    d = processed_abroad("1", miner="ca").determine("sg-out")
    assert d.qualifying_share == "1" and d.sources[0].rule == "extracted-in-member"
    assert "processed-outside-members" in reasons(d, "info")
    # last substantial transformation: the Singapore refinery (not a member) removed the origin
    lst = variant(share_basis="mass", origin_rule="last_substantial_transformation")
    d = processed_abroad("1", miner="ca").determine("sg-out", profile=lst)
    assert d.qualifying_share == "0" and d.sources[0].rule == "last-transformation-outside"


@pytest.mark.parametrize(
    ("us_value_added", "member_share", "share"),
    [
        # Singapore added 10 000, the US 5 000: 5 000 / 15 000 = 1/3 < 0.50, origin is not conferred
        ("5000", "1/3", "0"),
        # 10 000 each: exactly 1/2 >= 0.50, processing in the US confers origin
        ("10000", "0.5", "1"),
        # 9 999.99 in the US: 9 999.99 / 19 999.99 < 0.50
        ("9999.99", "999999/1999999", "0"),
    ],
)
def test_processing_value_added_split_across_countries(
    us_value_added: str, member_share: str, share: str
) -> None:
    d = processed_abroad(us_value_added).determine("us-out")
    assert d.qualifying_share == share
    messages = [r.message for r in d.reasons if r.code.startswith("source-")]
    assert any(
        f"members added {member_share} of the value its mineral processing added" in m for m in messages
    )


def test_refinery_without_responsible_sourcing_attestation_taints_its_output() -> None:
    h = History()
    h.participant("registrar", ["registrar"], "US")
    h.participant("auditor", ["auditor"], "CA")
    h.participant("ca-miner", ["miner"], "CA")
    h.participant("refiner", ["processor"], "US")
    h.mine("ca-mine", "ca-miner", "CA")
    h.refinery("us-refinery", "refiner", "US", attested=False)
    h.extract("ca-miner", "ca-mine", "ca", 1_000, TS)
    h.ship("ca-miner", "ca", "refiner", "us-refinery", TS, CA_TO_US)
    h.transform("refiner", "us-refinery", [("ca", 1_000)], [("out", 500)], "10", "2026-06-01T10:00:00-05:00")
    d = h.determine("out")
    assert d.qualifying_share == "0" and "attestation-missing" in reasons(d, "fail")


def test_every_reason_is_listed_not_just_the_first() -> None:
    d = merged(100, 900).determine("lot")
    failing = set(reasons(d, "fail"))
    assert {"source-does-not-qualify", "share-below-threshold"} <= failing
    assert "extracted-outside-members" in reasons(d, "info")
