"""Value-traced origin on hand-worked examples (docs/eligibility.md).

Each test names the rule it exercises and works its arithmetic out in comments; expected values are never copied
from the engine's output.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from ledger.domain import events as ev
from ledger.rules.engine import recycled_content, site_credits
from ledger.rules.facts import MissingExchangeRate, MissingValue, OwnershipCycleFound
from tests.engine_support import PROFILES, History, base, reasons, variant

TS = "2026-05-10T10:00:00-04:00"
LATER = "2026-06-01T10:00:00-05:00"


def zone() -> History:
    """ptz-2026's members include CA, US, MX and FI; AU, ID and SG are not members."""
    h = base()
    h.participant("id-miner", ["miner", "processor"], "ID")
    h.participant("fi-miner", ["miner"], "FI")
    h.participant("cam-maker", ["manufacturer"], "MX")
    h.mine("id-mine", "id-miner", "ID")
    h.refinery("id-refinery", "id-miner", "ID")
    h.mine("fi-mine", "fi-miner", "FI")
    h.facility("mx-plant", "cam-maker", "plant", "MX")
    return h


def three_mineral_cathode() -> History:
    """Lithium mined in Canada (USD 6,000), nickel mined and refined in Indonesia (USD 3,000), cobalt mined in
    Finland (USD 1,000), made into NMC cathode material at a plant in Mexico (a member)."""
    h = zone()
    h.extract("ca-miner", "ca-mine", "li", 100_000, TS, "lithium", "6000 USD")
    h.extract("id-miner", "id-mine", "ni-ore", 500_000, TS, "nickel", "3000 USD")
    h.extract("fi-miner", "fi-mine", "co", 50_000, TS, "cobalt", "1000 USD")
    h.ship(
        "id-miner", "ni-ore", "id-miner", "id-refinery", TS, [("ID", False)]
    )  # from its mine to its refinery
    # refining in Indonesia, not a member: USD 2,000 of value added, none of it in members
    h.transform(
        "id-miner", "id-refinery", [("ni-ore", 500_000)], [("ni", 200_000)], "2000", LATER, mineral="nickel"
    )
    for batch, sender, country in (
        ("li", "ca-miner", "CA"),
        ("ni", "id-miner", "ID"),
        ("co", "fi-miner", "FI"),
    ):
        h.ship(sender, batch, "cam-maker", "mx-plant", LATER, [(country, False), ("MX", False)])
    h.transform(
        "cam-maker",
        "mx-plant",
        [("li", 100_000), ("ni", 200_000), ("co", 50_000)],
        [("nmc", 300_000)],
        "50000",
        "2026-07-01T10:00:00-06:00",
        process="cathode",
        mineral="mixed",
        form="cathode_material",
    )
    return h


def test_assembly_in_a_member_does_not_confer_origin_on_the_minerals_it_contains() -> None:
    # Rule: component manufacturing never confers origin; the share is traced source by source, by value.
    # qualifying: lithium (extracted in CA) 6,000 + cobalt (extracted in FI) 1,000 = 7,000
    # total: 6,000 + nickel 3,000 + 1,000 = 10,000; share 7,000 / 10,000 = 0.7 (not 1, as the first engine said)
    d = three_mineral_cathode().determine("nmc", profile="ptz-2026")
    assert (d.share_basis, d.qualifying_total, d.total, d.unit) == ("value", "7000", "10000", "USD")
    assert d.qualifying_share == "0.7" and d.verdict == "eligible"  # 0.7 >= 0.60 in 2026
    by_batch = {s.batch: s for s in d.sources}
    assert (
        by_batch["ni-ore"].rule == "value-added-test-failed" and by_batch["ni-ore"].qualifying_fraction == "0"
    )
    assert by_batch["li"].traced_value == "6000" and by_batch["li"].rule == "extracted-in-member"
    assert "assembly-confers-no-origin" in reasons(d, "info")
    # the plant's USD 50,000 is not mineral processing: the nickel's value-added test sees only Indonesia's 2,000
    assert any("members added 0 of the value its mineral processing added" in m.message for m in d.reasons)
    # from 2028 the zone asks 0.80: 0.7 < 0.80
    h = three_mineral_cathode()
    h.ship(
        "cam-maker",
        "nmc",
        "refiner",
        "us-refinery",
        "2028-01-05T10:00:00-05:00",
        [("MX", False), ("US", False)],
    )
    d = h.determine("nmc", profile="ptz-2026")
    assert d.threshold is not None and d.threshold.share == "0.80" and d.verdict == "not_eligible"


