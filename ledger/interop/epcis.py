"""Custody events as GS1 EPCIS 2.0 JSON-LD events with CBV 2.0 vocabulary (export): pure functions.

The mapping (docs/standards.md has the tables):

=============  ===================  ===========  ==============  ============================================
ledger kind    EPCIS event          action       bizStep         disposition
=============  ===================  ===========  ==============  ============================================
extract        ObjectEvent          ADD          commissioning   active
transfer       ObjectEvent          OBSERVE      shipping        in_transit
receive        ObjectEvent          OBSERVE      receiving       in_progress
transform      TransformationEvent  (none)       commissioning   active
recycle        TransformationEvent  (none)       commissioning   active (``ledger:feedstock`` says recycled)
split          TransformationEvent  (none)       repackaging     active (one input, several outputs)
merge          TransformationEvent  (none)       repackaging     active (several inputs, one output)
=============  ===================  ===========  ==============  ============================================

A batch is a class-level identifier (``epcClass``: the ledger does not serialise items) with its mass as a
quantity in grams (UN/ECE Recommendation 20 ``GRM``). Participants and facilities are the owning and possessing
parties and locations of ``sourceList``/``destinationList`` (CBV source/destination types) and ``bizLocation``.
What EPCIS has no field for (mineral and form, declared values, the process, route legs, feedstock) is written
under the ledger's own namespace: in ``ilmd`` for what describes the batches made, as event extension fields
otherwise; so is where the event sits in the ledger (``ledger:eventId``, ``ledger:logIndex`` and a link to its
inclusion proof, ``ledger:inclusionProof``). ``eventID`` is the GS1 event hash of the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledger.interop.event_hash import event_hash

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
"""The standard's JSON-LD context (EPCIS 2.0.0)."""
LEDGER_PREFIX = "ledger"
LEDGER_NAMESPACE = "https://mineral-ledger.example/ns/epcis/"
"""The namespace of the ledger's extension fields (its own vocabulary, not GS1's)."""
ID_BASE = "https://mineral-ledger.example/id/"
"""Batches, participants and facilities as URIs: ``<ID_BASE>batch/<id>``, ``participant/``, ``facility/``."""
CONTEXT: list[Any] = [EPCIS_CONTEXT, {LEDGER_PREFIX: LEDGER_NAMESPACE}]
NAMESPACES = {LEDGER_PREFIX: LEDGER_NAMESPACE}
SCHEMA_VERSION = "2.0"
GRAMS = "GRM"
"""UN/ECE Recommendation 20 code for the gram: every ledger mass is integer grams."""
EXPORTED_KINDS = frozenset({"extract", "transfer", "receive", "transform", "recycle", "split", "merge"})
"""Custody events that move or make material (a mass-balance ``claim`` allocates credits and is not one)."""

BIZ_STEPS = {
    "extract": "commissioning",
    "transfer": "shipping",
    "receive": "receiving",
    "transform": "commissioning",
    "recycle": "commissioning",
    "split": "repackaging",
    "merge": "repackaging",
}
DISPOSITIONS = {
    "extract": "active",
    "transfer": "in_transit",
    "receive": "in_progress",
    "transform": "active",
    "recycle": "active",
    "split": "active",
    "merge": "active",
}


def ext(name: str) -> str:
    """An extension field's compact name under the ledger's namespace."""
    return f"{LEDGER_PREFIX}:{name}"


def batch_uri(batch_id: str) -> str:
    return f"{ID_BASE}batch/{batch_id}"


def participant_uri(participant_id: str) -> str:
    return f"{ID_BASE}participant/{participant_id}"


def facility_uri(facility_id: str) -> str:
    return f"{ID_BASE}facility/{facility_id}"


def feedstock_uri(category: str) -> str:
    """A recycler's feedstock as a class of material (its category: it is not a batch of the ledger)."""
    return f"{ID_BASE}feedstock/{category}"


def id_from_uri(uri: str, kind: str) -> str | None:
    """The ledger id in one of its URIs (``kind`` is batch, participant or facility), or None."""
    prefix = f"{ID_BASE}{kind}/"
    return uri[len(prefix) :] if uri.startswith(prefix) and len(uri) > len(prefix) else None


@dataclass(frozen=True)
class LedgerEvent:
    """What the export needs of one accepted event: where it sits in the log and its (screened) payload."""

    event_id: str
    log_index: int
    kind: str
    payload: Mapping[str, Any]


