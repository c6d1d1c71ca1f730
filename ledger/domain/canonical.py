"""Canonical JSON per RFC 8785 (JCS), restricted to the ledger's schema.

The schema allows no floating-point numbers: numbers are integers within the I-JSON safe range
(RFC 7493 section 2.2, so that RFC 8785's ECMAScript number serialisation of them is the plain decimal
form), and decimals travel as strings. Strings must be valid Unicode (no lone surrogates).

Encoding goes through msgspec, whose string escaping is exactly RFC 8785 section 3.2.2.2 (short escapes for
``\\b \\t \\n \\f \\r``, ``\\u00xx`` with lowercase hex for other control characters, everything else as UTF-8).
msgspec sorts keys by code point; RFC 8785 section 3.2.3 sorts by UTF-16 code units. The two orders agree
unless a key holds a character outside the Basic Multilingual Plane, so only then do we sort ourselves.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ledger.errors import InvalidInput, NonCanonicalPayload

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer that an IEEE 754 double holds exactly (RFC 7493 section 2.2)."""

MAX_DEPTH = 32
"""Most levels of nested objects and arrays in a document, the document itself included (no event comes close)."""

_encoder = msgspec.json.Encoder(order="sorted")
_insertion_order_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def _utf16_key(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _check(value: Any, path: str, depth: int) -> bool:
    """Validate ``value`` for canonical encoding; return True if some key is outside the BMP.

    ``depth`` counts the containers around ``value``; the document itself may hold at most MAX_DEPTH levels of
    nested objects and arrays, itself included."""
    if depth >= MAX_DEPTH and isinstance(value, dict | list | tuple):
        raise InvalidInput(f"{path or 'document'} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        _check_string(value, path)
        return False
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise InvalidInput(
                f"{path or 'number'} is {value}, outside the exact integer range ±{MAX_SAFE_INTEGER}; "
                "send large quantities as decimal strings"
            )
        return False
    if isinstance(value, float):
        raise InvalidInput(
            f"{path or 'number'} is a floating-point number ({value!r}); the ledger accepts only integers, "
            'and decimals as strings (e.g. "12.50")'
        )
    if isinstance(value, dict):
        astral = False
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{path or 'object'} has a non-string key {key!r}")
            _check_string(key, f"{path}.{key}")
            if any(ord(ch) > 0xFFFF for ch in key):
                astral = True
            astral = _check(item, f"{path}.{key}" if path else key, depth + 1) or astral
        return astral
    if isinstance(value, list | tuple):
        astral = False
        for index, item in enumerate(value):
            astral = _check(item, f"{path}[{index}]", depth + 1) or astral
        return astral
    raise InvalidInput(f"{path or 'value'} has a type JSON cannot carry: {type(value).__name__}")


def _check_string(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(
            f"{path or 'string'} contains a lone surrogate, which is not valid Unicode"
        ) from None


def _sorted_utf16(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_utf16(value[key]) for key in sorted(value, key=_utf16_key)}
    if isinstance(value, list | tuple):
        return [_sorted_utf16(item) for item in value]
    return value


def canonical_bytes(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value built from dicts, lists, str, int, bool, None.

    Raises :class:`InvalidInput` for floats, integers outside the safe range, lone surrogates, over-deep nesting.
    """
    if _check(value, "", 0):
        return _insertion_order_encoder.encode(_sorted_utf16(value))
    return _encoder.encode(value)


def parse_canonical(payload: bytes) -> Any:
    """Decode ``payload`` and insist that it is already in canonical form; return the decoded value.

    A payload that is valid JSON but not canonical (whitespace, key order, escapes, duplicate keys, number
    spelling) is refused with :class:`NonCanonicalPayload`, because the event id is the hash of these exact bytes
    and two spellings of one event must not get two ids.
    """
    try:
        value = _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"payload is not valid JSON: {exc}") from None
    expected = canonical_bytes(value)
    if expected != payload:
        position = next(
            (i for i, (a, b) in enumerate(zip(expected, payload, strict=False)) if a != b),
            min(len(expected), len(payload)),
        )
        raise NonCanonicalPayload(
            "payload is not RFC 8785 canonical JSON: it first differs from its canonical form at byte "
            f"{position} (canonical form has no whitespace, sorted keys, minimal escapes, no duplicate keys)",
            byte_offset=position,
        )
    return value