def test_a_source_mined_in_a_member_and_refined_outside_still_qualifies_under_extracted_or_processed() -> (
    None
):
    # Rule: extracted_or_processed: a member extraction qualifies; later handling outside does not take it away.
    h = zone()
    h.participant("sg-refiner", ["processor"], "SG")
    h.refinery("sg-refinery", "sg-refiner", "SG")
    h.extract("ca-miner", "ca-mine", "ore", 1_000, TS, value="100 USD")
    h.ship("ca-miner", "ore", "sg-refiner", "sg-refinery", TS, [("CA", False), ("SG", False)])
    h.transform("sg-refiner", "sg-refinery", [("ore", 1_000)], [("lioh", 200)], "900", LATER)
    d = h.determine("lioh", profile="ptz-2026")
    assert d.qualifying_share == "1" and d.sources[0].rule == "extracted-in-member"
    # the destination of a shipment is not transit: Singapore without customs control changed nothing
    assert "transit-origin-lost" not in reasons(d)
    # last substantial transformation: Singapore's refining was the last mineral processing: origin lost
    d = h.determine("lioh", profile=variant(origin_rule="last_substantial_transformation"))
    assert d.qualifying_share == "0" and d.verdict == "not_eligible"


def mined_outside(us_value_added: str) -> History:
    """Australian ore (USD 1,000) refined in Singapore (USD 10,000 added), then refined further in the US."""
    h = zone()
    h.participant("sg-refiner", ["processor"], "SG")
    h.refinery("sg-refinery", "sg-refiner", "SG")
    h.extract("au-miner", "au-mine", "ore", 1_000_000, TS, value="1000 USD")
    h.ship("au-miner", "ore", "sg-refiner", "sg-refinery", TS, [("AU", False), ("SG", True)])
    h.transform("sg-refiner", "sg-refinery", [("ore", 1_000_000)], [("sg", 300_000)], "10000", LATER)
    h.ship("sg-refiner", "sg", "refiner", "us-refinery", LATER, [("SG", True), ("US", False)])
    h.transform(
        "refiner",
        "us-refinery",
        [("sg", 300_000)],
        [("us", 250_000)],
        us_value_added,
        "2026-07-01T10:00:00-05:00",
    )
    return h


@pytest.mark.parametrize(
    ("us_value_added", "member_share", "verdict"),
    [
        # 10,000 in the US of 20,000 in all: exactly 0.5 >= 0.50: processed in members
        ("10000", "0.5", "eligible"),
        # 9,999.99 of 19,999.99: 999,999 / 1,999,999 < 0.50 (0.4999997...)
        ("9999.99", "999999/1999999", "not_eligible"),
    ],
)
def test_processing_value_added_split_across_countries_per_source(
    us_value_added: str, member_share: str, verdict: str
) -> None:
    # Rule: a source mined outside qualifies when members added at least value_added_share of the value that
    # its own mineral-processing steps added.
    d = mined_outside(us_value_added).determine("us", profile="ptz-2026")
    assert d.verdict == verdict
    assert d.qualifying_share == ("1" if verdict == "eligible" else "0")
    assert d.sources[0].rule == (
        "processed-in-members" if verdict == "eligible" else "value-added-test-failed"
    )
    assert any(f"members added {member_share} of the value" in r.message for r in d.reasons)


