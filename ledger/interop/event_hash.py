"""The GS1 EPCIS event hash (CBV 2.0, section 8.9 "Event identifiers"): a content hash that identifies an EPCIS
event whatever its serialisation (XML or JSON-LD, field order, CURIEs or bare CBV words).

The event's fields are written out in the canonical property order as ``key=value`` pairs with no separator
(the *pre-hash string*), normalised (times in UTC at millisecond precision, numbers without trailing zeros, CBV
words as their Web URIs, extension names as ``{namespace}local``), and hashed with SHA-256; the result is the
RFC 6920 ``ni`` URI ``ni:///sha-256;<hex>?ver=CBV2.0``. ``eventID``, ``recordTime``, ``type`` and
``errorDeclaration`` are left out, so an event's hash can be its own ``eventID``.

This covers the standard fields EPCIS 2.0 events carry except sensor data (``sensorElementList``), which the
ledger neither writes nor reads: an event with one is refused rather than hashed wrongly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

CBV_WEB = "https://ref.gs1.org/cbv/"
HASH_VERSION = "CBV2.0"
NI_PREFIX = "ni:///sha-256;"

QUANTITY_LISTS = ("quantityList", "childQuantityList", "inputQuantityList")
"""Quantity lists before ``outputEPCList`` in the canonical order (``outputQuantityList`` comes after it)."""
IGNORED = frozenset({"eventID", "recordTime", "type", "errorDeclaration", "@context"})
STANDARD = frozenset(
    {
        "eventTime",
        "eventTimeZoneOffset",
        "certificationInfo",
        "parentID",
        "epcList",
        "inputEPCList",
        "childEPCs",
        "quantityList",
        "childQuantityList",
        "inputQuantityList",
        "outputEPCList",
        "outputQuantityList",
        "action",
        "transformationID",
        "bizStep",
        "disposition",
        "persistentDisposition",
        "readPoint",
        "bizLocation",
        "bizTransactionList",
        "sourceList",
        "destinationList",
        "ilmd",
    }
)
VOCABULARY_PREFIX = {"bizStep": "BizStep-", "disposition": "Disp-", "source": "SDT-", "destination": "SDT-"}
"""CBV Web URI prefixes of the words JSON-LD writes bare (``shipping`` for ``https://ref.gs1.org/cbv/BizStep-
shipping``); bizTransaction types use ``BTT-``."""
OLD_CBV_URNS = (
    ("urn:epcglobal:cbv:bizstep:", "BizStep-"),
    ("urn:epcglobal:cbv:disp:", "Disp-"),
    ("urn:epcglobal:cbv:btt:", "BTT-"),
    ("urn:epcglobal:cbv:sdt:", "SDT-"),
    ("urn:epcglobal:cbv:er:", "ER-"),
)


class EventHashError(ValueError):
    """The event has a part this implementation does not hash (sensor data) or is not an EPCIS event."""


def event_hash(event: Mapping[str, Any], namespaces: Mapping[str, str]) -> str:
    """The GS1 event hash of one EPCIS 2.0 JSON-LD event: ``ni:///sha-256;<hex>?ver=CBV2.0``. ``namespaces``
    maps the document's context prefixes (``ledger``) to their namespace IRIs, for extension fields."""
    digest = hashlib.sha256(pre_hash_string(event, namespaces).encode("utf-8")).hexdigest()
    return f"{NI_PREFIX}{digest}?ver={HASH_VERSION}"


def pre_hash_string(event: Mapping[str, Any], namespaces: Mapping[str, str]) -> str:
    """The normalised concatenation that :func:`event_hash` hashes (useful to see why two hashes differ)."""
    kind = event.get("type")
    if not isinstance(kind, str) or not kind.endswith("Event"):
        raise EventHashError(f"not an EPCIS event: its type is {kind!r}")
    if "sensorElementList" in event:
        raise EventHashError("sensorElementList is not supported by this event hash implementation")
    parts = [f"eventType={kind}"]
    for name in ("eventTime", "eventTimeZoneOffset", "certificationInfo", "parentID"):
        parts.append(_simple(name, event.get(name)))
    parts.append(_epcs("epcList", event.get("epcList")))
    parts.append(_epcs("inputEPCList", event.get("inputEPCList")))
    parts.append(_epcs("childEPCs", event.get("childEPCs")))
    for name in QUANTITY_LISTS:
        parts.append(_quantities(name, event.get(name)))
    parts.append(_epcs("outputEPCList", event.get("outputEPCList")))
    parts.append(_quantities("outputQuantityList", event.get("outputQuantityList")))
    for name in ("action", "transformationID", "bizStep", "disposition"):
        parts.append(_simple(name, event.get(name)))
    parts.append(_persistent(event.get("persistentDisposition")))
    for name in ("readPoint", "bizLocation"):
        parts.append(_location(name, event.get(name), namespaces))
    # The reference implementation (GS1's epcis-event-hash-generator, which decides what a conforming hash is)
    # writes the typed lists (bizTransactionList, sourceList, destinationList) with ilmd and the extension fields
    # as one group in lexical order, each element as its type then its identifier; this follows it.
    trailing = [
        _typed_list("bizTransactionList", "bizTransaction", "BTT-", event.get("bizTransactionList")),
        _typed_list("sourceList", "source", "SDT-", event.get("sourceList")),
        _typed_list("destinationList", "destination", "SDT-", event.get("destinationList")),
    ]
    ilmd = event.get("ilmd")
    if isinstance(ilmd, Mapping) and ilmd:
        trailing.append("ilmd" + _extensions(ilmd, namespaces))
    rest = {k: v for k, v in event.items() if k not in STANDARD and k not in IGNORED}
    trailing.extend(_extension_entries(rest, namespaces))
    parts.extend(sorted(t for t in trailing if t))
    return "".join(parts)


