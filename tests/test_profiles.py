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
        (lambda t: t + "\nsurprise = 1\n", "unknown field `surprise`"),
        (lambda t: t.replace("[processing]", "[processing"), "not valid TOML"),
    ],
)
def test_malformed_profile_fails_loudly_naming_file_and_field(
    tmp_path: Path, edit: object, needle: str
) -> None:
    shutil.copy(PROFILE_DIR / "us-cv-2023.toml", tmp_path / "us-cv-2023.toml")
    text = (PROFILE_DIR / "ptz-2026.toml").read_text()
    (tmp_path / "ptz-2026.toml").write_text(edit(text))  # type: ignore[operator]
    with pytest.raises(ProfileError) as caught:
        Profiles(tmp_path)
    assert "ptz-2026.toml" in caught.value.detail and needle in caught.value.detail, caught.value.detail
