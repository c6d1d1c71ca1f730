"""Canonical JSON per RFC 8785 (JCS), restricted to the ledger's schema.

The schema allows no floating-point numbers: numbers are integers within the I-JSON safe range
(RFC 7493 section 2.2, so that RFC 8785's ECMAScript number serialisation of them is the plain decimal
form), and decimals travel as strings. Strings must be valid Unicode (no lone surrogates).

Encoding goes through msgspec, whose string escaping is exactly RFC 8785 section 3.2.2.2 (short escapes for
``\\b \\t \\n \\f \\r``, ``\\u00xx`` with lowercase hex for other control characters, everything else as UTF-8).
msgspec sorts keys by code point; RFC 8785 section 3.2.3 sorts by UTF-16 code units. The two orders agree
unless a key holds a character outside the Basic Multilingual Plane, so only then do we sort ourselves.

Strict decoding (``check_structure``, ``loads_strict``) checks raw JSON text before any recursive decoder sees it:
UTF-8, at most MAX_DEPTH levels, no key twice in an object, no control characters in strings. The API's edge runs
it on every request body, and event payloads go through ``check_structure`` first.
"""

from __future__ import annotations

import json
import operator
import re
from itertools import accumulate, count
from typing import Any

import msgspec

from ledger.errors import InvalidInput, NonCanonicalPayload

MAX_SAFE_INTEGER = 2**53 - 1
"""Largest integer that an IEEE 754 double holds exactly (RFC 7493 section 2.2)."""

MAX_DEPTH = 32
"""Most levels of nested objects and arrays in a document, the document itself included (no event comes close)."""

MAX_INT_DIGITS = 100
"""Most digits in a JSON number that strict decoding reads (the ledger's own numbers have at most 16)."""

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


# --- strict JSON: checks on raw bytes before any recursive decoder sees them ---------------------------------

_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_SUSPECT_ESCAPE = re.compile(rb"\\(?:[bf]|u00[01]|u[dD][89a-fA-F])")
"""A string escape that may stand for a control character or a surrogate (or a backslash before such text)."""
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
"""C0 control characters except tab, line feed and carriage return."""
_SURROGATE = re.compile("[\ud800-\udfff]")


_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in b'[]{}"')


def _structure(data: bytes) -> bytes:
    """The brackets and the quotes that open or close strings of JSON text, in order: escaped backslashes, then
    escaped quotes are dropped (where there is a backslash at all), so that every quote left opens or closes a
    string, then one C-level pass keeps brackets and quotes. What follows works on the few thousand characters
    that pass, not on the whole text (a megabyte of request body takes about a millisecond)."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    return data.translate(None, _NOT_BRACKETS_OR_QUOTES)


def _brackets_outside_strings(structure: bytes) -> bytes:
    """The brackets of :func:`_structure` that are not inside strings (an unterminated string runs to the end)."""
    return b"".join(structure.split(b'"')[::2])


def json_depth(data: bytes) -> int:
    """Most levels of nested arrays and objects in JSON text (0 for a scalar), counted without recursion.

    Strings are skipped first, so brackets inside them do not count (an unterminated one runs to the end).
    Malformed text gets some number; the decoder that runs afterwards refuses it. Linear time, in C loops."""
    brackets = _brackets_outside_strings(_structure(data))
    if not brackets:
        return 0
    # each opening bracket adds 2, each closing one 0; minus one per bracket seen, that is the running depth
    depth: int = max(map(operator.sub, accumulate(brackets.translate(_STEPS)), count(1)))
    return depth


_OPENING_CLOSING = bytes.maketrans(b"[{]}", b"(())")


def _deeper_than(data: bytes, limit: int) -> bool:
    """False only if JSON text surely nests arrays and objects at most ``limit`` levels deep (as :func:`json_depth`
    counts them); True means it may be deeper, and :func:`json_depth` counts exactly (it is exact for balanced
    text). Faster than counting on ordinary documents: at most ``limit`` C-level passes over the brackets, each
    removing the innermost pairs."""
    # too few brackets to nest deeper, whatever they are (counted in the whole of a small text, which is quicker)
    if len(data) <= 4096 and data.count(b"[") + data.count(b"{") <= limit:
        return False
    structure = _structure(data)
    if structure.count(b"[") + structure.count(b"{") <= limit:
        return False
    brackets = _brackets_outside_strings(structure).translate(_OPENING_CLOSING)
    for _ in range(limit):
        if not brackets:
            return False
        shorter = brackets.replace(b"()", b"")
        if len(shorter) == len(brackets):
            return True  # unbalanced: maybe, for json_depth to count exactly
        brackets = shorter
    return bool(brackets)


def check_structure(data: bytes, what: str) -> str:
    """Refuse JSON text that is not UTF-8 or is nested deeper than MAX_DEPTH; return it decoded.

    Runs in linear time with no recursion, so that a hostile document (1,000 levels of ``[``, say) is refused
    before a recursive decoder could overflow the stack on it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{what} is not valid UTF-8: byte {exc.start} (0x{data[exc.start]:02x}) cannot start or continue a "
            "character; send JSON encoded as UTF-8"
        ) from None
    if not _deeper_than(data, MAX_DEPTH):
        return text
    depth = json_depth(data)
    if depth > MAX_DEPTH:
        raise InvalidInput(
            f"{what} is nested deeper than {MAX_DEPTH} levels ({depth} levels of arrays and objects); "
            f"flatten it: at most {MAX_DEPTH} levels are accepted"
        )
    return text


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number has {len(text.lstrip('-'))} digits; at most {MAX_INT_DIGITS} are read")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _strict_loads(text: str) -> Any:
    """``json.loads`` refusing duplicate keys, NaN and Infinity and overlong numbers; depth must be checked first."""
    return json.loads(
        text, object_pairs_hook=_unique_pairs, parse_int=_bounded_int, parse_constant=_no_constant
    )


