"""EPCIS 2.0 JSON-LD events onto ledger events (import): pure functions.

The reverse of :mod:`ledger.interop.epcis`. An event is read from its standard fields (event type, bizStep,
quantities, bizLocation, source and destination parties) and, for what EPCIS has no field for, from the
ledger's extension fields (mineral and form in ``ilmd``, the process, the route...). What the ledger needs and
the event does not say is a reason the event cannot be mapped; such an event is reported and never submitted
in part. The batches' parents (their current heads) come from the ledger and from the events mapped before
(:func:`plan`), so the document is read in its own order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from ledger.domain import events as ev
from ledger.domain.canonical import canonical_bytes
from ledger.domain.dsse import event_id as event_id_of
from ledger.errors import InvalidInput
from ledger.interop.epcis import (
    EPCIS_CONTEXT,
    LEDGER_NAMESPACE,
    LEDGER_PREFIX,
    MONEY_FIELDS,
    id_from_uri,
)

UNITS_IN_GRAMS = {"GRM": Decimal(1), "KGM": Decimal(1000), "TNE": Decimal(1_000_000)}
"""UN/ECE Recommendation 20 mass units the import converts (exactly) into the ledger's integer grams."""
EPCIS_TYPES = (
    "ObjectEvent",
    "AggregationEvent",
    "TransactionEvent",
    "TransformationEvent",
    "AssociationEvent",
)
OBJECT_STEPS = {"commissioning": "extract", "shipping": "transfer", "receiving": "receive"}
TRANSFORMATION_STEPS = ("commissioning", "repackaging")
_ID = re.compile(ev.ID_PATTERN)


class Unmappable(Exception):
    """Why one EPCIS event cannot become a ledger event (a sentence naming the field)."""


@dataclass(frozen=True)
class Mapped:
    """One EPCIS event as a ledger event (its parents filled in), ready to sign."""

    index: int
    """Its position in the document's event list."""
    epcis_id: str | None
    event: ev.Event
    event_id: str
    """The ledger event id it will have (SHA-256 of its canonical payload)."""


@dataclass(frozen=True)
class Skipped:
    index: int
    epcis_id: str | None
    reason: str


@dataclass
class Plan:
    mapped: list[Mapped] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def document_events(document: Any) -> list[Any]:
    """The event list of an ``EPCISDocument`` (or an ``EPCISQueryDocument``); InvalidInput for anything else."""
    if not isinstance(document, Mapping):
        raise InvalidInput("the document is not a JSON object; an EPCIS 2.0 JSON-LD document is")
    kind = document.get("type")
    body = document.get("epcisBody")
    if kind not in ("EPCISDocument", "EPCISQueryDocument") or not isinstance(body, Mapping):
        raise InvalidInput(
            f"the document's type is {kind!r}; an EPCIS 2.0 EPCISDocument or EPCISQueryDocument with an "
            "epcisBody is expected"
        )
    if kind == "EPCISQueryDocument":
        results = body.get("queryResults")
        body = results.get("resultsBody") if isinstance(results, Mapping) else None
        if not isinstance(body, Mapping):
            raise InvalidInput("the EPCISQueryDocument has no epcisBody.queryResults.resultsBody")
    if not has_standard_context(document):
        raise InvalidInput(
            "the document's @context does not name the EPCIS 2.0 JSON-LD context "
            f"({EPCIS_CONTEXT}); it is not EPCIS 2.0 JSON-LD"
        )
    events = body.get("eventList", [body["event"]] if "event" in body else None)
    if not isinstance(events, list):
        raise InvalidInput("epcisBody has no eventList")
    return events


def ledger_prefixes(document: Mapping[str, Any]) -> set[str]:
    """The prefixes the document's @context binds to the ledger's namespace (usually ``ledger``)."""
    context = document.get("@context")
    entries = context if isinstance(context, list) else [context]
    prefixes = {
        prefix
        for entry in entries
        if isinstance(entry, Mapping)
        for prefix, namespace in entry.items()
        if namespace == LEDGER_NAMESPACE
    }
    return prefixes