def test_value_added_alternative_stops_after_its_date() -> None:
    # Rule: processing.value_added_until: after it, only extraction (or recycling) in members counts.
    ends_2026 = variant(
        processing={**PROFILES.get("ptz-2026").document()["processing"], "value_added_until": "2026-06-30"}
    )
    d = mined_outside("10000").determine("us", profile=ends_2026)  # determining event dated 2026-07-01
    assert d.qualifying_share == "0" and d.sources[0].rule == "value-added-test-expired"


def blended_in_switzerland(in_transit: bool) -> History:
    """Canadian ore (USD 600) and Australian ore (USD 400). Either blended at a warehouse in Switzerland (not a
    member), which is the destination of the shipment, or blended during a transit through Switzerland."""
    h = zone()
    h.participant("ch-trader", ["processor"], "CH")
    h.facility("ch-warehouse", "ch-trader", "warehouse", "CH")
    h.extract("ca-miner", "ca-mine", "ca", 6_000, TS, value="600 USD")
    h.extract("au-miner", "au-mine", "au", 4_000, TS, value="400 USD")
    if in_transit:
        blend_leg = ev.RouteLeg(country="CH", customs_control=True, operations=["unloading", "blending"])
        h.ship(
            "ca-miner",
            "ca",
            "refiner",
            "us-refinery",
            TS,
            [ev.RouteLeg(country="CA", customs_control=False), blend_leg],
        )
        return h
    h.ship("ca-miner", "ca", "ch-trader", "ch-warehouse", TS, [("CA", False), ("CH", False)])
    h.ship("au-miner", "au", "ch-trader", "ch-warehouse", TS, [("AU", False), ("CH", False)])
    h.transform(
        "ch-trader",
        "ch-warehouse",
        [("ca", 6_000), ("au", 4_000)],
        [("blend", 10_000)],
        "0",
        LATER,
        process="blending",
        form="concentrate",
    )
    h.ship("ch-trader", "blend", "refiner", "us-refinery", LATER, [("CH", False), ("US", False)])
    return h


def test_a_blend_at_the_destination_is_not_transit_but_a_blend_in_transit_loses_origin() -> None:
    # Rule: the countries a shipment starts and ends in are not transit; blending is assembly (no conferral).
    # Destination blend: Canadian 600 of 600 + 400 = 0.6, exactly ptz-2026's 2026 threshold.
    d = blended_in_switzerland(in_transit=False).determine("blend", profile="ptz-2026")
    assert (d.qualifying_share, d.verdict) == ("0.6", "eligible")
    assert "transit-origin-lost" not in reasons(d)
    # Transit blend: the Canadian ore crossed Switzerland on its way to the US and was blended there, which the
    # transit rule does not allow: it lost its origin (share 0 of 600).
    d = blended_in_switzerland(in_transit=True).determine("ca", profile="ptz-2026")
    assert (d.qualifying_share, d.verdict) == ("0", "not_eligible")
    assert "transit-origin-lost" in reasons(d, "fail")


@pytest.mark.parametrize(
    ("leg", "kept"),
    [
        (
            ev.RouteLeg(country="SG", customs_control=True, operations=["unloading", "storage", "reloading"]),
            True,
        ),
        (ev.RouteLeg(country="SG", customs_control=True, operations=["labelling", "preservation"]), True),
        (ev.RouteLeg(country="SG", customs_control=True, operations=["repackaging"]), False),
        (ev.RouteLeg(country="SG", customs_control=True, released_for_free_circulation=True), False),
        (ev.RouteLeg(country="SG", customs_control=False, operations=["storage"]), False),
    ],
)
def test_transhipment_under_customs_control(leg: ev.RouteLeg, kept: bool) -> None:
    # Rule: a third-country leg keeps origin only under customs control, not released for free circulation, and
    # with only the allowed operations (unloading, reloading, storage, splitting, labelling, preservation).
    h = zone()
    h.extract("ca-miner", "ca-mine", "ca", 1_000, TS, value="10 USD")
    start = ev.RouteLeg(country="CA", customs_control=False)
    end = ev.RouteLeg(country="US", customs_control=False)
    h.ship("ca-miner", "ca", "refiner", "us-refinery", TS, [start, leg, end])
    d = h.determine("ca", profile="ptz-2026")
    assert d.qualifying_share == ("1" if kept else "0")
    assert ("transit-origin-kept" if kept else "transit-origin-lost") in reasons(d)
    # the US clean-vehicle test has no transit rule: the route never matters there
    assert h.determine("ca", profile="us-cv-2023").qualifying_share == "1"


