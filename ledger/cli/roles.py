"""The custody commands of every role: ``ledger extract|transfer|receive|transform|recycle|split|merge|attest|
claim``. Each builds its event with the same client helpers the demo uses, signs it here with the participant's
own key file (``--key-file``, never sent anywhere) and submits the envelope; the answer is one line, or JSON with
``--json``.

Values on the command line: masses are grams or carry a unit (``20000kg``, ``20t``, ``1.5kg``: exact, never
rounded); money is ``AMOUNT CURRENCY`` (``24000.00 USD``); lists of fields are ``name=value,name=value``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from ledger.cli.common import emit, fail, json_option, make_client, participant_options, reported, submitted
from ledger.client import LedgerClient
from ledger.domain import events as ev
from ledger.services.views import SubmitResultView

_UNITS = {"g": 1, "kg": 1000, "t": 1_000_000}


def parse_mass(text: str, what: str = "mass") -> int:
    """Grams from ``12345``, ``12345g``, ``19.95kg`` or ``20t``; exact (a fraction of a gram is refused)."""
    raw = text.strip().lower().replace("_", "").replace(",", "")
    unit = next((u for u in ("kg", "t", "g") if raw.endswith(u)), "g")
    number = raw[: -len(unit)].strip() if raw.endswith(unit) else raw
    try:
        grams = Decimal(number) * _UNITS[unit]
    except InvalidOperation:
        fail(f"{what} {text!r} is not a mass: write grams (12345), or with a unit (19.95kg, 20t)")
    if grams != grams.to_integral_value() or grams <= 0:
        fail(f"{what} {text!r} is not a positive whole number of grams")
    return int(grams)


def parse_money(text: str, what: str = "value") -> ev.Money:
    """``24000.00 USD`` (or ``USD 24000.00``, ``24000.00:USD``)."""
    parts = text.replace(":", " ").split()
    if len(parts) == 2 and parts[0].isalpha():
        parts.reverse()
    if len(parts) != 2 or not parts[1].isalpha():
        fail(f"{what} {text!r} is not AMOUNT CURRENCY (e.g. '24000.00 USD')")
    return ev.Money(amount=parts[0], currency=parts[1].upper())


def parse_fields(text: str, what: str, allowed: set[str], required: set[str]) -> dict[str, str]:
    """``name=value,name=value`` into a dict, naming an unknown or missing field."""
    fields: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in allowed:
            fail(
                f"{what} {text!r}: {item.strip()!r} is not one of {', '.join(sorted(allowed))} as name=value"
            )
        fields[name] = value.strip()
    missing = required - set(fields)
    if missing:
        fail(f"{what} {text!r} lacks {', '.join(sorted(missing))}")
    return fields


_OUTPUT_FIELDS = {
    "id",
    "mineral",
    "form",
    "mass",
    "value",
    "hs6",
    "transaction_value",
    "net_cost",
    "total_cost",
}


def parse_output(text: str) -> ev.Output:
    f = parse_fields(text, "--output", _OUTPUT_FIELDS, {"id", "mineral", "form", "mass"})

    def money(name: str) -> ev.Money | None:
        return parse_money(f[name], f"--output {name}") if name in f else None

    return ev.Output(
        id=f["id"],
        mineral=f["mineral"],
        form=f["form"],
        mass_g=parse_mass(f["mass"], "--output mass"),
        value=money("value"),
        hs6=f.get("hs6"),
        transaction_value=money("transaction_value"),
        net_cost=money("net_cost"),
        total_cost=money("total_cost"),
    )


def parse_input(text: str) -> tuple[str, int, ev.Money | None]:
    """``BATCH=MASS`` or ``batch=ID,mass=MASS[,value=AMOUNT CUR]``."""
    if text.count("=") == 1 and "," not in text and not text.startswith(("batch=", "mass=")):
        batch, _, mass = text.partition("=")
        return batch.strip(), parse_mass(mass, "--input mass"), None
    f = parse_fields(text, "--input", {"batch", "mass", "value"}, {"batch", "mass"})
    value = parse_money(f["value"], "--input value") if "value" in f else None
    return f["batch"], parse_mass(f["mass"], "--input mass"), value


_ROUTE_FLAGS = {"bonded": "customs_control", "released": "released_for_free_circulation"}


def parse_leg(text: str) -> ev.RouteLeg:
    """``CC`` or ``CC:bonded[:released][:ops=unloading+storage]``: a country, whether the goods stayed under
    customs control there, were released for free circulation, and what was done to them."""
    country, *rest = text.split(":")
    flags: dict[str, bool] = {}
    operations: list[str] = []
    for part in rest:
        if part in _ROUTE_FLAGS:
            flags[_ROUTE_FLAGS[part]] = True
        elif part.startswith("ops="):
            operations = [op for op in part[4:].split("+") if op]
        else:
            fail(f"--route {text!r}: {part!r} is not bonded, released or ops=OP+OP")
    return ev.RouteLeg(
        country=country.strip().upper(),
        customs_control=flags.get("customs_control", False),
        released_for_free_circulation=flags.get("released_for_free_circulation", False),
        operations=operations,
    )


def _say(kind: str) -> Callable[[Any], str]:
    return lambda result: submitted(result, kind)


def _submit(
    kind: str,
    url: str,
    token: str | None,
    key_file: Path | None,
    actor: str | None,
    as_json: bool,
    build: Callable[[LedgerClient], SubmitResultView],
) -> None:
    with reported(), make_client(url, token, key_file, actor, signs=True) as client:
        emit(build(client), as_json, _say(kind))


def _timestamp(func: Any) -> Any:
    return click.option(
        "--timestamp",
        default=None,
        help="when it happened, RFC 3339 with your UTC offset (default: now, in UTC)",
    )(func)


def _parent(func: Any) -> Any:
    return click.option(
        "--parent",
        default=None,
        help="the batch's head event id you build on (default: read from the ledger)",
    )(func)


@click.command()
@participant_options
@json_option
@_timestamp
@click.option("--facility", required=True, help="your mine")
@click.option("--batch", "batch_id", required=True, help="the new batch's id")
@click.option("--mineral", required=True)
@click.option("--form", required=True, help="ore, concentrate, brine, ...")
@click.option("--mass", required=True, help="grams, or 20000kg, 20t")
@click.option("--value", default=None, help="declared value, e.g. '24000.00 USD'")
@click.option("--hs6", default=None, help="6-digit HS subheading")
def extract(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, facility: str, batch_id: str, mineral: str, form: str, mass: str,
    value: str | None, hs6: str | None,
) -> None:  # fmt: skip
    """Miner: record a new batch extracted at your mine."""
    grams = parse_mass(mass)
    money = parse_money(value) if value else None
    _submit("extract", url, token, key_file, actor, as_json, lambda c: c.extract(
        facility, batch_id, mineral, form, grams, value=money, hs6=hs6, timestamp=timestamp
    ))  # fmt: skip


@click.command()
@participant_options
@json_option
@_timestamp
@_parent
@click.argument("batch")
@click.option("--to", "receiver", required=True, help="the receiving participant")
@click.option("--to-facility", default=None, help="the receiver's facility it is shipped to")
@click.option(
    "--route",
    "legs",
    multiple=True,
    required=True,
    help="a leg, repeatable, in order: CC or CC:bonded[:released][:ops=unloading+storage]",
)
def transfer(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, parent: str | None, batch: str, receiver: str, to_facility: str | None,
    legs: tuple[str, ...],
) -> None:  # fmt: skip
    """Custodian: ship a batch to another participant along a route."""
    route = [parse_leg(leg) for leg in legs]
    _submit("transfer", url, token, key_file, actor, as_json, lambda c: c.transfer(
        batch, receiver, route, to_facility=to_facility, parent=parent, timestamp=timestamp
    ))  # fmt: skip


@click.command()
@participant_options
@json_option
@_timestamp
@_parent
@click.argument("batch")
@click.option("--facility", required=True, help="your facility where it arrived")
@click.option("--mass", default=None, help="mass received (default: as shipped, no loss)")
def receive(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, parent: str | None, batch: str, facility: str, mass: str | None,
) -> None:  # fmt: skip
    """Receiver: take custody of a batch shipped to you."""
    grams = parse_mass(mass) if mass else None
    _submit("receive", url, token, key_file, actor, as_json, lambda c: c.receive(
        batch, facility, mass_g=grams, parent=parent, timestamp=timestamp
    ))  # fmt: skip


_OUTPUT_HELP = (
    "a batch made, repeatable: id=ID,mineral=M,form=F,mass=MASS[,value=AMOUNT CUR][,hs6=NNNNNN]"
    "[,transaction_value=..][,net_cost=..][,total_cost=..]"
)
_INPUT_HELP = "a batch consumed, repeatable: BATCH=MASS, or batch=ID,mass=MASS[,value=AMOUNT CUR]"


@click.command()
@participant_options
@json_option
@_timestamp
@click.option("--facility", required=True, help="your facility where it happened")
@click.option("--process", required=True, help="refining, conversion, cathode, cell_assembly, ...")
@click.option("--input", "inputs", multiple=True, required=True, help=_INPUT_HELP)
@click.option("--output", "outputs", multiple=True, required=True, help=_OUTPUT_HELP)
@click.option("--value-added", required=True, help="value added here, e.g. '40000.00 USD'")
def transform(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, facility: str, process: str, inputs: tuple[str, ...], outputs: tuple[str, ...],
    value_added: str,
) -> None:  # fmt: skip
    """Processor, recycler or manufacturer: consume batches you hold and make new ones."""
    parsed = [parse_input(text) for text in inputs]
    made = [parse_output(text) for text in outputs]
    added = parse_money(value_added, "--value-added")
    values = {batch: value for batch, _, value in parsed if value is not None}
    _submit("transform", url, token, key_file, actor, as_json, lambda c: c.transform(
        facility, process, [(b, m) for b, m, _ in parsed], made, added, input_values=values, timestamp=timestamp
    ))  # fmt: skip


@click.command()
@participant_options
@json_option
@_timestamp
@click.option("--facility", required=True, help="your recycler facility")
@click.option(
    "--feedstock",
    "feedstock",
    multiple=True,
    required=True,
    help="repeatable: description=TEXT,category=CATEGORY,mass=MASS[,origin_country=CC]",
)
@click.option("--output", "outputs", multiple=True, required=True, help=_OUTPUT_HELP)
@click.option("--input", "inputs", multiple=True, help="a ledger batch consumed as feedstock: " + _INPUT_HELP)
def recycle(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, facility: str, feedstock: tuple[str, ...], outputs: tuple[str, ...],
    inputs: tuple[str, ...],
) -> None:  # fmt: skip
    """Recycler: recover material from feedstock (each output starts a new, recycled source)."""
    taken = []
    for text in feedstock:
        f = parse_fields(
            text, "--feedstock", {"description", "category", "mass", "origin_country"}, {"description", "category", "mass"}
        )  # fmt: skip
        taken.append(
            ev.Feedstock(
                description=f["description"],
                category=f["category"],
                mass_g=parse_mass(f["mass"], "--feedstock mass"),
                origin_country=f.get("origin_country"),
            )
        )
    made = [parse_output(text) for text in outputs]
    consumed = [(b, m) for b, m, _ in (parse_input(text) for text in inputs)]
    _submit("recycle", url, token, key_file, actor, as_json, lambda c: c.recycle(
        facility, taken, made, inputs=consumed, timestamp=timestamp
    ))  # fmt: skip


@click.command()
@participant_options
@json_option
@_timestamp
@_parent
@click.argument("batch")
@click.option("--part", "parts", multiple=True, required=True, help="ID=MASS, repeatable (at least two)")
def split(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, parent: str | None, batch: str, parts: tuple[str, ...],
) -> None:  # fmt: skip
    """Custodian: split a batch into parts that weigh exactly its mass."""
    pieces = []
    for text in parts:
        part_id, sep, mass = text.partition("=")
        if not sep:
            fail(f"--part {text!r} is not ID=MASS")
        pieces.append((part_id.strip(), parse_mass(mass, "--part mass")))
    _submit("split", url, token, key_file, actor, as_json, lambda c: c.split(
        batch, pieces, parent=parent, timestamp=timestamp
    ))  # fmt: skip


@click.command()
@participant_options
@json_option
@_timestamp
@click.option(
    "--input", "inputs", multiple=True, required=True, help="a batch to merge, repeatable (two or more)"
)
@click.option("--output", "output", required=True, help="the merged batch's id")
def merge(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, inputs: tuple[str, ...], output: str,
) -> None:  # fmt: skip
    """Custodian: merge like batches you hold at one facility into one."""
    _submit("merge", url, token, key_file, actor, as_json, lambda c: c.merge(
        list(inputs), output, timestamp=timestamp
    ))  # fmt: skip


@click.command()
@participant_options
@json_option
@_timestamp
@click.argument("attestation_id")
@click.option("--facility", default=None, help="the facility attested (or --participant)")
@click.option("--participant", "subject_participant", default=None, help="the participant attested")
@click.option("--standard", required=True, help="irma, rmap, iso14001, oecd_ddg or other:NAME")
@click.option("--level", required=True, help="e.g. irma_75, conformant, certified")
@click.option("--valid-from", required=True, help="YYYY-MM-DD")
@click.option("--valid-to", required=True, help="YYYY-MM-DD")
@click.option("--report", "report_file", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the audit report; its SHA-256 is signed (or give --report-sha256)")  # fmt: skip
@click.option("--report-sha256", default=None, help="hex SHA-256 of the audit report")
@click.option("--mineral", "minerals", multiple=True, help="in scope, repeatable (default: all)")
@click.option(
    "--activity", "activities", multiple=True, help="extraction, processing, recycling (default: all)"
)
def attest(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, attestation_id: str, facility: str | None, subject_participant: str | None,
    standard: str, level: str, valid_from: str, valid_to: str, report_file: Path | None,
    report_sha256: str | None, minerals: tuple[str, ...], activities: tuple[str, ...],
) -> None:  # fmt: skip
    """Auditor: attest a facility or participant to a standard, at a level, for a period."""
    if (facility is None) == (subject_participant is None):
        fail("attest one subject: give --facility or --participant")
    if report_file is not None:
        digest = hashlib.sha256(report_file.read_bytes()).hexdigest()
        if report_sha256 is not None and report_sha256.lower() != digest:
            fail(f"--report-sha256 {report_sha256} is not the SHA-256 of {report_file} ({digest})")
        report_sha256 = digest
    if report_sha256 is None:
        fail("give the audit report as --report FILE, or its hash as --report-sha256")
    digest_text = report_sha256.lower()
    _submit("attest", url, token, key_file, actor, as_json, lambda c: c.attest(
        attestation_id, facility=facility, participant=subject_participant, standard=standard, level=level,
        valid_from=valid_from, valid_to=valid_to, report_sha256=digest_text, minerals=minerals,
        activities=activities, timestamp=timestamp,
    ))  # fmt: skip


@click.command()
@participant_options
@json_option
@_timestamp
@click.option("--facility", required=True, help="your mass-balance-credit facility")
@click.option("--profile", required=True, help="the rule profile the credits count under")
@click.option("--period", required=True, help="YYYY, YYYY-Qn or YYYY-MM (the facility's declared period)")
@click.option("--batch", "batch_id", required=True, help="an output batch made there in that period")
@click.option("--mass", required=True, help="grams of credit to allocate, or with a unit")
def claim(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, facility: str, profile: str, period: str, batch_id: str, mass: str,
) -> None:  # fmt: skip
    """Facility owner: allocate mass-balance credits of a period to a batch made there."""
    grams = parse_mass(mass)
    _submit("claim", url, token, key_file, actor, as_json, lambda c: c.claim(
        facility, profile, period, batch_id, grams, timestamp=timestamp
    ))  # fmt: skip


@click.group("attestation")
def attestation() -> None:
    """Auditor (or the registrar): end or pause an attestation."""


def _attestation_options(func: Any) -> Any:
    for decorate in (
        click.option("--reason", required=True),
        click.option("--effective-date", required=True, help="YYYY-MM-DD: from when it no longer counts"),
        click.argument("attestation_id"),
        _timestamp,
        json_option,
        participant_options,
    ):
        func = decorate(func)
    return func


@attestation.command("revoke")
@_attestation_options
def attestation_revoke(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, attestation_id: str, effective_date: str, reason: str,
) -> None:  # fmt: skip
    """Revoke an attestation from a date, for good."""
    _submit("revoke_attestation", url, token, key_file, actor, as_json, lambda c: c.revoke_attestation(
        attestation_id, effective_date, reason, timestamp=timestamp
    ))  # fmt: skip


@attestation.command("suspend")
@_attestation_options
def attestation_suspend(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, attestation_id: str, effective_date: str, reason: str,
) -> None:  # fmt: skip
    """Suspend an attestation from a date."""
    _submit("suspend_attestation", url, token, key_file, actor, as_json, lambda c: c.revoke_attestation(
        attestation_id, effective_date, reason, suspend=True, timestamp=timestamp
    ))  # fmt: skip


@click.group("custody-model")
def custody_model() -> None:
    """Facility owner (or the registrar): a facility's chain-of-custody model (ISO 22095)."""