def has_standard_context(document: Mapping[str, Any]) -> bool:
    context = document.get("@context")
    entries = context if isinstance(context, list) else [context]
    return any(isinstance(e, str) and e.endswith("epcis-context.jsonld") for e in entries)


def _local(value: Any, prefixes: set[str]) -> Any:
    """The value with every extension key under the ledger's namespace renamed ``ledger:<name>``."""
    if isinstance(value, list):
        return [_local(item, prefixes) for item in value]
    if not isinstance(value, Mapping):
        return value
    renamed: dict[str, Any] = {}
    for key, item in value.items():
        prefix, sep, name = key.partition(":")
        if sep and (prefix in prefixes or prefix == LEDGER_NAMESPACE.rstrip("/")):
            key = f"{LEDGER_PREFIX}:{name}"
        elif key.startswith(LEDGER_NAMESPACE):
            key = f"{LEDGER_PREFIX}:{key[len(LEDGER_NAMESPACE) :]}"
        renamed[key] = _local(item, prefixes)
    return renamed


def _x(event: Mapping[str, Any], name: str) -> Any:
    return event.get(f"{LEDGER_PREFIX}:{name}")


def _bare(value: Any, prefix: str) -> str:
    text = str(value)
    for head in (f"https://ref.gs1.org/cbv/{prefix}-", f"cbv:{prefix}-"):
        if text.startswith(head):
            return text[len(head) :]
    urn = {
        "BizStep": "urn:epcglobal:cbv:bizstep:",
        "SDT": "urn:epcglobal:cbv:sdt:",
        "Disp": "urn:epcglobal:cbv:disp:",
    }
    if text.startswith(urn.get(prefix, "\0")):
        return text[len(urn[prefix]) :]
    return text


def batch_id(uri: Any, where: str) -> str:
    """A batch id from an EPC class or EPC: the ledger's own batch URI, or a URI that is itself a valid ledger
    id (lowercase, such as an LGTIN URN)."""
    if not isinstance(uri, str) or not uri:
        raise Unmappable(f"{where} names no batch")
    found = id_from_uri(uri, "batch")
    if found is not None and _ID.match(found):
        return found
    if _ID.match(uri):
        return uri
    raise Unmappable(
        f"{where} {uri!r} is not a batch the ledger can name: use https://mineral-ledger.example/id/batch/<id> "
        "(ids are lowercase a-z 0-9 . _ : -)"
    )


def _party_id(uri: Any, kind: str, where: str) -> str:
    found = id_from_uri(str(uri), kind) if isinstance(uri, str) else None
    if found is None or not _ID.match(found):
        raise Unmappable(
            f"{where} {uri!r} is not a ledger {kind} URI (https://mineral-ledger.example/id/{kind}/<id>)"
        )
    return found


def grams(element: Mapping[str, Any], where: str) -> int:
    """A quantity element's mass in integer grams (exactly; GRM, KGM or TNE)."""
    if "quantity" not in element:
        raise Unmappable(f"{where} has no quantity; the ledger needs the mass of every batch")
    unit = element.get("uom")
    if unit not in UNITS_IN_GRAMS:
        raise Unmappable(
            f"{where} is in {unit!r}; the ledger weighs in grams: give uom GRM, KGM or TNE (a count is not a mass)"
        )
    try:
        mass = Decimal(str(element["quantity"])) * UNITS_IN_GRAMS[unit]
    except InvalidOperation:
        raise Unmappable(f"{where} quantity {element['quantity']!r} is not a number") from None
    if mass != mass.to_integral_value() or mass <= 0:
        raise Unmappable(f"{where} is {element['quantity']} {unit}, not a positive whole number of grams")
    return int(mass)