def two_currencies(rates: list[tuple[str, str, str]], day: str = "2026-05-10") -> History:
    """Canadian ore declared at EUR 1,000 (member), Australian ore at USD 1,000 (not a member), merged."""
    h = zone()
    h.rates(day, rates)
    h.extract("ca-miner", "ca-mine", "ca", 1_000, TS, value="1000 EUR")  # local date 2026-05-10
    h.extract("au-miner", "au-mine", "au", 1_000, TS, value="1000 USD")
    h.ship("ca-miner", "ca", "refiner", "us-refinery", TS, [("CA", False), ("US", False)])
    h.ship("au-miner", "au", "refiner", "us-refinery", TS, [("AU", False), ("US", False)])
    h.merge("refiner", ["ca", "au"], "lot", LATER)
    return h


def test_values_in_two_currencies_convert_exactly_with_the_published_rate() -> None:
    # Rule: values convert into the base currency (USD) at the rate for the declaring event's local date.
    # EUR 1,000 x 1.0834 = USD 1,083.4; share 1,083.4 / (1,083.4 + 1,000) = 10,834 / 20,834 = 5,417 / 10,417
    # (gcd 1), about 0.52 < 0.60
    d = two_currencies([("EUR", "USD", "1.0834")]).determine("lot", profile="ptz-2026")
    assert d.qualifying_share == "5417/10417" and d.total == "2083.4" and d.verdict == "not_eligible"
    # a rate published the other way round serves exactly: USD 1 = EUR 0.8, so EUR 1,000 = USD 1,250;
    # 1,250 / 2,250 = 5/9
    d = two_currencies([("USD", "EUR", "0.8")]).determine("lot", profile="ptz-2026")
    assert d.qualifying_share == "5/9"
    # ptz-2026 lets a rate up to 4 days old stand in: published 2026-05-06 serves 2026-05-10
    assert (
        two_currencies([("EUR", "USD", "1.25")], "2026-05-06").determine("lot", profile="ptz-2026").total
        == "2250"
    )


def test_a_missing_exchange_rate_names_the_pair_and_the_date() -> None:
    # published 2026-05-05: five days before the extraction, one more than ptz-2026 allows
    with pytest.raises(MissingExchangeRate) as caught:
        two_currencies([("EUR", "USD", "1.0834")], "2026-05-05").determine("lot", profile="ptz-2026")
    assert "EUR/USD" in caught.value.detail and "2026-05-10" in caught.value.detail
    assert caught.value.status == 422


def test_a_value_basis_needs_every_critical_source_to_declare_a_value() -> None:
    h = zone()
    h.extract("ca-miner", "ca-mine", "ca", 1_000, TS)
    with pytest.raises(MissingValue, match=r"source ca .* declares no value"):
        h.determine("ca", profile="ptz-2026")


def test_before_the_first_threshold_the_test_is_not_applicable() -> None:
    # Rule: us-cv-2023's first applicable percentage starts on 2023-04-18; the extraction is dated 2023-04-17
    h = zone()
    h.extract("ca-miner", "ca-mine", "ca", 1_000, "2023-04-17T23:30:00-04:00", value="10 USD")
    d = h.determine("ca", profile="us-cv-2023", at="2023-12-31")
    assert d.verdict == "not_applicable" and d.threshold is None
    assert "no-threshold-in-force" in reasons(d, "info")
    # 23:30 in Quebec on 2023-04-18 is 03:30 UTC on 19 April; the local date, 2023-04-18, is in force: 40 %
    h = zone()
    h.extract("ca-miner", "ca-mine", "ca", 1_000, "2023-04-18T23:30:00-04:00", value="10 USD")
    d = h.determine("ca", profile="us-cv-2023", at="2023-12-31")
    assert d.verdict == "eligible" and d.threshold is not None and d.threshold.share == "0.40"