@custody_model.command("declare")
@participant_options
@json_option
@_timestamp
@click.option("--facility", required=True)
@click.option(
    "--model",
    required=True,
    help="identity_preserved, segregated, controlled_blending, mass_balance_rolling_average, mass_balance_credit",
)
@click.option("--effective-date", required=True, help="YYYY-MM-DD")
@click.option(
    "--period", default="quarter", show_default=True, help="mass-balance period: month, quarter, year"
)
@click.option(
    "--factor", "factors", multiple=True, help="PROCESS=RATIO, output mass per input mass (repeatable)"
)
def custody_model_declare(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, facility: str, model: str, effective_date: str, period: str, factors: tuple[str, ...],
) -> None:  # fmt: skip
    """Declare the facility's custody model from a date (every declaration is kept)."""
    conversion: dict[str, str] = {}
    for text in factors:
        process, sep, ratio = text.partition("=")
        if not sep:
            fail(f"--factor {text!r} is not PROCESS=RATIO (e.g. refining=0.95)")
        conversion[process.strip()] = ratio.strip()
    _submit("custody_model", url, token, key_file, actor, as_json, lambda c: c.declare_custody_model(
        facility, model, effective_date, period=period, conversion_factors=conversion, timestamp=timestamp
    ))  # fmt: skip


@click.command()
@participant_options
@json_option
@_timestamp
@click.argument("event_ids", nargs=-1, required=True)
@click.option("--statement", required=True, help="why these events are genuine")
def reaffirm(
    url: str, token: str | None, key_file: Path | None, actor: str | None, as_json: bool,
    timestamp: str | None, event_ids: tuple[str, ...], statement: str,
) -> None:  # fmt: skip
    """Signer (with a valid key) or registrar: vouch for events signed after a key's reported compromise."""
    _submit("reaffirm", url, token, key_file, actor, as_json, lambda c: c.reaffirm(
        list(event_ids), statement, timestamp=timestamp
    ))  # fmt: skip


COMMANDS = [
    extract, transfer, receive, transform, recycle, split, merge, attest, claim, attestation, custody_model, reaffirm,
]  # fmt: skip