def _quantities(event: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    items = event.get(name, [])
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise Unmappable(f"{name} is not a list of quantity elements")
    return [i for i in items if not str(i.get("epcClass", "")).startswith(FEEDSTOCK_PREFIX)]


FEEDSTOCK_PREFIX = "https://mineral-ledger.example/id/feedstock/"


def timestamp(event: Mapping[str, Any]) -> str:
    """eventTime in the signer's own offset (eventTimeZoneOffset), as RFC 3339: the ledger keeps the offset."""
    text, offset = event.get("eventTime"), event.get("eventTimeZoneOffset")
    if not isinstance(text, str) or not isinstance(offset, str):
        raise Unmappable("eventTime and eventTimeZoneOffset are both required")
    match = re.fullmatch(r"([+-])([0-9]{2}):([0-9]{2})", offset)
    if match is None:
        raise Unmappable(f"eventTimeZoneOffset {offset!r} is not ±hh:mm")
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Unmappable(f"eventTime {text!r} is not a date-time") from None
    if moment.tzinfo is None:
        raise Unmappable(f"eventTime {text!r} has no UTC offset")
    minutes = int(match[2]) * 60 + int(match[3])
    zone = timezone(timedelta(minutes=-minutes if match[1] == "-" else minutes))
    if re.fullmatch(ev.TIMESTAMP_PATTERN, text) and moment.utcoffset() == zone.utcoffset(None):
        return text  # already in the signer's offset: kept as written
    local = moment.astimezone(zone)
    rendered = local.isoformat(timespec="microseconds" if local.microsecond else "seconds")
    return (
        rendered.replace("+00:00", "Z") if offset in ("+00:00", "-00:00") and text.endswith("Z") else rendered
    )


def _money(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or _x(value, "amount") is None or _x(value, "currency") is None:
        raise Unmappable(f"{where} needs ledger:amount and ledger:currency")
    return {"amount": str(_x(value, "amount")), "currency": str(_x(value, "currency"))}


def _parties(event: Mapping[str, Any], name: str, role: str) -> dict[str, str]:
    """A source or destination list as {type: id-uri}."""
    items = event.get(name, [])
    if not isinstance(items, list):
        raise Unmappable(f"{name} is not a list")
    return {
        _bare(i.get("type"), "SDT"): str(i.get(role))
        for i in items
        if isinstance(i, Mapping) and i.get("type") and i.get(role)
    }


def _actor(event: Mapping[str, Any], parties: Mapping[str, str], default: str | None) -> str:
    """Who made the event: ``ledger:actor``, else the owning party the standard names, else ``default``."""
    named = _x(event, "actor")
    if named is not None:
        return _party_id(named, "participant", "ledger:actor")
    owner = parties.get("owning_party") or parties.get("possessing_party")
    if owner is not None:
        return _party_id(owner, "participant", "the owning party")
    if default is None:
        raise Unmappable(
            "the event names no actor (ledger:actor or an owning party) and none was given (--as)"
        )
    return default


def _location(event: Mapping[str, Any], parties: Mapping[str, str] | None = None) -> str:
    location = event.get("bizLocation")
    uri = location.get("id") if isinstance(location, Mapping) else None
    if uri is None and parties is not None:
        uri = parties.get("location")
    if uri is None:
        raise Unmappable("bizLocation is missing; the ledger records where material is made or received")
    return _party_id(uri, "facility", "bizLocation")


def _described(ilmd: Any, where: str) -> dict[str, dict[str, Any]]:
    """ILMD's ``ledger:output`` entries by batch id (or, for an extract, the ILMD itself under "")."""
    if not isinstance(ilmd, Mapping):
        return {}
    items = _x(ilmd, "output")
    if items is None:
        return {"": dict(ilmd)}
    described: dict[str, dict[str, Any]] = {}
    for item in items if isinstance(items, list) else [items]:
        if isinstance(item, Mapping):
            described[batch_id(_x(item, "batch"), f"{where} ledger:output")] = dict(item)
    return described


def _new_batch(batch: str, mass: int, info: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
    if info is None or _x(info, "mineral") is None or _x(info, "form") is None:
        raise Unmappable(f"ilmd does not give ledger:mineral and ledger:form of {where} {batch!r}")
    made: dict[str, Any] = {
        "id": batch,
        "mineral": str(_x(info, "mineral")),
        "form": str(_x(info, "form")),
        "mass_g": mass,
    }
    if _x(info, "hs6") is not None:
        made["hs6"] = str(_x(info, "hs6"))
    for name, extension in MONEY_FIELDS:
        money = _money(_x(info, extension), f"{where} {batch!r} ledger:{extension}")
        if money is not None:
            made[name] = money
    return made


Heads = Callable[[str], str | None]
"""The current head of a batch (its last event id), or None when the ledger does not have it."""


def batches_named(event: Mapping[str, Any]) -> set[str]:
    """The ledger batches an EPCIS event names as material it consumes or moves (their heads are needed)."""
    names: set[str] = set()
    for key in ("quantityList", "inputQuantityList"):
        for element in event.get(key, []) or []:
            if isinstance(element, Mapping):
                try:
                    names.add(batch_id(element.get("epcClass"), key))
                except Unmappable:
                    continue
    return names


def to_ledger(event: Any, prefixes: set[str], heads: Heads, default_actor: str | None) -> dict[str, Any]:
    """One EPCIS event as a ledger event payload (parents from ``heads``); :class:`Unmappable` says why not."""
    if not isinstance(event, Mapping):
        raise Unmappable("the event is not a JSON object")
    event = _local(event, prefixes)
    kind = event.get("type")
    if kind not in EPCIS_TYPES:
        raise Unmappable(f"type {kind!r} is not an EPCIS 2.0 event type")
    step = _bare(event.get("bizStep", ""), "BizStep")
    when = timestamp(event)
    if kind == "ObjectEvent":
        if step not in OBJECT_STEPS:
            raise Unmappable(
                f"bizStep {step!r} has no ledger counterpart for an ObjectEvent; the mapping knows "
                + ", ".join(OBJECT_STEPS)
            )
        return _object_event(event, OBJECT_STEPS[step], when, heads, default_actor)
    if kind == "TransformationEvent":
        if step not in TRANSFORMATION_STEPS:
            raise Unmappable(
                f"bizStep {step!r} has no ledger counterpart for a TransformationEvent; the mapping knows "
                + ", ".join(TRANSFORMATION_STEPS)
            )
        return _transformation(event, step, when, heads, default_actor)
    raise Unmappable(
        f"a {kind} has no ledger counterpart (the ledger records object and transformation events)"
    )


def _head(heads: Heads, batch: str) -> str:
    head = heads(batch)
    if head is None:
        raise Unmappable(
            f"batch {batch!r} is not in the ledger and no earlier event of the document makes it"
        )
    return head


def _single(event: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    items = _quantities(event, "quantityList")
    if len(items) != 1:
        raise Unmappable(f"quantityList has {len(items)} elements; the ledger moves one batch per event")
    return batch_id(items[0].get("epcClass"), "quantityList epcClass"), items[0]


def _object_event(
    event: Mapping[str, Any], kind: str, when: str, heads: Heads, default_actor: str | None
) -> dict[str, Any]:
    batch, element = _single(event)
    if kind == "extract":
        if event.get("action") != "ADD":
            raise Unmappable(f"a commissioning ObjectEvent has action ADD, not {event.get('action')!r}")
        parties = _parties(event, "destinationList", "destination")
        info = _described(event.get("ilmd"), "the batch").get("", None)
        return {
            "kind": "extract",
            "actor": _actor(event, parties, default_actor),
            "timestamp": when,
            "facility": _location(event, parties),
            "batch": _new_batch(batch, grams(element, "quantityList[0]"), info, "batch"),
        }
    if event.get("action") != "OBSERVE":
        raise Unmappable(f"a {kind} is an ObjectEvent with action OBSERVE, not {event.get('action')!r}")
    if kind == "transfer":
        sources = _parties(event, "sourceList", "source")
        destinations = _parties(event, "destinationList", "destination")
        receiver = destinations.get("owning_party") or destinations.get("possessing_party")
        if receiver is None:
            raise Unmappable(
                "destinationList names no owning or possessing party: the ledger needs the receiver"
            )
        route = _x(event, "route")
        if not isinstance(route, list) or not route:
            raise Unmappable("no ledger:route: the ledger needs the countries the shipment passes through")
        payload: dict[str, Any] = {
            "kind": "transfer",
            "actor": _actor(event, sources, default_actor),
            "timestamp": when,
            "batch": batch,
            "parent": _head(heads, batch),
            "to": _party_id(receiver, "participant", "the receiving party"),
            "route": [_leg(leg) for leg in route],
        }
        if "location" in destinations:
            payload["to_facility"] = _party_id(
                destinations["location"], "facility", "the destination location"
            )
        return payload
    parties = _parties(event, "destinationList", "destination")
    return {
        "kind": "receive",
        "actor": _actor(event, parties, default_actor),
        "timestamp": when,
        "batch": batch,
        "parent": _head(heads, batch),
        "facility": _location(event, parties),
        "mass_g": grams(element, "quantityList[0]"),
    }


def _leg(leg: Any) -> dict[str, Any]:
    if not isinstance(leg, Mapping) or _x(leg, "country") is None:
        raise Unmappable("a ledger:route leg needs ledger:country and ledger:customsControl")
    shown: dict[str, Any] = {
        "country": str(_x(leg, "country")),
        "customs_control": _x(leg, "customsControl") is True,
    }
    operations = _x(leg, "operation")
    if operations:
        shown["operations"] = [str(o) for o in (operations if isinstance(operations, list) else [operations])]
    if _x(leg, "releasedForFreeCirculation") is True:
        shown["released_for_free_circulation"] = True
    return shown


def _transformation(
    event: Mapping[str, Any], step: str, when: str, heads: Heads, default_actor: str | None
) -> dict[str, Any]:
    inputs = [
        (batch_id(i.get("epcClass"), "inputQuantityList epcClass"), i)
        for i in _quantities(event, "inputQuantityList")
    ]
    outputs = [
        (batch_id(o.get("epcClass"), "outputQuantityList epcClass"), o)
        for o in _quantities(event, "outputQuantityList")
    ]
    actor = _actor(event, {}, default_actor)
    if step == "repackaging":
        if len(inputs) == 1 and len(outputs) >= 2:
            (batch, _), parts = inputs[0], outputs
            return {
                "kind": "split",
                "actor": actor,
                "timestamp": when,
                "batch": batch,
                "parent": _head(heads, batch),
                "outputs": [{"id": b, "mass_g": grams(o, f"outputQuantityList {b!r}")} for b, o in parts],
            }
        if len(inputs) >= 2 and len(outputs) == 1:
            return {
                "kind": "merge",
                "actor": actor,
                "timestamp": when,
                "inputs": [{"batch": b, "parent": _head(heads, b)} for b, _ in inputs],
                "output": outputs[0][0],
            }
        raise Unmappable(
            f"a repackaging TransformationEvent with {len(inputs)} inputs and {len(outputs)} outputs is neither a "
            "split (one input, several outputs) nor a merge (several inputs, one output)"
        )
    if not outputs:
        raise Unmappable("outputQuantityList is empty: a transformation makes at least one batch")
    described = _described(event.get("ilmd"), "output")
    made = [
        _new_batch(b, grams(o, f"outputQuantityList {b!r}"), described.get(b), "output") for b, o in outputs
    ]
    values = {
        batch_id(_x(v, "batch"), "ledger:inputValue"): _money(v, "ledger:inputValue")
        for v in (_x(event, "inputValue") or [])
        if isinstance(v, Mapping)
    }
    consumed = []
    for b, element in inputs:
        item: dict[str, Any] = {
            "batch": b,
            "parent": _head(heads, b),
            "mass_g": grams(element, f"inputQuantityList {b!r}"),
        }
        if values.get(b) is not None:
            item["value"] = values[b]
        consumed.append(item)
    feedstock = _x(event, "feedstock")
    payload: dict[str, Any] = {
        "actor": actor,
        "timestamp": when,
        "facility": _location(event),
        "outputs": made,
    }
    if feedstock is not None:
        payload.update(kind="recycle", feedstock=[_feedstock(f) for f in feedstock if isinstance(f, Mapping)])
        if consumed:
            payload["inputs"] = consumed
        return payload
    process = _x(event, "process")
    value_added = _money(_x(event, "valueAdded"), "ledger:valueAdded")
    if process is None or value_added is None:
        raise Unmappable(
            "a transformation needs ledger:process and ledger:valueAdded (the ledger records both)"
        )
    if not consumed:
        raise Unmappable("inputQuantityList names no ledger batch: a transformation consumes at least one")
    payload.update(kind="transform", process=str(process), inputs=consumed, value_added=value_added)
    return payload


def _feedstock(item: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "description": str(_x(item, "description")),
        "category": str(_x(item, "category")),
        "mass_g": _x(item, "massG"),
    }
    if _x(item, "originCountry") is not None:
        shown["origin_country"] = str(_x(item, "originCountry"))
    return shown


def made_and_moved(payload: Mapping[str, Any]) -> Iterable[str]:
    """Batches whose head becomes this event."""
    match payload["kind"]:
        case "extract":
            yield payload["batch"]["id"]
        case "transfer" | "receive":
            yield payload["batch"]
        case "transform" | "recycle":
            yield from (i["batch"] for i in payload.get("inputs", []))
            yield from (o["id"] for o in payload["outputs"])
        case "split":
            yield payload["batch"]
            yield from (o["id"] for o in payload["outputs"])
        case "merge":
            yield from (i["batch"] for i in payload["inputs"])
            yield payload["output"]


def plan(document: Any, ledger_heads: Mapping[str, str], default_actor: str | None = None) -> Plan:
    """Map every event of ``document``, in its order. ``ledger_heads``: the current head of each batch the
    ledger already has (of those :func:`batches_named` lists). An event that cannot be mapped is skipped with
    its reason; the events after it see the ledger as if it had not been there."""
    events = document_events(document)
    prefixes = ledger_prefixes(document) | {LEDGER_PREFIX}
    heads: dict[str, str] = dict(ledger_heads)
    result = Plan()
    for index, raw in enumerate(events):
        epcis_id = raw.get("eventID") if isinstance(raw, Mapping) else None
        try:
            payload = to_ledger(raw, prefixes, heads.get, default_actor)
            try:
                typed = ev.decode_event(payload)
            except InvalidInput as exc:
                detail = exc.detail.removeprefix("event payload is invalid: ")
                raise Unmappable(f"the ledger refuses it: {detail}") from None
        except Unmappable as exc:
            result.skipped.append(Skipped(index, epcis_id if isinstance(epcis_id, str) else None, str(exc)))
            continue
        new_id = event_id_of(canonical_bytes(ev.encode_event(typed)))
        for batch in made_and_moved(payload):
            heads[batch] = new_id
        result.mapped.append(Mapped(index, epcis_id if isinstance(epcis_id, str) else None, typed, new_id))
    return result


def all_batches_named(document: Any) -> set[str]:
    """Every batch the document's events name as consumed or moved (to look up their heads first)."""
    prefixes = ledger_prefixes(document) if isinstance(document, Mapping) else set()
    named: set[str] = set()
    for raw in document_events(document):
        if isinstance(raw, Mapping):
            named |= batches_named(_local(raw, prefixes | {LEDGER_PREFIX}))
    return named