def duplicate_key(data: bytes) -> str | None:
    """The first key that some object of this JSON text repeats, if any (None also for text that is not JSON)."""
    try:
        _strict_loads(check_structure(data, "document"))
    except _DuplicateKey as exc:
        return exc.key
    except (InvalidInput, ValueError):
        return None
    return None


def loads_strict(data: bytes, what: str) -> Any:
    """Decode JSON text strictly: UTF-8, at most MAX_DEPTH levels, no key twice in an object, no NaN or
    Infinity, no number of more than MAX_INT_DIGITS digits, and no string (key or value) holding a lone surrogate
    or a control character other than tab, line feed and carriage return. Every refusal is an
    :class:`InvalidInput` that names the problem and, where there is one, the field."""
    text = check_structure(data, what)
    try:
        value = _strict_loads(text)
    except _DuplicateKey as exc:
        raise InvalidInput(
            f"{what} has the key {exc.key!r} twice in one object; send each key once"
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except ValueError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None
    if _SUSPECT_ESCAPE.search(data):
        check_strings(value, what)
    return value


def is_compact_form(data: bytes, decoder: msgspec.json.Decoder[Any], encoder: msgspec.json.Encoder) -> bool:
    """Whether ``data`` is, byte for byte, the compact JSON ``encoder`` writes for the value ``decoder`` reads from
    it: then :func:`loads_strict` accepts it, and this costs a third as much (a quick path for request bodies that
    clients write the usual way; False only means "check strictly").

    Only for a ``decoder`` whose type holds strings, lists and structs, nested less than :data:`MAX_DEPTH`: the
    type bounds the depth and leaves no number to bound. msgspec refuses text that is not UTF-8, a raw control
    character and a lone surrogate escape; writing the value again gives each key once, so equal bytes had no key
    twice; and an escape that may stand for a control character or a surrogate (which the strict check looks at
    closely) sends the text to the strict check."""
    if _SUSPECT_ESCAPE.search(data):
        return False
    try:
        value = decoder.decode(data)
    except (msgspec.MsgspecError, ValueError):  # not JSON, not of the type, not UTF-8 (UnicodeDecodeError)
        return False
    return encoder.encode(value) == data


def check_text(value: str, field: str) -> None:
    """Refuse a string that holds a control character other than tab, line feed and carriage return (a NUL, say:
    PostgreSQL cannot store it and no text needs it) or a lone surrogate (not Unicode), naming the field."""
    control = _CONTROL.search(value)
    if control is not None:
        raise InvalidInput(
            f"{field} contains the control character U+{ord(control.group()):04X} at position "
            f"{control.start()}; remove it (text may hold tab, line feed and carriage return, no other control "
            "characters)"
        )
    surrogate = _SURROGATE.search(value)
    if surrogate is not None:
        raise InvalidInput(
            f"{field} contains a lone surrogate (U+{ord(surrogate.group()):04X}) at position "
            f"{surrogate.start()}, which is not valid Unicode; send the character it was meant to be"
        )


def check_strings(value: Any, what: str) -> None:
    """:func:`check_text` on every key and string in a decoded JSON document (iterative, so depth is no issue).

    Fields are named by their path (``participant.name``, ``outputs[2].id``); ``what`` names the whole document
    and prefixes the path."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            check_text(item, _field(what, path))
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str):
                    check_text(key, f"a key in {_field(what, path)}")
                stack.append((child, f"{path}.{key}" if path else str(key)))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))


def _field(what: str, path: str) -> str:
    if not path:
        return what
    return f"{what} field {path}" if what else path


def parse_canonical(payload: bytes) -> Any:
    """Decode ``payload`` and insist that it is already in canonical form; return the decoded value.

    A payload that is valid JSON but not canonical (whitespace, key order, escapes, duplicate keys, number
    spelling) is refused with :class:`NonCanonicalPayload`, because the event id is the hash of these exact bytes
    and two spellings of one event must not get two ids.
    """
    check_structure(payload, "payload")
    try:
        value = _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidInput(f"payload is not valid JSON: {exc}") from None
    expected = canonical_bytes(value)
    if expected != payload:
        repeated = duplicate_key(payload)
        if repeated is not None:
            raise NonCanonicalPayload(
                f"payload is not RFC 8785 canonical JSON: it has the key {repeated!r} twice in one object; "
                "a JSON object names each key once (the last one would silently win)",
                duplicate_key=repeated,
            )
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
