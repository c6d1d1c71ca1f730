"""Trade-agreement origin (USMCA) on hand-worked examples (docs/eligibility.md, part II).

Each test names the rule it exercises and works its arithmetic out in comments or expressions; expected values are
never copied from the engine's output. Scenario builders are shared with tests/test_agreement_origin_api.py, which
replays them into a real ledger and checks that the server and the offline verifier agree.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.domain import events as ev
from ledger.errors import InvalidInput
from ledger.rules.agreement import AgreementError, parse_agreement
from ledger.rules.facts import exact_decimal
from ledger.rules.origin import changes, rvc
from tests.origin_support import (
    LATER,
    TS,
    USMCA,
    Material,
    Trade,
    agreement_variant,
    imported,
    parties,
    reason_codes,
    with_rule,
)

# --- scenarios -------------------------------------------------------------------------------------------------


def cells(parts_value: str) -> Trade:
    """Lithium-ion cells (HS 8507.60) made at a US plant from Mexican lithium ore (originating: wholly obtained in
    MX) and Korean cell parts (HS 8507.90, non-originating, worth ``parts_value`` USD). The cells' transaction
    value is USD 1,000 and their net cost USD 900."""
    t = parties()
    t.mined("mx-miner", "mx-mine", "mx-ore", 1_000, "253090")
    t.ship("mx-miner", "mx-ore", "us-maker", "us-plant", LATER, [("MX", False), ("US", False)])
    imported(t, "parts", "850790", 1_000, form="intermediate")
    t.produce(
        "us-maker",
        "us-plant",
        [Material("mx-ore", 1_000, "300 USD"), Material("parts", 1_000, f"{parts_value} USD")],
        "cells",
        1_500,
        "850760",
        tv="1000 USD",
        nc="900 USD",
    )
    return t


def nickel(alloy_value: str, total_cost: str | None = None) -> Trade:
    """Unwrought nickel (HS 7502.10) refined at a US plant from Mexican nickel ore (HS 2604.00, originating) and a
    Korean unwrought nickel alloy (HS 7502.20, non-originating, worth ``alloy_value`` USD): the alloy is in the
    good's own heading, so it does not make the change of heading that rule 7502 asks. Transaction value USD
    10,000."""
    t = parties()
    t.mined("mx-miner", "mx-mine", "mx-ni-ore", 5_000, "260400", "nickel")
    t.ship("mx-miner", "mx-ni-ore", "us-maker", "us-plant", LATER, [("MX", False), ("US", False)])
    imported(t, "alloy", "750220", 1_000, form="alloy")
    t.produce(
        "us-maker",
        "us-plant",
        [Material("mx-ni-ore", 5_000, "2000 USD"), Material("alloy", 1_000, f"{alloy_value} USD")],
        "ni-metal",
        3_000,
        "750210",
        tv="10000 USD",
        total_cost=f"{total_cost} USD" if total_cost else None,
        process="refining",
        mineral="nickel",
        form="metal",
    )
    return t


def cells_from_cathode(parts_value: str) -> Trade:
    """Cells (HS 8507.60) made in the US from Korean cathode active material (HS 2841.90, worth USD 3,000) and
    Korean cell parts (HS 8507.90, worth ``parts_value``); transaction value USD 10,000, no net cost declared."""
    t = parties()
    imported(t, "cam", "284190", 2_000, form="cathode_material")
    imported(t, "kr-parts", "850790", 500)
    t.produce(
        "us-maker",
        "us-plant",
        [Material("cam", 2_000, "3000 USD"), Material("kr-parts", 500, f"{parts_value} USD")],
        "cells",
        2_000,
        "850760",
        tv="10000 USD",
    )
    return t


def accumulated(route: list[ev.RouteLeg] | None = None) -> Trade:
    """Mexican lithium ore (HS 2530.90) refined in Canada into lithium hydroxide (HS 2825.20), shipped to the US
    (through ``route``), made there into cathode material (HS 2841.90) with Mexican cobalt ore (HS 2605.00)."""
    t = parties()
    t.mined("mx-miner", "mx-mine", "mx-ore", 2_000, "253090")
    t.mined("mx-miner", "mx-mine", "mx-co", 1_000, "260500", "cobalt")
    t.ship("mx-miner", "mx-ore", "ca-refiner", "ca-refinery", TS, [("MX", False), ("CA", False)])
    t.produce(
        "ca-refiner",
        "ca-refinery",
        [Material("mx-ore", 2_000, "800 USD")],
        "lioh",
        1_000,
        "282520",
        tv="2000 USD",
        process="refining",
        ts=TS,
        mineral="lithium",
        form="hydroxide",
    )
    legs = route or [
        ev.RouteLeg(country="CA", customs_control=False),
        ev.RouteLeg(country="US", customs_control=False),
    ]
    t.ship("ca-refiner", "lioh", "us-maker", "us-plant", LATER, legs)
    t.ship("mx-miner", "mx-co", "us-maker", "us-plant", LATER, [("MX", False), ("US", False)])
    t.produce(
        "us-maker",
        "us-plant",
        [Material("lioh", 1_000, "2000 USD"), Material("mx-co", 1_000, "500 USD")],
        "cam",
        1_800,
        "284190",
        tv="6000 USD",
        nc="5000 USD",
        process="cathode",
        form="cathode_material",
    )
    return t


def through_panama(customs_control: bool) -> Trade:
    """accumulated(), the hydroxide shipped from Canada to the US through Panama (not a party), stored there."""
    return accumulated(
        [
            ev.RouteLeg(country="CA", customs_control=False),
            ev.RouteLeg(
                country="PA",
                customs_control=customs_control,
                operations=["unloading", "storage", "reloading"],
            ),
            ev.RouteLeg(country="US", customs_control=False),
        ]
    )


# --- regional value content (Art. 4.5) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "tv_rvc", "tv_ok", "nc_rvc", "nc_ok"),
    [
        # VNM 400: TV (1,000 - 400) / 1,000 = 0.6 >= 0.60, exactly at the threshold; NC (900 - 400) / 900 = 5/9
        ("400", Fraction(1000 - 400, 1000), True, Fraction(900 - 400, 900), True),
        # VNM 401: TV 599/1,000 = 0.599 < 0.60; NC 499/900 = 0.5544... >= 0.50
        ("401", Fraction(1000 - 401, 1000), False, Fraction(900 - 401, 900), True),
        # VNM 450: TV 550/1,000 = 0.55 < 0.60, fails; NC 450/900 = 0.5 >= 0.50 exactly, passes
        ("450", Fraction(1000 - 450, 1000), False, Fraction(900 - 450, 900), True),
        # VNM 451: TV 0.549 < 0.60; NC 449/900 = 0.4988... < 0.50: fails under both methods
        ("451", Fraction(1000 - 451, 1000), False, Fraction(900 - 451, 900), False),
    ],
)
def test_regional_value_content_under_both_methods_on_either_side_of_the_threshold(
    parts: str, tv_rvc: Fraction, tv_ok: bool, nc_rvc: Fraction, nc_ok: bool
) -> None:
    # Rule 8507: a change of heading, or an RVC of 60 % (TV) or 50 % (NC). The Korean parts (8507.90) share the
    # cells' heading 85.07, so they do not change heading; their value (at least 400) is far above de minimis
    # 0.10 x 1,000 = 100, so only the RVC alternative can work. The Mexican ore originates: it is not in VNM.
    t = cells(parts)
    by_tv = t.origin("cells", method="transaction_value")
    by_nc = t.origin("cells", method="net_cost")
    figures = {r.method: r for r in by_tv.rvc}
    assert figures["transaction_value"].vnm == parts and figures["transaction_value"].rvc == exact_decimal(
        tv_rvc
    )
    assert figures["net_cost"].rvc == exact_decimal(nc_rvc) and figures["net_cost"].base == "900"
    assert {r.method: r.rvc for r in by_nc.rvc} == {m: r.rvc for m, r in figures.items()}  # shown under both
    assert by_tv.verdict == ("originating" if tv_ok else "not_originating")
    assert by_nc.verdict == ("originating" if nc_ok else "not_originating")
    assert (by_tv.method, by_nc.method) == ("transaction_value", "net_cost")
    for d, ok in ((by_tv, tv_ok), (by_nc, nc_ok)):
        assert d.criterion == ("B" if ok else None)
        if not ok:
            failing = [r.code for r in d.not_originating]
            assert {"tariff-change-not-met", "de-minimis-exceeded", "rvc-below"} <= set(failing)


def test_one_good_fails_under_transaction_value_and_passes_under_net_cost() -> None:
    # Parts worth 450: TV (1,000 - 450) / 1,000 = 0.55 < 0.60; NC (900 - 450) / 900 = 0.5 >= 0.50
    t = cells("450")
    failed, passed = t.origin("cells", method="transaction_value"), t.origin("cells", method="net_cost")
    assert failed.verdict == "not_originating" and passed.verdict == "originating" and passed.criterion == "B"
    below = next(r for r in failed.not_originating if r.code == "rvc-below")
    assert "(TV 1000 - VNM 450) / TV 1000 = 0.55" in below.message
    assert any(r.code == "rvc-met" and "= 0.5 " in r.message for r in passed.reasons)
    materials = {m.batch: m for m in passed.materials}
    assert materials["mx-ore"].originating and materials["mx-ore"].criterion == "A"
    assert not materials["parts"].originating and materials["parts"].code == "produced-outside-parties"
    assert materials["parts"].tariff_change == {"heading": False}  # 85.07 -> 85.07: no change of heading


def test_a_rule_that_requires_net_cost_uses_it_whatever_the_claimant_asks() -> None:
    # A variant rule for 8507: no change alternative; RVC 50 % under net cost only (the claimant cannot choose).
    agreement = with_rule("8507", [{"rvc": {"net_cost": "0.50"}}])
    d = cells("450").origin("cells", method="transaction_value", agreement=agreement)
    # NC (900 - 450) / 900 = 0.5 >= 0.50
    assert (d.method, d.rvc_method) == ("transaction_value", "net_cost")
    assert d.verdict == "originating" and d.criterion == "B"
    assert "rvc-method-required" in reason_codes(d, "info")


# --- tariff shift and de minimis (Annex 4-B, Art. 4.12) -----------------------------------------------------


def test_a_material_that_changes_heading_and_one_that_does_not() -> None:
    # Rule 8507, alternative 1: a change to heading 85.07 from any other heading. Cathode active material 2841.90
    # comes from heading 28.41: it changes. Cell parts 8507.90 are in heading 85.07 already: they do not. Parts
    # worth 50 <= 0.10 x TV 10,000 = 1,000, so de minimis forgives them: criterion B.
    d = cells_from_cathode("50").origin("cells")
    materials = {m.batch: m for m in d.materials}
    assert materials["cam"].tariff_change == {"heading": True}
    assert materials["kr-parts"].tariff_change == {"heading": False}
    assert d.verdict == "originating" and d.criterion == "B"
    assert d.de_minimis is not None and (d.de_minimis.limit, d.de_minimis.non_shifting_value) == (
        "1000",
        "50",
    )
    # both non-originating materials still count in VNM: 3,000 + 50 = 3,050
    assert {r.method: r.vnm for r in d.rvc}["transaction_value"] == str(3000 + 50)
    # Parts worth 1,500 > 1,000: alternative 1 fails; alternative 2, RVC (10,000 - 4,500) / 10,000 = 0.55 < 0.60
    # under TV, and no net cost is declared: not originating, every reason listed
    d = cells_from_cathode("1500").origin("cells")
    assert d.verdict == "not_originating"
    assert [r.code for r in d.not_originating] == [
        "tariff-change-not-met",
        "de-minimis-exceeded",
        "rvc-below",
    ]
    assert exact_decimal(Fraction(10000 - 4500, 10000)) in d.not_originating[2].message
    # under the net-cost method (not declared) the reason says so
    d = cells_from_cathode("1500").origin("cells", method="net_cost")
    assert "rvc-value-missing" in [r.code for r in d.not_originating]


@pytest.mark.parametrize(
    ("alloy", "within"),
    [
        ("1000", True),  # 1,000 <= 0.10 x 10,000 = 1,000: exactly at de minimis
        ("1000.01", False),  # 1,000.01 > 1,000: just above
    ],
)
def test_de_minimis_exactly_at_ten_percent_and_just_above(alloy: str, within: bool) -> None:
    # Rule 7502: a change of heading only. The Korean alloy (7502.20) is in the good's heading 75.02, so it does
    # not change; it is not in the good's subheading 7502.10 either, so criterion D cannot help.
    d = nickel(alloy).origin("ni-metal")
    assert d.de_minimis is not None
    assert (d.de_minimis.limit, d.de_minimis.non_shifting_value, d.de_minimis.within) == (
        "1000",
        alloy,
        within,
    )
    assert d.verdict == ("originating" if within else "not_originating")
    assert d.criterion == ("B" if within else None)
    assert ("de-minimis-met" if within else "de-minimis-exceeded") in reason_codes(d)
    # the forgiven value still counts in VNM: RVC under TV is (10,000 - 1,000) / 10,000 = 0.9
    tv = {r.method: r for r in d.rvc}["transaction_value"]
    assert tv.vnm == alloy and (not within or tv.rvc == "0.9")


def test_de_minimis_against_total_cost_where_the_rule_says_so() -> None:
    # The same nickel (alloy worth 1,000), the rule measuring de minimis against total cost instead of TV.
    agreement = with_rule("7502", [{"shift": "heading"}], de_minimis_basis="total_cost")
    d = nickel("1000").origin("ni-metal", agreement=agreement)
    assert d.verdict == "not_originating" and "de-minimis-unavailable" in reason_codes(
        d, "fail"
    )  # none declared
    # total cost USD 9,000: 0.10 x 9,000 = 900 < 1,000, exceeded (against TV it was 1,000 <= 1,000)
    d = nickel("1000", total_cost="9000").origin("ni-metal", agreement=agreement)
    assert d.de_minimis is not None and d.de_minimis.basis == "total_cost"
    assert (d.de_minimis.limit, d.de_minimis.within) == (exact_decimal(Fraction(10, 100) * 9000), False)
    assert d.verdict == "not_originating" and "de-minimis-exceeded" in reason_codes(d, "fail")
    # total cost USD 10,000: 0.10 x 10,000 = 1,000 >= 1,000, met
    assert nickel("1000", total_cost="10000").origin("ni-metal", agreement=agreement).criterion == "B"


def test_criterion_d_when_the_material_is_in_the_goods_own_subheading() -> None:
    # A variant rule for 8507: a change of heading only. Korean cells (8507.60) assembled into cells (8507.60):
    # the same subheading, so no change is possible; criterion D asks RVC >= 60 % (TV): (1,000 - 300) / 1,000 =
    # 0.7 >= 0.60, so the good originates under D. With the material worth 450: 0.55 < 0.60, not originating.
    agreement = with_rule("8507", [{"shift": "heading"}])
    for value, verdict, criterion in (("300", "originating", "D"), ("450", "not_originating", None)):
        t = parties()
        t.mined("mx-miner", "mx-mine", "mx-ore", 1_000, "253090")
        t.ship("mx-miner", "mx-ore", "us-maker", "us-plant", LATER, [("MX", False), ("US", False)])
        imported(t, "kr-cells", "850760", 1_000, form="cell")
        t.produce(
            "us-maker",
            "us-plant",
            [Material("mx-ore", 1_000, "100 USD"), Material("kr-cells", 1_000, f"{value} USD")],
            "cells",
            1_500,
            "850760",
            tv="1000 USD",
        )
        d = t.origin("cells", agreement=agreement)
        assert (d.verdict, d.criterion) == (verdict, criterion), value


def test_tariff_change_levels_and_exceptions() -> None:
    # chapter: 2 digits, heading: 4, subheading: 6
    assert changes("282520", "850760", "chapter", []) is True
    assert changes("850790", "850760", "heading", []) is False
    assert changes("850790", "850760", "subheading", []) is True
    assert changes("284190", "850760", "heading", ["2841"]) is False  # excepted heading
    assert changes(None, "850760", "chapter", []) is False  # an unclassified material cannot show a change


# --- wholly obtained, originating materials, accumulation (Art. 4.2, 4.3, 4.11) -------------------------------


def test_accumulation_across_two_parties() -> None:
    # Mexican ore is wholly obtained in MX (A). Canada refines it into hydroxide: made exclusively from wholly
    # obtained materials of the parties, so A too (the MX origin counts in CA). The US makes cathode material from
    # the Canadian hydroxide and Mexican cobalt ore: A again, with materials from two other parties.
    t = accumulated()
    assert (t.origin("mx-ore").criterion, t.origin("lioh").criterion) == ("A", "A")
    d = t.origin("cam")
    assert d.verdict == "originating" and d.criterion == "A"
    assert {m.batch: m.originating for m in d.materials} == {"lioh": True, "mx-co": True}
    # VNM is 0, so the RVC is (6,000 - 0) / 6,000 = 1 and (5,000 - 0) / 5,000 = 1
    assert [(r.method, r.vnm, r.rvc) for r in d.rvc] == [
        ("transaction_value", "0", "1"),
        ("net_cost", "0", "1"),
    ]
    # Without accumulation, the MX ore does not originate in CA: the hydroxide must change subheading (2530.90 ->
    # 2825.20: it does), criterion B; in the US neither material originates there, and both change subheading
    # (2825.20, 2605.00 -> 2841.90): B.
    alone = agreement_variant(accumulation=False)
    assert t.origin("lioh", agreement=alone).criterion == "B"
    d = t.origin("cam", agreement=alone)
    assert d.criterion == "B" and {m.code for m in d.materials} == {"not-accumulated"}


def test_a_good_made_from_originating_materials_that_are_not_wholly_obtained_is_criterion_c() -> None:
    # Chilean ore (not a party) refined in Canada: the hydroxide changes subheading (2530.90 -> 2825.20), B. The
    # US cathode material made from it and Mexican cobalt ore uses only originating materials: C.
    t2 = parties()
    t2.mined("cl-miner", "cl-mine", "cl-ore", 2_000, "253090")
    t2.mined("mx-miner", "mx-mine", "mx-co", 1_000, "260500", "cobalt")
    t2.ship("cl-miner", "cl-ore", "ca-refiner", "ca-refinery", TS, [("CL", False), ("CA", False)])
    t2.produce(
        "ca-refiner",
        "ca-refinery",
        [Material("cl-ore", 2_000, "800 USD")],
        "lioh",
        1_000,
        "282520",
        tv="2000 USD",
        process="refining",
        ts=TS,
        mineral="lithium",
        form="hydroxide",
    )
    t2.ship("ca-refiner", "lioh", "us-maker", "us-plant", LATER, [("CA", False), ("US", False)])
    t2.ship("mx-miner", "mx-co", "us-maker", "us-plant", LATER, [("MX", False), ("US", False)])
    t2.produce(
        "us-maker",
        "us-plant",
        [Material("lioh", 1_000, "2000 USD"), Material("mx-co", 1_000, "500 USD")],
        "cam",
        1_800,
        "284190",
        tv="6000 USD",
        process="cathode",
        form="cathode_material",
    )
    assert t2.origin("cl-ore").verdict == "not_originating"
    assert t2.origin("cl-ore").not_originating[0].code == "extracted-outside-parties"
    assert t2.origin("lioh").criterion == "B"
    assert t2.origin("cam").criterion == "C"


# --- transit (Art. 4.18) ------------------------------------------------------------------------------------


def test_transit_through_a_non_party_under_customs_control_and_not() -> None:
    kept = through_panama(True).origin("lioh")
    assert kept.verdict == "originating" and kept.criterion == "A"
    lost = through_panama(False).origin("lioh")
    assert lost.verdict == "not_originating"
    assert [r.code for r in lost.not_originating] == ["transit-origin-lost"]
    assert "PA (without customs control)" in lost.not_originating[0].message
    # the cathode material made from the hydroxide that lost its status: the hydroxide is now a non-originating
    # material; it changes subheading (2825.20 -> 2841.90), so the cathode still originates, under B, not A
    cam = through_panama(False).origin("cam")
    assert cam.criterion == "B"
    assert {m.batch: m.code for m in cam.materials}["lioh"] == "transit-origin-lost"


def test_transit_with_an_operation_the_rule_does_not_allow_loses_origin() -> None:
    t = accumulated(
        [
            ev.RouteLeg(country="CA", customs_control=False),
            ev.RouteLeg(country="PA", customs_control=True, operations=["repackaging"]),
            ev.RouteLeg(country="US", customs_control=False),
        ]
    )
    d = t.origin("lioh")
    assert d.verdict == "not_originating" and "repackaging" in d.not_originating[0].message


# --- what a determination must refuse or say --------------------------------------------------------------------


def test_a_good_made_with_non_originating_materials_needs_an_hs_code_and_a_rule() -> None:
    t = parties()
    imported(t, "kr-ni", "283324", 1_000, mineral="nickel", form="sulfate")
    t.produce(
        "us-maker",
        "us-plant",
        [Material("kr-ni", 1_000, "100 USD")],
        "unclassified",
        900,
        None,
        tv="1000 USD",
    )
    d = t.origin("unclassified")
    assert d.verdict == "not_originating" and [r.code for r in d.not_originating] == ["no-hs-code"]
    t = parties()
    imported(t, "kr-ni", "283324", 1_000, mineral="nickel", form="sulfate")
    # 9999.99 is not covered by usmca's battery-chain rules (chapter 99 has none)
    t.produce(
        "us-maker", "us-plant", [Material("kr-ni", 1_000, "100 USD")], "odd", 900, "970600", tv="1000 USD"
    )
    d = t.origin("odd")
    assert [r.code for r in d.not_originating] == ["no-product-rule"]


def test_a_missing_material_value_is_named() -> None:
    t = parties()
    imported(t, "kr-ni", "283324", 1_000, mineral="nickel", form="sulfate")
    t.produce("us-maker", "us-plant", [Material("kr-ni", 1_000)], "cells", 900, "850760", tv="1000 USD")
    d = t.origin("cells")
    # alternative 1 (change of heading 28.33 -> 85.07) is met without any value: B
    assert d.verdict == "originating" and d.criterion == "B"
    assert "material-value-missing" in reason_codes(d, "fail")
    assert {r.method: r.vnm for r in d.rvc} == {"transaction_value": None, "net_cost": None}


def test_a_merge_of_originating_and_non_originating_goods_does_not_originate() -> None:
    t = parties()
    t.mined("mx-miner", "mx-mine", "mx-ore", 1_000, "253090")
    t.mined("cl-miner", "cl-mine", "cl-ore", 1_000, "253090")
    t.ship("mx-miner", "mx-ore", "ca-refiner", "ca-refinery", LATER, [("MX", False), ("CA", False)])
    t.ship("cl-miner", "cl-ore", "ca-refiner", "ca-refinery", LATER, [("CL", False), ("CA", False)])
    t.merge("ca-refiner", ["mx-ore", "cl-ore"], "blend", LATER)
    d = t.origin("blend")
    assert d.verdict == "not_originating" and d.not_originating[0].code == "commingled-with-non-originating"
    assert d.hs6 == "253090"


def test_a_good_decided_before_the_agreement_entered_into_force_does_not_originate() -> None:
    t = parties()
    t.add(
        ev.Extract(
            actor="mx-miner",
            timestamp="2020-06-30T23:00:00-05:00",  # local date 2020-06-30, the day before USMCA applied
            facility="mx-mine",
            batch=ev.NewBatch(id="early", mineral="lithium", form="ore", mass_g=10, hs6="253090"),
        )
    )
    d = t.origin("early")
    assert d.verdict == "not_originating" and [r.code for r in d.not_originating] == [
        "agreement-not-in-force"
    ]


def test_usmca_profile_is_valid_data_and_refuses_bad_rules() -> None:
    assert USMCA.party_set == frozenset({"US", "MX", "CA"}) and USMCA.de_minimis_share == Fraction(1, 10)
    assert USMCA.rule_for("850760") is not None and USMCA.rule_for("850760").hs == "8507"  # type: ignore[union-attr]
    assert USMCA.rule_for("282520").hs == "2825"  # type: ignore[union-attr]
    document = USMCA.document()
    document["rules"] = [{"hs": "8507", "description": "x", "alternatives": [{}]}]
    with pytest.raises(AgreementError, match="requires nothing"):
        parse_agreement(document, "test")
    document["rules"] = [{"hs": "850", "description": "x", "alternatives": [{"shift": "heading"}]}]
    with pytest.raises(AgreementError, match="hs"):
        parse_agreement(document, "test")
    document = USMCA.document()
    document["parties"] = ["US", "XX"]
    with pytest.raises(AgreementError, match="parties"):
        parse_agreement(document, "test")


def test_hs_codes_are_format_checked_on_events() -> None:
    def extract(hs6: str) -> ev.Event:
        return ev.decode_event(
            {
                "kind": "extract",
                "actor": "m",
                "timestamp": TS,
                "facility": "f",
                "batch": {"id": "b", "mineral": "lithium", "form": "ore", "mass_g": 1, "hs6": hs6},
            }
        )

    assert isinstance(extract("253090"), ev.Extract)
    with pytest.raises(InvalidInput, match="hs6"):
        extract("2530.90")
    with pytest.raises(InvalidInput, match="chapter 77 does not exist"):
        extract("770000")
    with pytest.raises(InvalidInput, match="chapter 98"):
        extract("980000")


def test_declared_origin_values_are_redacted_for_those_who_did_not_declare_them() -> None:
    from ledger.services.access import redact_payload

    transform = cells("450").events[-1].event
    payload = ev.encode_event(transform)
    shown = redact_payload("transform", payload)
    assert shown["outputs"][0]["transaction_value"] == {"redacted": True}
    assert shown["outputs"][0]["net_cost"] == {"redacted": True}
    assert [i["value"] for i in shown["inputs"]] == [{"redacted": True}] * 2
    assert shown["outputs"][0]["hs6"] == "850760"  # the classification is not a commercial value


hs6_codes = st.from_regex(r"^(0[1-9]|[1-6][0-9]|7[0-68-9]|8[0-9]|9[0-7])[0-9]{4}$", fullmatch=True)


@given(material=hs6_codes, good=hs6_codes)
def test_a_change_of_chapter_is_a_change_of_heading_is_a_change_of_subheading(
    material: str, good: str
) -> None:
    # A coarser change implies every finer one (without exceptions): chapter => heading => subheading.
    chapter, heading, subheading = (
        changes(material, good, level, []) for level in ("chapter", "heading", "subheading")
    )
    assert (not chapter or heading) and (not heading or subheading)
    assert subheading == (material != good)


@given(
    base=st.integers(min_value=1, max_value=10**12),
    vnm=st.integers(min_value=0, max_value=10**12),
    minimum=st.fractions(min_value=0, max_value=1),
)
def test_rvc_is_exact_and_compared_without_rounding(base: int, vnm: int, minimum: Fraction) -> None:
    # (B - V) / B >= m  <=>  (B - V) * m.denominator >= m.numerator * B, by cross-multiplying integers
    value = rvc(Fraction(base), Fraction(vnm))
    assert value == Fraction(base - vnm, base)
    assert (value >= minimum) == ((base - vnm) * minimum.denominator >= minimum.numerator * base)
