"""The fast paths of eligibility give exactly what the plain ones gave.

Pure parts (property tests): the engine's exact decimals with GMP rationals, an event's local date read without
the regular expression, and the summary's exact sums against ``parse_share`` and ``Fraction``. Storage parts (both
databases): the lineage query, the decoded events kept between determinations, the registry indices searched only
beyond the last look, and recorded determinations left out of the evidence.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from gmpy2 import mpq
from hypothesis import given
from hypothesis import strategies as st

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.errors import InvalidInput, NotFound
from ledger.rules.engine import _exact, _ExactSum
from ledger.rules.facts import exact_decimal, local_date_of
from tests import test_origin as cases
from tests.support import World
from tests.test_origin_api import KEYS, replay


def _reference_decimal(value: Fraction) -> str:
    """``exact_decimal`` as it was written with Fraction only (the first release's)."""
    denominator = value.denominator
    if denominator == 1:
        return str(value.numerator)
    twos = fives = 0
    while denominator % 2 == 0:
        denominator //= 2
        twos += 1
    while denominator % 5 == 0:
        denominator //= 5
        fives += 1
    if denominator != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = value * 10**places
    return format(Decimal(scaled.numerator).scaleb(-places), "f")


fractions = st.builds(
    Fraction,
    st.integers(min_value=-(10**30), max_value=10**30),
    st.one_of(
        st.integers(min_value=1, max_value=10**12),
        st.builds(
            lambda a, b, c: 2**a * 5**b * c, st.integers(0, 40), st.integers(0, 40), st.sampled_from([1, 3])
        ),
    ),
)


@given(fractions)
def test_exact_decimal_is_the_same_for_a_fraction_and_a_gmp_rational(value: Fraction) -> None:
    expected = _reference_decimal(value)
    assert exact_decimal(value) == expected
    assert exact_decimal(mpq(value.numerator, value.denominator)) == expected


offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(lambda m: timedelta(minutes=m))


@given(
    st.datetimes(min_value=datetime(1969, 12, 30), max_value=datetime(9999, 12, 31)),
    offsets,
    st.booleans(),
    st.booleans(),
)
def test_an_events_local_date_is_what_parse_timestamp_gives(
    moment: datetime, offset: timedelta, zulu: bool, fraction: bool
) -> None:
    """Every year, the edges of the allowed range included: the same date, or the same refusal."""
    aware = moment.replace(tzinfo=UTC if zulu else timezone(offset))
    text = aware.isoformat(timespec="microseconds" if fraction else "seconds")
    if zulu:
        text = text.replace("+00:00", "Z")
    try:
        expected: date | str = ev.parse_timestamp(text).date()
    except InvalidInput as error:
        expected = str(error)
    try:
        found: date | str = local_date_of(text)
    except InvalidInput as error:
        found = str(error)
    assert found == expected


def test_a_malformed_timestamp_is_refused_as_parse_timestamp_refuses_it() -> None:
    for text in ["2026-13-01T00:00:00Z", "2026-01-01T25:00:00Z", "2026-01-01T00:00:00", "yesterday"]:
        with pytest.raises(InvalidInput) as expected:
            ev.parse_timestamp(text)
        with pytest.raises(InvalidInput) as found:
            local_date_of(text)
        assert str(found.value) == str(expected.value)


@given(st.lists(fractions.map(abs), max_size=30))
def test_the_summarys_exact_sums_equal_fraction_sums(values: list[Fraction]) -> None:
    written = [_reference_decimal(v) for v in values]
    total = _ExactSum()
    for text in written:
        total.add(_exact(text))
    assert total.total() == sum((ev.parse_share(text) for text in written), Fraction(0))


async def test_evidence_is_read_once_then_kept_and_grows_with_the_registry(world: World) -> None:
    """Worked example of docs/eligibility.md section 4 (three-mineral cathode): a second question reuses the
    decoded events; an attestation revoked afterwards (a registry event appended later) is in the next evidence."""
    await replay(world, cases.three_mineral_cathode(), [])
    eligibility = world.services.eligibility
    profile = await eligibility.profile("ptz-2026")
    first = await eligibility.evidence("nmc", profile)
    again = await eligibility.evidence("nmc", profile)
    assert [e.log_index for e in again.events] == [e.log_index for e in first.events]
    assert all(a is b for a, b in zip(again.events, first.events, strict=True))  # kept, not decoded again
    assert first.rows == {}  # envelopes only for bundles
    revoke = ev.RevokeAttestation(
        actor="auditor",
        timestamp="2026-07-02T10:00:00Z",
        attestation="irma-fi-mine",
        effective_date="2026-01-01",
        reason="audit finding",
    )
    (result,) = await world.services.submitter.submit([envelope_for(revoke, KEYS["auditor"])], submitter=None)
    assert result.status == "accepted", result.error
    later = await eligibility.evidence("nmc", profile)
    assert [e.log_index for e in later.events] == sorted(
        [e.log_index for e in first.events] + [result.log_index]
    )
    bundled = await eligibility.evidence("nmc", profile, envelopes=True)
    assert sorted(bundled.rows) == [e.log_index for e in later.events]


async def test_a_recorded_determination_is_not_evidence_and_an_unknown_batch_is_not_found(
    world: World,
) -> None:
    await replay(world, cases.three_mineral_cathode(), [])
    eligibility = world.services.eligibility
    profile = await eligibility.profile("ptz-2026")
    before = await eligibility.evidence("nmc", profile)
    recorded = await eligibility.record("nmc", "ptz-2026", "2026-12-31", requested_by="registrar")
    after = await eligibility.evidence("nmc", profile)
    assert recorded.log_index not in {e.log_index for e in after.events}
    assert [e.log_index for e in after.events] == [e.log_index for e in before.events]
    with pytest.raises(NotFound, match="'no-such-batch'"):
        await eligibility.evidence("no-such-batch", profile)
