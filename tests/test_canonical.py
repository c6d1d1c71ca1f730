"""RFC 8785 canonical JSON: golden vectors, refusals, and agreement with the independent ``rfc8785`` package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.canonical import MAX_SAFE_INTEGER, canonical_bytes, parse_canonical
from ledger.errors import InvalidInput, NonCanonicalPayload

VECTORS = json.loads((Path(__file__).parent / "assets" / "canonical_vectors.json").read_text())


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_golden_vectors(vector: dict[str, Any]) -> None:
    expected = vector["canonical"].encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    expected_bytes = json.loads(json.dumps(expected)).encode("utf-8")
    assert canonical_bytes(vector["input"]) == expected_bytes
    assert rfc8785.dumps(vector["input"]) == expected_bytes
    assert parse_canonical(expected_bytes) == vector["input"]


@pytest.mark.parametrize("vector", VECTORS["not_canonical"], ids=lambda v: v["name"])
def test_non_canonical_payloads_are_refused(vector: dict[str, str]) -> None:
    with pytest.raises(NonCanonicalPayload, match="not RFC 8785 canonical"):
        parse_canonical(vector["payload"].encode("utf-8"))


@pytest.mark.parametrize("vector", VECTORS["refused"], ids=lambda v: v["name"])
def test_values_outside_the_schema_are_refused(vector: dict[str, str]) -> None:
    with pytest.raises(InvalidInput, match=vector["detail"]):
        parse_canonical(vector["payload"].encode())


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidInput, match="lone surrogate"):
        canonical_bytes({"a": "\ud800"})


def test_deep_nesting_is_refused() -> None:
    value: Any = 1
    for _ in range(40):
        value = [value]
    with pytest.raises(InvalidInput, match="nested deeper"):
        canonical_bytes(value)


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_agrees_with_the_rfc8785_package(value: Any) -> None:
    ours = canonical_bytes(value)
    assert ours == rfc8785.dumps(value)
    assert parse_canonical(ours) == value