def test_a_batch_without_critical_minerals_is_not_applicable() -> None:
    h = zone()
    h.extract("ca-miner", "ca-mine", "fe", 1_000, TS, mineral="iron", value="10 USD")
    d = h.determine("fe", profile="ptz-2026")
    assert d.verdict == "not_applicable" and "no-critical-mineral" in reasons(d, "info")


def refined_by_held_refiner(
    stakes: list[tuple[str, str, dict[str, str]]], profile: object = "ptz-2026"
) -> str:
    """Canadian ore refined in the US by `refiner`, whose owners are given as (holder, subject, measures)."""
    h = zone()
    h.owner("cn-gov", "government", "CN")
    h.owner("holdco-a", "company", "HK")
    h.owner("holdco-b", "company", "SG")
    for holder, subject, measures in stakes:
        h.stake(holder, subject, **measures)
    h.extract("ca-miner", "ca-mine", "ca", 1_000, TS, value="10 USD")
    h.ship("ca-miner", "ca", "refiner", "us-refinery", TS, [("CA", False), ("US", False)])
    h.transform("refiner", "us-refinery", [("ca", 1_000)], [("lioh", 200)], "5", LATER)
    d = h.determine("lioh", profile=profile)  # type: ignore[arg-type]
    return d.verdict + ("" if not d.foreign_entity_of_concern else ":feoc")


@pytest.mark.parametrize(
    ("stakes", "verdict"),
    [
        # two levels: 0.5 x 0.8 x 0.625 = 0.25, at the threshold
        (
            [
                ("cn-gov", "holdco-a", {"equity": "0.5"}),
                ("holdco-a", "holdco-b", {"equity": "0.8"}),
                ("holdco-b", "refiner", {"equity": "0.625"}),
            ],
            "not_eligible:feoc",
        ),
        # 0.5 x 0.8 x 0.62 = 0.248, just below
        (
            [
                ("cn-gov", "holdco-a", {"equity": "0.5"}),
                ("holdco-a", "holdco-b", {"equity": "0.8"}),
                ("holdco-b", "refiner", {"equity": "0.62"}),
            ],
            "eligible",
        ),
        # summed over chains: 0.1 directly + 0.5 x 0.3 through holdco-a = 0.25
        (
            [
                ("cn-gov", "refiner", {"votes": "0.1"}),
                ("cn-gov", "holdco-a", {"votes": "0.5"}),
                ("holdco-a", "refiner", {"votes": "0.3"}),
            ],
            "not_eligible:feoc",
        ),
        # one of three board seats: 1/3 >= 0.25, exactly, with no rounding of 0.333...
        ([("cn-gov", "refiner", {"board_seats": "1/3"})], "not_eligible:feoc"),
        # each measure on its own: 0.2 equity and 0.2 votes do not add up to 0.4 of anything
        ([("cn-gov", "refiner", {"equity": "0.2", "votes": "0.2"})], "eligible"),
    ],
)
def test_government_holdings_through_owner_chains(
    stakes: list[tuple[str, str, dict[str, str]]], verdict: str
) -> None:
    assert refined_by_held_refiner(stakes) == verdict


def test_control_attribution_treats_a_government_controlled_intermediate_as_the_government() -> None:
    # cn-gov holds 0.5 of holdco-a, which holds 0.3 of the refiner. Proportional: 0.5 x 0.3 = 0.15 < 0.25.
    # Control (control_share 0.5): holdco-a is the government; its 0.3 counts in full: 0.3 >= 0.25.
    stakes = [("cn-gov", "holdco-a", {"equity": "0.5"}), ("holdco-a", "refiner", {"equity": "0.3"})]
    fe = PROFILES.get("ptz-2026").document()["foreign_entity"]
    control = variant(foreign_entity={**fe, "attribution": "control", "control_share": "0.5"})
    assert refined_by_held_refiner(stakes) == "eligible"
    assert refined_by_held_refiner(stakes, control) == "not_eligible:feoc"