def _offset(timestamp: str) -> str:
    """``eventTimeZoneOffset`` of an RFC 3339 timestamp (the signer's local offset, which the ledger keeps)."""
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    delta = moment.utcoffset()
    minutes = int(delta.total_seconds() // 60) if delta is not None else 0
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _quantity(batch_id: str, mass_g: int | None) -> dict[str, Any]:
    element: dict[str, Any] = {"epcClass": batch_uri(batch_id)}
    if mass_g is not None:
        element.update(quantity=mass_g, uom=GRAMS)
    return element


def _money(value: Any) -> dict[str, Any] | None:
    """A declared value as ``{ledger:amount, ledger:currency}``; None when absent or redacted for the caller."""
    if not isinstance(value, Mapping) or "amount" not in value or "currency" not in value:
        return None
    return {ext("amount"): str(value["amount"]), ext("currency"): str(value["currency"])}


MONEY_FIELDS = (
    ("value", "value"),
    ("transaction_value", "transactionValue"),
    ("net_cost", "netCost"),
    ("total_cost", "totalCost"),
)
"""Declared amounts of a batch made by an event, and their extension names."""


def _described(item: Mapping[str, Any], batch_key: str) -> dict[str, Any]:
    """A batch made by the event as ILMD: which batch, its mineral and form, and what was declared of it."""
    described: dict[str, Any] = {ext("batch"): batch_uri(str(item[batch_key]))}
    for field in ("mineral", "form", "hs6"):
        if item.get(field) is not None:
            described[ext(field)] = str(item[field])
    for field, name in MONEY_FIELDS:
        money = _money(item.get(field))
        if money is not None:
            described[ext(name)] = money
    return described


def _parties(kind: str, participant: str, facility: str | None) -> list[dict[str, str]]:
    """CBV source/destination list entries: the owning and possessing party, and the location if known."""
    role = kind  # "source" or "destination"
    entries = [
        {"type": "owning_party", role: participant_uri(participant)},
        {"type": "possessing_party", role: participant_uri(participant)},
    ]
    if facility is not None:
        entries.append({"type": "location", role: facility_uri(facility)})
    return entries


def _visible(items: Any) -> list[Mapping[str, Any]]:
    """List entries the caller may see (a hidden batch is ``{"redacted": true}`` in a screened payload)."""
    return [i for i in items or [] if isinstance(i, Mapping) and not i.get("redacted")]


def to_epcis_event(
    event: LedgerEvent, *, proof_url: str | None = None, masses: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """One custody event as an EPCIS 2.0 JSON-LD event (with its GS1 event hash as ``eventID``).
    ``masses``: the mass of batches the payload does not state, as it was just before the event (a transfer's
    batch, a merge's inputs); the caller knows them from the events before. ``proof_url``: where the event's
    inclusion proof is served."""
    if event.kind not in EXPORTED_KINDS:
        raise ValueError(
            f"a {event.kind!r} event has no EPCIS form; only {', '.join(sorted(EXPORTED_KINDS))}"
        )
    p = event.payload
    timestamp = str(p["timestamp"])
    body = _BODIES[event.kind](p, masses or {})
    doc: dict[str, Any] = {
        "type": "ObjectEvent" if event.kind in ("extract", "transfer", "receive") else "TransformationEvent",
        "eventTime": timestamp,
        "eventTimeZoneOffset": _offset(timestamp),
        **{k: v for k, v in body.items() if k not in ("bizLocation", "ilmd") and not k.startswith("ledger:")},
        "bizStep": BIZ_STEPS[event.kind],
        "disposition": DISPOSITIONS[event.kind],
    }
    for name in ("bizLocation", "ilmd"):
        if body.get(name):
            doc[name] = body[name]
    doc.update({k: v for k, v in body.items() if k.startswith("ledger:")})
    doc[ext("actor")] = participant_uri(str(p["actor"]))
    doc[ext("eventId")] = event.event_id
    doc[ext("logIndex")] = event.log_index
    if proof_url is not None:
        doc[ext("inclusionProof")] = proof_url
    return {"eventID": event_hash(doc, NAMESPACES), **doc}


Body = dict[str, Any]
"""The fields one kind of event fills in: action, quantities, parties, bizLocation, ilmd, extensions."""


def _extract(p: Mapping[str, Any], _: Mapping[str, int]) -> Body:
    """Commissioning: the new batch with its mass, made at the mine; mineral, form and values in ILMD."""
    batch, facility = p["batch"], str(p["facility"])
    return {
        "action": "ADD",
        "quantityList": [_quantity(str(batch["id"]), int(batch["mass_g"]))],
        "destinationList": _parties("destination", str(p["actor"]), facility),
        "bizLocation": {"id": facility_uri(facility)},
        "ilmd": {k: v for k, v in _described(batch, "id").items() if k != ext("batch")},
    }


def _transfer(p: Mapping[str, Any], known: Mapping[str, int]) -> Body:
    """Shipping: from the sender (owning and possessing party) to the receiver and its facility; the route."""
    to_facility = p.get("to_facility")
    return {
        "action": "OBSERVE",
        "quantityList": [_quantity(str(p["batch"]), known.get(str(p["batch"])))],
        "sourceList": _parties("source", str(p["actor"]), None),
        "destinationList": _parties("destination", str(p["to"]), str(to_facility) if to_facility else None),
        ext("route"): [_leg(leg) for leg in p.get("route", [])],
    }


def _receive(p: Mapping[str, Any], _: Mapping[str, int]) -> Body:
    """Receiving: the mass that arrived, at the receiver's facility."""
    facility = str(p["facility"])
    return {
        "action": "OBSERVE",
        "quantityList": [_quantity(str(p["batch"]), int(p["mass_g"]))],
        "destinationList": _parties("destination", str(p["actor"]), facility),
        "bizLocation": {"id": facility_uri(facility)},
    }


def _transformation(p: Mapping[str, Any], _: Mapping[str, int]) -> Body:
    """Transform and recycle: masses consumed (a recycler's feedstock too, by category: it is not a ledger
    batch) and batches made (described in ILMD), at the facility; the process or the feedstock, and the values
    declared for the inputs."""
    inputs, outputs = _visible(p.get("inputs")), _visible(p.get("outputs"))
    consumed = [_quantity(str(i["batch"]), int(i["mass_g"])) for i in inputs]
    consumed += [
        {"epcClass": feedstock_uri(str(f["category"])), "quantity": int(f["mass_g"]), "uom": GRAMS}
        for f in p.get("feedstock", [])
    ]
    body: Body = {
        "outputQuantityList": [_quantity(str(o["id"]), int(o["mass_g"])) for o in outputs],
        "bizLocation": {"id": facility_uri(str(p["facility"]))},
        "ilmd": {ext("output"): [_described(o, "id") for o in outputs]},
    }
    if consumed:
        body["inputQuantityList"] = consumed
    if p["kind"] == "transform":
        body[ext("process")] = str(p["process"])
        money = _money(p.get("value_added"))
        if money is not None:
            body[ext("valueAdded")] = money
    else:
        body[ext("feedstock")] = [_feedstock(f) for f in p.get("feedstock", [])]
    declared = [
        {ext("batch"): batch_uri(str(i["batch"])), **(_money(i.get("value")) or {})}
        for i in inputs
        if _money(i.get("value")) is not None
    ]
    if declared:
        body[ext("inputValue")] = declared
    return body


def _split(p: Mapping[str, Any], _: Mapping[str, int]) -> Body:
    """One batch into parts: the whole mass in, each part out (the mass in unknown if a part is hidden)."""
    outputs = _visible(p.get("outputs"))
    whole = sum(int(o["mass_g"]) for o in outputs) if len(outputs) == len(p.get("outputs", [])) else None
    return {
        "inputQuantityList": [_quantity(str(p["batch"]), whole)],
        "outputQuantityList": [_quantity(str(o["id"]), int(o["mass_g"])) for o in outputs],
    }


def _merge(p: Mapping[str, Any], known: Mapping[str, int]) -> Body:
    """Batches into one: each input's mass (from the events before), the output their sum."""
    inputs = _visible(p.get("inputs"))
    complete = len(inputs) == len(p.get("inputs", [])) and all(str(i["batch"]) in known for i in inputs)
    total = sum(known[str(i["batch"])] for i in inputs) if complete else None
    output = p.get("output")
    body: Body = {
        "inputQuantityList": [_quantity(str(i["batch"]), known.get(str(i["batch"]))) for i in inputs]
    }
    if isinstance(output, str):
        body["outputQuantityList"] = [_quantity(output, total)]
    return body


_BODIES: dict[str, Callable[[Mapping[str, Any], Mapping[str, int]], Body]] = {
    "extract": _extract,
    "transfer": _transfer,
    "receive": _receive,
    "transform": _transformation,
    "recycle": _transformation,
    "split": _split,
    "merge": _merge,
}


def _leg(leg: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {
        ext("country"): str(leg["country"]),
        ext("customsControl"): bool(leg["customs_control"]),
    }
    if leg.get("operations"):
        shown[ext("operation")] = [str(o) for o in leg["operations"]]
    if leg.get("released_for_free_circulation"):
        shown[ext("releasedForFreeCirculation")] = True
    return shown


def _feedstock(item: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = {
        ext("description"): str(item["description"]),
        ext("category"): str(item["category"]),
        ext("massG"): int(item["mass_g"]),
    }
    if item.get("origin_country"):
        shown[ext("originCountry")] = str(item["origin_country"])
    return shown


def epcis_document(events: Iterable[Mapping[str, Any]], created: datetime) -> dict[str, Any]:
    """An ``EPCISDocument`` carrying ``events`` (already mapped)."""
    return {
        "@context": CONTEXT,
        "type": "EPCISDocument",
        "schemaVersion": SCHEMA_VERSION,
        "creationDate": created.isoformat().replace("+00:00", "Z"),
        "epcisBody": {"eventList": list(events)},
    }


def query_document(
    events: Iterable[Mapping[str, Any]], created: datetime, query_name: str = "SimpleEventQuery"
) -> dict[str, Any]:
    """An ``EPCISQueryDocument``: the answer to a query, as the REST binding returns it."""
    return {
        "@context": CONTEXT,
        "type": "EPCISQueryDocument",
        "schemaVersion": SCHEMA_VERSION,
        "creationDate": created.isoformat().replace("+00:00", "Z"),
        "epcisBody": {"queryResults": {"queryName": query_name, "resultsBody": {"eventList": list(events)}}},
    }
