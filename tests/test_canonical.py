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


_json_values = st.recursive(
    st.none() | st.integers(-5, 5) | st.text(alphabet='[]{}"\\ab', max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet='[{"\\k', max_size=4), children, max_size=3)
    ),
    max_leaves=60,
)


@given(_json_values, st.sampled_from([0, 1, 2, 5, 31, 32]))
@settings(max_examples=400, deadline=None)
def test_the_fast_depth_check_agrees_with_the_exact_depth(value: Any, limit: int) -> None:
    """``check_structure`` asks :func:`_deeper_than` first and counts levels exactly only for a refusal; both must
    agree on every document, brackets and escaped quotes inside strings included."""
    from ledger.domain.canonical import _deeper_than, json_depth

    data = json.dumps(value).encode()
    assert _deeper_than(data, limit) == (json_depth(data) > limit)


def _nesting(value: Any) -> int:
    """Levels of lists and dicts in a decoded document, counted on the Python values (the reference)."""
    if isinstance(value, list):
        return 1 + max((_nesting(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_nesting(item) for item in value.values()), default=0)
    return 0


@given(_json_values, st.sampled_from([0, 1, 2, 5, 32]), st.booleans())
@settings(max_examples=400, deadline=None)
def test_depth_checks_agree_with_the_decoded_document(value: Any, limit: int, padded: bool) -> None:
    """Both depth checks against levels counted on the decoded values, for short texts and for texts over 4 kB
    (the long path counts brackets after stripping everything else, escaped backslashes and quotes first)."""
    from ledger.domain.canonical import _deeper_than, json_depth

    document = {"pad": '\\"[{' * 1500, "value": value} if padded else value
    data = json.dumps(document).encode()
    assert json_depth(data) == _nesting(document)
    assert _deeper_than(data, limit) == (_nesting(document) > limit)


def test_the_fast_depth_check_on_a_hostile_document() -> None:
    from ledger.domain.canonical import MAX_DEPTH, _deeper_than

    assert _deeper_than(b"[" * 1_000_000 + b"]" * 1_000_000, MAX_DEPTH)
    assert not _deeper_than(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, MAX_DEPTH)  # exactly the limit: accepted
    assert _deeper_than(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), MAX_DEPTH)
    assert not _deeper_than(b'["' + b"[" * 100 + b'"]', MAX_DEPTH)  # brackets in a string do not nest


@given(st.text(alphabet='[]{}"\\a', max_size=40), st.sampled_from([0, 1, 2, 5, 32]))
@settings(max_examples=400, deadline=None)
def test_the_fast_depth_check_is_never_wrong_on_malformed_text(text: str, limit: int) -> None:
    from ledger.domain.canonical import _deeper_than, json_depth

    data = text.encode()
    if not _deeper_than(data, limit):  # "surely not deeper" must be right; "maybe" is then counted exactly
        assert json_depth(data) <= limit


# --- the quick path for request bodies of a known type --------------------------------------------------------


def _batch_types() -> tuple[Any, Any]:
    import msgspec

    from api.controllers.registry import BatchSubmission

    return msgspec.json.Decoder(BatchSubmission), msgspec.json.Encoder()


_any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_signature = st.tuples(_any_text, _any_text).map(lambda t: {"keyid": t[0], "sig": t[1]})
_envelope = st.tuples(_any_text, _any_text, st.lists(_signature, max_size=3)).map(
    lambda t: {"payloadType": t[0], "payload": t[1], "signatures": t[2]}  # the keys in the type's order
)
_bodies = st.fixed_dictionaries({"envelopes": st.lists(_envelope, max_size=4)})


@settings(max_examples=400, deadline=None)
@given(
    _bodies, st.integers(min_value=0, max_value=10_000), st.sampled_from(["as written", "spliced", "spaced"])
)
def test_a_body_on_the_quick_path_is_one_the_strict_check_accepts(body: Any, cut: int, how: str) -> None:
    """Whenever is_compact_form takes a body, loads_strict accepts it and reads the same value, whatever the text
    (control characters, astral characters, quotes and backslashes) and whatever is done to the bytes: a copy of a
    key spliced in, whitespace added. Compact bodies without suspect escapes take the quick path."""
    import msgspec

    from ledger.domain.canonical import is_compact_form, loads_strict

    decoder, encoder = _batch_types()
    data = msgspec.json.encode(body)
    if how == "spliced":  # a copy of the first envelope's first key and value, again, where an object opens
        opening = data.find(b'{"payloadType"', 1)
        if opening > 0:
            end = data.index(b',"payload":', opening)
            data = data[: opening + 1] + data[opening + 1 : end] + b"," + data[opening + 1 :]
    elif how == "spaced":
        position = cut % (len(data) + 1)
        data = data[:position] + b" " + data[position:]
    quick = is_compact_form(data, decoder, encoder)
    if quick:
        assert loads_strict(data, "body") == json.loads(data)
        assert msgspec.json.encode(decoder.decode(data)) == data
    if how == "as written" and b"\\" not in data:
        assert quick  # the usual body: no escapes at all
    if how == "spliced" and b'{"payloadType"' in data[1:]:
        assert not quick  # a key twice
        with pytest.raises(InvalidInput, match="twice"):
            loads_strict(data, "body")


def test_the_quick_path_leaves_suspect_escapes_to_the_strict_check() -> None:
    """An escape that may stand for a control character or a lone surrogate is never taken on the quick path."""
    from ledger.domain.canonical import is_compact_form, loads_strict

    decoder, encoder = _batch_types()
    for text, refused in (
        (b'{"envelopes":[{"payloadType":"a\\u0001","payload":"","signatures":[]}]}', "control character"),
        (b'{"envelopes":[{"payloadType":"\\b","payload":"","signatures":[]}]}', "control character"),
        (b'{"envelopes":[{"payloadType":"\\ud83d\\ude00","payload":"","signatures":[]}]}', None),
    ):
        assert not is_compact_form(text, decoder, encoder)
        if refused is None:
            assert loads_strict(text, "body")["envelopes"][0]["payloadType"] == "\U0001f600"
        else:
            with pytest.raises(InvalidInput, match=refused):
                loads_strict(text, "body")
    # compact, of the type, but not as msgspec writes it: "\/" for "/", a key order of its own
    for other in (
        b'{"envelopes":[{"payloadType":"a\\/b","payload":"","signatures":[]}]}',
        b'{"envelopes":[{"payload":"","payloadType":"a","signatures":[]}]}',
    ):
        assert not is_compact_form(other, decoder, encoder)
        loads_strict(other, "body")  # accepted, the strict way