def test_an_ownership_cycle_is_refused() -> None:
    with pytest.raises(OwnershipCycleFound, match="holdco-a -> holdco-b -> holdco-a"):
        refined_by_held_refiner(
            [
                ("holdco-a", "holdco-b", {"equity": "0.5"}),
                ("holdco-b", "holdco-a", {"equity": "0.5"}),
                ("holdco-a", "refiner", {"equity": "0.1"}),
            ]
        )


def credit_site(claimed_g: int | None) -> History:
    """A US refinery under the mass-balance credit method (conversion factor 0.5 for refining) takes in Canadian
    ore (600,000 g, USD 6,000, qualifying) and Australian ore (400,000 g, USD 4,000, not a member) and makes
    500,000 g of hydroxide."""
    h = zone()
    h.custody_model(
        "us-refinery", "mass_balance_credit", period="quarter", conversion_factors={"refining": "0.5"}
    )
    h.extract("ca-miner", "ca-mine", "ca", 600_000, TS, value="6000 USD")
    h.extract("au-miner", "au-mine", "au", 400_000, TS, value="4000 USD")
    h.ship("ca-miner", "ca", "refiner", "us-refinery", TS, [("CA", False), ("US", False)])
    h.ship("au-miner", "au", "refiner", "us-refinery", TS, [("AU", False), ("US", False)])
    h.transform(
        "refiner", "us-refinery", [("ca", 600_000), ("au", 400_000)], [("lioh", 500_000)], "100", LATER
    )
    if claimed_g is not None:
        h.claim(
            "refiner", "us-refinery", "lioh", claimed_g, "2026-Q2", "2026-06-02T10:00:00-05:00", "ptz-2026"
        )
    return h


def test_credit_method_credits_and_claims() -> None:
    # Rule: credits = qualifying input mass x conversion factor = 600,000 g x 0.5 = 300,000 g (the Australian
    # input makes none)
    h = credit_site(None)
    from datetime import date

    credits = site_credits(
        h.events, "us-refinery", PROFILES.get("ptz-2026"), date(2026, 4, 1), date(2026, 6, 30)
    )
    assert sorted((batch, grams) for _, batch, grams in credits) == [("au", 0), ("ca", 300_000)]
    # with no claim, nothing made at a credit site qualifies
    assert h.determine("lioh", profile="ptz-2026").qualifying_share == "0"
    # a claim of all 300,000 g: 300,000 of the 500,000 g qualify; by value, 0.6 of each source's traced value:
    # (6,000 + 4,000) x 0.6 = 6,000 of 10,000 = 0.6
    d = credit_site(300_000).determine("lioh", profile="ptz-2026")
    assert (d.qualifying_share, d.qualifying_total, d.verdict) == ("0.6", "6000", "eligible")
    assert "mass-balance-claim" in reasons(d, "pass")
    # a claim under another profile does not count for this one
    assert credit_site(300_000).determine("lioh", profile="us-cv-2023").qualifying_share == "0"


