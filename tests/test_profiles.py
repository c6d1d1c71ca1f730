"""Rule profiles: the shipped files load, hash stably, and a malformed file fails loudly naming file and field."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from ledger.rules.profiles import PROFILE_DIR, ProfileError, Profiles, load_profile

EU27 = {
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
}  # fmt: skip


def test_shipped_profiles() -> None:
    profiles = Profiles()
    ptz = profiles.get(None)
    assert ptz.id == "ptz-2026"
    assert set(ptz.members) == {"US", "MX", "CA", "JP"} | EU27
    cv = profiles.get("us-cv-2023")
    # 40 % in 2023 rising by ten points a year to 80 % from 2027
    expected = {2023: "0.40", 2024: "0.50", 2025: "0.60", 2026: "0.70", 2027: "0.80", 2031: "0.80"}
    for year, share in expected.items():
        threshold = cv.threshold_on(date(year, 6, 30))
        assert threshold is not None and threshold.share == share
    assert cv.threshold_on(date(2022, 12, 31)) is None
    assert set(cv.recycling_members) == {"US", "CA", "MX"}
    assert "JP" in cv.members and "DE" not in cv.members
    # the statute has no ESG gate and no transit rule; it weighs by value and starts on 2023-04-18
    assert cv.attestations == [] and cv.transit is None and cv.share_basis == "value"
    assert cv.threshold_on(date(2023, 4, 17)) is None
    assert cv.foreign_entity_from("component_manufacturing") == date(2024, 1, 1)
    assert cv.foreign_entity_from("processing") == date(2025, 1, 1)
    assert ptz.share_basis == "value" and ptz.origin_rule == "extracted_or_processed"
    assert {m.mineral for m in ptz.recycled_content} == {"cobalt", "lithium", "nickel"}
    for profile in (ptz, cv):
        assert profile.references, f"{profile.id} names no public source for its numbers"


def test_content_hash_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    original = load_profile(PROFILE_DIR / "ptz-2026.toml")
    text = (PROFILE_DIR / "ptz-2026.toml").read_text()
    (tmp_path / "ptz-2026.toml").write_text("# a comment\n" + text.replace(" = ", "   =   "))
    assert load_profile(tmp_path / "ptz-2026.toml").content_hash == original.content_hash
    (tmp_path / "ptz-2026.toml").write_text(text.replace('share = "0.60"', 'share = "0.61"'))
    assert load_profile(tmp_path / "ptz-2026.toml").content_hash != original.content_hash


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda t: t.replace('share = "0.60"', "share = 0.6"),
            "Expected `str`, got `float` - at `$.thresholds[0].share`",
        ),
        (lambda t: t.replace('"US", "MX"', '"US", "XX"', 1), "field `members` lists 'XX'"),
        (
            lambda t: t.replace('control_threshold = "0.25"', 'control_threshold = "1.25"'),
            "field `foreign_entity.control_threshold` is 1.25",
        ),
        (
            lambda t: t.replace('from = "2027-01-01"', 'from = "2025-01-01"'),
            "field `thresholds` must be in increasing order",
        ),
        (lambda t: t.replace('min_level = "irma_50"', 'min_level = "irma_60"'), "names level 'irma_60'"),
        (lambda t: "surprise = 1\n" + t, "unknown field `surprise`"),
        (lambda t: t.replace('share_basis = "value"', 'share_basis = "weight"'), "`$.share_basis`"),
        (
            lambda t: t.replace('origin_rule = "extracted_or_processed"', 'origin_rule = "mined_only"'),
            "`$.origin_rule`",
        ),
        (
            lambda t: t.replace('"lithium", "cobalt"', '"lithium", "gold"', 1),
            "field `critical_minerals` lists 'gold'",
        ),
        (lambda t: t.replace('"beneficiation", ', "", 1), "does not class beneficiation"),
        (
            lambda t: t.replace('assembly = ["precursor"', 'assembly = ["refining", "precursor"'),
            "classes refining both as mineral processing and as assembly",
        ),
        (
            lambda t: t.replace('"labelling", "preservation"]', '"labelling", "smelting"]'),
            "field `transit.allowed_operations` lists 'smelting'",
        ),
        (lambda t: t.replace('base = "USD"', 'base = "XYZ"'), "field `currency.base` is 'XYZ'"),
        (lambda t: t.replace('rate_date = "event"', 'rate_date = "yesterday"'), "`$.currency.rate_date`"),
        (
            lambda t: t.replace("max_rate_age_days = 4", "max_rate_age_days = 40"),
            "`$.currency.max_rate_age_days`",
        ),
        (
            lambda t: t.replace('mineral = "cobalt"', 'mineral = "copper"', 1),
            "field `recycled_content[0].mineral` is 'copper'",
        ),
        (
            lambda t: t.replace('share = "0.16"', 'share = "1.16"'),
            "field `recycled_content[0].share` is 1.16",
        ),
        (
            lambda t: t.replace('"government", "government_official"', '"government", "monarch"'),
            "field `foreign_entity.treated_as_government` lists 'monarch'",
        ),
        (
            lambda t: t.replace('attribution = "proportional"', 'attribution = "control"'),
            "field `foreign_entity.control_share` is required",
        ),
        (
            lambda t: t.replace(
                'attribution = "proportional"',
                'attribution = "proportional"\neffective_dates = { mining = "2026-01-01" }',
            ),
            "field `foreign_entity.effective_dates` lists 'mining'",
        ),
        (
            lambda t: t.replace(
                'value_added_share = "0.50"', 'value_added_share = "0.50"\nvalue_added_until = "2026-02-30"'
            ),
            "field `processing.value_added_until` is '2026-02-30'",
        ),
        (lambda t: t.replace("version = 2", "version = 0"), "`$.version`"),
        (lambda t: t.replace('control_threshold = "0.25"', 'control_threshold = "1/3"'), None),
        (lambda t: t.replace("[processing]", "[processing"), "not valid TOML"),
    ],
)
def test_malformed_profile_fails_loudly_naming_file_and_field(
    tmp_path: Path, edit: object, needle: str | None
) -> None:
    shutil.copy(PROFILE_DIR / "us-cv-2023.toml", tmp_path / "us-cv-2023.toml")
    text = (PROFILE_DIR / "ptz-2026.toml").read_text()
    (tmp_path / "ptz-2026.toml").write_text(edit(text))  # type: ignore[operator]
    if needle is None:  # a valid edit: loads
        Profiles(tmp_path)
        return
    with pytest.raises(ProfileError) as caught:
        Profiles(tmp_path)
    assert "ptz-2026.toml" in caught.value.detail and needle in caught.value.detail, caught.value.detail