# --- value normalisation (rules 5 to 9, 14 to 16) ---------------------------------------------------------------


def normalise_time(text: str) -> str:
    """Rule 8 and 9: UTC, ``Z``, millisecond precision (rounded)."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00")).astimezone(UTC)
    millis = round(moment.microsecond, -3)
    moment = moment.replace(microsecond=0) + timedelta(microseconds=millis)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def normalise_number(text: str) -> str:
    """Rule 6: a number without trailing zeros (``1.0`` is ``1``, ``24000.50`` is ``24000.5``); anything that
    is not a finite number is left as it is."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    if not number.is_finite():
        return text
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


def _web_vocabulary(text: str) -> str:
    """Rule 14: old ``urn:epcglobal:cbv:`` URNs as their CBV Web URIs."""
    for urn, prefix in OLD_CBV_URNS:
        if text.startswith(urn):
            return CBV_WEB + prefix + text[len(urn) :]
    return text


def _value(key: str, raw: Any) -> str:
    # a JSON boolean is written True or False, as the reference implementation writes it
    text = ("True" if raw else "False") if isinstance(raw, bool) else str(raw).strip()
    lowered = key.lower()
    if "time" in lowered and "offset" not in lowered:
        try:
            return normalise_time(text)
        except ValueError:
            return text
    return normalise_number(_web_vocabulary(text))


def _bare(prefix: str, raw: Any) -> str:
    """Rule 16: a CBV word written bare in JSON-LD (``shipping``) as its Web URI."""
    text = str(raw).strip()
    if text and ":" not in text:
        return CBV_WEB + prefix + text
    return _web_vocabulary(text)


def _simple(name: str, raw: Any) -> str:
    if raw is None or raw == "":
        return ""
    if name in VOCABULARY_PREFIX:
        return f"{name}={_bare(VOCABULARY_PREFIX[name], raw)}"
    return f"{name}={_value(name, raw)}"


def _epcs(name: str, items: Any) -> str:
    if not items:
        return ""
    return name + "".join(sorted(f"epc={_value('epc', epc)}" for epc in items))


def _quantities(name: str, items: Any) -> str:
    if not items:
        return ""
    elements = []
    for item in items:
        text = "".join(
            f"{field}={_value(field, item[field])}"
            for field in ("epcClass", "quantity", "uom")
            if field in item
        )
        elements.append("quantityElement" + text)
    return name + "".join(sorted(elements))


def _persistent(raw: Any) -> str:
    if not isinstance(raw, Mapping):
        return ""
    text = "".join(
        f"{field}={_bare('Disp-', value)}"
        for field in ("set", "unset")
        for value in sorted(raw.get(field, []))
    )
    return "persistentDisposition" + text if text else ""


def _location(name: str, raw: Any, namespaces: Mapping[str, str]) -> str:
    """Rule 21: a readPoint or bizLocation's id, then its own extension fields."""
    if not isinstance(raw, Mapping) or not raw:
        return ""
    text = f"id={_value('id', raw['id'])}" if "id" in raw else ""
    rest = {k: v for k, v in raw.items() if k != "id"}
    return name + text + (_extensions(rest, namespaces) if rest else "")


def _typed_list(name: str, element: str, prefix: str, items: Any) -> str:
    """Rule 13: each element's type and identifier, then the elements in lexical order."""
    if not items:
        return ""
    entries = []
    for item in items:
        text = f"type={_bare(prefix, item['type'])}" if item.get("type") else ""
        entries.append(text + f"{element}={_value(element, item.get(element, ''))}")
    return name + "".join(sorted(entries))


def _expand(key: str, namespaces: Mapping[str, str]) -> str:
    """Rule 19 and 20: an extension field's name as ``{namespace}local``."""
    prefix, sep, local = key.partition(":")
    if sep and prefix in namespaces:
        return "{" + namespaces[prefix] + "}" + local
    return key


def _extensions(fields: Mapping[str, Any], namespaces: Mapping[str, str]) -> str:
    """Rule 19 to 21: each field as ``{ns}name=value`` (or ``{ns}name`` followed by its children), a list as
    the field repeated once per item, and the resulting strings in lexical order at every level."""
    return "".join(sorted(_extension_entries(fields, namespaces)))


def _extension_entries(fields: Mapping[str, Any], namespaces: Mapping[str, str]) -> list[str]:
    entries: list[str] = []
    for key, raw in fields.items():
        name = _expand(key, namespaces)
        for item in raw if isinstance(raw, list) else [raw]:
            if isinstance(item, Mapping):
                entries.append(name + _extensions(item, namespaces))
            else:
                text = _value(name, item)
                entries.append(f"{name}={text}" if text else name)
    return entries