def test_recycled_content_per_mineral_against_the_eu_minimums() -> None:
    # Cobalt: 200,000 g recycled in the US + 800,000 g mined in Finland; lithium: 100,000 g mined in Canada.
    h = zone()
    h.participant("us-recycler", ["recycler"], "US")
    h.facility("us-recycling", "us-recycler", "recycler", "US")
    h.attest("iso-rec", "us-recycling", "iso14001", "certified")
    h.recycle("us-recycler", "us-recycling", [("r-co", 200_000, "cobalt", "2000 USD")], TS)
    h.extract("fi-miner", "fi-mine", "m-co", 800_000, TS, "cobalt", "8000 USD")
    h.extract("ca-miner", "ca-mine", "li", 100_000, TS, "lithium", "1000 USD")
    for batch, sender, country in (
        ("r-co", "us-recycler", "US"),
        ("m-co", "fi-miner", "FI"),
        ("li", "ca-miner", "CA"),
    ):
        h.ship(sender, batch, "cam-maker", "mx-plant", TS, [(country, False), ("MX", False)])
    h.transform(
        "cam-maker",
        "mx-plant",
        [("r-co", 200_000), ("m-co", 800_000), ("li", 100_000)],
        [("cam", 1_100_000)],
        "10",
        LATER,
        process="cathode",
        mineral="mixed",
        form="cathode_material",
    )
    from datetime import date

    # minimums are picked, like thresholds, by the local date of the determining event (the last event on the
    # batch on or before `at`): made in 2026, no minimum was in force yet
    ptz = PROFILES.get("ptz-2026")
    assert recycled_content(h.events, "cam", ptz, date(2032, 1, 1)).all_minimums_met is None
    # shipped on 2032-01-05 (Art. 8(2) in force): cobalt 200,000 / 1,000,000 = 0.2 >= 0.16; lithium 0 < 0.06
    h.ship(
        "cam-maker",
        "cam",
        "refiner",
        "us-refinery",
        "2032-01-05T10:00:00-05:00",
        [("MX", False), ("US", False)],
    )
    content = recycled_content(h.events, "cam", ptz, date(2032, 12, 31))
    by_mineral = {m.mineral: m for m in content.minerals}
    assert (
        by_mineral["cobalt"].recycled_share,
        by_mineral["cobalt"].minimum,
        by_mineral["cobalt"].meets_minimum,
    ) == (
        "0.2",
        "0.16",
        True,
    )
    assert (by_mineral["lithium"].recycled_share, by_mineral["lithium"].meets_minimum) == ("0", False)
    assert content.all_minimums_met is False
    # shipped again on 2037-01-05 (Art. 8(3)): cobalt 0.2 < 0.26
    h.ship(
        "refiner", "cam", "cam-maker", "mx-plant", "2037-01-05T10:00:00-06:00", [("US", False), ("MX", False)]
    )
    later = recycled_content(h.events, "cam", ptz, date(2037, 12, 31))
    assert {m.mineral: m.meets_minimum for m in later.minerals} == {"cobalt": False, "lithium": False}
    # the recycled cobalt is a qualifying source by value: (2,000 recycled in the US + 8,000 mined in Finland +
    # 1,000 lithium from Canada) / 11,000 = 1
    assert h.determine("cam", profile="ptz-2026", at="2026-12-31").qualifying_share == "1"


def test_exact_share_text() -> None:
    assert ev.parse_share("1/3") == Fraction(1, 3) and ev.parse_share("0.25") == Fraction(1, 4)


def test_a_claim_does_not_override_a_missing_site_attestation_or_a_later_failed_transit() -> None:
    # the refinery's RMAP attestation was revoked before it refined: its output fails the ESG gate, claim or not
    h = zone()
    h.revoke("rmap-us-refinery", "2026-01-01")
    h.custody_model("us-refinery", "mass_balance_credit", period="quarter")
    h.extract("ca-miner", "ca-mine", "ca", 1_000, TS, value="10 USD")
    h.ship("ca-miner", "ca", "refiner", "us-refinery", TS, [("CA", False), ("US", False)])
    h.transform("refiner", "us-refinery", [("ca", 1_000)], [("lioh", 500)], "1", LATER)
    h.claim("refiner", "us-refinery", "lioh", 500, "2026-Q2", LATER, "ptz-2026")
    d = h.determine("lioh", profile="ptz-2026")
    assert d.qualifying_share == "0" and "attestation-missing" in reasons(d, "fail")
    # claimed hydroxide (0.6 of the batch, as above) then shipped through Singapore without customs control
    h = credit_site(300_000)
    h.ship(
        "refiner",
        "lioh",
        "cam-maker",
        "mx-plant",
        "2026-06-05T10:00:00-05:00",
        [("US", False), ("SG", False), ("MX", False)],
    )
    d = h.determine("lioh", profile="ptz-2026")
    assert d.qualifying_share == "0" and "transit-origin-lost" in reasons(d, "fail")
